"""Where a model stands, timestep by timestep: its clean-latent (x0) error against two references (issue 5).

    python benchmarks/timestep_error.py                         # the embedded default model
    python benchmarks/timestep_error.py --model runs/default_model/stage2

On the quality benchmark's clips (`video-deblur synth --split test --sequences 4 --frames 16 --size 128x128
--seed 0`), for each timestep t it noises the true target x0 (sharp latents, or sharp - blurred for a `residual`
pipeline) with the scheduler's own schedule, runs the UNet once (conditional pass, as `guidance_scale` 1 does),
and compares the x0 it implies with x0. References, both computed from the same noisy latents:

- identity: predicting the blurred input (x0 = the blurred latents, or a zero residual), the "do nothing" answer;
- linear: the best condition-blind linear denoiser, alpha * var / (alpha^2 * var + sigma^2) * (x_t - alpha * mean)
  + mean, given x0's true mean and variance (an oracle for those two numbers, blind to the blurred clip).

At t = 999 the noisy latents still carry a trace of the answer (sqrt(alphas_cumprod[999]) x0, 6.8 % of it), and
the model uses it. So two more rows run the UNet once at t = 999 from inputs without that trace, as the sampler
starts: pure noise (`noise_scale` 1) and zeros (`noise_scale` 0). Those rows are the model's deblurring regression:
below the identity means it deblurs. At small t any denoiser does well. `gain over identity` is
10 log10(identity MSE / model MSE) in latent units; with the weight-free pixel-shuffle VAE latents are pixels,
so it is the PSNR gain before clipping and rounding. Prints a table, writes JSON and a plot.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from quality import add_model_arguments, describe_clips, load_benchmark_pipeline, load_test_clips  # noqa: E402
from results_io import figure_path, pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import positive_int  # noqa: E402

TIMESTEPS = (999, 900, 800, 666, 500, 333, 200, 100, 50, 19)


def implied_x0(pipe, alphas_cumprod, noisy, output, timestep):
    """The clean latents a UNet output implies, for the scheduler's prediction type."""
    from pipeline_video_deblur.losses import x0_from_v

    prediction_type = pipe.scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        return x0_from_v(alphas_cumprod, noisy, output, timestep)
    if prediction_type == "epsilon":
        alpha, sigma = alphas_cumprod[timestep].sqrt(), (1 - alphas_cumprod[timestep]).sqrt()
        return (noisy - sigma.view(-1, 1, 1, 1, 1) * output) / alpha.view(-1, 1, 1, 1, 1)
    return output


def gain_db(mse: dict) -> float:
    return 10 * math.log10(mse["identity"] / mse["model"]) if mse["model"] > 0 else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--num-frames", type=positive_int, default=8, help="frames per clip (the first N; default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-clips", type=positive_int, default=None, help="the first N clips only (quick looks)")
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "runs", "benchmark_synth_test_seed0"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "timestep_error.json"))
    parser.add_argument("--figure", default=None, help="the plot (default: --out with .png)")
    args = parser.parse_args()
    args.figure = figure_path(args.out, args.figure)

    from pipeline_video_deblur.losses import add_noise

    pipe = load_benchmark_pipeline(args)
    device = pipe.device
    clips = load_test_clips(args.cache)[: args.max_clips]
    alphas_cumprod = pipe.scheduler.alphas_cumprod.float().to(device)
    generator = torch.Generator().manual_seed(args.seed)
    sums = {t: {"model": 0.0, "identity": 0.0, "linear": 0.0} for t in TIMESTEPS}
    starts = {"noise": {"model": 0.0, "identity": 0.0}, "zero": {"model": 0.0, "identity": 0.0}}
    count = 0
    with torch.no_grad():
        for name, blur, sharp in clips:
            frames = [pipe.video_to_tensor(x[: args.num_frames])[None].to(device) for x in (blur, sharp)]
            cond, sharp_latents = (pipe.encode_video(f) for f in frames)  # (1, C, F, h, w)
            x0 = sharp_latents - cond if pipe.config.residual else sharp_latents
            identity = torch.zeros_like(x0) if pipe.config.residual else cond
            context = pipe.encode_image(frames[0][:, (frames[0].shape[1] - 1) // 2])
            mean, var = x0.mean(), x0.var()
            for t in TIMESTEPS:
                alpha, sigma = alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt()
                timestep = torch.tensor([t], device=device)
                # Drawn on the CPU so that a seed gives the same noise on every device.
                noise = torch.randn(x0.shape, generator=generator).to(device)
                noisy = add_noise(alphas_cumprod, x0, noise, timestep)
                output = pipe.unet(torch.cat([noisy, cond], 1), timestep, encoder_hidden_states=context).sample
                predicted = implied_x0(pipe, alphas_cumprod, noisy, output, timestep)
                linear = alpha * var / (alpha**2 * var + sigma**2) * (noisy - alpha * mean) + mean
                for key, estimate in (("model", predicted), ("identity", identity), ("linear", linear)):
                    sums[t][key] += float(((estimate - x0) ** 2).mean())
            # The sampler's own first step: t = 999 from noise without the target's trace, or from zeros.
            t = TIMESTEPS[0]
            timestep = torch.tensor([t], device=device)
            sigma = (1 - alphas_cumprod[t]).sqrt()
            noise = torch.randn(x0.shape, generator=generator).to(device)
            for start, noisy in (("noise", sigma * noise), ("zero", torch.zeros_like(x0))):
                output = pipe.unet(torch.cat([noisy, cond], 1), timestep, encoder_hidden_states=context).sample
                predicted = implied_x0(pipe, alphas_cumprod, noisy, output, timestep)
                starts[start]["model"] += float(((predicted - x0) ** 2).mean())
                starts[start]["identity"] += float(((identity - x0) ** 2).mean())
            count += 1
            print(f"{name}: done", flush=True)

    rows = []
    print(f"{'t':>5}  {'model MSE':>10}  {'identity':>9}  {'linear':>8}  {'gain over identity':>19}")
    for t in TIMESTEPS:
        mse = {k: v / count for k, v in sums[t].items()}
        gain = gain_db(mse)
        rows.append({"t": t, **mse, "gain_over_identity_db": gain})
        print(f"{t:5d}  {mse['model']:10.4f}  {mse['identity']:9.4f}  {mse['linear']:8.4f}  {gain:+17.2f} dB")

    regression = []
    for start, label in (("noise", "999, from noise without the trace"), ("zero", "999, from zeros")):
        mse = {k: v / count for k, v in starts[start].items()}
        regression.append({"start": start, **mse, "gain_over_identity_db": gain_db(mse)})
        print(f"{label}: model MSE {mse['model']:.4f}, identity {mse['identity']:.4f}, gain {gain_db(mse):+.2f} dB")

    result = {
        "model": args.model,
        "data": describe_clips(args.cache),
        "frames_per_clip": args.num_frames,
        "residual": bool(pipe.config.residual),
        "device": str(device),
        "rows": rows,
        "regression_t999": regression,
    }
    write_json(args.out, result)

    figure, axis = pyplot().subplots(figsize=(6, 3.5))
    for key, style in (("model", "o-"), ("identity", "--"), ("linear", ":")):
        axis.plot([r["t"] for r in rows], [r[key] for r in rows], style, label=key)
    axis.set_xlabel("timestep t (999 = pure noise: the deblurring regression)")
    axis.set_ylabel("x0 MSE (latents)")
    axis.set_title(f"x0 error per timestep: {os.path.basename(os.path.normpath(args.model))}")
    axis.legend()
    save_figure(figure, args.figure)
    print(f"wrote {args.out} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
