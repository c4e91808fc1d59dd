"""The deblurring UNet: diffusers' `UNet3DConditionModel` (the ModelScope T2V UNet) plus gradient checkpointing.

The blurred clip's latents are concatenated with the noisy latents on the channel axis (DESIGN 2.1), so a
deblurring UNet has `in_channels = 2 x latent channels`; every other constructor argument is the parent's,
unchanged, so a ModelScope T2V `unet/config.json` loads with only `in_channels` changed.
"""

from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers looks loaders up in this module)
from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel


class VideoDeblurUNet3DModel(UNet3DConditionModel):
    r"""
    A 3D UNet for video deblurring: noisy latents and blurred-clip latents in, v-prediction out.

    The constructor is the parent's (`UNet3DConditionModel`); see its documentation for every argument. The
    two additions are:

    - gradient checkpointing: the parent's 3D blocks carry a `gradient_checkpointing` flag but never use it,
      so `enable_gradient_checkpointing()` here recomputes each down, mid and up block in the backward pass;
    - `latent_channels`: the number of channels of the noisy latents (and of the output), i.e.
      `in_channels - out_channels` condition channels follow them in the input.

    Parameters:
        in_channels (`int`, defaults to 8): noisy latent channels + blurred-condition latent channels.
        out_channels (`int`, defaults to 4): latent channels of the prediction.
        Other parameters: as `UNet3DConditionModel`.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        attention_head_dim: int | tuple[int] = 64,
        num_attention_heads: int | tuple[int] | None = None,
        time_cond_proj_dim: int | None = None,
    ):
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            time_cond_proj_dim=time_cond_proj_dim,
        )

    @property
    def latent_channels(self) -> int:
        """Channels of the noisy latents; the remaining `in_channels - latent_channels` are the condition."""
        return self.config.out_channels

    @property
    def downsample_factor(self) -> int:
        """How many times the UNet halves the latent size: latent sides must be multiples of this."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None) -> None:
        # The parent's blocks never consult their flag, so each block's forward is wrapped here instead.
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        for block in blocks:
            if enable:
                if not hasattr(block, "_deblur_plain_forward"):
                    block._deblur_plain_forward = block.forward
                    block.forward = functools.partial(_checkpointed_forward, block._deblur_plain_forward)
            elif hasattr(block, "_deblur_plain_forward"):
                block.forward = block._deblur_plain_forward
                del block._deblur_plain_forward
            block.gradient_checkpointing = enable
        self.gradient_checkpointing = enable

    @property
    def is_gradient_checkpointing(self) -> bool:
        return getattr(self, "gradient_checkpointing", False)


def _checkpointed_forward(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)
