#!/usr/bin/env python
"""Stage 1 of the paper: train the blur encoder (and the condition input channels of `conv_in`) only.

Input: a `VideoDeblurPipeline` folder as written by `video-deblur convert`. Trained (DESIGN 2.3):

- `blur_encoder`, all of it;
- `unet.conv_in.weight[:, C:]`, the input channels that read the blurred clip's latents (zero after conversion),
  the minimal bridge without which the blurred latents could not reach the pretrained UNet.

Everything else stays bit-identical: the pretrained channels `conv_in.weight[:, :C]` get a zero gradient and are
copied back after every optimiser step (AdamW's decoupled weight decay would otherwise shrink them), and
`conv_in.bias`, the rest of the UNet, the VAE and `image_encoder` are frozen.

    accelerate launch train/stage1_blur_encoder.py --pretrained_model_name_or_path converted/ \
        --train_data_dir GOPRO_Large --output_dir stage1/ --max_train_steps 10000
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import deblur_training  # noqa: E402
import torch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[1], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    deblur_training.add_deblur_args(parser)
    common.add_common_args(parser, learning_rate=5e-5)
    args = parser.parse_args(argv)
    common.check_common_args(args)
    deblur_training.check_deblur_args(args)
    return args


def main(args: argparse.Namespace) -> None:
    # 1-2. Paths checked, accelerator, pipeline, data and validation clips (errors come here, before training)
    accelerator, weight_dtype, pipe, dataloader, sampler, clips = deblur_training.prepare(args, "stage1_blur_encoder")

    # 3. Freeze everything but the blur encoder and the condition channels of conv_in
    unet = pipe.unet
    unet.requires_grad_(False)
    pipe.blur_encoder.requires_grad_(True)
    conv_in = unet.conv_in.weight
    conv_in.requires_grad_(True)
    latent_channels = unet.config.out_channels
    if conv_in.shape[1] != 2 * latent_channels:
        raise ValueError(
            f"unet.conv_in takes {conv_in.shape[1]} channels, expected 2 x {latent_channels} (noisy + blurred latents)"
        )
    mask = torch.zeros_like(conv_in)
    mask[:, latent_channels:] = 1  # (out, 2C, k, k): only the condition channels learn
    conv_in.register_hook(lambda grad: grad * mask.to(grad.dtype))
    pretrained_channels = conv_in.detach()[:, :latent_channels].clone()

    def restore_pretrained_channels() -> None:
        with torch.no_grad():
            conv_in[:, :latent_channels].copy_(pretrained_channels)

    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        pipe.blur_encoder.gradient_checkpointing_enable()
    params = [*pipe.blur_encoder.parameters(), conv_in]

    # 4. Optimiser, EMA, train and save
    deblur_training.train(
        args, accelerator, pipe, weight_dtype, dataloader, sampler, clips, params, "stage1",
        unet_frozen=True, after_optimizer_step=restore_pretrained_channels,
    )  # fmt: skip


if __name__ == "__main__":
    main(parse_args())
