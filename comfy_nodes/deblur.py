"""`VideoDeblur`: deblurs an IMAGE batch (the batch axis is time) with a loaded pipeline."""

from __future__ import annotations

import numpy as np
import torch

from . import runtime
from .image_convert import images_to_video, video_to_images
from .loader import CATEGORY, PIPELINE_TYPE

# Frames narrower than this are refused: there is nothing to deblur in them, and below the VAE's factor a frame
# would not cover one latent.
MIN_FRAME_SIDE = 8
# Frames per pass of the pipeline, as `video-deblur run --segment-frames` (pipeline_video_deblur.segments).
DEFAULT_SEGMENT_FRAMES = 64
# The pipeline's `self_ensemble` sizes, as a ComfyUI combo (strings: the values saved workflows hold)
SELF_ENSEMBLE_CHOICES = ("1", "2", "4", "8")


class VideoDeblur:
    """Deblurs a clip: an IMAGE batch whose frames are consecutive, returned at the same size and frame count."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (PIPELINE_TYPE, {"tooltip": "The pipeline from the Load Video Deblur Model node."}),
                "images": (
                    "IMAGE",
                    {"tooltip": "The blurred frames, in order (e.g. the images of Get Video Components)."},
                ),
                "steps": (
                    "INT",
                    {
                        "default": 50,
                        "min": 1,
                        "max": 1000,
                        "tooltip": "Denoising steps (DDIM). Fewer is faster; 'strength' below 1 runs only that "
                        "fraction of them.",
                    },
                ),
                "guidance_scale": (
                    "FLOAT",
                    {
                        "default": -1.0,
                        "min": -1.0,
                        "max": 20.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Classifier-free guidance on the image embeddings. 0 to 1 skips the "
                        "unconditional pass (twice as fast). -1 uses the model's own choice (2 for a model that "
                        "sets none).",
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.01,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "1 starts from pure noise; lower values start from the noised blurred clip and "
                        "run only strength x steps steps.",
                    },
                ),
                "num_frames": (
                    "INT",
                    {
                        "default": 16,
                        "min": 1,
                        "max": 256,
                        "tooltip": "Frames per temporal window. Longer clips are processed in overlapping "
                        "windows; the model's activations grow with this. The clip's latents are kept whole "
                        "(so that windows agree at every step) one segment at a time: see segment_frames.",
                    },
                ),
                "frame_overlap": (
                    "INT",
                    {
                        "default": 4,
                        "min": 0,
                        "max": 255,
                        "tooltip": "Frames shared by neighbouring windows and blended at every step, so that "
                        "windows agree. Must be less than num_frames.",
                    },
                ),
                "tile_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 8192,
                        "step": 8,
                        "tooltip": "Spatial tile side in pixels; 0 uses the model's training size. Must be a "
                        "multiple of the model's size multiple (64 for Stable Diffusion VAEs). A value at "
                        "least as large as the frame turns tiling off.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "Seed of the initial noise; the same seed and settings give the same result.",
                    },
                ),
            },
            # Inputs added after the first release are optional, so that saved workflows without them still load
            # (ComfyUI refuses a prompt that lacks a required input, and the UI maps saved widget values by
            # position); the function's defaults are what such workflows get.
            "optional": {
                "noise_scale": (
                    "FLOAT",
                    {
                        "default": -1.0,
                        "min": -1.0,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "Multiplies the starting noise: lower values trade invented texture for "
                        "fidelity (closer to the model's mean estimate, less flicker). -1 uses the model's own "
                        "choice.",
                    },
                ),
                "segment_frames": (
                    "INT",
                    {
                        "default": DEFAULT_SEGMENT_FRAMES,
                        "min": 0,
                        "max": 4096,
                        "tooltip": "Frames denoised per pass: a longer clip is deblurred segment by segment, "
                        "neighbouring segments sharing frame_overlap frames blended with a raised cosine, so the "
                        "device's memory stays that of one segment however long the clip. A clip up to 1.5 x this "
                        "is one pass. 0 denoises the whole clip at once. At least num_frames.",
                    },
                ),
                "self_ensemble": (
                    list(SELF_ENSEMBLE_CHOICES),
                    {
                        "default": "1",
                        "tooltip": "Deblurs the clip this many times, under mirrored (2, 4) and also transposed (8) "
                        "frames, and averages the results mapped back: that many times the time for a steadier, "
                        "more faithful result. 1 runs once.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The deblurred frames: same count, size and channels as the input.",)
    FUNCTION = "deblur"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Deblurs a video given as an IMAGE batch with a latent video diffusion model, in overlapping temporal "
        "windows and spatial tiles, segment by segment for long clips. Progress advances per denoising step; cancel "
        "stops between steps."
    )

    def deblur(
        self,
        pipeline: runtime.LoadedPipeline,
        images: torch.Tensor,
        steps: int,
        guidance_scale: float,
        strength: float,
        num_frames: int,
        frame_overlap: int,
        tile_size: int,
        seed: int,
        noise_scale: float = -1.0,
        segment_frames: int = DEFAULT_SEGMENT_FRAMES,
        self_ensemble: str = "1",
    ) -> tuple[torch.Tensor]:
        if not isinstance(pipeline, runtime.LoadedPipeline):
            raise ValueError(
                f"`pipeline` must come from the Load Video Deblur Model node, got {type(pipeline).__name__}"
            )
        pipe = pipeline.pipeline
        video = images_to_video(images)  # (F, 3, H, W) in [0, 1]
        height, width = video.shape[-2:]
        minimum = max(MIN_FRAME_SIDE, pipe.vae_scale_factor)
        if min(height, width) < minimum:
            raise ValueError(
                f"frames of {height} x {width} px are too small: this model takes frames of at least "
                f"{minimum} x {minimum} px"
            )
        segments = runtime.pipeline_module("segments")
        segments.check_segment_frames(int(segment_frames), int(num_frames), int(frame_overlap))
        spans = segments.segment_spans(len(video), int(segment_frames), int(frame_overlap))
        runtime.check_interrupt()

        # Any negative noise_scale or guidance_scale (the widgets' -1) asks for the model's own, config.noise_scale
        # or config.guidance_scale; nan is passed on and refused by the pipeline with the value. The guidance is
        # resolved here, not left to the call: an older installed package has no model default and refuses None
        # (its fixed default was 2).
        noise_scale = None if float(noise_scale) < 0 else float(noise_scale)
        own_guidance = getattr(pipe, "default_guidance_scale", 2.0)
        guidance_scale = own_guidance if float(guidance_scale) < 0 else float(guidance_scale)
        if str(self_ensemble) not in SELF_ENSEMBLE_CHOICES:
            raise ValueError(f"`self_ensemble` must be one of {list(SELF_ENSEMBLE_CHOICES)}, got {self_ensemble!r}")
        ensemble = int(self_ensemble)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        longest = max(count for _, count in spans)  # the device holds one segment's latents at a time
        memory = runtime.run_memory(pipe, longest, height, width, int(num_frames), int(tile_size) or None)
        progress = runtime.ComfyProgress(frames=sum(count for _, count in spans), runs=ensemble)
        runtime.move_to_run_device(pipeline, memory)
        try:
            sharp = segments.deblur_segments(
                pipe,
                video.permute(0, 2, 3, 1).numpy(),  # (F, H, W, 3) float32 frames, views of the input
                segment_frames=int(segment_frames),
                frame_overlap=int(frame_overlap),
                num_frames=int(num_frames),
                on_segment=progress.start_segment,
                as_uint8=False,
                num_inference_steps=int(steps),
                guidance_scale=guidance_scale,
                strength=float(strength),
                noise_scale=noise_scale,
                tile_size=int(tile_size) or None,
                self_ensemble=ensemble,
                generator=generator,
                callback_on_step_end=progress,
            )
            output = torch.from_numpy(np.stack(list(sharp))).permute(0, 3, 1, 2)  # (F, 3, H, W)
        finally:
            runtime.move_to_offload_device(pipeline)
        return (video_to_images(output, like=images),)
