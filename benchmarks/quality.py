"""Quality of the default model against the input, a classical baseline and the VAE's ceiling (issue 5).

    python benchmarks/quality.py                       # the embedded default model
    python benchmarks/quality.py --model runs/default_model/stage2 --fast-steps 10
    python benchmarks/quality.py --default-seeds 4     # the default setting drawn 4 times, and their mean

On `video-deblur synth --split test --sequences 4 --frames 16 --size 128x128 --seed 0` (made on the fly in a
cache folder) it scores, per method: PSNR, SSIM (BasicSR protocol), TCE (8-bit units), the mean colour shift
against the sharp frames (percent of the sharp mean, worst channel) and seconds per frame. It prints a table,
writes benchmarks/results/quality.json and a comparison figure (blurred | unsharp | default | fast | sharp).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from results_io import atomic_path, figure_path, write_json  # noqa: E402

from pipeline_video_deblur.cli import (  # noqa: E402
    load_pipeline,
    non_negative_float,
    positive_float,
    positive_int,
    strength_fraction,
)
from pipeline_video_deblur.pipeline_video_deblur import SELF_ENSEMBLE_SIZES  # noqa: E402

# The benchmark's clips: what `load_test_clips` makes in its cache folder, as the command that makes them.
BENCHMARK_DATA = "video-deblur synth --split test --sequences 4 --frames 16 --size 128x128 --seed 0"


def load_test_clips(cache: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from pipeline_video_deblur.data.datasets import GoProDataset
    from pipeline_video_deblur.data.synthetic import make_synthetic_dataset

    if not os.path.isdir(os.path.join(cache, "test")):
        make_synthetic_dataset(cache, split="test", sequences=4, frames=16, size=(128, 128), seed=0)
    dataset = GoProDataset(cache, split="test", whole_sequences=True)
    clips = []
    for index, name in enumerate(dataset.sequence_names):
        blur, sharp = dataset.load_frames(index)[:2]
        clips.append((name, blur, sharp))
    return clips


def describe_clips(cache: str | os.PathLike) -> str:
    """Which clips a result scored, for its "data" field: the `video-deblur synth` command that made the test
    sequences under ``cache`` (those `load_test_clips` reads, as GoProDataset finds them) when their meta.json
    files all agree on one (``BENCHMARK_DATA`` for the benchmark's own), else the folder (another seed's sequences
    mixed in, or footage with no meta.json)."""
    from pipeline_video_deblur.data.datasets import GoProDataset

    dataset = GoProDataset(cache, split="test", whole_sequences=True)
    root = os.path.join(dataset.root, dataset.split)
    names = dataset.sequence_names
    settings = set()
    for name in names:
        meta_path = os.path.join(root, name, "meta.json")
        if not os.path.isfile(meta_path):
            return f"the clips under {root}"
        with open(meta_path) as f:
            meta = json.load(f)
        size = "x".join(map(str, meta.get("size", ())))
        settings.add((meta.get("generator"), meta.get("seed"), meta.get("frames"), size, meta.get("photos_dir")))
    if len(settings) != 1 or next(iter(settings))[0] != "pipeline_video_deblur.data.synthetic":
        return f"the clips under {root}"
    _, seed, frames, size, photos_dir = settings.pop()
    command = f"video-deblur synth --split test --sequences {len(names)} --frames {frames} --size {size} --seed {seed}"
    return command + (f" --photos {photos_dir}" if photos_dir else "")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model and --device, which `load_benchmark_pipeline` reads."""
    parser.add_argument("--model", default="default", help="'default' (embedded) or a pipeline folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available, else cpu)")


def load_benchmark_pipeline(args: argparse.Namespace):
    """The pipeline --model names, on --device, with its progress bar off (the benchmarks print their own)."""
    pipe = load_pipeline(args.model, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_clip_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The arguments the sweeps share: which clips (--max-clips, --num-frames, --cache) and where the results go
    (--out, default results/NAME.json; --figure, default --out with .png). `sweep_clips` reads them."""
    parser.add_argument("--max-clips", type=positive_int, default=None, help="the first N benchmark clips only")
    parser.add_argument("--num-frames", type=positive_int, default=None, help="the first N frames of each clip")
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "runs", "benchmark_synth_test_seed0"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", f"{name}.json"))
    parser.add_argument("--figure", default=None, help="the plot (default: --out with .png)")


def sweep_clips(args: argparse.Namespace) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str]:
    """The clips `add_clip_arguments` chose, (name, blurred, sharp) cut to --num-frames, and the figure's path."""
    clips = [
        (name, blur[: args.num_frames], sharp[: args.num_frames])
        for name, blur, sharp in load_test_clips(args.cache)[: args.max_clips]
    ]
    return clips, figure_path(args.out, args.figure)


def number_list(parse, expected: str):
    """argparse type: comma-separated numbers, each read by `parse` (an argparse type of pipeline_video_deblur.cli),
    sorted and without repeats; a part `parse` refuses is named in the error."""

    def parse_list(text: str) -> list[float]:
        values = []
        for part in text.split(","):
            try:
                values.append(parse(part.strip()))
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated numbers {expected}, got {text!r} ({part.strip()!r} is not one)"
                ) from None
        return sorted(set(values))

    return parse_list


