"""Why many sampling steps score below one: how far the sampler's draws spread around the answer (issue 5).

    python benchmarks/sample_spread.py                      # embedded default model, default setting, 8 draws
    python benchmarks/sample_spread.py --guidance-scale 1 --seeds 4 --clips 2

A diffusion sampler draws one sharp clip among those the model finds plausible for the blurred input; one step from
pure noise returns (about) their mean, the model's regression. For a model that has learnt the spread of its own
uncertainty, a draw's squared error is about twice the mean's (a 3 dB PSNR cost), and the mean of k draws costs 1 +
1/k times the regression's error. This script measures it on the quality benchmark's clips (`video-deblur synth
--split test --sequences 4 --frames 16 --size 128x128 --seed 0`, the first N frames of the first clips): the one-
step output, K draws at the given setting (seeds 0..K-1), the PSNR of each draw and of the mean of the first k
draws, and the ratio of their squared errors to the one-step output's ("squared error x"). Prints a table, writes
JSON and a figure (PSNR against k, and the middle frame of: blurred | draw 0 | draw 1 | mean of K | one step |
sharp).
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
    add_model_arguments,
    call_default,
    describe_clips,
    load_benchmark_pipeline,
    load_test_clips,
    to_uint8,
)
from results_io import figure_path, pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import non_negative_float, positive_float, positive_int  # noqa: E402


def clip_psnr(output: np.ndarray, sharp: np.ndarray) -> float:
    """The evaluation's PSNR of a clip (uint8 frames): the mean over its frames."""
    from pipeline_video_deblur.metrics.evaluate import score_video

    return score_video(output, sharp)["psnr"]


