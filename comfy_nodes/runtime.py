"""Where the nodes meet the process that runs them: ComfyUI when it is there, plain Python when it is not.

Everything from ComfyUI (`comfy.model_management`, `comfy.utils.ProgressBar`, `folder_paths`) is imported
lazily and is optional, so the nodes import and run without ComfyUI; the pipeline itself never imports it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "pipeline_video_deblur"


def pipeline_package():
    """The `pipeline_video_deblur` package: the installed one if there is one, else this repository's copy.

    A repository cloned into `ComfyUI/custom_nodes/` is imported by ComfyUI under the folder's path, which is not
    on `sys.path`; the package next to `comfy_nodes/` is then registered under its own name, so that the
    `[module, class]` pairs that `from_pretrained` reads from `model_index.json` resolve, without adding the
    repository root (and its `tests/`, `train/`, ... folders) to `sys.path`.
    """
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    if importlib.util.find_spec(PACKAGE) is not None:
        return importlib.import_module(PACKAGE)
    folder = os.path.join(REPO_ROOT, PACKAGE)
    spec = importlib.util.spec_from_file_location(
        PACKAGE, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot find `{PACKAGE}`: it is neither installed nor in {REPO_ROOT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACKAGE]
        raise
    return module


def pipeline_module(name: str):
    """`pipeline_video_deblur.<name>`, with a clear error where an older installed package lacks it."""
    package = pipeline_package()
    try:
        return importlib.import_module(f"{package.__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{package.__name__}.{name}":
            raise
        raise ImportError(
            f"the installed {package.__name__} ({os.path.dirname(package.__file__)}) is older than these nodes: "
            "update it (pip install -U video-deblur) or uninstall it, so that the copy beside the nodes is used"
        ) from None


def model_management():
    """`comfy.model_management` inside ComfyUI, `None` outside it."""
    try:
        return importlib.import_module("comfy.model_management")
    except ImportError:
        return None


def progress_bar_class():
    """`comfy.utils.ProgressBar` inside ComfyUI, `None` outside it."""
    try:
        return importlib.import_module("comfy.utils").ProgressBar
    except (ImportError, AttributeError):
        return None


MODEL_FOLDER = "video_deblur"


def comfy_models_dir() -> str | None:
    """ComfyUI's `models/` folder, `None` outside ComfyUI."""
    try:
        return importlib.import_module("folder_paths").models_dir
    except (ImportError, AttributeError):
        return None


def register_model_folder() -> None:
    """Make `models/video_deblur/` ComfyUI's default folder for pipelines, beside any `video_deblur:` entries of
    `extra_model_paths.yaml` (ComfyUI reads those before it loads custom nodes); nothing outside ComfyUI."""
    models_dir = comfy_models_dir()
    if models_dir is not None:
        folder_paths = importlib.import_module("folder_paths")
        folder = os.path.join(models_dir, MODEL_FOLDER)
        try:
            folder_paths.add_model_folder_path(MODEL_FOLDER, folder, is_default=True)
        except TypeError:  # ComfyUI before September 2024 has no `is_default`
            folder_paths.add_model_folder_path(MODEL_FOLDER, folder)


def comfy_model_folders() -> list[str]:
    """Every folder ComfyUI keeps pipelines in (`models/video_deblur/` and those of `extra_model_paths.yaml`);
    [] outside ComfyUI."""
    models_dir = comfy_models_dir()
    if models_dir is None:
        return []
    folder_paths = importlib.import_module("folder_paths")
    try:
        return list(folder_paths.get_folder_paths(MODEL_FOLDER))
    except (AttributeError, KeyError):
        return [os.path.join(models_dir, MODEL_FOLDER)]


# ---------------------------------------------------------------------------------------------------------------
# Devices and dtypes


