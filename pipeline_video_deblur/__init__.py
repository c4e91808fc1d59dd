"""Video deblurring with a latent video diffusion model."""

from .models import PixelShuffleVAE, VideoDeblurUNet3DModel
from .pipeline_output import VideoDeblurPipelineOutput
from .pipeline_video_deblur import DEFAULT_MODEL_PATH, VideoDeblurPipeline

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL_PATH",
    "PixelShuffleVAE",
    "VideoDeblurPipeline",
    "VideoDeblurPipelineOutput",
    "VideoDeblurUNet3DModel",
]
