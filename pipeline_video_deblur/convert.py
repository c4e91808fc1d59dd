"""Build a `VideoDeblurPipeline` folder from public checkpoints: a diffusers text-to-video model plus a CLIP encoder.

The text-to-video (T2V) model is a diffusers folder with the layout of `damo-vilab/text-to-video-ms-1.7b`
(`unet/`, `vae/`, `scheduler/`; the text encoder and tokenizer are ignored). The CLIP image encoder is either a
transformers `CLIPVisionModelWithProjection` folder or an open_clip checkpoint (e.g. the OpenCLIP ViT-H/14
`open_clip_pytorch_model.bin`), whose visual tower is converted to `CLIPVisionModelWithProjection` weights.

What the conversion does (DESIGN 2.1-2.2 and 3):

- `unet`: a `VideoDeblurUNet3DModel` with the T2V UNet's config and weights, `in_channels` doubled. The new
  input channels of `conv_in` (the blurred clip's latents) are zero-initialised, so the converted UNet's output
  equals the T2V UNet's for any condition: training starts from exactly the pretrained model.
- `vae`: the T2V `AutoencoderKL`, unchanged.
- `image_encoder`: the CLIP encoder; `blur_encoder`: an exact copy of it (stage 1 trains the copy).
- `scheduler`: a `DDIMScheduler` with the T2V beta schedule and the paper's v-prediction (see `make_scheduler`).

The output folder appears only when complete: it is saved under a temporary sibling name, then renamed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from .atomic import replace_dir
from .models import VideoDeblurUNet3DModel

if TYPE_CHECKING:
    from .pipeline_video_deblur import VideoDeblurPipeline

# Normalisation of OpenAI's CLIP, which OpenCLIP's LAION models (ViT-H/14 included) keep.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CLIP_FORMATS = ("auto", "transformers", "open_clip")
OPEN_CLIP_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")
# File names under which open_clip checkpoints are published on the Hub, in the order open_clip prefers them.
OPEN_CLIP_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def convert_t2v_to_deblur(
    t2v_path: str | os.PathLike,
    clip_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    clip_format: str = "auto",
    open_clip_model_name: str = "ViT-H-14",
    open_clip_config: dict[str, Any] | None = None,
    residual: bool = False,
    torch_dtype: torch.dtype = torch.float32,
    variant: str | None = None,
    overwrite: bool = False,
) -> VideoDeblurPipeline:
    """Convert a diffusers T2V folder and a CLIP image encoder into a `VideoDeblurPipeline` folder.

    Args:
        t2v_path: diffusers T2V folder with `unet/`, `vae/` and `scheduler/` subfolders.
        clip_path: a transformers CLIP folder, an open_clip checkpoint file (`.bin`, `.safetensors`, `.pt`,
            `.pth`), or a folder holding one (with `open_clip_config.json`, as on the Hub, or not).
        output_dir: where the pipeline folder is written; it must not exist unless `overwrite`.
        clip_format: `"transformers"`, `"open_clip"`, or `"auto"` (a file or a folder without `config.json`
            is open_clip, a folder with `config.json` is transformers).
        open_clip_model_name: open_clip architecture of the checkpoint (a built-in name such as `"ViT-H-14"`),
            used when the checkpoint comes without `open_clip_config.json` and `open_clip_config` is not given.
        open_clip_config: an open_clip model config (`{"embed_dim": ..., "vision_cfg": ..., "text_cfg": ...}`,
            or the `{"model_cfg": ..., "preprocess_cfg": ...}` of `open_clip_config.json`) for custom models.
        residual: the pipeline's `residual` flag (DESIGN 2.8); the paper's formulation is `False`.
        torch_dtype: dtype of every converted model.
        variant: weights variant of the T2V folder (e.g. `"fp16"` for `diffusion_pytorch_model.fp16.safetensors`).
        overwrite: replace an existing `output_dir`.

    Returns:
        The converted pipeline (also saved in `output_dir`).

    Raises:
        FileNotFoundError: a path or a required subfolder is missing.
        ValueError: the checkpoints do not fit together (the error names the values), or `output_dir` is an input
            or exists without `overwrite`.
    """
    from .pipeline_video_deblur import VideoDeblurPipeline  # lazy: the pipeline imports nothing from here

    # 1. Check paths (before loading anything heavy)
    t2v_path, clip_path, output_dir = Path(t2v_path), Path(clip_path), Path(output_dir)
    if not t2v_path.is_dir():
        raise FileNotFoundError(f"T2V model folder not found: {t2v_path}")
    subfolders = {name: t2v_path / name for name in ("unet", "vae", "scheduler")}
    config_names = {"unet": "config.json", "vae": "config.json", "scheduler": "scheduler_config.json"}
    for name, folder in subfolders.items():
        if not (folder / config_names[name]).is_file():
            raise FileNotFoundError(
                f"T2V model folder {t2v_path} has no `{name}/` subfolder with {config_names[name]} (looked for "
                f"{folder / config_names[name]}); expected the diffusers layout of damo-vilab/text-to-video-ms-1.7b: "
                "unet/, vae/, scheduler/"
            )
    if not clip_path.exists():
        raise FileNotFoundError(f"CLIP checkpoint not found: {clip_path}")
    _check_output_dir(output_dir, inputs=(t2v_path, clip_path), overwrite=overwrite)

    # 2. Check that the image embeddings fit the UNet's cross-attention, from the configs alone
    unet_config = UNet3DConditionModel.load_config(subfolders["unet"])
    image_encoder, feature_extractor = load_clip_image_encoder(
        clip_path,
        clip_format=clip_format,
        open_clip_model_name=open_clip_model_name,
        open_clip_config=open_clip_config,
        torch_dtype=torch_dtype,
    )
    cross_attention_dim = unet_config["cross_attention_dim"]
    projection_dim = image_encoder.config.projection_dim
    if cross_attention_dim != projection_dim:
        raise ValueError(
            f"the T2V UNet's cross_attention_dim is {cross_attention_dim} but the CLIP image encoder's "
            f"projection_dim is {projection_dim}: the image embeddings are the UNet's cross-attention tokens, so "
            "the two must be equal (ModelScope T2V and OpenCLIP ViT-H/14 both use 1024)"
        )

    # 3. UNet: widen conv_in with zero-initialised condition channels
    source_unet = UNet3DConditionModel.from_pretrained(subfolders["unet"], torch_dtype=torch_dtype, variant=variant)
    unet = widen_unet(source_unet)
    del source_unet  # `unet` shares its tensors: no second copy of the weights stays in memory

    # 4. VAE as is; scheduler from the T2V beta schedule
    # (a model made here by stage 0 may carry the weight-free `PixelShuffleVAE` instead of an `AutoencoderKL`)
    vae_class_name = json.loads((Path(subfolders["vae"]) / "config.json").read_text()).get("_class_name")
    if vae_class_name == "PixelShuffleVAE":
        from .models.pixel_shuffle_vae import PixelShuffleVAE

        vae = PixelShuffleVAE.from_pretrained(subfolders["vae"], torch_dtype=torch_dtype)
        vae_latent_channels = vae.latent_channels
    else:
        vae = AutoencoderKL.from_pretrained(subfolders["vae"], torch_dtype=torch_dtype, variant=variant)
        vae_latent_channels = vae.config.latent_channels
    if vae_latent_channels != unet.config.out_channels:
        raise ValueError(
            f"the T2V VAE has {vae_latent_channels} latent channels but its UNet predicts "
            f"{unet.config.out_channels}; expected a VAE and UNet trained together"
        )
    scheduler = make_scheduler(DDIMScheduler.load_config(subfolders["scheduler"]))

    # 5. Assemble: the blur encoder starts as an exact copy of the image encoder (DESIGN 2.2)
    pipe = VideoDeblurPipeline(
        vae=vae,
        unet=unet,
        image_encoder=image_encoder,
        blur_encoder=copy.deepcopy(image_encoder),
        feature_extractor=feature_extractor,
        scheduler=scheduler,
        residual=residual,
    )

    # 6. Save atomically: a temporary sibling folder, renamed once complete
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its folder is private (0700), and this one becomes the output as it is.
    tmp_dir = output_dir.parent / f".{output_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir()
    try:
        pipe.save_pretrained(tmp_dir)
        replace_dir(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return pipe


def widen_unet(source: UNet3DConditionModel) -> VideoDeblurUNet3DModel:
    """A `VideoDeblurUNet3DModel` with `source`'s config and weights and twice its input channels.

    The first `in_channels` input channels of `conv_in` keep the source weights (noisy latents); the new ones
    (blurred latents) are zero, so the result computes exactly what `source` computes, for any condition
    (DESIGN 2.1). The result shares every tensor but `conv_in.weight` with `source` (no copy is made), so
    `source` should not be trained or modified afterwards.

    Raises:
        ValueError: `source` is not a plain T2V UNet (`in_channels` != `out_channels`).
    """
    config = {key: value for key, value in source.config.items() if not key.startswith("_")}
    latent_channels = config["in_channels"]
    if latent_channels != config["out_channels"]:
        raise ValueError(
            f"expected a text-to-video UNet with in_channels == out_channels (the latent channels), got "
            f"in_channels={latent_channels}, out_channels={config['out_channels']}"
        )
    config["in_channels"] = 2 * latent_channels

    # Built on the meta device, then handed the source's tensors: peak memory is one copy of the weights.
    with torch.device("meta"):
        unet = VideoDeblurUNet3DModel.from_config(config)
    state_dict = source.state_dict()
    weight = state_dict["conv_in.weight"]  # (out, in_channels, k, k)
    widened = weight.new_zeros(weight.shape[0], 2 * latent_channels, *weight.shape[2:])
    widened[:, :latent_channels] = weight
    state_dict["conv_in.weight"] = widened  # (out, 2 * in_channels, k, k); condition channels zero
    unet.load_state_dict(state_dict, strict=True, assign=True)
    left_on_meta = [name for name, tensor in [*unet.named_parameters(), *unet.named_buffers()] if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"widen_unet left tensors without values: {left_on_meta}")
    return unet.eval()


def make_scheduler(source_config: dict[str, Any]) -> DDIMScheduler:
    """The pipeline's `DDIMScheduler` from a T2V scheduler config (any diffusers scheduler's config works).

    Kept from the source: the beta schedule (`num_train_timesteps`, `beta_schedule`, `beta_start`, `beta_end`,
    `trained_betas`), `set_alpha_to_one`, `steps_offset` and `rescale_betas_zero_snr`: the noise levels are the
    ones the pretrained UNet was trained on. Set:

    - `prediction_type="v_prediction"`: the paper's target (Eq. 3). ModelScope T2V predicts epsilon, so the
      UNet must learn the new target in fine-tuning (stage 2); the config records what the pipeline expects.
    - `timestep_spacing="trailing"`: sampling starts at the last training step (t = 999 with 1000 steps), where
      training's noisiest samples are; "leading" would start at 981 for 50 steps and never see t = 999.
    - `clip_sample=False`, `thresholding=False`: latents are not bounded to [-1, 1].
    """
    config = {key: value for key, value in source_config.items() if not key.startswith("_")}
    config.update(prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False, thresholding=False)
    return DDIMScheduler.from_config(config)


def load_clip_image_encoder(
    clip_path: str | os.PathLike,
    *,
    clip_format: str = "auto",
    open_clip_model_name: str = "ViT-H-14",
    open_clip_config: dict[str, Any] | None = None,
    torch_dtype: torch.dtype = torch.float32,
) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """Load a CLIP image encoder as `CLIPVisionModelWithProjection` with its `CLIPImageProcessor`.

    See `convert_t2v_to_deblur` for the arguments. A transformers folder without `preprocessor_config.json` gets
    a processor at the model's image size with OpenAI's CLIP mean and std.
    """
    clip_path = Path(clip_path)
    if clip_format not in CLIP_FORMATS:
        raise ValueError(f"clip_format must be one of {CLIP_FORMATS}, got {clip_format!r}")
    if not clip_path.exists():
        raise FileNotFoundError(f"CLIP checkpoint not found: {clip_path}")
    if clip_format == "auto":
        clip_format = "transformers" if (clip_path / "config.json").is_file() else "open_clip"

    if clip_format == "transformers":
        if not (clip_path / "config.json").is_file():
            raise FileNotFoundError(f"{clip_path} is not a transformers model folder (no config.json)")
        encoder = CLIPVisionModelWithProjection.from_pretrained(clip_path).to(torch_dtype)
        if (clip_path / "preprocessor_config.json").is_file():
            processor = CLIPImageProcessor.from_pretrained(clip_path)
        else:
            size = encoder.config.image_size
            processor = CLIPImageProcessor(
                size={"shortest_edge": size},
                crop_size={"height": size, "width": size},
                image_mean=list(OPENAI_CLIP_MEAN),
                image_std=list(OPENAI_CLIP_STD),
            )
        return encoder.eval(), processor

    model, preprocess_cfg = load_open_clip_model(clip_path, open_clip_model_name, open_clip_config)
    encoder = open_clip_to_transformers(model).to(torch_dtype)
    return encoder, open_clip_image_processor(preprocess_cfg)


def load_open_clip_model(
    clip_path: str | os.PathLike,
    model_name: str = "ViT-H-14",
    model_config: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load an open_clip checkpoint through `open_clip_torch`; returns the model (fp32, eval) and its preprocess
    config (`size`, `mean`, `std`, `interpolation`, `resize_mode`).

    The architecture comes from `model_config` if given, else from `open_clip_config.json` beside the weights (the
    Hub layout), else from the built-in `model_name`.
    """
    import open_clip

    clip_path = Path(clip_path)
    if clip_path.is_dir():
        weights = next((clip_path / name for name in OPEN_CLIP_WEIGHT_NAMES if (clip_path / name).is_file()), None)
        if weights is None:
            raise FileNotFoundError(
                f"{clip_path} is neither a transformers CLIP folder (config.json) nor an open_clip folder (one of "
                f"{', '.join(OPEN_CLIP_WEIGHT_NAMES)}); pass the checkpoint file itself if it has another name"
            )
        hub_config = clip_path / "open_clip_config.json"
        if model_config is None and hub_config.is_file():
            model_config = json.loads(hub_config.read_text())
    else:
        weights = clip_path
        if weights.suffix not in OPEN_CLIP_SUFFIXES:
            raise ValueError(
                f"{clip_path} is not an open_clip checkpoint: expected a file ending in "
                f"{', '.join(OPEN_CLIP_SUFFIXES)}"
            )

    preprocess_overrides: dict[str, Any] = {}
    try:
        if model_config is None:
            model = open_clip.create_model(model_name, pretrained=str(weights), load_weights=True)
        else:
            if "model_cfg" in model_config:  # the `open_clip_config.json` layout
                preprocess_overrides = dict(model_config.get("preprocess_cfg", {}))
                model_config = model_config["model_cfg"]
            model_config = copy.deepcopy(model_config)
            text_cfg = model_config.get("text_cfg", {})
            custom_text = model_config.pop("custom_text", False) or "hf_model_name" in text_cfg
            if "hf_model_name" in text_cfg:
                text_cfg["hf_model_pretrained"] = False  # weights come from the checkpoint, never downloaded
            model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
            model = model_class(**model_config)
            open_clip.load_checkpoint(model, str(weights), strict=True)
    except (RuntimeError, AssertionError, KeyError) as error:  # how open_clip reports keys and shapes that differ
        architecture = "the given open_clip config" if model_config is not None else f"open_clip's {model_name!r}"
        lines = str(error).strip().splitlines() or [type(error).__name__]
        details = "; ".join(line.strip().rstrip(".:") for line in lines[:3]) + (
            f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
        )
        raise ValueError(
            f"the open_clip checkpoint {weights} does not fit {architecture}: {details}. Pass the checkpoint's "
            "architecture (--open-clip-model NAME, or open_clip_config)"
        ) from error

    preprocess_cfg = {
        "size": model.visual.image_size,
        "mean": OPENAI_CLIP_MEAN,
        "std": OPENAI_CLIP_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    preprocess_cfg.update(open_clip.get_model_preprocess_cfg(model) or {})
    preprocess_cfg.update(preprocess_overrides)
    return model.float().eval(), preprocess_cfg


def open_clip_image_processor(preprocess_cfg: dict[str, Any]) -> CLIPImageProcessor:
    """A `CLIPImageProcessor` doing what open_clip's preprocess config (`size`, `mean`, `std`, `interpolation`,
    `resize_mode`) describes."""
    size = preprocess_cfg["size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL.Image.Resampling values
    interpolation = preprocess_cfg.get("interpolation", "bicubic")
    if interpolation not in resample:
        raise ValueError(f"open_clip interpolation must be one of {sorted(resample)}, got {interpolation!r}")
    resize_mode = preprocess_cfg.get("resize_mode", "shortest")
    if resize_mode == "shortest":  # resize the short side, then centre-crop (CLIP's own transform)
        resize = {"size": {"shortest_edge": min(height, width)}, "do_center_crop": True}
    elif resize_mode == "squash":  # resize to the exact size, no crop
        resize = {"size": {"height": height, "width": width}, "do_center_crop": False}
    else:
        raise ValueError(f"open_clip resize_mode {resize_mode!r} has no CLIPImageProcessor equivalent")
    return CLIPImageProcessor(
        **resize,
        crop_size={"height": height, "width": width},
        resample=resample[interpolation],
        image_mean=list(preprocess_cfg["mean"]),
        image_std=list(preprocess_cfg["std"]),
    )


def open_clip_to_transformers(model: torch.nn.Module) -> CLIPVisionModelWithProjection:
    """Convert an open_clip model's visual tower (a ViT) to an equivalent `CLIPVisionModelWithProjection`.

    `model` is an open_clip `CLIP` / `CustomTextCLIP` or its `visual` module. The converted model's
    `image_embeds` equal open_clip's `encode_image(images, normalize=False)` (OpenAI CLIP's architecture: class
    token pooling, `ln_pre`, post-norm of the class token, projection without bias; `final_ln_after_pool` is the
    same computation with class-token pooling, and patch dropout is off in eval).

    Weight map: `conv1` -> `patch_embedding`, `class_embedding`, `positional_embedding` -> `position_embedding`,
    `ln_pre` -> `pre_layrnorm` (sic), per block `attn.in_proj` -> `q/k/v_proj` (split in three), `attn.out_proj`,
    `ln_1` / `ln_2` -> `layer_norm1` / `layer_norm2`, `mlp.c_fc` / `mlp.c_proj` -> `mlp.fc1` / `mlp.fc2`
    (layer-scale factors, if any, folded into `out_proj` and `fc2`), `ln_post` -> `post_layernorm`, and
    `proj` (width x embed_dim) transposed -> `visual_projection.weight`. The activation follows the tower:
    open_clip's `QuickGELU` (`quick_gelu: true` models, OpenAI's weights) -> `"quick_gelu"`, `nn.GELU` (LAION
    models such as ViT-H/14) -> `"gelu"` (exact) or `"gelu_pytorch_tanh"`.

    Raises:
        ValueError: the tower is not a plain ViT that `CLIPVisionModelWithProjection` can express (timm or ResNet
            towers, attentional pooling, average pooling, no `ln_pre`, custom attention blocks, ...).
    """
    from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock, VisionTransformer

    visual = getattr(model, "visual", model)
    if not isinstance(visual, VisionTransformer):
        raise ValueError(f"only open_clip ViT image towers can be converted, got {type(visual).__name__}")
    unsupported = {
        "attentional pooling": visual.attn_pool is not None,
        f"pool_type {visual.pool_type!r} (expected 'tok')": visual.pool_type != "tok",
        "no ln_pre": isinstance(visual.ln_pre, torch.nn.Identity),
        "non-square images or patches": visual.image_size[0] != visual.image_size[1]
        or visual.patch_size[0] != visual.patch_size[1],
        "a projection-free tower": visual.proj is None,
        "custom attention blocks": not all(
            isinstance(block, ResidualAttentionBlock) and not hasattr(block, "ln_1_kv")
            for block in visual.transformer.resblocks
        ),
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(
            f"this open_clip ViT cannot be expressed as CLIPVisionModelWithProjection: {', '.join(found)}"
        )

    blocks = list(visual.transformer.resblocks)
    activation = blocks[0].mlp.gelu
    if isinstance(activation, QuickGELU):
        hidden_act = "quick_gelu"
    elif isinstance(activation, torch.nn.GELU):
        hidden_act = {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[activation.approximate]
    else:
        raise ValueError(f"unsupported open_clip activation {type(activation).__name__}")
    norms = [visual.ln_pre, visual.ln_post] + [norm for block in blocks for norm in (block.ln_1, block.ln_2)]
    eps = {norm.eps for norm in norms}
    if len(eps) != 1:
        raise ValueError(f"the open_clip tower mixes LayerNorm eps values {sorted(eps)}; expected one")

    width = visual.conv1.out_channels
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features,
        projection_dim=visual.proj.shape[1],
        num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads,
        num_channels=visual.conv1.in_channels,
        image_size=visual.image_size[0],
        patch_size=visual.patch_size[0],
        hidden_act=hidden_act,
        layer_norm_eps=eps.pop(),
    )

    def scale(layer_scale: torch.nn.Module) -> torch.Tensor | None:
        return layer_scale.gamma.detach() if isinstance(layer_scale, LayerScale) else None

    state_dict = {
        "vision_model.embeddings.patch_embedding.weight": visual.conv1.weight,
        "vision_model.embeddings.class_embedding": visual.class_embedding,
        "vision_model.embeddings.position_embedding.weight": visual.positional_embedding,
        "vision_model.pre_layrnorm.weight": visual.ln_pre.weight,
        "vision_model.pre_layrnorm.bias": visual.ln_pre.bias,
        "vision_model.post_layernorm.weight": visual.ln_post.weight,
        "vision_model.post_layernorm.bias": visual.ln_post.bias,
        "visual_projection.weight": visual.proj.T,  # (width, embed_dim) -> Linear weight (embed_dim, width)
    }
    for i, block in enumerate(blocks):
        prefix = f"vision_model.encoder.layers.{i}."
        q, k, v = block.attn.in_proj_weight.chunk(3, dim=0)  # (3 * width, width) -> 3 x (width, width)
        q_bias, k_bias, v_bias = block.attn.in_proj_bias.chunk(3, dim=0)
        out_weight, out_bias = block.attn.out_proj.weight, block.attn.out_proj.bias
        fc2_weight, fc2_bias = block.mlp.c_proj.weight, block.mlp.c_proj.bias
        # A layer scale multiplies a linear layer's output: fold it into that layer's rows.
        if (gamma := scale(block.ls_1)) is not None:
            out_weight, out_bias = out_weight * gamma[:, None], out_bias * gamma
        if (gamma := scale(block.ls_2)) is not None:
            fc2_weight, fc2_bias = fc2_weight * gamma[:, None], fc2_bias * gamma
        state_dict.update(
            {
                prefix + "self_attn.q_proj.weight": q,
                prefix + "self_attn.q_proj.bias": q_bias,
                prefix + "self_attn.k_proj.weight": k,
                prefix + "self_attn.k_proj.bias": k_bias,
                prefix + "self_attn.v_proj.weight": v,
                prefix + "self_attn.v_proj.bias": v_bias,
                prefix + "self_attn.out_proj.weight": out_weight,
                prefix + "self_attn.out_proj.bias": out_bias,
                prefix + "layer_norm1.weight": block.ln_1.weight,
                prefix + "layer_norm1.bias": block.ln_1.bias,
                prefix + "layer_norm2.weight": block.ln_2.weight,
                prefix + "layer_norm2.bias": block.ln_2.bias,
                prefix + "mlp.fc1.weight": block.mlp.c_fc.weight,
                prefix + "mlp.fc1.bias": block.mlp.c_fc.bias,
                prefix + "mlp.fc2.weight": fc2_weight,
                prefix + "mlp.fc2.bias": fc2_bias,
            }
        )

    encoder = CLIPVisionModelWithProjection(config)
    state_dict = {key: value.detach().to(torch.float32).contiguous() for key, value in state_dict.items()}
    encoder.load_state_dict(state_dict, strict=True)
    return encoder.eval()


def _check_output_dir(output_dir: Path, inputs: tuple[Path, ...], overwrite: bool) -> None:
    """Refuse an output folder that is, contains or lies inside an input, and an existing one unless `overwrite`;
    even then only an empty folder or a model folder (`model_index.json`, or a T2V layout's `unet/`) is replaced,
    never a folder of other things."""
    resolved = output_dir.resolve()
    for path in inputs:
        source = path.resolve()
        if resolved == source or resolved in source.parents:
            raise ValueError(f"output folder {output_dir} is (or contains) the input {path}; choose another folder")
        if source.is_dir() and source in resolved.parents:
            raise ValueError(
                f"output folder {output_dir} lies inside the input {path}, which replacing it would change; "
                "choose a folder outside it"
            )
    if output_dir.exists() and not overwrite:
        raise ValueError(f"output {output_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    if output_dir.exists():
        if not output_dir.is_dir():
            raise ValueError(f"output {output_dir} is a file, not a folder; choose a folder for the pipeline")
        entries = [p.name for p in output_dir.iterdir()]
        run = sorted(n for n in entries if n.startswith("checkpoint-") or n.endswith("_log.csv"))
        if run:
            raise ValueError(
                f"output {output_dir} holds a training run ({', '.join(run[:3])}); --overwrite would delete its "
                "checkpoints and logs: choose another folder"
            )
        if entries and "model_index.json" not in entries and "unet" not in entries:
            raise ValueError(
                f"output {output_dir} holds other things than a model ({', '.join(sorted(entries)[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); --overwrite replaces only a model folder or an empty one: "
                "choose another folder"
            )


# ----------------------------------------------------------------------------------------------------------------
# Command line: `video-deblur convert`


def add_convert_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of `video-deblur convert` to `parser`."""
    parser.add_argument(
        "--t2v",
        required=True,
        help="diffusers text-to-video folder (unet/, vae/, scheduler/), e.g. text-to-video-ms-1.7b",
    )
    parser.add_argument(
        "--clip",
        required=True,
        help="CLIP image encoder: a transformers folder, or an open_clip checkpoint file or folder",
    )
    parser.add_argument(
        "--clip-format", choices=CLIP_FORMATS, default="auto", help="format of --clip (default: guessed)"
    )
    parser.add_argument(
        "--open-clip-model",
        default="ViT-H-14",
        help="open_clip architecture of an open_clip checkpoint without open_clip_config.json (default: ViT-H-14)",
    )
    parser.add_argument(
        "--open-clip-config", default=None, help="JSON file with a custom open_clip model config (instead of a name)"
    )
    parser.add_argument(
        "--residual", action="store_true", help="write a pipeline with residual targets (DESIGN 2.8; default off)"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved weights")
    parser.add_argument("--variant", default=None, help="weights variant of the T2V folder, e.g. fp16")
    parser.add_argument("-o", "--output", required=True, help="pipeline folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Run `video-deblur convert`; returns the exit code. Bad input raises ValueError / FileNotFoundError."""
    open_clip_config = None
    if args.open_clip_config is not None:
        config_path = Path(args.open_clip_config)
        if not config_path.is_file():
            raise FileNotFoundError(f"open_clip config not found: {config_path}")
        try:
            open_clip_config = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"open_clip config {config_path} is not valid JSON: {error}") from error
    convert_t2v_to_deblur(
        args.t2v,
        args.clip,
        args.output,
        clip_format=args.clip_format,
        open_clip_model_name=args.open_clip_model,
        open_clip_config=open_clip_config,
        residual=args.residual,
        torch_dtype=DTYPES[args.dtype],
        variant=args.variant,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.output}")
    return 0
