"""PSNR and SSIM by the BasicSR protocol (basicsr/metrics/psnr_ssim.py).

RGB frames, outputs rounded to uint8, crop border 0; SSIM with an 11 x 11 Gaussian window (sigma 1.5) per
channel, on the 'valid' region, averaged over channels. Frames are uint8 (H, W, 3) or float (H, W, 3) in
[0, 1]; floats are clipped to [0, 1] and rounded to uint8 as BasicSR's ``tensor2img`` does.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

_SSIM_RADIUS = 5  # 11 x 11 window
_SSIM_SIGMA = 1.5
# Tolerance for float frames slightly outside [0, 1] (numerical noise); farther out is a range error.
_FLOAT_RANGE_TOLERANCE = 1e-3


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """uint8 unchanged; float in [0, 1] -> clipped, ``round(x * 255)`` as uint8. Any shape."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame
    if not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(f"Frames must be uint8 or float in [0, 1], got dtype {frame.dtype}")
    low, high = float(np.min(frame)), float(np.max(frame))
    if low < -_FLOAT_RANGE_TOLERANCE or high > 1 + _FLOAT_RANGE_TOLERANCE:
        raise ValueError(f"Float frames must lie in [0, 1], got values in [{low}, {high}]")
    return np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_uint8(a), to_uint8(b)
    if a.shape != b.shape:
        raise ValueError(f"Frames must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"A frame must be (H, W, 3) or (H, W), got shape {a.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two frames (uint8 or float in [0, 1], (H, W, 3)); ``inf`` for identical frames."""
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_taps() -> np.ndarray:
    x = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    taps = np.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return taps / taps.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of an (H, W) map, then the valid region (border of the window radius cut)."""
    out = correlate1d(correlate1d(x, taps, axis=0, mode="reflect"), taps, axis=1, mode="reflect")
    r = _SSIM_RADIUS
    return out[r:-r, r:-r]


def _ssim_channel(a: np.ndarray, b: np.ndarray, taps: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a**2
    var_b = _filter_valid(b * b, taps) - mu_b**2
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM between two frames (uint8 or float in [0, 1], (H, W, 3) or (H, W)), 1.0 for identical frames.

    BasicSR's ``calculate_ssim``: per channel, 11 x 11 Gaussian window with sigma 1.5, constants
    (0.01 * 255)^2 and (0.03 * 255)^2, mean over the valid region, then over channels. Frames must be at
    least 11 x 11.
    """
    a, b = _pair(a, b)
    if min(a.shape[:2]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs frames of at least 11 x 11, got {a.shape[:2]}")
    taps = _gaussian_taps()
    if a.ndim == 2:
        return _ssim_channel(a, b, taps)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c], taps) for c in range(a.shape[-1])]))
