#!/usr/bin/env python
"""Run the pipeline's own sampler on training crops and keep the latents its later steps give the UNet.

Stage 2's `--sampler_trajectory_cache FILE [FILE ...]` trains on these inputs: where the sampler really is at each
of its later timesteps, rather than a stand-in built from the model's first estimate
(`--sampler_trajectory_fraction` alone). From a start without noise (the default model's `noise_scale` 0) and DDIM's
eta 0 the path is a fixed function of the blurred clip and the weights, so it can be computed once per clip and
reused for as long as the weights stay close to the ones it was run with (rerun it from a later checkpoint to
refresh it).

    python train/cache_sampler_path.py --pretrained_model_name_or_path pipeline_video_deblur/default_model \
        --train_data_dir runs/data --resolution 96 --num_frames 8 --num_clips 48 --output runs/path.safetensors

The file holds, for N clips and the K = steps - 1 timesteps after the first: `blur` and `sharp` (N, F, 3, H, W)
uint8 frames (the crops as the training data gives them, flips and transposes included), `states` (N, K, C, F, h,
w) float16, the sampler's input latents, and `timesteps` (K,); its metadata names the model, the sampler settings
and the crops. It is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pipeline_video_deblur import VideoDeblurPipeline  # noqa: E402
from pipeline_video_deblur.atomic import atomic_path  # noqa: E402

logger = logging.getLogger("cache_sampler_path")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--pretrained_model_name_or_path", required=True, help="VideoDeblurPipeline folder")
    parser.add_argument("--train_data_dir", required=True, help="training data (GoPro or DVD layout)")
    parser.add_argument("--dataset", choices=["gopro", "dvd"], default="gopro", help="layout of --train_data_dir")
    parser.add_argument("--blur_dir", default="blur", help="GoPro blurred-frame folder: blur (default) or blur_gamma")
    parser.add_argument("--resolution", type=int, default=96, help="side of the crops (stage 2's --resolution)")
    parser.add_argument("--num_frames", type=int, default=8, help="frames per crop (stage 2's --num_frames)")
    parser.add_argument(
        "--augment_transpose", action="store_true", help="draw the crops with transposes too, as stage 2 would"
    )
    parser.add_argument("--num_clips", type=int, default=48, help="crops to run the sampler on")
    parser.add_argument(
        "--first_clip",
        type=int,
        default=0,
        help=(
            "skip this many crops of the seeded sample first: a file made with --first_clip 48 --num_clips 48 holds "
            "the next 48 crops after a --num_clips 48 file of the same seed, so that the two (both given to "
            "--sampler_trajectory_cache) extend the cache without repeating a crop"
        ),
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help=(
            "picks the crops (a random sample of the training windows, the same for the same seed) and seeds the "
            "sampler's start noise"
        ),
    )
    parser.add_argument("--num_inference_steps", type=int, default=50, help="the sampler's steps (default 50)")
    parser.add_argument("--guidance_scale", type=float, default=None, help="the sampler's CFG; default: the model's")
    parser.add_argument(
        "--noise_scale", type=float, default=None, help="the sampler's start noise; default: the model's"
    )
    parser.add_argument(
        "--mixed_precision",
        choices=["no", "bf16"],
        default="no",
        help="bf16 runs the sampler under bf16 autocast (as stage 2 trains with STAGE2_PRECISION=bf16)",
    )
    parser.add_argument("--output", required=True, help="the .safetensors file to write")
    args = parser.parse_args(argv)
    if args.num_clips < 1:
        parser.error(f"--num_clips must be at least 1, got {args.num_clips}")
    if args.first_clip < 0:
        parser.error(f"--first_clip must be at least 0, got {args.first_clip}")
    if args.num_inference_steps < 2:
        parser.error(
            f"--num_inference_steps must be at least 2 (the later steps are kept), got {args.num_inference_steps}"
        )
    if args.guidance_scale is not None and not args.guidance_scale > 0:
        parser.error(f"--guidance_scale must be > 0, got {args.guidance_scale}")
    if not args.output.endswith(".safetensors"):
        parser.error(f"--output must be a .safetensors file, got {args.output!r}")
    return args


class InputRecorder:
    """Wraps `pipe.scheduler.step` for one pipeline call and keeps each step's (timestep, input latents)."""

    def __init__(self, pipe: VideoDeblurPipeline):
        self.pipe, self.step, self.inputs = pipe, pipe.scheduler.step, []

    def __enter__(self):
        def step(model_output, timestep, sample, *args, **kwargs):
            self.inputs.append((int(timestep), sample.detach().float().cpu().clone()))
            return self.step(model_output, timestep, sample, *args, **kwargs)

        self.pipe.scheduler.step = step
        return self

    def __exit__(self, *exc):
        del self.pipe.scheduler.step  # the instance attribute shadowed the bound method
        return False


