"""How the benchmarks write their results: each file appears whole or not at all (written beside, then renamed),
and every plot is drawn the same way (off-screen, labelled, 100 dpi PNG)."""

from __future__ import annotations

import json
import os

from pipeline_video_deblur.atomic import atomic_path

__all__ = ["atomic_path", "figure_path", "metric_axis", "pyplot", "save_figure", "write_json"]

# y-axis labels of the quality metrics the benchmarks plot
METRIC_LABELS = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "tce": "TCE (8-bit, lower is better)",
    "detail": "detail (mean square of the high-pass, 8-bit)",
}


def write_json(path: str, data, **dump_kwargs) -> None:
    """``data`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, **dump_kwargs)


def figure_path(out: str, figure: str | None) -> str:
    """Where a benchmark's plot goes: ``figure`` when given, else beside ``out`` with ``.png``, so that a run
    with its own ``--out`` never overwrites the committed figure of another run."""
    return figure or os.path.splitext(out)[0] + ".png"


def pyplot():
    """``matplotlib.pyplot`` on the off-screen Agg backend (benchmarks run where no display is)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_axis(axis, key: str, xlabel: str, baseline: float | None = None) -> None:
    """Label ``axis`` for metric ``key`` (psnr, ssim or tce) against ``xlabel``, with a grid and, given, the
    blurred input's ``baseline`` as a dashed grey line."""
    if baseline is not None:
        axis.axhline(baseline, linestyle="--", color="grey", label="blurred input")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(METRIC_LABELS[key])
    axis.grid(alpha=0.3)


def save_figure(figure, path: str) -> None:
    """Lay ``figure`` out tightly and write it to ``path`` as a 100 dpi PNG, atomically; then free it."""
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    pyplot().close(figure)
