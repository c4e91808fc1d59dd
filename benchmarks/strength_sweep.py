"""How `strength` < 1 scores: one sampling setting run from a range of starting points (issue 5).

    python benchmarks/strength_sweep.py                                   # default setting (50 steps, CFG default)
    python benchmarks/strength_sweep.py --steps 10 --guidance-scale 1 --out benchmarks/results/strength_fast.json
    python benchmarks/strength_sweep.py --strengths 0.2,0.5 --max-clips 1 --num-frames 8   # a quick look

`strength` < 1 starts the sampler from the blurred clip noised to an intermediate timestep instead of from pure
noise (in residual mode: from the zero residual, i.e. the blurred latents themselves), and runs only
`round(strength * steps)` of the `steps` denoising steps. Small strengths stay close to the input; strength 1 is the
full draw. On the quality benchmark's clips (`video-deblur synth --split test --sequences 4 --frames 16 --size
128x128 --seed 0`) this script scores, for each strength: PSNR, SSIM (BasicSR protocol), TCE (8-bit units), the
mean colour shift against the sharp frames and seconds per frame, next to the blurred input. It prints a table,
writes JSON and a figure (PSNR and SSIM against strength, the input's level as a line).
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
    number_list,
    row_line,
    run_setting,
    sweep_clips,
    sweep_record,
)
from results_io import metric_axis, pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import (  # noqa: E402
    non_negative_float,
    positive_float,
    positive_int,
    strength_fraction,
)

strength_list = number_list(strength_fraction, "in (0, 1]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps before `strength` (50)")
    parser.add_argument("--guidance-scale", type=positive_float, default=None, help="CFG (default: the model's own)")
    parser.add_argument(
        "--strengths",
        type=strength_list,
        default=strength_list("0.1,0.2,0.3,0.4,0.6,0.8,1"),
        help="comma-separated strengths in (0, 1] (default 0.1,0.2,0.3,0.4,0.6,0.8,1)",
    )
    parser.add_argument(
        "--noise-scale",
        type=non_negative_float,
        default=None,
        help="starting noise x this (default: the model's own, pipe.config.noise_scale)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (the same for every strength)")
    add_clip_arguments(parser, "strength_sweep")
    args = parser.parse_args()
    # what the pipeline's `get_timesteps` runs of the schedule (strength <= 1, so never more than `steps`)
    steps_run = {value: round(value * args.steps) for value in args.strengths}
    for value in args.strengths:
        if steps_run[value] < 1:
            parser.error(
                f"argument --strengths: strength {value:g} with --steps {args.steps} runs no denoising step "
                f"(round(strength * steps) = 0); use a larger strength or more steps"
            )

    clips, figure_path = sweep_clips(args)
    pipe = load_benchmark_pipeline(args)
    cfg = call_default(pipe, "guidance_scale", args.guidance_scale)
    noise = pipe.default_noise_scale if args.noise_scale is None else args.noise_scale

    rows = [{"strength": 0.0, "steps_run": 0, **input_row(clips)}]
    print(row_line("blurred input", rows[0]), flush=True)
    for strength in args.strengths:
        call = {"num_inference_steps": args.steps, "guidance_scale": cfg, "strength": strength, "noise_scale": noise}
        row = run_setting(pipe, clips, f"strength {strength:g}", seed=args.seed, **call)
        row = {"strength": strength, "steps_run": steps_run[strength], **row}
        rows.append(row)
        print(row_line(f"strength {strength:g} ({row['steps_run']} steps)", row), flush=True)

    best = max(rows[1:], key=lambda r: r["psnr"])
    setting = {"steps": args.steps, "guidance_scale": cfg, "noise_scale": noise, "seed": args.seed}
    result = sweep_record(args, pipe, clips, setting)
    result |= {
        "rows": rows,
        "best_psnr": {"strength": best["strength"], "psnr": best["psnr"], "gain_db": best["psnr"] - rows[0]["psnr"]},
    }
    write_json(args.out, result, default=float)
    print(
        f"best PSNR: strength {best['strength']:g}, {best['psnr']:.2f} dB ({best['psnr'] - rows[0]['psnr']:+.2f} dB)"
    )

    figure, axes = pyplot().subplots(1, 2, figsize=(9, 3.5))
    for axis, key in zip(axes, ("psnr", "ssim")):
        axis.plot([r["strength"] for r in rows[1:]], [r[key] for r in rows[1:]], "o-", label="model")
        metric_axis(axis, key, "strength (1 = start from pure noise)", baseline=rows[0][key])
    axes[0].legend()
    figure.suptitle(
        f"{args.model}: {args.steps} steps, CFG {cfg:g}, noise x {noise:g}, seed {args.seed}, {len(clips)} clip(s)"
    )
    save_figure(figure, figure_path)
    print(f"wrote {args.out} and {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
