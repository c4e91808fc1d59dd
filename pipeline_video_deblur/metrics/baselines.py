"""Classical baselines every model has to beat: the blurred input itself and a tuned unsharp mask."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .psnr_ssim import to_uint8

# Chosen by `tune_unsharp` (grid search of the mean PSNR over videos) on the TRAIN split of
# `video-deblur synth --split train --sequences 4 --frames 16 --size 128x128 --seed 0`, never the test split:
# amounts 0.1-2.0 x radii 0.5-6 px; best amount 0.2, radius 5 px: 24.97 dB against 24.78 dB for the input.
# Motion blur is not a Gaussian blur, so a strong unsharp mask only adds ringing; the best is a mild one.
UNSHARP_RADIUS = 5.0
UNSHARP_AMOUNT = 0.2


def identity(frames: np.ndarray) -> np.ndarray:
    """The blurred input, unchanged: uint8 (F, H, W, 3)."""
    return to_uint8(frames)


def unsharp(frames: np.ndarray, amount: float = UNSHARP_AMOUNT, radius: float = UNSHARP_RADIUS) -> np.ndarray:
    """Unsharp mask, frame by frame: ``x + amount * (x - gaussian(x, radius))``, clipped and rounded.

    Args:
        frames: uint8 (F, H, W, 3) or (H, W, 3), or float in [0, 1].
        amount: strength (0 returns the input).
        radius: standard deviation of the Gaussian blur, in pixels, applied over H and W only.

    Returns:
        uint8 frames of the input's shape.
    """
    if amount < 0 or radius <= 0:
        raise ValueError(f"unsharp needs amount >= 0 and radius > 0, got amount={amount}, radius={radius}")
    x = to_uint8(frames).astype(np.float32)
    sigma = [0.0] * (x.ndim - 3) + [radius, radius, 0.0]
    sharpened = x + amount * (x - gaussian_filter(x, sigma=sigma, mode="reflect"))
    return np.round(np.clip(sharpened, 0, 255)).astype(np.uint8)


def tune_unsharp(
    root: str,
    amounts: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0),
    radii: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0),
    split: str = "train",
) -> list[tuple[float, float, float]]:
    """Grid search of ``unsharp`` on a GoPro-layout TRAIN split.

    Returns ``[(mean PSNR over videos, amount, radius)]``, best first; the input itself is the entry with
    amount 0. Tune on training data only; the defaults above came from this on synthetic train data.
    """
    from ..data.datasets import GoProDataset
    from .psnr_ssim import psnr

    if split != "train":
        raise ValueError(f"Tune the baseline on the train split, not {split!r}")
    dataset = GoProDataset(root, split="train", whole_sequences=True, augment=False)
    videos = [dataset.load_frames(i) for i in range(len(dataset.sequences))]
    scores = []
    for amount in amounts:
        for radius in radii:
            per_video = [
                np.mean([psnr(o, s) for o, s in zip(unsharp(b, amount, radius), sharp)]) for b, sharp in videos
            ]
            scores.append((float(np.mean(per_video)), amount, radius))
    identity_score = float(np.mean([np.mean([psnr(b_, s) for b_, s in zip(b, sharp)]) for b, sharp in videos]))
    scores.append((identity_score, 0.0, 0.0))
    return sorted(scores, reverse=True)
