"""Deblur the bundled sample with a model and write the README's before / after image.

    python examples/make_sample_comparison.py [--model default] [--steps 10] [--guidance-scale 1] [--noise-scale S]
                                              [--self-ensemble 1|2|4|8]

Rows: the middle frame of examples/sample_blurred.mp4, the model's output and the sharp reference
(examples/sample_sharp_reference.mp4, the synthetic clip's ground truth), each with its PSNR.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from pipeline_video_deblur.atomic import atomic_path
from pipeline_video_deblur.cli import non_negative_float, positive_float, positive_int, strength_fraction
from pipeline_video_deblur.pipeline_video_deblur import SELF_ENSEMBLE_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' (embedded), a pipeline folder or a Hub id")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available, else cpu)")
    parser.add_argument("--steps", type=positive_int, default=50)
    parser.add_argument("--guidance-scale", type=positive_float, default=None, help="default: the model's own")
    parser.add_argument("--strength", type=strength_fraction, default=1.0)
    parser.add_argument("--noise-scale", type=non_negative_float, default=None, help="default: the model's own")
    parser.add_argument(
        "--self-ensemble", type=int, default=1, choices=SELF_ENSEMBLE_SIZES, help="the pipeline's self_ensemble"
    )
    parser.add_argument("--out", default=os.path.join(HERE, "sample_comparison.png"))
    args = parser.parse_args()

    from pipeline_video_deblur.cli import load_pipeline
    from pipeline_video_deblur.data import read_video
    from pipeline_video_deblur.metrics import psnr

    blurred = read_video(os.path.join(HERE, "sample_blurred.mp4")).frames
    sharp = read_video(os.path.join(HERE, "sample_sharp_reference.mp4")).frames
    pipe = load_pipeline(args.model, device=args.device)
    output = pipe(
        blurred,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        strength=args.strength,
        noise_scale=args.noise_scale,
        self_ensemble=args.self_ensemble,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]
    output = (output * 255).round().astype(np.uint8)
    mid = len(blurred) // 2
    panels, scores = [], []
    for label, frames in (("blurred input", blurred), ("default model", output), ("sharp reference", sharp)):
        score = np.mean([psnr(f, s) for f, s in zip(frames, sharp)])
        scores.append(f"{label} {score:.2f} dB")
        image = PIL.Image.fromarray(frames[mid]).resize((frames.shape[2] * 2, frames.shape[1] * 2), PIL.Image.NEAREST)
        text = f"{label}: {score:.2f} dB" if label != "sharp reference" else label
        PIL.ImageDraw.Draw(image).text((4, 4), text, fill=(255, 255, 0))
        panels.append(np.asarray(image))
    with atomic_path(args.out) as tmp:  # the old figure stays until the new one is complete
        PIL.Image.fromarray(np.concatenate(panels, axis=1)).save(tmp)
    noise = pipe.default_noise_scale if args.noise_scale is None else args.noise_scale
    cfg = pipe.default_guidance_scale if args.guidance_scale is None else args.guidance_scale
    print(
        f"wrote {args.out} ({args.steps} steps, CFG {cfg:g}, strength {args.strength:g}, "
        f"noise x {noise:g}, self-ensemble {args.self_ensemble})"
    )
    print("PSNR over the clip: " + ", ".join(scores[:2]))


if __name__ == "__main__":
    main()
