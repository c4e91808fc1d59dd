from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class VideoDeblurPipelineOutput(BaseOutput):
    r"""
    Output of [`VideoDeblurPipeline`].

    Args:
        frames (`list[list[PIL.Image.Image]]`, `np.ndarray` or `torch.Tensor`):
            The deblurred clip, `frames[0]`: a list of PIL images (`output_type="pil"`), a float array
            (1, F, H, W, 3) in [0, 1] (`"np"`), a tensor (1, F, 3, H, W) in [0, 1] (`"pt"`), or the denoised
            latents (1, C, F, h, w) (`"latent"`).
    """

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor
