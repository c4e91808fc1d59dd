"""How the temporal window changes the answer: one setting at several `num_frames` / `frame_overlap` pairs.

    python benchmarks/window_sweep.py                                         # default setting, windows 16/4, 8/4, 8/6
    python benchmarks/window_sweep.py --steps 3 --guidance-scale 1            # the README's main job's setting
    python benchmarks/window_sweep.py --windows 16:4,8:4 --max-clips 1 --steps 1   # a quick look

The pipeline runs a clip in temporal windows of `num_frames` frames that overlap by `frame_overlap` and blends
them at every denoising step (the design's decision 6; default 16 / 4). A window shorter than the clip runs the
UNet on more frames in all, and the frames two windows share are blended from two answers, a kind of averaging;
a window the length the model was trained on (8 frames for the embedded default model) is also the input it knows
best. On the quality benchmark's clips (`video-deblur synth --split test --sequences 4 --frames 16 --size 128x128
--seed 0`, 16 frames each: one window at the default) this script scores, for each window: PSNR, SSIM (BasicSR
protocol), TCE (8-bit units), the mean colour shift against the sharp frames and seconds per frame, next to the
blurred input. It prints a table, writes JSON and a figure (PSNR, SSIM and TCE for each window, the input's level
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
    row_line,
    run_setting,
    sweep_clips,
    sweep_record,
)
from results_io import metric_axis, pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import positive_float, positive_int  # noqa: E402


def window_list(text: str) -> list[tuple[int, int]]:
    """argparse type: comma-separated FRAMES:OVERLAP pairs, FRAMES >= 1 and 0 <= OVERLAP < FRAMES, in the order
    given and without repeats; the pair that is not one is named in the error."""
    windows = []
    for part in text.split(","):
        try:
            frames, overlap = (int(value) for value in part.strip().split(":"))
        except ValueError:
            frames = overlap = None
        if frames is None or frames < 1 or not 0 <= overlap < frames:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated FRAMES:OVERLAP pairs with FRAMES >= 1 and 0 <= OVERLAP < FRAMES, "
                f"got {text!r} ({part.strip()!r} is not one)"
            )
        if (frames, overlap) not in windows:
            windows.append((frames, overlap))
    return windows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps (pipeline default 50)")
    parser.add_argument("--guidance-scale", type=positive_float, default=None, help="CFG (default: the model's own)")
    parser.add_argument(
        "--windows",
        type=window_list,
        default=window_list("16:4,8:4,8:6"),
        help="comma-separated num_frames:frame_overlap pairs (default 16:4,8:4,8:6; 16:4 is the pipeline's)",
    )
    add_clip_arguments(parser, "window_sweep")
    args = parser.parse_args()

    clips, figure_path = sweep_clips(args)
    pipe = load_benchmark_pipeline(args)
    cfg = call_default(pipe, "guidance_scale", args.guidance_scale)
    default_window = (call_default(pipe, "num_frames"), call_default(pipe, "frame_overlap"))

    rows = [{"num_frames": None, "frame_overlap": None, **input_row(clips)}]
    print(row_line("blurred input", rows[0]), flush=True)
    for frames, overlap in args.windows:
        label = f"window {frames} / overlap {overlap}"
        row = run_setting(
            pipe,
            clips,
            label,
            num_inference_steps=args.steps,
            guidance_scale=cfg,
            num_frames=frames,
            frame_overlap=overlap,
        )
        rows.append({"num_frames": frames, "frame_overlap": overlap, **row})
        print(row_line(label + (" (default)" if (frames, overlap) == default_window else ""), rows[-1]), flush=True)

    best = max(rows[1:], key=lambda r: r["psnr"])
    result = sweep_record(
        args, pipe, clips, {"steps": args.steps, "guidance_scale": cfg, "noise_scale": pipe.default_noise_scale}
    )
    result |= {
        "default_window": {"num_frames": default_window[0], "frame_overlap": default_window[1]},
        "rows": rows,
        "best_psnr": {
            "num_frames": best["num_frames"],
            "frame_overlap": best["frame_overlap"],
            "psnr": best["psnr"],
            "gain_db": best["psnr"] - rows[0]["psnr"],
        },
    }
    write_json(args.out, result, default=float)
    print(
        f"best PSNR: window {best['num_frames']} / overlap {best['frame_overlap']}, {best['psnr']:.2f} dB "
        f"({best['psnr'] - rows[0]['psnr']:+.2f} dB over the input)"
    )

    figure, axes = pyplot().subplots(1, 3, figsize=(12, 3.5))
    labels = [f"{r['num_frames']} / {r['frame_overlap']}" for r in rows[1:]]
    for axis, key in zip(axes, ("psnr", "ssim", "tce")):
        axis.plot(range(len(labels)), [r[key] for r in rows[1:]], "o-", label="model")
        axis.set_xticks(range(len(labels)), labels)
        metric_axis(axis, key, "window frames / overlap", baseline=rows[0][key])
    axes[0].legend()
    figure.suptitle(f"{args.model}: {args.steps} steps, CFG {cfg:g}, {len(clips)} clip(s)")
    save_figure(figure, figure_path)
    print(f"wrote {args.out} and {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
