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


# The per-layer module lists of diffusers' 3D down and up blocks (the up blocks have one layer more).
_LAYER_LISTS = ("resnets", "temp_convs", "attentions", "temp_attentions")


def deepen_unet(unet: UNet3DConditionModel, layers_per_block: int, seed: int = 0) -> UNet3DConditionModel:
    """A copy of `unet` with `layers_per_block` layers in every down block (one more in every up block) that
    computes exactly the same function: a way to give a trained model more capacity without training it again.

    Every layer of `unet` keeps its weights. Each added layer (resnet, temporal convolution, and where the block
    has them spatial and temporal attention) starts as the identity: the last convolution or projection of each
    residual branch is zero, and an added up-block resnet's 1x1 shortcut passes the hidden states through and
    ignores its skip connection. The layers added to a down block therefore repeat the output of its last layer,
    so the skip connections they add carry the same values as the one an up block's first resnet already reads,
    and each old up-block resnet keeps the skip it was trained on. The rest of each added layer is drawn at
    random (`seed`), so that training moves it as soon as the zeroed outputs become nonzero.
    """
    old = unet.config.layers_per_block
    if not isinstance(old, int) or not isinstance(layers_per_block, int) or layers_per_block < old:
        raise ValueError(
            f"layers_per_block={layers_per_block!r}: expected an int >= the UNet's own layers_per_block ({old!r})"
        )
    config = {key: value for key, value in unet.config.items() if not key.startswith("_")}
    config["layers_per_block"] = layers_per_block
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        deep = type(unet).from_config(config)
    deep.to(dtype=unet.dtype, device=unet.device)
    deep.train(unet.training)  # from_config gives train mode, where the temporal convolutions' dropout is active

    for name, module in unet.named_children():
        if name not in ("down_blocks", "up_blocks"):
            getattr(deep, name).load_state_dict(module.state_dict())
    added = layers_per_block - old
    for old_block, new_block in zip(unet.down_blocks, deep.down_blocks):
        # Down layer i keeps layer i; the added ones follow the old last layer.
        _copy_layers(old_block, new_block, {i: i for i in range(old)})
        if old_block.downsamplers is not None:
            new_block.downsamplers.load_state_dict(old_block.downsamplers.state_dict())
    for old_block, new_block in zip(unet.up_blocks, deep.up_blocks):
        # Up resnet j reads the skip of down layer L-1-j, or the level below's output for j = L. The old first
        # resnet stays first (it reads the old last down layer's output, which every added down layer repeats, and
        # takes the hidden states from the level below); the added ones come right after it; the rest keep their
        # distance from the end, and so their skips.
        mapping = {0: 0, **{k: k + added for k in range(1, old + 1)}}
        _copy_layers(old_block, new_block, mapping)
        if old_block.upsamplers is not None:
            new_block.upsamplers.load_state_dict(old_block.upsamplers.state_dict())
    return deep


def _copy_layers(old_block: torch.nn.Module, new_block: torch.nn.Module, mapping: dict[int, int]) -> None:
    """Copy layer `i` of `old_block` to layer `mapping[i]` of `new_block`; make every other layer the identity."""
    for list_name in _LAYER_LISTS:
        if not hasattr(new_block, list_name):
            continue
        old_list, new_list = getattr(old_block, list_name), getattr(new_block, list_name)
        for i, j in mapping.items():
            new_list[j].load_state_dict(old_list[i].state_dict())
        for j in set(range(len(new_list))) - set(mapping.values()):
            _zero_residual_branch(new_list[j], list_name)


@torch.no_grad()
def _zero_residual_branch(layer: torch.nn.Module, list_name: str) -> None:
    if list_name == "resnets":
        if layer.output_scale_factor != 1:
            raise ValueError(f"cannot make a resnet with output_scale_factor {layer.output_scale_factor} the identity")
        last = layer.conv2
        shortcut = layer.conv_shortcut
        if shortcut is not None:
            # in = hidden states + skip (concatenated in that order); out = the hidden states' channels.
            out_channels = shortcut.weight.shape[0]
            shortcut.weight.zero_()
            shortcut.weight[:, :out_channels, 0, 0] = torch.eye(out_channels, dtype=shortcut.weight.dtype)
            shortcut.bias.zero_()
    elif list_name == "temp_convs":
        last = layer.conv4[-1]
    else:
        last = layer.proj_out
    last.weight.zero_()
    last.bias.zero_()
