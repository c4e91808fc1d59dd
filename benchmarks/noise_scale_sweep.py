"""How the starting noise's scale trades a draw for the model's mean: one setting at a range of `noise_scale`s.

    python benchmarks/noise_scale_sweep.py                                 # default setting (50 steps, CFG default)
    python benchmarks/noise_scale_sweep.py --noise-scales 0,1 --seeds 2   # two seeds per scale, and their mean
    python benchmarks/noise_scale_sweep.py --noise-scales 0,0.5 --max-clips 1 --num-frames 8   # a quick look

`noise_scale` multiplies the noise the sampler starts from. At 1 the sampler draws one sharp clip among those the
model finds plausible; towards 0 its answer moves to the model's mean estimate, which scores higher on PSNR and
SSIM when the model is unsure (a draw's squared error is about twice the mean's: `sample_spread.py`); at 0 with
DDIM's eta = 0 the run is the same for every seed. On the quality benchmark's clips (`video-deblur synth --split
test --sequences 4 --frames 16 --size 128x128 --seed 0`) this script scores, for each scale: PSNR, SSIM (BasicSR
protocol), TCE (8-bit units), the mean colour shift against the sharp frames and seconds per frame, next to the
blurred input. It prints a table, writes JSON and a figure (PSNR, SSIM and TCE against the scale, the input's level
as a line).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from quality import (  # noqa: E402
    add_clip_arguments,
    add_model_arguments,
    call_default,
    input_row,
    load_benchmark_pipeline,
    mean_over_seeds,
    number_list,
    row_line,
    run_setting,
    sweep_clips,
    sweep_record,
)
from results_io import metric_axis, pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import non_negative_float, positive_float, positive_int  # noqa: E402

scale_list = number_list(non_negative_float, ">= 0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps (pipeline default 50)")
    parser.add_argument("--guidance-scale", type=positive_float, default=None, help="CFG (default: the model's own)")
    parser.add_argument(
        "--noise-scales",
        type=scale_list,
        default=scale_list("0,0.3,0.6,1"),
        help="comma-separated noise scales >= 0 (default 0,0.3,0.6,1)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="seeds 0..K-1 for every scale above 0, and their mean (a scale of 0 is the same for every seed)",
    )
    add_clip_arguments(parser, "noise_scale_sweep")
    args = parser.parse_args()

    clips, figure_path = sweep_clips(args)
    pipe = load_benchmark_pipeline(args)
    cfg = call_default(pipe, "guidance_scale", args.guidance_scale)
    eta = call_default(pipe, "eta")

    rows = [{"noise_scale": None, **input_row(clips)}]
    print(row_line("blurred input", rows[0]), flush=True)
    for scale in args.noise_scales:
        # with no starting noise and a deterministic sampler every seed gives the same clip: one run says it all
        seeds = 1 if scale == 0 and eta == 0 else args.seeds
        draws = []
        for seed in range(seeds):
            call = {"num_inference_steps": args.steps, "guidance_scale": cfg, "noise_scale": scale}
            draws.append(run_setting(pipe, clips, f"noise {scale:g} seed {seed}", seed=seed, **call))
            draws[-1]["clips"] = len(clips)
            if seeds > 1:
                print(row_line(f"noise {scale:g} [seed {seed}]", draws[-1]), flush=True)
        row = draws[0] if seeds == 1 else mean_over_seeds(draws)
        row = {"noise_scale": scale, "seeds": seeds, **row}
        rows.append(row)
        label = f"noise {scale:g}" + (f" [mean of {seeds} seeds]" if seeds > 1 else "")
        print(row_line(label, row), flush=True)

    best = max(rows[1:], key=lambda r: r["psnr"])
    result = sweep_record(
        args, pipe, clips, {"steps": args.steps, "guidance_scale": cfg, "eta": eta, "seeds": args.seeds}
    )
    result |= {
        "model_noise_scale": pipe.default_noise_scale,
        "rows": rows,
        "best_psnr": {
            "noise_scale": best["noise_scale"],
            "psnr": best["psnr"],
            "gain_db": best["psnr"] - rows[0]["psnr"],
        },
    }
    write_json(args.out, result, default=float)
    print(
        f"best PSNR: noise scale {best['noise_scale']:g}, {best['psnr']:.2f} dB "
        f"({best['psnr'] - rows[0]['psnr']:+.2f} dB over the input)"
    )

    figure, axes = pyplot().subplots(1, 3, figsize=(12, 3.5))
    for axis, key in zip(axes, ("psnr", "ssim", "tce")):
        axis.plot([r["noise_scale"] for r in rows[1:]], [r[key] for r in rows[1:]], "o-", label="model")
        metric_axis(axis, key, "noise scale (1 = a standard draw)", baseline=rows[0][key])
    axes[0].legend()
    figure.suptitle(f"{args.model}: {args.steps} steps, CFG {cfg:g}, {len(clips)} clip(s)")
    save_figure(figure, figure_path)
    print(f"wrote {args.out} and {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
