"""A weight-free, exactly invertible "VAE": pixel unshuffle to latents and pixel shuffle back (DESIGN 3).

It has the interface the pipeline and the training scripts use from `AutoencoderKL` (`encode(x).latent_dist`,
`decode(z).sample`, `config.scaling_factor`, `config.latent_channels`, `config.block_out_channels` for the
downsampling factor), so it can stand where a learned VAE stands and is saved and loaded like any component.
Its round trip is lossless: the quality ceiling of a latent model built on it is the model, never the VAE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    r"""
    Pixel unshuffle by `factor` as the encoder, pixel shuffle as the decoder; no weights.

    Parameters:
        in_channels (`int`, defaults to 3): image channels.
        factor (`int`, defaults to 2): spatial downsampling factor; latents have `in_channels * factor**2` channels.
        scaling_factor (`float`, defaults to 1.0): latents are multiplied by this, as for `AutoencoderKL`.
        shift_factor (`float`, defaults to 0.0): subtracted before scaling, as for `AutoencoderKL`.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, factor: int = 2, scaling_factor: float = 1.0, shift_factor: float = 0.0):
        super().__init__()
        if factor < 1:
            raise ValueError(f"`factor` must be a positive integer, got {factor}")
        # One saved buffer, so that `.device` / `.dtype` / `.to()` behave as for a real model and
        # `save_pretrained` writes a weights file that `from_pretrained` expects to find.
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor**2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """`x`: images in [-1, 1], (N, C, H, W) with H and W multiples of `factor`."""
        if x.shape[-1] % self.config.factor or x.shape[-2] % self.config.factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of factor {self.config.factor}")
        mean = F.pixel_unshuffle(x, self.config.factor)
        dist = DiagonalGaussianDistribution(torch.cat([mean, torch.zeros_like(mean)], dim=1), deterministic=True)
        if not return_dict:
            return (dist,)
        return AutoencoderKLOutput(latent_dist=dist)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        sample = F.pixel_shuffle(z, self.config.factor)
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        return self.decode(self.encode(sample).latent_dist.mode(), return_dict=return_dict)
