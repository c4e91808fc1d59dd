"""Seconds per stage 2 training step on this machine, for each precision and attention processor.

    python benchmarks/train_step.py                       # the default model at the recipe's size, all four
    python benchmarks/train_step.py --threads 2 --repeats 5 --out benchmarks/results/train_step.json

Times what a stage 2 step of `train/stage2_finetune.py` spends most of its time on: the model's forward (image
tokens, then the UNet on noisy + blurred latents), the backward and an AdamW step, at the recipe's batch, frames
and crop (batch 2, 8 frames, 96 px), for float32 and bf16 autocast (`--mixed_precision bf16`) with the UNet's
attention as torch's scaled_dot_product_attention (`--attention sdpa`) or as separate matmuls (`--attention
explicit`). The data loader, the VAE (weight-free for the default model) and the EMA are left out. Each
combination is warmed up once, then timed over `--repeats` steps; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "train"))
from results_io import write_json  # noqa: E402

from pipeline_video_deblur.cli import positive_int  # noqa: E402

PRECISIONS = ("fp32", "bf16")
ATTENTIONS = ("sdpa", "explicit")


def choice_list(allowed: tuple[str, ...]):
    """An argparse type: a comma-separated, non-empty list of `allowed` names."""

    def parse(value: str) -> list[str]:
        chosen = [c for c in value.split(",") if c]
        wrong = next((c for c in chosen if c not in allowed), None)
        if wrong is not None or not chosen:
            why = f" ({wrong!r} is not one)" if wrong is not None else ""
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(allowed)}, got {value!r}{why}"
            )
        return chosen

    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder (default: the embedded default model)")
    parser.add_argument("--batch", type=positive_int, default=2)
    parser.add_argument("--frames", type=positive_int, default=8)
    parser.add_argument("--size", type=positive_int, default=96, help="crop side in pixels")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed steps per combination")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--precisions", type=choice_list(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--attentions", type=choice_list(ATTENTIONS), default=list(ATTENTIONS))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "train_step.json"))
    return parser.parse_args(argv)


def time_steps(model, optimizer, inputs: dict, bf16: bool, repeats: int) -> float:
    """Median seconds of `repeats` steps (forward, backward, AdamW) after one untimed warm-up step."""

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prediction = model(**inputs)
        loss = prediction.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from common import attention_processor
    from deblur_training import DeblurModel

    from pipeline_video_deblur import VideoDeblurPipeline

    pipe = (
        VideoDeblurPipeline.from_default() if args.model is None else VideoDeblurPipeline.from_pretrained(args.model)
    )
    if args.size % pipe.size_multiple:
        raise SystemExit(f"--size must be a multiple of {pipe.size_multiple} for this model, got {args.size}")
    pipe.image_encoder.requires_grad_(False).eval()
    model = DeblurModel(pipe).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-12)
    generator = torch.Generator().manual_seed(0)
    channels = pipe.unet.config.in_channels // 2
    latent = args.size // pipe.vae_scale_factor
    shape = (args.batch, channels, args.frames, latent, latent)
    inputs = {
        "noisy": torch.randn(shape, generator=generator),
        "cond": torch.randn(shape, generator=generator),
        "timesteps": torch.randint(0, 1000, (args.batch,), generator=generator),
        "centre_frames": torch.rand(args.batch, 3, args.size, args.size, generator=generator),
        "keep": torch.ones(args.batch),
    }
    rows = []
    print(f"{args.batch} x {args.frames} frames x {args.size}^2 px, {torch.get_num_threads()} threads")
    print(f"{'precision':<10} {'attention':<10} {'s/step':>8}")
    for attention in args.attentions:
        pipe.unet.set_attn_processor(attention_processor(attention))
        for precision in args.precisions:
            seconds = time_steps(model, optimizer, inputs, precision == "bf16", args.repeats)
            rows.append({"precision": precision, "attention": attention, "seconds_per_step": seconds})
            print(f"{precision:<10} {attention:<10} {seconds:>8.3f}", flush=True)
    base = next((r for r in rows if r["precision"] == "fp32" and r["attention"] == "sdpa"), None)
    if base is not None:
        for r in rows:
            r["speedup_over_fp32_sdpa"] = base["seconds_per_step"] / r["seconds_per_step"]
        best = min(rows, key=lambda r: r["seconds_per_step"])
        print(f"fastest: {best['precision']} + {best['attention']}, {best['speedup_over_fp32_sdpa']:.2f}x fp32 + sdpa")
    write_json(
        args.out,
        {
            "model": args.model or "default",
            "batch": args.batch,
            "frames": args.frames,
            "size": args.size,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "cpu": cpu_name(),
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")
    return 0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