def colour_shift(output: np.ndarray, sharp: np.ndarray) -> float:
    """Worst-channel shift of the mean colour, in percent of the sharp mean (uint8 frames)."""
    out_mean = output.reshape(-1, 3).astype(np.float64).mean(0)
    ref_mean = sharp.reshape(-1, 3).astype(np.float64).mean(0)
    return float(np.max(np.abs(out_mean - ref_mean) / np.maximum(ref_mean, 1e-6)) * 100)


def score(method: str, outputs: dict, clips, seconds: float) -> dict:
    from pipeline_video_deblur.metrics import evaluate_sequences

    results = evaluate_sequences(
        [(name, blur, outputs[name], sharp) for name, blur, sharp in clips], score_input=False, method=method
    )
    frames = sum(len(blur) for _, blur, _ in clips)
    summary = results["summary"]
    return {
        "psnr": summary["psnr"],
        "ssim": summary["ssim"],
        "tce": summary["tce"],
        "colour_shift_percent": max(colour_shift(outputs[n], s) for n, _, s in clips),
        "seconds_per_frame": seconds / frames,
        "videos": {
            name: {k: v for k, v in r.items() if k in ("psnr", "ssim", "tce")} for name, r in results["videos"].items()
        },
    }


def mean_over_seeds(rows: list[dict]) -> dict:
    """One row from the rows of the same setting drawn with different seeds: the mean of each figure (and the
    standard deviation of PSNR over the seeds)."""
    keys = ("psnr", "ssim", "tce", "colour_shift_percent", "seconds_per_frame")
    mean = {key: float(np.mean([row[key] for row in rows])) for key in keys}
    mean["psnr_std"] = float(np.std([row["psnr"] for row in rows]))
    mean["seeds"] = len(rows)
    mean["clips"] = rows[0]["clips"]
    return mean


def row_line(name: str, row: dict, colour: bool = True, seconds: bool = True) -> str:
    """One printed row: PSNR (with its spread over seeds, for a mean row), SSIM, TCE, and optionally colour shift and
    seconds per frame."""
    line = f"{name:34s} PSNR {row['psnr']:6.2f}"
    if "psnr_std" in row:
        line += f" (std {row['psnr_std']:.2f})"
    line += f"  SSIM {row['ssim']:.4f}  TCE {row['tce']:6.3f}"
    if colour:
        line += f"  colour {row['colour_shift_percent']:5.2f} %"
    if seconds:
        line += f"  {row['seconds_per_frame']:7.3f} s/frame"
    return line


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def machine() -> str:
    """The host line the results files carry: cores, torch build and threads."""
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def run_setting(pipe, clips, label: str, seed: int = 0, **call) -> dict:
    """Deblur every clip with ``pipe(blurred, **call)``, its generator seeded with ``seed``, and `score` the outputs
    (uint8) as ``label``, timed over all the clips."""
    started = time.perf_counter()
    outputs = {}
    for name, blur, _ in clips:
        frames = pipe(blur, generator=torch.Generator().manual_seed(seed), output_type="np", **call).frames[0]
        outputs[name] = to_uint8(frames)
    return score(label, outputs, clips, time.perf_counter() - started)


# Call arguments whose default is the model's own (model_index.json), not a constant of the call's signature
MODEL_DEFAULTS = {"guidance_scale": "default_guidance_scale", "noise_scale": "default_noise_scale"}


def call_default(pipe, name: str, given=None):
    """``given``, or where it is None what the pipeline call uses for its argument ``name`` when not given: the
    model's own value for those in MODEL_DEFAULTS, the signature's default for the others."""
    if given is not None:
        return given
    if name in MODEL_DEFAULTS:
        return getattr(pipe, MODEL_DEFAULTS[name])
    return inspect.signature(pipe.__call__).parameters[name].default


def input_row(clips) -> dict:
    """The blurred input scored as a method (`score`): the level the other rows are compared with."""
    return score("blurred input", {name: blur for name, blur, _ in clips}, clips, 0.0)


