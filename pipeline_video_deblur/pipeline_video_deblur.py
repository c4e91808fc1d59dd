"""`VideoDeblurPipeline`: a latent video diffusion model that turns a blurred clip into a sharp one.

The blurred clip conditions the model twice (DESIGN 2.1-2.2): its VAE latents are concatenated with the
noisy latents on the channel axis, and the centre frame of each temporal window is embedded by two CLIP image
encoders (`image_encoder`, frozen, and `blur_encoder`, trained on blurred frames) whose projected embeddings
are the UNet's two cross-attention tokens. Sampling is DDIM with classifier-free guidance on those tokens.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.schedulers import KarrasDiffusionSchedulers  # noqa: F401  (documents what `scheduler` may be)
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from .pipeline_output import VideoDeblurPipelineOutput
from .windows import WindowPlan

try:  # diffusers loads custom components by module name only if that module is already imported
    from . import models as _custom_components  # noqa: F401
except ImportError:  # loaded as remote code from a pipeline folder, outside the package
    _custom_components = None

logger = logging.get_logger(__name__)

# diffusers renamed `from_pretrained(torch_dtype=...)` to `dtype` and warns on the old name; the older releases
# that pyproject allows know only `torch_dtype`. `_resolve_dtype` is the helper the renaming releases read it with.
try:
    from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

    _DIFFUSERS_READS_DTYPE = True
except ImportError:
    _DIFFUSERS_READS_DTYPE = False


def _check_noise_scale(value, name: str) -> None:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_guidance_scale(value, name: str) -> None:
    # nan would turn guidance off without a word, inf would write a video of nan
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


# The geometric self-ensemble (as in EDSR's "x8"): the clip is deblurred under each of these flips / transposes of
# its frames, each output is mapped back, and the outputs are averaged. The first `n` entries are used for
# `self_ensemble=n`: 2 adds the left-right mirror, 4 the up-down mirrors, 8 the transposed frames. Time reversal is
# not among them: on the embedded model's benchmark it added under 0.01 dB (benchmarks/self_ensemble.py).
SELF_ENSEMBLE_TRANSFORMS = (
    (False, False, False),  # (flip width, flip height, swap height and width)
    (True, False, False),
    (False, True, False),
    (True, True, False),
    (False, False, True),
    (True, False, True),
    (False, True, True),
    (True, True, True),
)
SELF_ENSEMBLE_SIZES = (1, 2, 4, 8)


def _frames_transform(frames: torch.Tensor, transform: tuple[bool, bool, bool], inverse: bool = False) -> torch.Tensor:
    """Apply one of SELF_ENSEMBLE_TRANSFORMS (or its inverse) to frames (..., 3, H, W)."""
    flip_w, flip_h, swap = transform
    if swap and inverse:
        frames = frames.transpose(-1, -2)
    dims = [dim for dim, flip in ((-1, flip_w), (-2, flip_h)) if flip]
    if dims:
        frames = frames.flip(dims)
    if swap and not inverse:
        frames = frames.transpose(-1, -2)
    return frames


DEFAULT_MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_model")

# The guidance scale of a model saved without its own (`model_index.json` `guidance_scale`): the scale every model
# sampled at before the key existed
DEFAULT_GUIDANCE_SCALE = 2.0

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from pipeline_video_deblur import VideoDeblurPipeline
        >>> from pipeline_video_deblur.data import read_video, write_video

        >>> pipe = VideoDeblurPipeline.from_default()  # or .from_pretrained("path/or/user-repo")
        >>> clip = read_video("blurred.mp4")
        >>> frames = pipe(clip.frames, num_inference_steps=50, output_type="np").frames[0]
        >>> write_video((frames * 255).round().astype("uint8"), "sharp.mp4", fps=clip.fps)
        ```
"""


