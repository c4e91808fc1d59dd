"""Video deblurring with a latent video diffusion model.

The public names are imported lazily, so that `video-deblur` subcommands and the data and metrics modules
start without loading diffusers until they need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_MODEL_PATH": ".pipeline_video_deblur",
    "VideoDeblurPipeline": ".pipeline_video_deblur",
    "VideoDeblurPipelineOutput": ".pipeline_output",
    "PixelShuffleVAE": ".models.pixel_shuffle_vae",
    "VideoDeblurUNet3DModel": ".models.unet_3d_deblur",
    "deblur_segments": ".segments",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .models.pixel_shuffle_vae import PixelShuffleVAE  # noqa: F401
    from .models.unet_3d_deblur import VideoDeblurUNet3DModel  # noqa: F401
    from .pipeline_output import VideoDeblurPipelineOutput  # noqa: F401
    from .pipeline_video_deblur import DEFAULT_MODEL_PATH, VideoDeblurPipeline  # noqa: F401
    from .segments import deblur_segments  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
