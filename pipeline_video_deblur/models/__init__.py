"""The deblurring UNet and the weight-free pixel-shuffle VAE."""

from .pixel_shuffle_vae import PixelShuffleVAE
from .unet_3d_deblur import VideoDeblurUNet3DModel

__all__ = ["PixelShuffleVAE", "VideoDeblurUNet3DModel"]
