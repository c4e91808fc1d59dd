"""What the geometric self-ensemble buys: one setting at `self_ensemble` 1, 2, 4 and 8, and 8 with time reversal.

    python benchmarks/self_ensemble.py                                   # the main job's setting: 1 step, CFG 1
    python benchmarks/self_ensemble.py --steps 50 --guidance-scale 2 --max-clips 1   # 50 steps at CFG 2, 1 clip
    python benchmarks/self_ensemble.py --max-clips 1 --num-frames 8     # a quick look

`self_ensemble=n` deblurs the clip n times, with its frames mirrored left-right (2), also up-down (4) and also
transposed (8), maps each result back and averages them. The last row adds time reversal: the x8 ensemble of the
clip played backwards, put back in order and averaged with the forward x8 (16 runs), which says whether the frames'
order is worth a place in the ensemble. Every row runs through the pipeline's own `self_ensemble`. On the quality
benchmark's clips (`video-deblur synth --split test --sequences 4 --frames 16 --size 128x128 --seed 0`) it scores,
per row: PSNR, SSIM (BasicSR protocol), TCE (8-bit units), the mean colour shift against the sharp frames and
seconds per frame, next to the blurred input. It prints a table, writes JSON and a figure (PSNR, SSIM and TCE
against the number of runs, the input's level as a line).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from quality import (  # noqa: E402
    add_clip_arguments,
    add_model_arguments,
    call_default,
    describe_clips,
    input_row,
    load_benchmark_pipeline,
    machine,
    row_line,
    score,
    sweep_clips,
    to_uint8,
)
from results_io import metric_axis, pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import non_negative_float, positive_float, positive_int  # noqa: E402
from pipeline_video_deblur.pipeline_video_deblur import SELF_ENSEMBLE_SIZES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=1, help="denoising steps (default 1, the main job's)")
    parser.add_argument("--guidance-scale", type=positive_float, default=1.0, help="CFG (default 1, the main job's)")
    parser.add_argument(
        "--noise-scale", type=non_negative_float, default=None, help="starting noise x this (default: the model's own)"
    )
    add_clip_arguments(parser, "self_ensemble")
    args = parser.parse_args()

    clips, figure_path = sweep_clips(args)
    pipe = load_benchmark_pipeline(args)
    eta = call_default(pipe, "eta")
    noise = pipe.default_noise_scale if args.noise_scale is None else args.noise_scale

    def deblur(frames: np.ndarray, size: int) -> np.ndarray:
        return pipe(
            frames,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            noise_scale=noise,
            self_ensemble=size,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).frames[0]

    rows = [{"runs": 0, "label": "blurred input", **input_row(clips)}]
    print(row_line("blurred input", rows[0]), flush=True)
    eights = {}  # the x8 outputs (float), reused by the time-reversed row
    for size in SELF_ENSEMBLE_SIZES:
        started = time.perf_counter()
        outputs = {}
        for name, blur, _ in clips:
            frames = deblur(blur, size)
            if size == 8:
                eights[name] = frames
            outputs[name] = to_uint8(frames)
        label = "one run" if size == 1 else f"x{size} ensemble"
        rows.append({"runs": size, "label": label, **score(label, outputs, clips, time.perf_counter() - started)})
        print(row_line(label, rows[-1]), flush=True)
    started = time.perf_counter()
    outputs = {}
    for name, blur, _ in clips:
        backwards = deblur(np.ascontiguousarray(blur[::-1]), 8)[::-1]
        outputs[name] = to_uint8((eights[name] + backwards) / 2)
    seconds = time.perf_counter() - started + rows[-1]["seconds_per_frame"] * sum(len(b) for _, b, _ in clips)
    label = "x8 ensemble + time reversal"
    rows.append({"runs": 16, "label": label, **score(label, outputs, clips, seconds)})
    print(row_line(label, rows[-1]), flush=True)

    one = rows[1]
    result = {
        "data": describe_clips(args.cache),
        "model": args.model,
        "setting": {"steps": args.steps, "guidance_scale": args.guidance_scale, "noise_scale": noise, "eta": eta},
        "clips": len(clips),
        "frames_per_clip": [len(blur) for _, blur, _ in clips],
        "machine": machine(),
        "device": str(pipe.device),
        "rows": rows,
        "gain_over_one_run_db": {row["label"]: row["psnr"] - one["psnr"] for row in rows[2:]},
    }
    write_json(args.out, result, default=float)
    for row in rows[2:]:
        print(f"{row['label']}: {row['psnr'] - one['psnr']:+.3f} dB over one run")

    figure, axes = pyplot().subplots(1, 3, figsize=(12, 3.5))
    for axis, key in zip(axes, ("psnr", "ssim", "tce")):
        axis.plot([r["runs"] for r in rows[1:-1]], [r[key] for r in rows[1:-1]], "o-", label="mirrored / transposed")
        axis.plot([rows[-1]["runs"]], [rows[-1][key]], "s", label="x8 + time reversal")
        axis.set_xscale("log", base=2)
        metric_axis(axis, key, "runs averaged", baseline=rows[0][key])
    axes[0].legend()
    figure.suptitle(
        f"{args.model}: {args.steps} step(s), CFG {args.guidance_scale:g}, noise {noise:g}, {len(clips)} clip(s)"
    )
    save_figure(figure, figure_path)
    print(f"wrote {args.out} and {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
