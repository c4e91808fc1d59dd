"""LoRA adapters on the UNet's attention: add them for training, save and load them in the diffusers LoRA format,
and fuse them into the weights.

The file format is the one `StableDiffusionPipeline.save_lora_weights` writes: `pytorch_lora_weights.safetensors`
with `unet.`-prefixed keys `...to_q.lora.down.weight` / `...to_q.lora.up.weight` (down = A, up = B), and the rank,
alpha and target modules in the safetensors metadata (`lora_rank`, `lora_alpha`, `target_modules`). diffusers'
`UNet3DConditionModel` has no PEFT adapter mixin, so the adapters are injected with peft directly.

    >>> from pipeline_video_deblur import VideoDeblurPipeline
    >>> from pipeline_video_deblur.lora import fuse_lora, load_lora
    >>> pipe = VideoDeblurPipeline.from_pretrained("stage1/")
    >>> load_lora(pipe, "stage2_lora/")  # a folder holding pytorch_lora_weights.safetensors, or the file
    >>> fuse_lora(pipe)  # optional: merge into the weights (faster; the adapters are removed)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
UNET_PREFIX = "unet."


def add_lora(
    unet: torch.nn.Module,
    rank: int,
    alpha: float | None = None,
    target_modules: tuple[str, ...] = LORA_TARGET_MODULES,
    adapter_name: str = "default",
    init_lora_weights: bool | str = True,
) -> list[torch.nn.Parameter]:
    """Inject LoRA adapters of `rank` into the attention projections of `unet`; returns the adapters' parameters.

    `alpha` defaults to `rank` (scale 1). With the default initialisation (B = 0) the UNet's output is unchanged.
    The base weights are frozen; only the returned parameters require gradients.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=list(target_modules),
        init_lora_weights=init_lora_weights,
    )
    unet.requires_grad_(False)
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    params = [p for name, p in unet.named_parameters() if "lora_" in name and f".{adapter_name}." in name]
    if not params:
        raise ValueError(f"no module of the UNet matches the LoRA targets {list(target_modules)}")
    for p in params:
        p.requires_grad_(True)
    return params


def lora_state_dict(unet: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights in the diffusers LoRA format (`unet.`-prefixed, `lora.down` / `lora.up`)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    state = convert_state_dict_to_diffusers(state)
    return {UNET_PREFIX + key: value.detach().cpu().contiguous() for key, value in state.items()}


def save_lora(
    unet: torch.nn.Module,
    save_directory: str | os.PathLike,
    adapter_name: str = "default",
    weight_name: str = LORA_WEIGHT_NAME,
) -> Path:
    """Write `save_directory/pytorch_lora_weights.safetensors` (diffusers LoRA format, float32); returns its path."""
    from safetensors.torch import save_file

    config = _adapter_config(unet, adapter_name)
    state = {key: value.float() for key, value in lora_state_dict(unet, adapter_name).items()}
    metadata = {
        "format": "pt",
        "lora_rank": str(config.r),
        "lora_alpha": str(config.lora_alpha),
        "target_modules": json.dumps(sorted(config.target_modules)),
    }
    path = Path(save_directory) / weight_name
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: an existing file is replaced only by a complete one. Not `atomic.atomic_path`:
    # this module is copied into Hub repos as remote code, where it may import nothing of the package.
    tmp = path.with_name(f".{path.stem}-tmp{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        save_file(state, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_lora(pipe, path: str | os.PathLike, adapter_name: str = "default", scale: float = 1.0) -> None:
    """Load a LoRA file (or a folder holding `pytorch_lora_weights.safetensors`) onto `pipe.unet`.

    `scale` multiplies the adapter's contribution (1 = as trained). The adapter stays separate from the weights
    until `fuse_lora(pipe)`.
    """
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA weights at {path}")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        state = {key: f.get_tensor(key) for key in f.keys()}
    unet_state = {key[len(UNET_PREFIX) :]: value for key, value in state.items() if key.startswith(UNET_PREFIX)}
    if not unet_state:
        raise ValueError(f"{path} holds no `unet.` LoRA weights (keys start with {sorted(state)[:3]})")
    unet_state = convert_unet_state_dict_to_peft(unet_state)
    ranks = {value.shape[0] for key, value in unet_state.items() if "lora_A" in key}
    if len(ranks) != 1:
        raise ValueError(f"{path}: expected one LoRA rank, found {sorted(ranks)}")
    rank = int(metadata.get("lora_rank", ranks.pop()))
    alpha = float(metadata.get("lora_alpha", rank))
    if "target_modules" in metadata:
        targets = json.loads(metadata["target_modules"])
    else:
        targets = sorted({key.split(".lora_")[0].split(".", 1)[-1] for key in unet_state if ".lora_" in key})
        targets = [t for t in LORA_TARGET_MODULES if any(name.endswith(t) for name in targets)] or list(
            LORA_TARGET_MODULES
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets)
    unet = pipe.unet
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    result = set_peft_model_state_dict(unet, unet_state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"{path}: LoRA weights for modules the UNet does not have, e.g. {unexpected[:3]}")
    unet.requires_grad_(False)
    set_lora_scale(pipe, scale, adapter_name)


def _lora_layers(unet: torch.nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in unet.named_modules() if isinstance(module, LoraLayer)]


def _adapter_config(unet: torch.nn.Module, adapter_name: str):
    config = getattr(unet, "peft_config", {}).get(adapter_name)
    if config is None:
        raise ValueError(f"the UNet has no LoRA adapter named {adapter_name!r}")
    return config


def set_lora_scale(pipe, scale: float, adapter_name: str = "default") -> None:
    """Scale the adapter's contribution (1 = as trained, 0 = off)."""
    for _, module in _lora_layers(pipe.unet):
        if adapter_name in module.scaling:
            module.set_scale(adapter_name, scale)


def fuse_lora(pipe, adapter_names: list[str] | None = None) -> None:
    """Merge the LoRA adapters into the UNet's weights and remove them: the UNet is a plain UNet again (same
    outputs up to float rounding, no adapter overhead), and `pipe.save_pretrained` writes the fused weights."""
    layers = _lora_layers(pipe.unet)
    if not layers:
        raise ValueError("the UNet has no LoRA adapters to fuse; call load_lora first")
    for name, module in layers:
        module.merge(adapter_names=adapter_names)
        parent_name, _, child = name.rpartition(".")
        parent = pipe.unet.get_submodule(parent_name) if parent_name else pipe.unet
        setattr(parent, child, module.get_base_layer())
    if hasattr(pipe.unet, "peft_config"):
        del pipe.unet.peft_config
    if hasattr(pipe.unet, "_hf_peft_config_loaded"):
        pipe.unet._hf_peft_config_loaded = False