def mse(output: np.ndarray, sharp: np.ndarray) -> float:
    return float(np.mean((output.astype(np.float64) - sharp.astype(np.float64)) ** 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument(
        "--steps", type=positive_int, default=50, help="sampling steps of the draws (pipeline default 50)"
    )
    parser.add_argument(
        "--guidance-scale", type=positive_float, default=None, help="CFG of the draws (default: the model's own)"
    )
    parser.add_argument(
        "--noise-scale",
        type=non_negative_float,
        default=1.0,
        help="the draws' starting noise x this (default 1: standard draws, whatever the model's own default; the "
        "one-step reference always starts from noise x 1)",
    )
    parser.add_argument("--seeds", type=positive_int, default=8, help="number of draws K (seeds 0..K-1)")
    parser.add_argument("--clips", type=positive_int, default=1, help="the first N benchmark clips")
    parser.add_argument("--num-frames", type=positive_int, default=8, help="the first N frames of each clip")
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "runs", "benchmark_synth_test_seed0"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "sample_spread.json"))
    parser.add_argument("--figure", default=None, help="the plot (default: --out with .png)")
    args = parser.parse_args()
    args.figure = figure_path(args.out, args.figure)

    from tqdm.auto import tqdm

    clips = [(n, b[: args.num_frames], s[: args.num_frames]) for n, b, s in load_test_clips(args.cache)]
    if args.clips > len(clips):
        parser.error(f"--clips must be at most {len(clips)} (the benchmark's clips), got {args.clips}")
    clips = clips[: args.clips]
    pipe = load_benchmark_pipeline(args)
    cfg = call_default(pipe, "guidance_scale", args.guidance_scale)

    def deblur(blur, steps, scale, seed, noise):
        generator = torch.Generator().manual_seed(seed)
        frames = pipe(
            blur,
            num_inference_steps=steps,
            guidance_scale=scale,
            noise_scale=noise,
            generator=generator,
            output_type="np",
        )
        return frames.frames[0]

    started = time.perf_counter()
    one_step, draws = {}, {name: [] for name, _, _ in clips}
    with tqdm(total=len(clips) * (args.seeds + 1), desc="sample spread") as bar:
        for name, blur, _ in clips:
            one_step[name] = to_uint8(deblur(blur, 1, 1.0, 0, 1.0))
            bar.update()
            for seed in range(args.seeds):
                draws[name].append(
                    deblur(blur, args.steps, cfg, seed, args.noise_scale)
                )  # float, so that means are not rounded
                bar.update()

    def average(outputs: dict, metric) -> float:
        """``metric`` (clip_psnr or mse) of the given output per clip, averaged over the clips."""
        return float(np.mean([metric(outputs[name], sharp) for name, _, sharp in clips]))

    input_psnr = average({name: blur for name, blur, _ in clips}, clip_psnr)
    one_psnr = average(one_step, clip_psnr)
    one_mse = average(one_step, mse)
    rows = []
    for k in range(1, args.seeds + 1):
        draw_k = {name: to_uint8(d[k - 1]) for name, d in draws.items()}
        mean_k = {name: to_uint8(np.mean(d[:k], 0)) for name, d in draws.items()}
        rows.append(
            {
                "k": k,
                "draw_psnr": average(draw_k, clip_psnr),
                "draw_mse_ratio": average(draw_k, mse) / one_mse,
                "mean_of_k_psnr": average(mean_k, clip_psnr),
                "mean_of_k_mse_ratio": average(mean_k, mse) / one_mse,
            }
        )
    draw_mse_ratio = float(np.mean([r["draw_mse_ratio"] for r in rows]))
    mean_draw_psnr = float(np.mean([r["draw_psnr"] for r in rows]))
    seconds = time.perf_counter() - started

    print(
        f"{len(clips)} clip(s) x {args.num_frames} frames; draws: {args.steps} steps, CFG {cfg:g}, "
        f"noise x {args.noise_scale:g}, {args.seeds} seeds"
    )
    print(f"{'blurred input':28s} PSNR {input_psnr:6.2f}")
    print(f"{'one step, CFG 1':28s} PSNR {one_psnr:6.2f}")
    print(f"{'one draw (mean over seeds)':28s} PSNR {mean_draw_psnr:6.2f}   squared error x {draw_mse_ratio:.2f}")
    for r in rows:
        print(
            f"{'mean of ' + str(r['k']) + ' draw(s)':28s} PSNR {r['mean_of_k_psnr']:6.2f}   squared error x "
            f"{r['mean_of_k_mse_ratio']:.2f} (1 + 1/k = {1 + 1 / r['k']:.2f})"
        )
    result = {
        "data": describe_clips(args.cache),
        "model": args.model,
        "clips": [n for n, _, _ in clips],
        "frames_per_clip": args.num_frames,
        "draws": {"steps": args.steps, "guidance_scale": cfg, "noise_scale": args.noise_scale, "seeds": args.seeds},
        "input_psnr": input_psnr,
        "one_step_psnr": one_psnr,
        "mean_draw_psnr": mean_draw_psnr,
        "draw_mse_ratio_to_one_step": draw_mse_ratio,
        "rows": rows,
        "seconds": seconds,
    }
    write_json(args.out, result, default=float)

    name, blur, sharp = clips[0]
    mid = len(sharp) // 2
    panels = [
        ("blurred", blur[mid]),
        ("draw 0", to_uint8(draws[name][0][mid])),
        ("draw 1" if args.seeds > 1 else "draw 0", to_uint8(draws[name][min(1, args.seeds - 1)][mid])),
        (f"mean of {args.seeds}", to_uint8(np.mean(draws[name], 0)[mid])),
        ("one step", one_step[name][mid]),
        ("sharp", sharp[mid]),
    ]
    fig = pyplot().figure(figsize=(13, 5.2))
    grid = fig.add_gridspec(2, len(panels), height_ratios=(1.3, 1))
    axis = fig.add_subplot(grid[0, :])
    ks = [r["k"] for r in rows]
    axis.plot(ks, [r["mean_of_k_psnr"] for r in rows], "o-", label="mean of k draws")
    axis.plot(ks, [r["draw_psnr"] for r in rows], "x", label="draw k alone")
    axis.axhline(one_psnr, color="C2", ls="--", label="one step, CFG 1")
    axis.axhline(input_psnr, color="gray", ls=":", label="blurred input")
    axis.set_xlabel("k (draws)")
    axis.set_ylabel("PSNR (dB)")
    axis.set_title(f"{args.steps} steps, CFG {cfg:g}: {len(clips)} clip(s) x {args.num_frames} frames")
    axis.legend(loc="best", fontsize=8)  # where it hides no point
    axis.grid(alpha=0.3)
    for i, (title, frame) in enumerate(panels):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(frame)
        if title != "sharp":
            title = f"{title}: {clip_psnr(frame[None], sharp[mid][None]):.2f} dB"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    save_figure(fig, args.figure)
    print(f"wrote {args.out} and {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
