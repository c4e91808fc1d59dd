#!/usr/bin/env python
"""Copy a pipeline folder with a deeper UNet that computes the same function, to continue training with more capacity.

    python train/recipes/deepen_unet.py pipeline_video_deblur/default_model runs/deepened --layers-per-block 2

Every down block gets `--layers-per-block` layers (every up block one more); the added layers start as the
identity (`pipeline_video_deblur.models.unet_3d_deblur.deepen_unet`), so the copy deblurs exactly as the source
does until training moves them. Every component is saved in float32 (training's precision; shipping stores the UNet
and the CLIP encoders in float16). The target is written whole or not at all, and an existing
target is refused rather than replaced.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a VideoDeblurPipeline folder (save_pretrained layout)")
    parser.add_argument("target", help="the new pipeline folder (must not exist)")
    parser.add_argument("--layers-per-block", type=int, required=True, help="layers in each down block of the copy")
    parser.add_argument("--seed", type=int, default=0, help="seed for the added layers' inner weights")
    args = parser.parse_args()

    import torch

    from pipeline_video_deblur import VideoDeblurPipeline
    from pipeline_video_deblur.atomic import replace_dir
    from pipeline_video_deblur.models.unet_3d_deblur import deepen_unet

    source, target = os.path.abspath(args.source), os.path.abspath(args.target)
    if not os.path.isfile(os.path.join(source, "model_index.json")):
        raise SystemExit(f"{args.source} is not a pipeline folder: it has no model_index.json")
    if os.path.exists(target):
        raise SystemExit(f"{args.target} exists; choose a new folder (nothing was written)")
    pipe = VideoDeblurPipeline.from_pretrained(source, torch_dtype=torch.float32)
    before = pipe.unet.config.layers_per_block
    if args.layers_per_block < before:
        raise SystemExit(
            f"--layers-per-block {args.layers_per_block}: the UNet in {args.source} already has {before}; expected "
            f"{before} or more"
        )
    pipe.unet = deepen_unet(pipe.unet, args.layers_per_block, seed=args.seed)
    tmp = target + ".tmp"  # one writer per target; a killed run's leftover is cleared here
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    count = sum(p.numel() for p in pipe.unet.parameters())
    print(
        f"wrote {args.target}: UNet layers_per_block {before} -> {args.layers_per_block}, {count / 1e6:.2f} M parameters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