def sweep_record(args: argparse.Namespace, pipe, clips, setting: dict) -> dict:
    """The fields a sweep's results file starts with: the data, --model, the ``setting`` every row shares, the clips'
    count and length, the host and the device; the sweep adds its rows."""
    return {
        "data": describe_clips(args.cache),
        "model": args.model,
        "setting": setting,
        "clips": len(clips),
        "frames_per_clip": [len(blur) for _, blur, _ in clips],
        "machine": machine(),
        "device": str(pipe.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=50, help="default setting: steps (pipeline default 50)")
    parser.add_argument(
        "--guidance-scale", type=positive_float, default=None, help="default setting: CFG (default: the model's own)"
    )
    parser.add_argument(
        "--noise-scale",
        type=non_negative_float,
        default=None,
        help="default setting: starting noise x this (default: the model's own, pipe.config.noise_scale)",
    )
    parser.add_argument(
        "--self-ensemble",
        type=int,
        default=1,
        choices=SELF_ENSEMBLE_SIZES,
        help="default setting: the pipeline's self_ensemble (mirrored / transposed runs averaged; default 1)",
    )
    parser.add_argument("--fast-steps", type=positive_int, default=10)
    parser.add_argument("--fast-guidance-scale", type=positive_float, default=1.0)
    parser.add_argument("--fast-strength", type=strength_fraction, default=1.0)
    parser.add_argument("--fast-noise-scale", type=non_negative_float, default=None, help="default: the model's own")
    parser.add_argument("--fast-self-ensemble", type=int, default=1, choices=SELF_ENSEMBLE_SIZES)
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "runs", "benchmark_synth_test_seed0"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "quality.json"))
    parser.add_argument("--figure", default=None, help="the plot (default: --out with .png)")
    parser.add_argument(
        "--max-clips", type=positive_int, default=None, help="score only the first N clips (quick looks)"
    )
    parser.add_argument(
        "--default-clips",
        type=positive_int,
        default=None,
        help="run the (slow) default setting on the first N clips only; every other row then uses the same N "
        "clips too, in a second table, so rows stay comparable",
    )
    parser.add_argument(
        "--default-seeds",
        type=positive_int,
        default=1,
        help="run the default setting with seeds 0..K-1 (one row each) and add their mean, which the targets then "
        "use: one draw per clip is a noisy view of a sampler (default 1: seed 0 only)",
    )
    args = parser.parse_args()
    args.figure = figure_path(args.out, args.figure)

    from pipeline_video_deblur.metrics import unsharp

    clips = load_test_clips(args.cache)[: args.max_clips]
    pipe = load_benchmark_pipeline(args)
    default_cfg = call_default(pipe, "guidance_scale", args.guidance_scale)
    model_noise = pipe.default_noise_scale
    default_noise = model_noise if args.noise_scale is None else args.noise_scale
    fast_noise = model_noise if args.fast_noise_scale is None else args.fast_noise_scale

    rows: dict[str, dict] = {}
    outputs: dict[str, dict] = {}

    def run(method, fn, subset=None):
        subset = clips if subset is None else subset
        started = time.perf_counter()
        results = {name: fn(blur) for name, blur, _ in subset}
        outputs[method] = {k: (v if v.dtype == np.uint8 else to_uint8(v)) for k, v in results.items()}
        rows[method] = score(method, outputs[method], subset, time.perf_counter() - started)
        rows[method]["clips"] = len(subset)
        print(row_line(method, rows[method]), flush=True)

    def deblur(steps, cfg, strength, noise, ensemble, seed=0):
        def fn(blur):
            generator = torch.Generator().manual_seed(seed)
            return pipe(
                blur,
                num_inference_steps=steps,
                guidance_scale=cfg,
                strength=strength,
                noise_scale=noise,
                self_ensemble=ensemble,
                generator=generator,
                output_type="np",
            ).frames[0]

        return fn

    run("blurred input", lambda blur: blur)
    run("unsharp baseline", unsharp)
    # The VAE ceiling: sharp frames encoded and decoded (what a perfect latent model could at best give).
    sharp_by_name = {name: sharp for name, _, sharp in clips}
    started = time.perf_counter()
    with torch.no_grad():
        outputs["VAE round trip (sharp)"] = {
            name: to_uint8(
                pipe.decode_latents(pipe.encode_video(pipe.video_to_tensor(s)[None].to(pipe.device)))[0]
                .permute(0, 2, 3, 1)
                .cpu()
                .numpy()
            )
            for name, s in sharp_by_name.items()
        }
    rows["VAE round trip (sharp)"] = score(
        "VAE round trip", outputs["VAE round trip (sharp)"], clips, time.perf_counter() - started
    )
    print(row_line("VAE round trip (sharp)", rows["VAE round trip (sharp)"], colour=False, seconds=False))

    def ensemble_label(size: int) -> str:
        return f", x{size} ensemble" if size > 1 else ""

    fast_name = (
        f"fast ({args.fast_steps} steps, CFG {args.fast_guidance_scale:g}, strength {args.fast_strength:g}, "
        f"noise {fast_noise:g}{ensemble_label(args.fast_self_ensemble)})"
    )
    fast = (args.fast_steps, args.fast_guidance_scale, args.fast_strength, fast_noise, args.fast_self_ensemble)
    run(fast_name, deblur(*fast))
    default_name = (
        f"default ({args.steps} steps, CFG {default_cfg:g}, noise {default_noise:g}"
        f"{ensemble_label(args.self_ensemble)})"
    )
    subset = clips[: args.default_clips] if args.default_clips else None
    run(default_name, deblur(args.steps, default_cfg, 1.0, default_noise, args.self_ensemble), subset)
    target_name = default_name
    if args.default_seeds > 1:
        seeded = [default_name]
        for seed in range(1, args.default_seeds):
            seeded.append(f"{default_name} [seed {seed}]")
            run(seeded[-1], deblur(args.steps, default_cfg, 1.0, default_noise, args.self_ensemble, seed), subset)
        target_name = f"{default_name} [mean of {args.default_seeds} seeds]"
        rows[target_name] = mean_over_seeds([rows[name] for name in seeded])
        print(row_line(target_name, rows[target_name], seconds=False))
    if subset is not None and len(subset) < len(clips):
        # The same subset for every other row, so that the default setting is compared like with like.
        print(f"-- on the {len(subset)} clip(s) the default setting ran on:")
        for method in ("blurred input", "unsharp baseline", fast_name):
            name = f"{method} [first {len(subset)}]"
            rows[name] = score(name, {n: outputs[method][n] for n, _, _ in subset}, subset, 0.0)
            rows[name]["clips"] = len(subset)
            print(row_line(name, rows[name], colour=False, seconds=False))
        base = rows[f"blurred input [first {len(subset)}]"]
        unsharp_row = rows[f"unsharp baseline [first {len(subset)}]"]
    else:
        base, unsharp_row = rows["blurred input"], rows["unsharp baseline"]

    targets = {
        "default_gain_db": rows[target_name]["psnr"] - base["psnr"],
        "fast_gain_db": rows[fast_name]["psnr"] - rows["blurred input"]["psnr"],
        "target_gain_db": 3.0,
        "beats_unsharp_psnr": rows[target_name]["psnr"] > unsharp_row["psnr"],
        "beats_unsharp_ssim": rows[target_name]["ssim"] > unsharp_row["ssim"],
        "colour_within_1_percent": rows[target_name]["colour_shift_percent"] <= 1.0,
        "tce_not_higher_than_input": rows[target_name]["tce"] <= base["tce"],
    }
    print(json.dumps(targets, indent=2))
    result = {
        "data": describe_clips(args.cache),
        "model": args.model,
        "machine": machine(),
        "device": str(pipe.device),
        "methods": rows,
        "targets": targets,
        "settings": {
            "default_clips": len(subset) if subset is not None else len(clips),
            "default_seeds": args.default_seeds,
            "noise_scale": default_noise,
            "fast_noise_scale": fast_noise,
            "self_ensemble": args.self_ensemble,
            "fast_self_ensemble": args.fast_self_ensemble,
            "model_noise_scale": model_noise,
            "tile_size": "pipeline default",
        },
    }
    write_json(args.out, result, default=float)

    # Figure: the middle frame of each clip, one row per clip, one column per method, PSNR on each panel.
    columns = ["blurred input", "unsharp baseline", default_name, fast_name]
    from pipeline_video_deblur.metrics import psnr

    tiles = []
    for name, _, sharp in clips:
        if name not in outputs[default_name]:
            continue
        mid = len(sharp) // 2
        row = []
        for method in columns:
            frame = PIL.Image.fromarray(outputs[method][name][mid])
            PIL.ImageDraw.Draw(frame).text(
                (3, 3), f"{psnr(outputs[method][name][mid], sharp[mid]):.2f} dB", fill=(255, 255, 0)
            )
            row.append(np.asarray(frame))
        sharp_tile = PIL.Image.fromarray(sharp[mid])
        PIL.ImageDraw.Draw(sharp_tile).text((3, 3), "sharp", fill=(255, 255, 0))
        row.append(np.asarray(sharp_tile))
        tiles.append(np.concatenate(row, axis=1))
    figure = PIL.Image.fromarray(np.concatenate(tiles, axis=0))
    header = PIL.Image.new("RGB", (figure.width, 16), (0, 0, 0))
    draw = PIL.ImageDraw.Draw(header)
    width = figure.width // (len(columns) + 1)
    for i, label in enumerate([*columns, "sharp"]):
        draw.text((i * width + 3, 2), label[:22], fill=(255, 255, 255))
    canvas = PIL.Image.new("RGB", (figure.width, figure.height + 16))
    canvas.paste(header, (0, 0))
    canvas.paste(figure, (0, 16))
    with atomic_path(args.figure) as tmp:
        canvas.save(tmp)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    sys.exit(main())
