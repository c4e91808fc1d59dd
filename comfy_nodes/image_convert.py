"""ComfyUI IMAGE batches to and from the pipeline's clips. Pure torch: no ComfyUI, no pipeline.

A ComfyUI `IMAGE` is a float tensor (B, H, W, C) in [0, 1], channels last, usually C = 3; some nodes give
C = 4 (RGBA) or C = 1. In a video graph the batch axis is time. The pipeline takes and gives a float clip
(F, 3, H, W) in [0, 1], channels first.
"""

from __future__ import annotations

import torch

# Resamplers with negative lobes (bicubic, lanczos) overshoot [0, 1] by a few hundredths; that much is clamped.
# Anything further out is a different convention (0-255, [-1, 1]) and is refused.
OVERSHOOT = 0.1


def images_to_video(images: torch.Tensor) -> torch.Tensor:
    """IMAGE (F, H, W, C) in [0, 1], C in {1, 3, 4} -> clip (F, 3, H, W) float32 in [0, 1] on the CPU.

    Alpha is dropped (put back by `video_to_images`), one channel is repeated to three. Values within
    `OVERSHOOT` of [0, 1] are clamped; further out, NaN or infinity raise a `ValueError`.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"`images` must be a ComfyUI IMAGE tensor (F, H, W, C), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"`images` must be an IMAGE batch (F, H, W, C), got shape {tuple(images.shape)}")
    frames, height, width, channels = images.shape
    if frames == 0:
        raise ValueError(f"`images` is an empty batch: no frames to deblur (shape {tuple(images.shape)})")
    if channels not in (1, 3, 4):
        raise ValueError(f"`images` must have 1, 3 or 4 channels (last axis), got shape {tuple(images.shape)}")
    if height == 0 or width == 0:
        raise ValueError(f"`images` has empty frames, shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"`images` must be a float IMAGE in [0, 1], got dtype {images.dtype}")
    video = images.detach().to(device="cpu", dtype=torch.float32)
    if not bool(torch.isfinite(video).all()):
        raise ValueError("`images` holds NaN or infinite values")
    lo, hi = float(video.min()), float(video.max())
    if lo < -OVERSHOOT or hi > 1 + OVERSHOOT:
        raise ValueError(f"`images` values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    video = video[..., :3] if channels == 4 else video.expand(-1, -1, -1, 3) if channels == 1 else video
    video = video.permute(0, 3, 1, 2)  # (F, H, W, 3) -> (F, 3, H, W)
    return video.clamp(0, 1).contiguous()


def video_to_images(video: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Clip (F, 3, H, W) in [0, 1] -> IMAGE (F, H, W, C) float32 on the CPU, shaped like the input IMAGE `like`.

    RGBA input gets its own alpha back; a one-channel input gets the mean of the three channels.
    """
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"`video` must be a clip (F, 3, H, W), got shape {tuple(video.shape)}")
    frames, _, height, width = video.shape
    if (frames, height, width) != tuple(like.shape[:3]):
        raise ValueError(
            f"the pipeline returned {frames} frames of {height} x {width}, "
            f"the input IMAGE has {like.shape[0]} of {like.shape[1]} x {like.shape[2]}"
        )
    images = video.detach().to(device="cpu", dtype=torch.float32).clamp(0, 1)
    images = images.permute(0, 2, 3, 1)  # (F, 3, H, W) -> (F, H, W, 3)
    channels = like.shape[-1]
    if channels == 4:
        alpha = like[..., 3:].detach().to(device="cpu", dtype=torch.float32)
        images = torch.cat([images, alpha], dim=-1)
    elif channels == 1:
        images = images.mean(dim=-1, keepdim=True)
    return images.contiguous()
