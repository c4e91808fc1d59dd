"""Fig.-4-style comparison images: blurred | output | sharp | error map, with PSNR on the panels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .psnr_ssim import psnr, to_uint8

ERROR_MAP_MAX = 64.0  # 8-bit units at the top of the colour scale; fixed so that figures compare across runs


def error_map(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel error ``mean_c |output - target|`` in 8-bit units, float (H, W); frames (H, W, 3)."""
    return np.abs(to_uint8(output).astype(np.float64) - to_uint8(target).astype(np.float64)).mean(axis=-1)


def _format_psnr(value: float) -> str:
    return "PSNR inf dB" if np.isinf(value) else f"PSNR {value:.2f} dB"


def comparison_figure(
    blur: np.ndarray,
    output: np.ndarray,
    sharp: np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
    method: str = "output",
) -> Path:
    """Write one comparison image to ``path`` (PNG).

    Panels: blurred input (its PSNR), ``method``'s output (its PSNR), sharp ground truth, and the
    colour-mapped error ``|output - sharp|`` (0 to 64 in 8-bit units, with the output's PSNR).

    Args:
        blur, output, sharp: one frame each, uint8 (H, W, 3) or float in [0, 1].
        path: the PNG to write; its folder is created.
        title: a line above the panels (e.g. sequence and frame name).
        method: the output panel's label.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    blur, output, sharp = to_uint8(blur), to_uint8(output), to_uint8(sharp)
    height, width = sharp.shape[:2]
    panel_w = 3.2
    fig = Figure(figsize=(4 * panel_w + 0.6, panel_w * height / width + 0.9), dpi=max(100, int(width / panel_w)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    panels = [
        (blur, f"blurred input\n{_format_psnr(psnr(blur, sharp))}"),
        (output, f"{method}\n{_format_psnr(psnr(output, sharp))}"),
        (sharp, "sharp (ground truth)\n"),
    ]
    for ax, (image, label) in zip(axes, panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=9)
    err = axes[3].imshow(error_map(output, sharp), cmap="inferno", vmin=0, vmax=ERROR_MAP_MAX, interpolation="nearest")
    axes[3].set_title(f"|{method} - sharp| (0-{ERROR_MAP_MAX:.0f})\n{_format_psnr(psnr(output, sharp))}", fontsize=9)
    fig.colorbar(err, ax=axes[3], fraction=0.046, pad=0.02)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path
