#!/usr/bin/env python
"""Stage 2 of the paper: fine-tune the whole model (UNet and blur encoder) from stage 1's output.

The VAE and the pretrained `image_encoder` stay frozen. With `--lora_rank N` (N > 0), peft LoRA adapters on the
UNet's attention projections (to_q, to_k, to_v, to_out.0) are trained instead of all weights; they are saved in
the diffusers LoRA format (`pytorch_lora_weights.safetensors`, loadable with
`pipeline_video_deblur.lora.load_lora`) and the saved pipeline has them fused in.

    accelerate launch train/stage2_finetune.py --pretrained_model_name_or_path stage1/ \
        --train_data_dir GOPRO_Large --output_dir stage2/ --max_train_steps 50000 --gradient_checkpointing
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import deblur_training  # noqa: E402

from pipeline_video_deblur.lora import add_lora, fuse_lora, save_lora  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[1], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    deblur_training.add_deblur_args(parser)
    lora = parser.add_argument_group("LoRA")
    lora.add_argument(
        "--lora_rank", type=int, default=0, help="rank of LoRA adapters on the UNet's attention; 0 = full fine-tune"
    )
    lora.add_argument(
        "--lora_alpha", type=float, default=None, help="LoRA alpha (scale alpha / rank); defaults to the rank"
    )
    parser.add_argument(
        "--freeze_blur_encoder", action="store_true", help="train the UNet only (always the case with --lora_rank > 0)"
    )
    common.add_common_args(parser, learning_rate=5e-5)
    args = parser.parse_args(argv)
    common.check_common_args(args)
    deblur_training.check_deblur_args(args)
    if args.lora_rank < 0:
        raise ValueError(f"--lora_rank must be 0 (full fine-tune) or positive, got {args.lora_rank}")
    return args


def main(args: argparse.Namespace) -> None:
    # 1-2. Paths checked, accelerator, pipeline, data and validation clips (errors come here, before training)
    accelerator, weight_dtype, pipe, dataloader, sampler, clips = deblur_training.prepare(args, "stage2_finetune")

    # 3. What trains: all of the UNet and the blur encoder, or LoRA adapters on the UNet's attention only
    unet, blur_encoder = pipe.unet, pipe.blur_encoder
    if args.lora_rank > 0:
        blur_encoder.requires_grad_(False)
        params = add_lora(unet, args.lora_rank, args.lora_alpha)
    else:
        unet.requires_grad_(True)
        blur_encoder.requires_grad_(not args.freeze_blur_encoder)
        params = [p for p in [*unet.parameters(), *blur_encoder.parameters()] if p.requires_grad]
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        blur_encoder.gradient_checkpointing_enable()

    def write_lora(folder) -> None:
        # The adapters on their own (loadable onto stage 1's pipeline), then fused for the full pipeline folder.
        if args.lora_rank > 0:
            save_lora(unet, folder)
            fuse_lora(pipe)

    # 4. Optimiser, EMA, train and save
    deblur_training.train(
        args, accelerator, pipe, weight_dtype, dataloader, sampler, clips, params, "stage2", before_save=write_lora
    )


if __name__ == "__main__":
    main(parse_args())
