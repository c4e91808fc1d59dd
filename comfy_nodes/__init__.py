"""ComfyUI nodes for video deblurring: thin adapters over `pipeline_video_deblur`. This file only registers them."""

from . import runtime
from .deblur import VideoDeblur
from .loader import VideoDeblurLoader

runtime.register_model_folder()  # models/video_deblur/, beside extra_model_paths.yaml's video_deblur: folders

NODE_CLASS_MAPPINGS = {
    "VideoDeblurLoader": VideoDeblurLoader,
    "VideoDeblur": VideoDeblur,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoDeblurLoader": "Load Video Deblur Model",
    "VideoDeblur": "Video Deblur",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
