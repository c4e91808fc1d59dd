"""Temporal consistency error (TCE)."""

from __future__ import annotations

import numpy as np

from .psnr_ssim import to_uint8


def tce(output: np.ndarray, target: np.ndarray) -> float:
    """Temporal consistency error, in 8-bit units (0-255 scale); 0 when every frame-to-frame change matches.

    The mean absolute difference between the consecutive-frame differences of the output and of the ground
    truth, ``mean |(o[j+1] - o[j]) - (g[j+1] - g[j])|`` over all pixels, channels and pairs: the quantity
    the coherence loss of Eq. 5 penalises (there squared, on latents).

    Args:
        output: frames (F, H, W, 3), uint8 or float in [0, 1] (rounded to uint8 first, as for PSNR).
        target: ground-truth frames, same shape.
    """
    output, target = to_uint8(output), to_uint8(target)
    if output.shape != target.shape:
        raise ValueError(f"Output and target must have the same shape, got {output.shape} and {target.shape}")
    if output.ndim != 4 or output.shape[0] < 2:
        raise ValueError(f"TCE needs frames (F, H, W, 3) with F >= 2, got shape {output.shape}")
    output, target = output.astype(np.float64), target.astype(np.float64)
    return float(np.mean(np.abs(np.diff(output, axis=0) - np.diff(target, axis=0))))