class VideoDeblurPipeline(DiffusionPipeline):
    r"""
    Pipeline for video deblurring with a latent video diffusion model.

    Args:
        vae ([`AutoencoderKL`] or any model with the same `encode` / `decode` / `config.scaling_factor`):
            Encodes frames to latents and decodes them back, one frame at a time.
        unet ([`VideoDeblurUNet3DModel`]):
            3D UNet taking the noisy latents concatenated with the blurred latents (`in_channels` = 2 x latent
            channels) and two image tokens as cross-attention context.
        image_encoder ([`CLIPVisionModelWithProjection`]):
            The pretrained CLIP image encoder (frozen in training).
        blur_encoder ([`CLIPVisionModelWithProjection`]):
            A second CLIP image encoder, initialised as a copy of `image_encoder`, trained to embed blurred frames.
        feature_extractor ([`CLIPImageProcessor`]):
            Gives the normalisation (mean, std) of the image encoders' inputs.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler; [`DDIMScheduler`] with v-prediction by default.
        residual (`bool`, defaults to `False`):
            If true, the model generates sharp latents minus blurred latents (DESIGN 2.8) and the pipeline adds the
            blurred latents back before decoding.
        noise_scale (`float`, defaults to 1.0):
            The model's default for the call's `noise_scale`: what the sampler's starting noise is multiplied by.
            1 is the standard sampler (one draw among the sharp clips the model finds plausible); 0 starts from no
            noise, which makes DDIM deterministic and brings its answer close to the model's mean estimate. Chosen
            by measurement for each model (the embedded default model stores the value its card reports).
        guidance_scale (`float`, defaults to 2.0):
            The model's default for the call's `guidance_scale`, chosen by measurement for each model as
            `noise_scale` is (the embedded default model stores the value its card reports).
    """

    model_cpu_offload_seq = "image_encoder->blur_encoder->unet->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae,
        unet,
        image_encoder: CLIPVisionModelWithProjection,
        blur_encoder: CLIPVisionModelWithProjection,
        feature_extractor: CLIPImageProcessor,
        scheduler,
        residual: bool = False,
        noise_scale: float = 1.0,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            unet=unet,
            image_encoder=image_encoder,
            blur_encoder=blur_encoder,
            feature_extractor=feature_extractor,
            scheduler=scheduler,
        )
        _check_noise_scale(noise_scale, "the pipeline's `noise_scale`")
        _check_guidance_scale(guidance_scale, "the pipeline's `guidance_scale`")
        self.register_to_config(
            residual=residual, noise_scale=float(noise_scale), guidance_scale=float(guidance_scale)
        )
        # CLIP encoders stored in a lower precision than the UNet (the default model ships them in float16, and
        # transformers keeps the stored dtype where diffusers loads its models in float32) run in the UNet's dtype,
        # on every loading path, remote code included. Only ever up: a lower-precision UNet is the user's choice.
        unet_dtype = getattr(unet, "dtype", None)
        for encoder in (image_encoder, blur_encoder):
            dtype = getattr(encoder, "dtype", None)
            if (
                unet_dtype is not None
                and dtype is not None
                and unet_dtype.is_floating_point
                and dtype.is_floating_point
                and torch.finfo(dtype).bits < torch.finfo(unet_dtype).bits
            ):
                encoder.to(unet_dtype)

    # ------------------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> VideoDeblurPipeline:
        """`DiffusionPipeline.from_pretrained`. A folder or Hub repo in the remote-code layout that `video-deblur push`
        writes (pipeline code at its root) loads with this package's classes; the code it carries is not run.
        `torch_dtype` is passed on under the name the installed diffusers reads (`dtype` in recent releases)."""
        if _DIFFUSERS_READS_DTYPE and "torch_dtype" in kwargs and "dtype" not in kwargs:
            kwargs["dtype"] = kwargs.pop("torch_dtype")
        if kwargs.get("trust_remote_code") or kwargs.get("custom_pipeline") is not None:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from .remote_code import package_layout

        with package_layout(pretrained_model_name_or_path, **kwargs) as path:
            pipe = super().from_pretrained(path, **kwargs)
        if path is not pretrained_model_name_or_path:
            pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe

    @classmethod
    def from_default(cls, **kwargs) -> VideoDeblurPipeline:
        """Load the small default model embedded in the package (no download). `kwargs` go to `from_pretrained`."""
        if not os.path.isfile(os.path.join(DEFAULT_MODEL_PATH, "model_index.json")):
            raise FileNotFoundError(
                f"the embedded default model is missing from {DEFAULT_MODEL_PATH} (no model_index.json); "
                "reinstall the package or pass a model folder to `from_pretrained`"
            )
        return cls.from_pretrained(DEFAULT_MODEL_PATH, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # LoRA (stage 2 with --lora_rank): the diffusers LoRA file format, on the UNet's attention

    def load_lora_weights(self, path: str | os.PathLike, adapter_name: str = "default", scale: float = 1.0) -> None:
        """Load `pytorch_lora_weights.safetensors` (or a folder holding it) onto the UNet."""
        from .lora import load_lora

        load_lora(self, path, adapter_name=adapter_name, scale=scale)

    def fuse_lora(self) -> None:
        """Merge the loaded LoRA adapters into the UNet's weights (faster inference; the adapters are removed)."""
        from .lora import fuse_lora

        fuse_lora(self)

    # ------------------------------------------------------------------------------------------------------------
    # Sizes

    @property
    def vae_scale_factor(self) -> int:
        """How many pixels one latent covers along each side."""
        config = self.vae.config
        if hasattr(config, "block_out_channels"):
            return 2 ** (len(config.block_out_channels) - 1)
        return int(config.factor)

    @property
    def size_multiple(self) -> int:
        """Frame sides are padded to a multiple of this: the VAE's factor times the UNet's."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def default_tile_size(self) -> int | None:
        """The UNet's training size in pixels (`unet.config.sample_size`), or `None` (no tiling) if unknown."""
        sample_size = self.unet.config.sample_size
        if sample_size is None:
            return None
        if isinstance(sample_size, (list, tuple)):
            sample_size = min(sample_size)
        return int(sample_size) * self.vae_scale_factor

    @property
    def default_noise_scale(self) -> float:
        """The model's own `noise_scale` (`model_index.json`), used by a call that gives none: 1.0, the standard
        sampler, for a model saved without one."""
        return float(self.config.get("noise_scale", 1.0))

    @property
    def default_guidance_scale(self) -> float:
        """The model's own `guidance_scale` (`model_index.json`), used by a call that gives none: 2.0 for a model
        saved without one."""
        return float(self.config.get("guidance_scale", DEFAULT_GUIDANCE_SCALE))

    @property
    def guidance_scale(self) -> float:
        """The running (or last) call's guidance scale, which a call may set apart from the model's own
        (`pipe.config.guidance_scale`, `default_guidance_scale`); the model's own before any call."""
        return getattr(self, "_guidance_scale", self.default_guidance_scale)

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------------------------------------------------
    # Lifecycle steps

    def check_inputs(
        self,
        video,
        num_inference_steps: int,
        guidance_scale: float,
        strength: float,
        noise_scale: float,
        num_frames: int,
        frame_overlap: int,
        tile_size: int | None,
        tile_overlap: int | None,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str] | None,
        self_ensemble: int = 1,
    ) -> torch.Tensor:
        """Validate the options and return the clip as a float tensor (F, 3, H, W) in [0, 1]."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}")
        _check_guidance_scale(guidance_scale, "`guidance_scale`")
        if not 0 < strength <= 1:
            raise ValueError(f"`strength` must be in (0, 1], got {strength!r}")
        _check_noise_scale(noise_scale, "`noise_scale`")
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"`num_frames` must be a positive integer, got {num_frames!r}")
        if not isinstance(frame_overlap, int) or not 0 <= frame_overlap < num_frames:
            raise ValueError(
                f"`frame_overlap` must be an integer in [0, num_frames={num_frames}), got {frame_overlap!r}"
            )
        multiple = self.size_multiple
        if tile_size is not None:
            if not isinstance(tile_size, int) or tile_size < multiple or tile_size % multiple:
                raise ValueError(f"`tile_size` must be a positive multiple of {multiple} pixels, got {tile_size!r}")
        if tile_overlap is not None:
            # checked against the tile that will be used: the model's default when `tile_size` is not given
            tile = tile_size if tile_size is not None else self.default_tile_size
            if not isinstance(tile_overlap, int) or tile_overlap < 0 or (tile is not None and tile_overlap >= tile):
                bound = f"[0, tile_size={tile})" if tile is not None else "a non-negative integer"
                raise ValueError(f"`tile_overlap` must be in {bound} pixels, got {tile_overlap!r}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}")
        integral = isinstance(self_ensemble, numbers.Integral) and not isinstance(self_ensemble, bool)
        if not integral or self_ensemble not in SELF_ENSEMBLE_SIZES:
            raise ValueError(f"`self_ensemble` must be one of {SELF_ENSEMBLE_SIZES}, got {self_ensemble!r}")
        if self_ensemble > 1 and output_type == "latent":
            raise ValueError(
                f"`self_ensemble`={self_ensemble} averages decoded frames; it cannot return `output_type='latent'` "
                "(use 'pt', 'np' or 'pil', or self_ensemble=1)"
            )
        if callback_on_step_end_tensor_inputs is not None:
            unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"`callback_on_step_end_tensor_inputs` has {unknown}, expected a subset of "
                    f"{self._callback_tensor_inputs}"
                )
        return self.video_to_tensor(video)

    @staticmethod
    def video_to_tensor(video) -> torch.Tensor:
        """A list of PIL images, a uint8 or float array (F, H, W, 3) or a uint8 or float tensor (F, 3, H, W) in
        [0, 1] -> a float32 tensor (F, 3, H, W) in [0, 1]. Grayscale and RGBA images are converted to RGB."""
        if isinstance(video, PIL.Image.Image):
            video = [video]
        if isinstance(video, (list, tuple)):
            if len(video) == 0:
                raise ValueError("`video` is an empty list; expected at least one frame")
            if not all(isinstance(f, PIL.Image.Image) for f in video):
                kinds = sorted({type(f).__name__ for f in video})
                raise ValueError(f"`video` as a list must hold PIL images, got {kinds}")
            sizes = {f.size for f in video}
            if len(sizes) > 1:
                raise ValueError(f"all frames must have the same size, got sizes (W, H) {sorted(sizes)}")
            video = np.stack([np.asarray(f.convert("RGB")) for f in video])
        if isinstance(video, np.ndarray):
            if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
                raise ValueError(f"`video` as an array must be (F, H, W, 3), got shape {video.shape}")
            if video.dtype != np.uint8 and not np.issubdtype(video.dtype, np.floating):
                raise ValueError(f"`video` as an array must be uint8 or float, got dtype {video.dtype}")
            if video.dtype not in (np.uint8, np.float16, np.float32, np.float64):
                video = video.astype(np.float32)  # a float type torch does not take (float128)
            # a view of the caller's array: the one full-size copy is made below
            video = torch.from_numpy(video).permute(0, 3, 1, 2)  # (F, H, W, C) -> (F, C, H, W)
        if not isinstance(video, torch.Tensor):
            raise ValueError(
                "`video` must be a list of PIL images, an array (F, H, W, 3) or a tensor (F, 3, H, W), got "
                f"{type(video)}"
            )
        if video.ndim != 4 or video.shape[1] not in (1, 3, 4):
            raise ValueError(f"`video` as a tensor must be (F, 3, H, W), got shape {tuple(video.shape)}")
        if video.shape[0] == 0:
            raise ValueError("`video` has no frames")
        if video.shape[1] == 1:
            video = video.expand(-1, 3, -1, -1)
        elif video.shape[1] == 4:
            video = video[:, :3]
        if video.dtype != torch.uint8:
            if not video.is_floating_point():
                raise ValueError(f"`video` as a tensor must be uint8 or float, got dtype {video.dtype}")
            lo, hi = float(video.min()), float(video.max())
            if not (lo >= -1e-3 and hi <= 1 + 1e-3):  # nan fails this too
                raise ValueError(f"`video` values must lie in [0, 1] (or uint8), got range [{lo:.3g}, {hi:.3g}]")
        # One float32 copy, contiguous and never the caller's own memory, scaled and clamped in place.
        frames = torch.empty(video.shape, dtype=torch.float32, device=video.device)
        frames.copy_(video)
        return frames.div_(255.0) if video.dtype == torch.uint8 else frames.clamp_(0, 1)

    def encode_image(self, frames: torch.Tensor) -> torch.Tensor:
        """Embed frames (N, 3, H, W) in [0, 1] with both encoders: context tokens (N, 2, D).

        Token 0 comes from `image_encoder`, token 1 from `blur_encoder`. Not under `no_grad`: training calls it.
        """
        mean = torch.tensor(self.feature_extractor.image_mean, device=frames.device).view(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std, device=frames.device).view(1, 3, 1, 1)
        tokens = []
        for encoder in (self.image_encoder, self.blur_encoder):
            size = encoder.config.image_size
            pixels = F.interpolate(
                frames.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
            )
            pixels = ((pixels.clamp(0, 1) - mean) / std).to(dtype=encoder.dtype, device=encoder.device)
            tokens.append(encoder(pixel_values=pixels).image_embeds)  # (N, D)
        return torch.stack(tokens, dim=1)  # (N, 2, D)

    def encode_video(self, video: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """Frames (B, F, 3, H, W) in [0, 1] -> scaled latents (B, C, F, h, w), `chunk_size` frames at a time."""
        batch, frames = video.shape[:2]
        flat = video.reshape(batch * frames, *video.shape[2:])  # (B, F, 3, H, W) -> (B*F, 3, H, W)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        latents = []
        for chunk in flat.split(chunk_size):
            chunk = (chunk * 2 - 1).to(device=self.vae.device, dtype=self.vae.dtype)
            latents.append(self.vae.encode(chunk).latent_dist.mode())
        latents = (torch.cat(latents) - shift) * self.vae.config.scaling_factor
        latents = latents.reshape(batch, frames, *latents.shape[1:])
        return latents.permute(0, 2, 1, 3, 4)  # (B, F, C, h, w) -> (B, C, F, h, w)

    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """Scaled latents (B, C, F, h, w) -> frames (B, F, 3, H, W) in [0, 1], float32 on the CPU."""
        batch, _, frames = latents.shape[:3]
        latents = latents.permute(0, 2, 1, 3, 4)  # (B, C, F, h, w) -> (B, F, C, h, w)
        latents = latents.reshape(batch * frames, *latents.shape[2:])  # -> (B*F, C, h, w)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        decoded = []
        for chunk in latents.split(chunk_size):
            chunk = chunk.to(device=self.vae.device, dtype=self.vae.dtype) / self.vae.config.scaling_factor + shift
            image = self.vae.decode(chunk).sample
            decoded.append(((image.float() + 1) / 2).clamp(0, 1).cpu())
        decoded = torch.cat(decoded)
        return decoded.reshape(batch, frames, *decoded.shape[1:])

    def get_timesteps(self, num_inference_steps: int, strength: float, device) -> tuple[torch.Tensor, int]:
        """The schedule's timesteps, skipping the first `1 - strength` of them (img2img-style)."""
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        init_steps = min(int(round(num_inference_steps * strength)), num_inference_steps)
        if init_steps < 1:
            raise ValueError(
                f"`strength`={strength} with `num_inference_steps`={num_inference_steps} leaves no denoising step; "
                "raise either"
            )
        t_start = num_inference_steps - init_steps
        timesteps = self.scheduler.timesteps[t_start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        return timesteps, len(timesteps)

    def prepare_latents(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        init_latents: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        noise_scale: float = 1.0,
    ) -> torch.Tensor:
        """Pure noise scaled for the scheduler, or `init_latents` noised to `timestep` (`strength` < 1); the noise
        drawn is multiplied by `noise_scale` first."""
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * noise_scale
        if init_latents is None:
            return noise * self.scheduler.init_noise_sigma
        return self.scheduler.add_noise(init_latents.to(dtype), noise, timestep.reshape(1))

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    # ------------------------------------------------------------------------------------------------------------

    def _sample(
        self,
        pixels: torch.Tensor,
        num_inference_steps: int,
        strength: float,
        noise_scale: float,
        num_frames: int,
        frame_overlap: int,
        tile_size: int | None,
        tile_overlap: int | None,
        eta: float,
        generator,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs: list[str] | None,
        decode_chunk_size: int,
        decode: bool,
    ) -> torch.Tensor:
        """One sampler run on checked frames (F, 3, H, W): the decoded clip (1, F, 3, H, W) in [0, 1] on the CPU,
        or with `decode=False` its latents (blurred latents added back in residual mode)."""
        device = self._execution_device
        dtype = self.unet.dtype

        # 2. Pad frames to what the VAE and the UNet take (reflect where the frame is large enough)
        total_frames, _, height, width = pixels.shape
        multiple = self.size_multiple
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            pixels = F.pad(pixels, (0, pad_w, 0, pad_h), mode=mode)
        tile_size = tile_size if tile_size is not None else self.default_tile_size
        if tile_size is not None and tile_size >= max(pixels.shape[-2:]):
            tile_size = None
        if tile_size is not None and tile_overlap is None:
            tile_overlap = (tile_size // 4) // self.vae_scale_factor * self.vae_scale_factor

        # 3. Encode the blurred clip: latents for the channel concat, image tokens per temporal window
        cond_latents = self.encode_video(pixels[None], chunk_size=decode_chunk_size)  # (1, C, F, h, w)
        cond_latents = cond_latents.to(device=device, dtype=dtype)
        latent_h, latent_w = cond_latents.shape[-2:]
        plan = WindowPlan(
            total_frames,
            latent_h,
            latent_w,
            num_frames=num_frames,
            frame_overlap=frame_overlap,
            tile_size=None if tile_size is None else tile_size // self.vae_scale_factor,
            tile_overlap=0 if tile_overlap is None else tile_overlap // self.vae_scale_factor,
        )
        centres = [pixels[(start + end - 1) // 2] for start, end in plan.frame_spans]
        context = self.encode_image(torch.stack(centres).to(device)).to(dtype)  # (num_windows, 2, D)
        negative_context = torch.zeros_like(context)

        # 4. Prepare timesteps
        timesteps, num_inference_steps = self.get_timesteps(num_inference_steps, strength, device)
        self._num_timesteps = len(timesteps)

        # 5. Prepare latent variables (in residual mode the blurred clip is the origin: zero residual)
        shape = (1, self.unet.config.out_channels, total_frames, latent_h, latent_w)
        init_latents = None
        if strength < 1:
            init_latents = torch.zeros_like(cond_latents) if self.config.residual else cond_latents
        latents = self.prepare_latents(shape, dtype, device, generator, init_latents, timesteps[:1], noise_scale)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 6. Denoising loop: every window x tile predicts, predictions are blended, then one scheduler step
        with self.progress_bar(total=len(timesteps) * len(plan)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                latent_model_input = self.scheduler.scale_model_input(latents, t)
                model_output = torch.zeros_like(latents)
                for window, frames, rows, cols, weight in plan:
                    region = (slice(None), slice(None), frames, rows, cols)
                    unet_input = torch.cat([latent_model_input[region], cond_latents[region]], dim=1)
                    window_context = context[window : window + 1]
                    if self.do_classifier_free_guidance:
                        unet_input = torch.cat([unet_input] * 2)
                        window_context = torch.cat([negative_context[window : window + 1], window_context])
                    prediction = self.unet(unet_input, t, encoder_hidden_states=window_context, return_dict=False)[0]
                    if self.do_classifier_free_guidance:
                        uncond, cond = prediction.chunk(2)
                        prediction = uncond + self.guidance_scale * (cond - uncond)
                    model_output[region] += weight.to(device=device, dtype=prediction.dtype) * prediction
                    progress_bar.update()

                latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    tensors = {"latents": latents}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs or []}
                    callback_kwargs["num_windows"] = len(plan)
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    if callback_outputs is not None:
                        latents = callback_outputs.pop("latents", latents)

        # 7. Decode (adding the blurred latents back in residual mode) and crop the padding away
        if self.config.residual:
            latents = latents + cond_latents
        if not decode:
            return latents
        return self.decode_latents(latents, chunk_size=decode_chunk_size)[:, :, :, :height, :width]

    @torch.no_grad()
    def __call__(
        self,
        video,
        num_inference_steps: int = 50,
        guidance_scale: float | None = None,
        strength: float = 1.0,
        noise_scale: float | None = None,
        num_frames: int = 16,
        frame_overlap: int = 4,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        decode_chunk_size: int = 8,
        self_ensemble: int = 1,
        return_dict: bool = True,
    ) -> VideoDeblurPipelineOutput | tuple:
        r"""
        Deblur a clip.

        Args:
            video (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
                The blurred clip: PIL images, a uint8 or float array (F, H, W, 3), or a uint8 or float tensor
                (F, 3, H, W) in [0, 1]. Any length and size: long clips are denoised in overlapping windows and
                large frames in overlapping tiles; sizes that are not a multiple of `pipe.size_multiple` are padded
                and cropped back.
            num_inference_steps (`int`, defaults to 50): denoising steps (before `strength`).
            guidance_scale (`float`, *optional*):
                Classifier-free guidance on the image tokens; `<= 1` runs the conditional pass only (half the cost).
                Defaults to the model's `pipe.config.guidance_scale` (2.0 for a model saved without one).
            strength (`float`, defaults to 1.0):
                1 starts from pure noise; below 1 starts from the blurred latents noised to that fraction of the
                schedule and runs only `strength * num_inference_steps` steps.
            noise_scale (`float`, *optional*):
                What the starting noise is multiplied by (>= 0); defaults to the model's `pipe.config.noise_scale`.
                Below 1 the sampler's answer moves from a single draw towards the model's mean estimate: sharper
                texture is traded for fidelity (higher PSNR / SSIM, less flicker); 0 with `eta` = 0 makes the run
                the same for every seed. DDIM's `eta` noise is not scaled.
            num_frames (`int`, defaults to 16): frames per temporal window.
            frame_overlap (`int`, defaults to 4): frames shared by neighbouring windows.
            tile_size (`int`, *optional*):
                Spatial tile side in pixels (a multiple of `pipe.size_multiple`); defaults to the UNet's training
                size (`unet.config.sample_size` latents), or no tiling when that is unset.
            tile_overlap (`int`, *optional*):
                Pixels shared by neighbouring tiles, in [0, tile size); rounded down to a multiple of
                `pipe.vae_scale_factor`. Defaults to a quarter tile.
            eta (`float`, defaults to 0.0): DDIM's eta.
            generator (`torch.Generator`, *optional*): makes the run deterministic.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after every denoising step;
                `callback_kwargs` holds the tensors named in `callback_on_step_end_tensor_inputs` plus
                `num_windows`. Set `pipe._interrupt = True` in it to stop the run after that step.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): tensors passed to the callback.
            decode_chunk_size (`int`, defaults to 8): frames encoded / decoded by the VAE at once.
            self_ensemble (`int`, defaults to 1):
                1, 2, 4 or 8. Above 1 the clip is deblurred that many times, under mirrored (2, 4) and also
                transposed (8) frames, and the outputs, mapped back, are averaged: that many times the cost for a
                steadier, more faithful answer (the embedded model's card has the gain). Each run draws its own
                starting noise from `generator`. The callback is called for every step of every run: `step`
                starts again at 0 in each, and its latents are in that run's mirrored / transposed layout (height
                and width swapped in runs 5 to 8). An interrupt ends the ensemble with the runs finished before it
                (the interrupted run itself only when it is the first). Not with `output_type="latent"`.
            return_dict (`bool`, defaults to `True`): return a [`VideoDeblurPipelineOutput`] instead of a tuple.

        Returns:
            [`VideoDeblurPipelineOutput`] or `tuple`: `frames[0]` is the deblurred clip, with the input's frame count
            and size.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs
        if noise_scale is None:
            noise_scale = self.default_noise_scale
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        pixels = self.check_inputs(
            video,
            num_inference_steps,
            guidance_scale,
            strength,
            noise_scale,
            num_frames,
            frame_overlap,
            tile_size,
            tile_overlap,
            output_type,
            callback_on_step_end_tensor_inputs,
            self_ensemble,
        )
        if not isinstance(decode_chunk_size, int) or decode_chunk_size < 1:
            raise ValueError(f"`decode_chunk_size` must be a positive integer, got {decode_chunk_size!r}")
        self._guidance_scale = guidance_scale
        self._interrupt = False
        # 2-7. Sample and decode: in `_sample`, since the self-ensemble runs those steps once per transform
        sample_kwargs = dict(
            num_inference_steps=num_inference_steps,
            strength=strength,
            noise_scale=noise_scale,
            num_frames=num_frames,
            frame_overlap=frame_overlap,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            eta=eta,
            generator=generator,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            decode_chunk_size=decode_chunk_size,
            decode=output_type != "latent",
        )
        if self_ensemble == 1:
            frames = self._sample(pixels, **sample_kwargs)
        else:
            total, runs = None, 0
            for transform in SELF_ENSEMBLE_TRANSFORMS[: int(self_ensemble)]:
                run = self._sample(_frames_transform(pixels, transform).contiguous(), **sample_kwargs)
                if self.interrupt and runs > 0:
                    break  # a run stopped part-way would mix its noisy frames into the finished ones
                run = _frames_transform(run, transform, inverse=True)
                total = run if total is None else total + run
                runs += 1
                if self.interrupt:
                    break
            frames = total / runs
        if output_type == "np":
            frames = frames.permute(0, 1, 3, 4, 2).numpy()  # (B, F, 3, H, W) -> (B, F, H, W, 3)
        elif output_type == "pil":
            arrays = (frames.permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
            frames = [[PIL.Image.fromarray(frame) for frame in clip] for clip in arrays]

        # 8. Offload all models
        self.maybe_free_model_hooks()

        if not return_dict:
            return (frames,)
        return VideoDeblurPipelineOutput(frames=frames)