def resolve_device(name: str) -> tuple[torch.device, torch.device]:
    """The device a run uses and the one the weights wait on between runs, for the widget value `name`.

    `"auto"` is ComfyUI's compute device (`get_torch_device`), else CUDA, MPS or the CPU, whichever exists first.
    Between runs the weights go to ComfyUI's `unet_offload_device` (the CPU unless ComfyUI keeps models in VRAM);
    outside ComfyUI they stay where they run.
    """
    mm = model_management()
    if name == "auto":
        if mm is not None:
            device = torch.device(mm.get_torch_device())
        elif torch.cuda.is_available():
            device = torch.device("cuda")
        elif torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as error:
            raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda' or 'mps', got {name!r}") from error
        devices = pipeline_module("devices")
        problem = devices.device_problem(device)
        if problem is not None:
            raise ValueError(f"`device` {name!r} {problem}; use 'auto' or 'cpu'")
        if device.type == "cuda" and device.index is None:
            # ComfyUI's models sit on cuda:N, and its model manager frees only models whose device equals the
            # one asked for: torch.device("cuda") != torch.device("cuda:0").
            device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cpu" or mm is None:
        return device, device
    return device, torch.device(mm.unet_offload_device())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype for the widget value `name`; `"auto"` asks ComfyUI (it honours --force-fp32 and the
    like), else picks float32 on the CPU, bfloat16 where CUDA supports it, float16 on other accelerators."""
    if name != "auto":
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if name not in dtypes:
            raise ValueError(f"`dtype` must be one of 'auto', {', '.join(map(repr, dtypes))}, got {name!r}")
        return dtypes[name]
    if device.type == "cpu":
        return torch.float32
    mm = model_management()
    if mm is not None:
        if mm.should_use_bf16(device):
            return torch.bfloat16
        if mm.should_use_fp16(device):
            return torch.float16
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@dataclass
class LoadedPipeline:
    """What flows along a `VIDEO_DEBLUR_PIPELINE` link: the pipeline and where it runs and rests."""

    pipeline: Any  # VideoDeblurPipeline (imported lazily, so not named here)
    device: torch.device
    offload_device: torch.device
    model: str


def weight_bytes(pipe) -> int:
    """Bytes of all the pipeline's weights (every `torch.nn.Module` component)."""
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def run_memory(pipe, frames: int, height: int, width: int, num_frames: int, tile_size: int | None) -> int:
    """Bytes a run needs on its device, roughly: the weights, the VAE's largest activations (a chunk of 8
    full-size frames at its widest full-resolution layer, a few tensors of it alive at once) and the UNet's for one
    window x tile (CFG doubles the batch; skip connections keep several feature maps), plus the whole clip's latents
    (a few copies; the one term that grows with the clip's length). ComfyUI unloads its own
    models until this much is free: too high unloads more than needed, too low runs out of memory."""
    weights = weight_bytes(pipe)
    element = torch.tensor([], dtype=pipe.unet.dtype).element_size()
    vae_channels = (getattr(pipe.vae.config, "block_out_channels", None) or [64])[0]
    vae = min(8, frames) * height * width * vae_channels * element * 4
    tile = tile_size or pipe.default_tile_size or max(height, width)
    factor = pipe.vae_scale_factor
    latents = -(-min(tile, height) // factor) * -(-min(tile, width) // factor)
    unet = 2 * min(num_frames, frames) * latents * max(pipe.unet.config.block_out_channels) * element * 16
    # The whole clip's latents stay on the device through the run, so that the windows agree at every step: the
    # noisy latents, the blurred condition, the blended prediction, the scaled input and the scheduler's
    # temporaries, about six tensors of them; this is the part that grows with the clip's length.
    clip_latents = frames * -(-height // factor) * -(-width // factor) * pipe.unet.config.out_channels
    return int(weights + vae + unet + 6 * clip_latents * element)


def move_to_run_device(loaded: LoadedPipeline, memory: int | None = None) -> None:
    """Make room through ComfyUI's model manager (it unloads its own models until `memory` bytes, see
    `run_memory`, plus its own reserve for one inference are free), then move the weights."""
    pipe = loaded.pipeline
    mm = model_management()
    if mm is not None and loaded.device.type != "cpu":
        if memory is None:
            memory = 2 * weight_bytes(pipe)
        reserve = mm.minimum_inference_memory() if hasattr(mm, "minimum_inference_memory") else 0
        mm.free_memory(memory + reserve, loaded.device)
    pipe.to(loaded.device)


def move_to_offload_device(loaded: LoadedPipeline) -> None:
    loaded.pipeline.to(loaded.offload_device)
    mm = model_management()
    if mm is not None:
        mm.soft_empty_cache()


def check_interrupt() -> None:
    """Raise ComfyUI's `InterruptProcessingException` if the user pressed cancel; nothing outside ComfyUI."""
    mm = model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class ComfyProgress:
    """A `callback_on_step_end` for the pipeline: advances ComfyUI's progress bar and honours its cancel button.

    The bar counts frames x denoising steps over every pass of the pipeline (`frames`: the frames of all passes,
    those neighbouring segments share counted in each), times `runs` (the pipeline's `self_ensemble`: each pass
    samples that many times): it is created at the first step, when the pipeline knows its number of steps
    (`pipe.num_timesteps`, after `strength`), and moves by the current pass's frame count (`start_segment`) after
    each step. Cancelling raises between steps, out of the pipeline and the node; ComfyUI
    reports it as an interruption.
    """

    def __init__(self, frames: int, runs: int = 1):
        self.frames = int(frames) * int(runs)
        self.segment_frames = int(frames)
        self.bar_class = progress_bar_class()
        self.bar = None

    def start_segment(self, first: int, count: int) -> None:
        """`deblur_segments`' `on_segment`: the next pass covers `count` frames."""
        self.segment_frames = int(count)

    def __call__(self, pipe, step_index: int, timestep, callback_kwargs: dict) -> dict:
        if self.bar_class is not None:
            if self.bar is None:
                self.bar = self.bar_class(pipe.num_timesteps * self.frames)
            self.bar.update(self.segment_frames)
        check_interrupt()
        return {}