def sampler_inputs(pipe: VideoDeblurPipeline, blur: torch.Tensor, args: argparse.Namespace):
    """The sampler's (timesteps (K,), input latents (K, C, F, h, w)) after its first step, for one crop (F, 3, H, W)
    run as one window and one tile, so that its latents are the crop's own."""
    frames, _, height, width = blur.shape
    with InputRecorder(pipe) as recorder:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16"):
            pipe(
                blur,
                num_inference_steps=args.num_inference_steps,
                guidance_scale=args.guidance_scale,
                noise_scale=args.noise_scale,
                num_frames=frames,
                frame_overlap=0,
                tile_size=max(height, width),
                generator=torch.Generator().manual_seed(args.seed),
                output_type="latent",
            )
    steps = recorder.inputs
    if len(steps) != args.num_inference_steps or steps[0][1].shape[0] != 1:
        raise RuntimeError(
            f"expected {args.num_inference_steps} scheduler steps on one latent clip, got {len(steps)} of shape "
            f"{tuple(steps[0][1].shape) if steps else None}"
        )
    later = steps[1:]
    return torch.tensor([t for t, _ in later]), torch.cat([x for _, x in later])


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    warning = common.cpu_bf16_warning("cpu", args.mixed_precision, common.cpu_has_bf16_units())
    if warning:
        logger.warning(warning)
    check = argparse.Namespace(
        train_data_dir=args.train_data_dir,
        dataset=args.dataset,
        blur_dir=args.blur_dir,
        augment_transpose=args.augment_transpose,
    )
    dataset = common.load_dataset(check, "train", args.resolution, args.num_frames, augment=True)
    items = common.SeededItems(dataset, args.seed)
    if args.first_clip >= len(dataset):
        raise ValueError(
            f"--first_clip {args.first_clip} skips every crop: {args.train_data_dir} has {len(dataset)} training "
            f"windows at --num_frames {args.num_frames}; expected --first_clip < {len(dataset)}"
        )
    count = min(args.num_clips, len(dataset) - args.first_clip)
    if count < args.num_clips:
        logger.warning(
            f"{args.train_data_dir} has {len(dataset)} training windows; caching {count} after the first "
            f"{args.first_clip}"
        )
    # A random sample of the windows (which are grouped by sequence), fixed by the seed; each crop depends only on
    # its window and the seed, so any slice of this order gives the same crops as the whole.
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))
    order = order[args.first_clip : args.first_clip + count].tolist()

    pipe = VideoDeblurPipeline.from_pretrained(args.pretrained_model_name_or_path)
    pipe.set_progress_bar_config(disable=True)
    common.check_resolution(args.resolution, pipe.size_multiple, "the pipeline's size multiple")
    blurs, sharps, states, timesteps = [], [], [], None
    for index in tqdm(order, desc="sampler paths", unit="clip"):
        item = items[index]
        t, inputs = sampler_inputs(pipe, item["blur"], args)
        if timesteps is None:
            timesteps = t
        blurs.append(to_uint8(item["blur"]))
        sharps.append(to_uint8(item["sharp"]))
        states.append(inputs)
    tensors = {
        "blur": torch.stack(blurs),
        "sharp": torch.stack(sharps),
        "states": torch.stack(states).to(torch.float16).contiguous(),  # half the size; ample for latents
        "timesteps": timesteps.long(),
    }
    metadata = {
        "model": os.path.abspath(args.pretrained_model_name_or_path),
        "settings": json.dumps(
            {
                "num_inference_steps": args.num_inference_steps,
                "guidance_scale": pipe.default_guidance_scale if args.guidance_scale is None else args.guidance_scale,
                "noise_scale": pipe.default_noise_scale if args.noise_scale is None else args.noise_scale,
                "mixed_precision": args.mixed_precision,
                "resolution": args.resolution,
                "num_frames": args.num_frames,
                "seed": args.seed,
                "first_clip": args.first_clip,
                "train_data_dir": os.path.abspath(args.train_data_dir),
            }
        ),
    }
    from safetensors.torch import save_file

    with atomic_path(args.output) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    size = os.path.getsize(args.output) / 2**20
    logger.info(
        f"{count} clips x {len(timesteps)} timesteps ({int(timesteps[0])} .. {int(timesteps[-1])}) -> "
        f"{args.output} ({size:.1f} MiB)"
    )


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Frames in [0, 1] -> uint8; the training data's frames are 8-bit images, so this loses nothing."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


if __name__ == "__main__":
    main(parse_args())
