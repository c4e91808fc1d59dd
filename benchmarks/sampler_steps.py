"""Where the sampler's answer is made: the clean estimate (x0) after every denoising step, scored as a clip.

    python benchmarks/sampler_steps.py                                # the embedded model, 50 steps, its own CFG
    python benchmarks/sampler_steps.py --guidance-scales 1,1.5,2      # one curve per scale
    python benchmarks/sampler_steps.py --max-clips 1 --num-frames 8   # a quick look

At every step the scheduler computes the clean latents the model's (guided) prediction implies; the sampler's next
input is built from them, and the last step's are, up to the final alpha, what it returns. This benchmark records
them (the scheduler's `pred_original_sample`, so DDIM or any scheduler that reports it), adds the blurred latents
back for a `residual` model, decodes them and scores each step's clip on the quality benchmark's clips (`video-deblur
synth --split test --sequences 4 --frames 16 --size 128x128 --seed 0`): PSNR and SSIM (BasicSR protocol) against the
sharp frames, next to the blurred input and the run's real output. A curve that rises and then falls says the later
steps undo what the earlier ones found. Each step also gets its detail (the mean square of the clip's high
frequencies: what a Gaussian blur of `DETAIL_SIGMA` pixels removes, in 8-bit units squared), next to the sharp and
blurred frames' own, and its error split the same way into detail and smooth parts: whether a later step adds detail
the sharp frames have, or detail of its own. Prints a table, writes JSON and a plot (PSNR, SSIM and detail against t).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from quality import (  # noqa: E402
    add_clip_arguments,
    add_model_arguments,
    call_default,
    describe_clips,
    input_row,
    load_benchmark_pipeline,
    number_list,
    score,
    sweep_clips,
    to_uint8,
)
from results_io import metric_axis, pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import non_negative_float, positive_float, positive_int  # noqa: E402

# Pixels: what a Gaussian blur of this width removes from a frame is its detail (high frequencies).
DETAIL_SIGMA = 2.0


def high_pass(frames: np.ndarray) -> np.ndarray:
    """Detail of frames (F, H, W, 3): the frames minus their Gaussian blur (`DETAIL_SIGMA`, per frame and
    channel), float64."""
    x = frames.astype(np.float64)
    return x - gaussian_filter(x, sigma=(0, DETAIL_SIGMA, DETAIL_SIGMA, 0), mode="reflect")


def detail_row(outputs: dict, clips) -> dict:
    """How much detail the clips in `outputs` (uint8, by clip name) have, and how their error against the sharp
    frames splits into detail and the smooth rest: means over all frames of the squares, in 8-bit units squared."""
    energy, detail_error, smooth_error = [], [], []
    for name, _, sharp in clips:
        error = outputs[name].astype(np.float64) - sharp
        detail = high_pass(error)
        energy.append(np.mean(high_pass(outputs[name]) ** 2))
        detail_error.append(np.mean(detail**2))
        smooth_error.append(np.mean((error - detail) ** 2))
    return {
        "detail": float(np.mean(energy)),
        "detail_error": float(np.mean(detail_error)),
        "smooth_error": float(np.mean(smooth_error)),
    }


class StepRecorder:
    """Wraps `pipe.scheduler.step` and `pipe.encode_video` for one pipeline call: keeps each step's timestep and
    decoded clean estimate (frames in [0, 1], (F, H, W, 3)), cropped to `size`."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.step, self.encode = pipe.scheduler.step, pipe.encode_video
        self.cond, self.steps, self.size = None, [], None

    def __enter__(self):
        pipe = self.pipe

        def encode_video(*args, **kwargs):
            latents = self.encode(*args, **kwargs)
            self.cond = latents  # the blurred clip's latents: the sampler's one encode of each call
            return latents

        def step(model_output, timestep, sample, *args, **kwargs):
            kwargs["return_dict"] = True
            output = self.step(model_output, timestep, sample, *args, **kwargs)
            x0 = getattr(output, "pred_original_sample", None)
            if x0 is None:
                raise SystemExit(
                    f"{type(pipe.scheduler).__name__} does not report its clean estimate (pred_original_sample); "
                    "use DDIM (the pipeline's default) or another scheduler that does"
                )
            latents = x0 + self.cond.to(x0.dtype) if pipe.config.residual else x0
            frames = pipe.decode_latents(latents)[0].permute(0, 2, 3, 1).float().cpu().numpy()
            height, width = self.size
            self.steps.append((int(timestep), frames[:, :height, :width]))
            return (output.prev_sample,)

        pipe.encode_video, pipe.scheduler.step = encode_video, step
        return self

    def __exit__(self, *exc):
        # the instance attributes shadowed the bound methods; deleting them restores the originals
        del self.pipe.encode_video, self.pipe.scheduler.step
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps (default 50, the default's)")
    parser.add_argument(
        "--guidance-scales",
        type=number_list(positive_float, "> 0"),
        default=None,
        help="comma-separated CFG scales, one curve each (default: the model's own, `pipe.config.guidance_scale`)",
    )
    parser.add_argument(
        "--noise-scale", type=non_negative_float, default=None, help="starting noise x this (default: the model's own)"
    )
    add_clip_arguments(parser, "sampler_steps")
    args = parser.parse_args()

    clips, figure_path = sweep_clips(args)
    pipe = load_benchmark_pipeline(args)
    noise = call_default(pipe, "noise_scale", args.noise_scale)
    if args.guidance_scales is None:
        args.guidance_scales = [call_default(pipe, "guidance_scale")]
    blurred = input_row(clips)
    blurred.update(detail_row({name: blur for name, blur, _ in clips}, clips))
    sharp_detail = detail_row({name: sharp for name, _, sharp in clips}, clips)["detail"]
    print(
        f"blurred input: PSNR {blurred['psnr']:.3f}  SSIM {blurred['ssim']:.4f}  detail {blurred['detail']:.1f}"
        f"  (sharp frames: detail {sharp_detail:.1f})",
        flush=True,
    )

    curves = []
    for scale in args.guidance_scales:
        per_step: list[tuple[int, dict]] = []  # (t, {clip: uint8 frames}) in step order
        finals = {}
        for index, (name, blur, _) in enumerate(clips):
            with StepRecorder(pipe) as recorder:
                recorder.size = blur.shape[1:3]
                output = pipe(
                    blur,
                    num_inference_steps=args.steps,
                    guidance_scale=scale,
                    noise_scale=noise,
                    generator=torch.Generator().manual_seed(0),
                    output_type="np",
                ).frames[0]
            finals[name] = to_uint8(output)
            for k, (t, frames) in enumerate(recorder.steps):
                if index == 0:
                    per_step.append((t, {}))
                per_step[k][1][name] = to_uint8(frames)
            print(f"CFG {scale:g}: clip {index + 1}/{len(clips)} done", flush=True)
        rows = []
        for k, (t, outputs) in enumerate(per_step):
            scored = score(f"step {k}", outputs, clips, 0.0)
            rows.append(
                {"step": k, "t": t, "psnr": scored["psnr"], "ssim": scored["ssim"], **detail_row(outputs, clips)}
            )
        final = score("output", finals, clips, 0.0)
        best = max(rows, key=lambda r: r["psnr"])
        curve = {
            "guidance_scale": scale,
            "rows": rows,
            "output": {"psnr": final["psnr"], "ssim": final["ssim"], **detail_row(finals, clips)},
            "best_step": {"step": best["step"], "t": best["t"], "psnr": best["psnr"], "ssim": best["ssim"]},
            "lost_after_best_db": best["psnr"] - rows[-1]["psnr"],
        }
        curves.append(curve)
        shown = sorted({0, len(rows) - 1, best["step"], *range(0, len(rows), max(1, len(rows) // 10))})
        print(f"CFG {scale:g} ({args.steps} steps, noise x {noise:g}):")
        for k in shown:
            mark = "  <- best" if k == best["step"] else ""
            row = rows[k]
            print(
                f"  step {k:3d}  t = {row['t']:4d}  PSNR {row['psnr']:.3f}  SSIM {row['ssim']:.4f}  detail "
                f"{row['detail']:.1f}  error: detail {row['detail_error']:.1f}, smooth {row['smooth_error']:.2f}{mark}"
            )
        output = curve["output"]
        print(
            f"  output       PSNR {output['psnr']:.3f}  SSIM {output['ssim']:.4f}  detail {output['detail']:.1f}  "
            f"error: detail {output['detail_error']:.1f}, smooth {output['smooth_error']:.2f}  "
            f"(best step - last step: {curve['lost_after_best_db']:+.3f} dB)",
            flush=True,
        )

    data = {
        "data": describe_clips(args.cache),
        "model": args.model,
        "steps": args.steps,
        "noise_scale": noise,
        "clips": len(clips),
        "frames_per_clip": [len(blur) for _, blur, _ in clips],
        "blurred_input": {key: blurred[key] for key in ("psnr", "ssim", "detail", "detail_error", "smooth_error")},
        "sharp_detail": sharp_detail,
        "detail_sigma_px": DETAIL_SIGMA,
        "curves": curves,
    }
    write_json(args.out, data)

    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(16, 4))
    for axis, key in zip(axes, ("psnr", "ssim", "detail")):
        for curve in curves:
            t = np.array([r["t"] for r in curve["rows"]])
            line = axis.plot(
                t, [r[key] for r in curve["rows"]], label=f"clean estimate, CFG {curve['guidance_scale']:g}"
            )
            axis.plot([0], [curve["output"][key]], "o", color=line[0].get_color(), label="output")
        metric_axis(axis, key, "timestep t (the sampler runs right to left)", baseline=blurred[key])
        if key == "detail":
            axis.axhline(sharp_detail, linestyle="-", color="black", label="sharp frames")
        axis.invert_xaxis()
        axis.legend(fontsize=8)
    figure.suptitle(f"{args.model}: the clean estimate at each of {args.steps} steps")
    save_figure(figure, figure_path)
    print(f"wrote {args.out} and {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
