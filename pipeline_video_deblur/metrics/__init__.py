"""Metrics by the BasicSR protocol (PSNR, SSIM), LPIPS from local weights only, temporal consistency error,
classical baselines, comparison figures and the ``video-deblur eval`` command."""

from .baselines import identity, unsharp
from .evaluate import VideoResult, evaluate_sequences, mean_over, score_video
from .figures import comparison_figure, error_map
from .lpips_metric import LPIPSMetric
from .psnr_ssim import psnr, ssim, to_uint8
from .temporal import tce

__all__ = [
    "LPIPSMetric",
    "VideoResult",
    "comparison_figure",
    "error_map",
    "evaluate_sequences",
    "identity",
    "mean_over",
    "psnr",
    "score_video",
    "ssim",
    "tce",
    "to_uint8",
    "unsharp",
]
