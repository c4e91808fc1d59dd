"""``video-deblur eval``: score a model or a baseline on GoPro or DVD, as BasicSR reports it.

Per video: PSNR and SSIM averaged over its frames (BasicSR protocol, see ``psnr_ssim``), TCE over its
consecutive frame pairs, LPIPS (when its weights are on disk); then each metric averaged over videos.
A PSNR of ``inf`` (an output identical to the ground truth) stays ``inf`` in every average; in JSON and CSV
non-finite numbers are written as the strings ``"inf"`` / ``"nan"`` (``float()`` reads them back).

Outputs: ``results.json`` with ``{"summary", "input_summary", "videos", "settings"}``, a CSV beside it (one row
per video, then the mean), a printed table with this run's rows and the numbers the seed paper and the
published state of the art report (labelled as reported, not measured), and optional comparison figures.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..atomic import write_text
from ..cli import non_negative_float, non_negative_int, positive_float, positive_int, strength_fraction
from ..segments import DEFAULT_SEGMENT_FRAMES
from .baselines import UNSHARP_AMOUNT, UNSHARP_RADIUS, identity, unsharp
from .figures import comparison_figure
from .lpips_metric import NOT_COMPUTED, LPIPSMetric
from .psnr_ssim import psnr, ssim, to_uint8
from .temporal import tce

METRICS = ("psnr", "ssim", "lpips", "tce")
# Numbers the papers report on the real test sets (not measured here). LPIPS / TCE: None = not reported.
REPORTED = {
    "gopro": [
        ("seed paper (reported)", {"psnr": 32.22, "ssim": 0.95, "lpips": 0.07, "tce": None}),
        ("BSSTNet, SOTA (reported)", {"psnr": 35.98, "ssim": 0.979, "lpips": None, "tce": None}),
    ],
    "dvd": [
        ("seed paper (reported)", {"psnr": 32.59, "ssim": 0.93, "lpips": 0.06, "tce": None}),
        ("BSSTNet, SOTA (reported)", {"psnr": 34.95, "ssim": 0.972, "lpips": None, "tce": None}),
    ],
}


class VideoResult(NamedTuple):
    """One video to score: uint8 or float [0, 1] frames (F, H, W, 3) each; frame names optional."""

    name: str
    blur: np.ndarray
    output: np.ndarray
    sharp: np.ndarray
    frame_names: list[str] | None = None


def mean_over(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are numbers; ``inf`` if any is ``inf`` (never hidden); ``None`` if none are."""
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None
    return float(np.mean(numbers))


def score_video(output: np.ndarray, sharp: np.ndarray, lpips_metric: LPIPSMetric | None = None) -> dict:
    """Metrics of one video: frames (F, H, W, 3), uint8 or float in [0, 1] (rounded to uint8 first).

    Returns:
        ``{"frames", "psnr", "ssim", "tce", "lpips", "identical_frames", "psnr_per_frame", "ssim_per_frame"}``;
        ``tce`` is ``None`` for a single frame, ``lpips`` is a number or a ``"not computed: ..."`` string.
    """
    output, sharp = to_uint8(output), to_uint8(sharp)
    if output.shape != sharp.shape:
        raise ValueError(f"Output and ground truth differ in shape: {output.shape} vs {sharp.shape}")
    if output.ndim != 4 or output.shape[-1] != 3:
        raise ValueError(f"Videos must be (F, H, W, 3), got shape {output.shape}")
    psnrs = [psnr(o, s) for o, s in zip(output, sharp)]
    ssims = [ssim(o, s) for o, s in zip(output, sharp)]
    if lpips_metric is None:
        lpips_value: float | str = f"{NOT_COMPUTED}: --lpips not requested"
    elif not lpips_metric.available:
        lpips_value = lpips_metric.status
    else:
        lpips_value = lpips_metric(output, sharp)
    return {
        "frames": int(output.shape[0]),
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "lpips": lpips_value,
        "tce": tce(output, sharp) if output.shape[0] >= 2 else None,
        "identical_frames": int(sum(math.isinf(p) for p in psnrs)),
        "psnr_per_frame": psnrs,
        "ssim_per_frame": ssims,
    }


def _summary(videos: dict[str, dict]) -> dict:
    summary = {}
    for metric in METRICS:
        values = [v[metric] for v in videos.values()]
        mean = mean_over(values)
        if metric == "lpips" and mean is None:
            # Not computed anywhere: carry the reason, never a number.
            reasons = [v for v in values if isinstance(v, str)]
            summary[metric] = reasons[0] if reasons else f"{NOT_COMPUTED}: no videos"
        else:
            summary[metric] = mean
    summary["videos"] = len(videos)
    summary["frames"] = int(sum(v["frames"] for v in videos.values()))
    return summary


def evaluate_sequences(
    videos: Iterable[VideoResult | tuple],
    lpips_metric: LPIPSMetric | None = None,
    figures_dir: str | os.PathLike | None = None,
    method: str = "output",
    score_input: bool = True,
) -> dict:
    """Score videos one at a time (an iterator keeps only one in memory) and average per video, then over videos.

    Args:
        videos: ``VideoResult(name, blur, output, sharp, frame_names=None)`` items or plain tuples in that order;
            frames (F, H, W, 3), uint8 or float in [0, 1].
        lpips_metric: an ``LPIPSMetric``; ``None`` reports LPIPS as not computed.
        figures_dir: if given, writes ``<name>_<frame>.png`` comparison figures of each video's middle frame.
        method: label of the output in figures.
        score_input: also score the blurred input against the ground truth (``input_summary``).

    Returns:
        ``{"summary": {psnr, ssim, lpips, tce, videos, frames}, "input_summary": {...} (when score_input),
        "videos": {name: {...; "input": {...}}}, "figures": [paths]}``.
    """
    results: dict[str, dict] = {}
    inputs: dict[str, dict] = {}
    figures = []
    for item in videos:
        item = VideoResult(*item)
        if item.name in results:
            raise ValueError(f"Video {item.name!r} appears twice")
        blur, output, sharp = to_uint8(item.blur), to_uint8(item.output), to_uint8(item.sharp)
        if blur.shape != sharp.shape:
            raise ValueError(
                f"Video {item.name!r}: blurred {blur.shape} and sharp {sharp.shape} frames differ in shape"
            )
        if output.shape != sharp.shape:
            raise ValueError(
                f"Video {item.name!r}: output {output.shape} and ground truth {sharp.shape} differ in shape; the "
                "output must keep the frame count and size"
            )
        results[item.name] = score_video(output, sharp, lpips_metric)
        if score_input:
            inputs[item.name] = score_video(blur, sharp, lpips_metric)
            results[item.name]["input"] = {k: inputs[item.name][k] for k in METRICS}
        if figures_dir is not None:
            middle = len(sharp) // 2
            frame = Path(item.frame_names[middle]).stem if item.frame_names else f"{middle:05d}"
            figures.append(
                str(
                    comparison_figure(
                        blur[middle],
                        output[middle],
                        sharp[middle],
                        Path(figures_dir) / f"{item.name}_{frame}.png",
                        title=f"{item.name}, frame {frame}",
                        method=method,
                    )
                )
            )
    if not results:
        raise ValueError("No videos to evaluate")
    out = {"summary": _summary(results)}
    if score_input:
        out["input_summary"] = _summary(inputs)
    out["videos"] = results
    out["figures"] = figures
    return out


def _jsonable(value):
    """inf / nan -> "inf" / "nan" strings, recursively (strict JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return "n/c" if value.startswith(NOT_COMPUTED) else value
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def format_table(rows: list[tuple[str, dict]]) -> str:
    """A Table-1-like text table: one row per (label, {psnr, ssim, lpips, tce})."""
    width = max(32, *(len(label) + 2 for label, _ in rows))
    lines = [f"{'method':<{width}}{'PSNR':>8}{'SSIM':>8}{'LPIPS':>8}{'TCE':>8}"]
    lines.append("-" * len(lines[0]))
    for label, m in rows:
        lines.append(
            f"{label:<{width}}{_cell(m.get('psnr'), 2):>8}{_cell(m.get('ssim'), 4):>8}"
            f"{_cell(m.get('lpips'), 4):>8}{_cell(m.get('tce'), 3):>8}"
        )
    return "\n".join(lines)


def results_csv(results: dict) -> str:
    """CSV text: one row per video (method and input metrics), then the means."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["frames", *METRICS]
    writer.writerow(["video", *columns, *(f"input_{m}" for m in METRICS)])

    def cell(value):
        value = _jsonable(value)
        return "" if value is None else value

    for name, video in results["videos"].items():
        inp = video.get("input", {})
        writer.writerow([name, *(cell(video[c]) for c in columns), *(cell(inp.get(m)) for m in METRICS)])
    summary, inp = results["summary"], results.get("input_summary", {})
    writer.writerow(
        ["mean", summary["frames"], *(cell(summary[m]) for m in METRICS), *(cell(inp.get(m)) for m in METRICS)]
    )
    return buffer.getvalue()


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``video-deblur eval``."""
    parser.add_argument("--dataset", required=True, choices=("gopro", "dvd"), help="dataset layout")
    parser.add_argument("--root", required=True, help="dataset root (GOPRO_Large or quantitative_datasets, or above)")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="split to evaluate (default test)")
    method = parser.add_mutually_exclusive_group(required=True)
    method.add_argument("--model", help="pipeline folder or Hub id; 'default' for the embedded model")
    method.add_argument("--baseline", choices=("identity", "unsharp"), help="a classical baseline instead of a model")
    parser.add_argument("--blur-dir", default="blur", choices=("blur", "blur_gamma"), help="GoPro input folder")
    parser.add_argument("--max-sequences", type=positive_int, default=None, help="evaluate the first N sequences only")
    parser.add_argument(
        "--max-frames", type=positive_int, default=None, help="evaluate the first N frames of each sequence"
    )
    parser.add_argument("--lpips", action="store_true", help="compute LPIPS (only if its weights are on disk)")
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps of the model (default 50)")
    parser.add_argument(
        "--guidance-scale",
        type=positive_float,
        default=None,
        help="classifier-free guidance scale (default: the model's own)",
    )
    parser.add_argument(
        "--strength", type=strength_fraction, default=1.0, help="1.0 starts from noise; < 1 from the noised input"
    )
    parser.add_argument(
        "--noise-scale", type=non_negative_float, default=None, help="starting noise x this (default: the model's own)"
    )
    parser.add_argument(
        "--self-ensemble",
        type=int,
        default=1,
        choices=(1, 2, 4, 8),
        help="the model's geometric self-ensemble: 1, 2, 4 or 8 mirrored / transposed runs averaged (default 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's sampling noise")
    parser.add_argument(
        "--segment-frames",
        type=non_negative_int,
        default=DEFAULT_SEGMENT_FRAMES,
        help=f"frames the model denoises at once, as `video-deblur run --segment-frames` (default "
        f"{DEFAULT_SEGMENT_FRAMES}), so that the scores are those of what `run` writes; 0: each sequence at once",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--unsharp-amount", type=float, default=UNSHARP_AMOUNT, help="unsharp baseline amount")
    parser.add_argument("--unsharp-radius", type=float, default=UNSHARP_RADIUS, help="unsharp baseline radius (px)")
    parser.add_argument("--out", required=True, help="results JSON path; a CSV is written beside it")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out JSON, its CSV and --figures' images"
    )
    parser.add_argument("--figures", default=None, help="folder for comparison figures (middle frame of each video)")


def _load_dataset(args: argparse.Namespace):
    from ..data.datasets import DVDDataset, GoProDataset

    common = {"split": args.split, "whole_sequences": True, "augment": False, "max_frames": args.max_frames}
    if args.dataset == "gopro":
        return GoProDataset(args.root, blur_dir=getattr(args, "blur_dir", "blur"), **common)
    if args.dataset == "dvd":
        return DVDDataset(args.root, **common)
    raise ValueError(f"Unknown dataset {args.dataset!r}; choose 'gopro' or 'dvd'")


def _method(args: argparse.Namespace, device: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    if getattr(args, "baseline", None) is not None and getattr(args, "model", None) is not None:
        raise ValueError("Give either --model or --baseline, not both")
    if getattr(args, "baseline", None) == "identity":
        return "identity", identity
    if getattr(args, "baseline", None) == "unsharp":
        amount, radius = args.unsharp_amount, args.unsharp_radius
        unsharp(np.zeros((1, 1, 3), dtype=np.uint8), amount, radius)  # check the values before loading data
        return f"unsharp (amount {amount:g}, radius {radius:g})", lambda frames: unsharp(frames, amount, radius)
    if getattr(args, "baseline", None) is not None:
        raise ValueError(f"Unknown baseline {args.baseline!r}; choose 'identity' or 'unsharp'")
    if getattr(args, "model", None) is None:
        raise ValueError("Give --model or --baseline")
    model = str(args.model)
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if model != "default" and not Path(model).exists() and not looks_like_hub_id:
        raise ValueError(f"--model {model!r} does not exist (expected a pipeline folder, a Hub id, or 'default')")
    import torch

    from .. import VideoDeblurPipeline

    pipe = (
        VideoDeblurPipeline.from_default()
        if args.model == "default"
        else VideoDeblurPipeline.from_pretrained(args.model)
    )
    pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    if getattr(args, "noise_scale", None) is None:  # the results record the value used, not "the model's"
        args.noise_scale = pipe.default_noise_scale
    if getattr(args, "guidance_scale", None) is None:
        args.guidance_scale = pipe.default_guidance_scale

    from ..segments import deblur_segments

    segment_frames = getattr(args, "segment_frames", DEFAULT_SEGMENT_FRAMES)

    def run(frames: np.ndarray) -> np.ndarray:
        kwargs = {
            "num_inference_steps": args.steps,
            "strength": args.strength,
            "noise_scale": args.noise_scale,
            "self_ensemble": getattr(args, "self_ensemble", 1),
            "generator": torch.Generator().manual_seed(args.seed),
        }
        if args.guidance_scale is not None:
            kwargs["guidance_scale"] = args.guidance_scale
        return np.stack(list(deblur_segments(pipe, frames, segment_frames=segment_frames, **kwargs)))

    return f"model {args.model}", run


def run_eval(args: argparse.Namespace) -> int:
    """Run ``video-deblur eval``; returns the exit code. Bad arguments or data raise ``ValueError``."""
    from tqdm.auto import tqdm

    if args.dataset not in REPORTED:
        raise ValueError(f"Unknown dataset {args.dataset!r}; choose 'gopro' or 'dvd'")
    for name in ("max_sequences", "max_frames", "steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if Path(args.out).suffix.lower() == ".csv":
        raise ValueError(
            f"--out {args.out!r} ends in .csv; expected the JSON path (results.json): the CSV is written beside it"
        )
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.time()
    # Before anything loads: earlier results (and figures) are not replaced unless asked.
    existing = [str(p) for p in (Path(args.out), Path(args.out).with_suffix(".csv")) if p.exists()]
    if args.figures is not None and Path(args.figures).is_dir() and any(Path(args.figures).iterdir()):
        existing.append(f"--figures {args.figures}")
    if existing and not getattr(args, "overwrite", False):
        raise ValueError(
            f"--out {args.out!r}: {' and '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
            "another --out"
        )
    if getattr(args, "baseline", None) is not None and getattr(args, "self_ensemble", 1) != 1:
        raise ValueError(
            f"--self-ensemble {args.self_ensemble} applies to --model only; a baseline runs once (drop the option)"
        )
    segment_frames = getattr(args, "segment_frames", DEFAULT_SEGMENT_FRAMES)
    if getattr(args, "model", None) is not None and segment_frames != 0 and segment_frames < 16:
        raise ValueError(
            f"--segment-frames must be 0 (each sequence at once) or at least 16 (the model's temporal window), "
            f"got {segment_frames}"
        )
    dataset = _load_dataset(args)  # before the model: a bad root fails fast
    label, method = _method(args, device)
    indices = list(range(len(dataset.sequences)))[: args.max_sequences]
    lpips_metric = LPIPSMetric(device) if args.lpips else None

    def videos():
        for index in tqdm(indices, desc=f"eval {args.dataset}", unit="video"):
            blur, sharp = dataset.load_frames(index)
            output = method(blur)
            sequence = dataset.sequences[index]
            yield VideoResult(sequence.name, blur, output, sharp, sequence.names[: len(sharp)])

    model = getattr(args, "model", None)
    short = (Path(model).name or model) if model is not None else label.split(" (")[0]  # figure panel label
    results = evaluate_sequences(videos(), lpips_metric=lpips_metric, figures_dir=args.figures, method=short)
    synthetic = any((s.blur[0].parent.parent / "meta.json").is_file() for s in dataset.sequences[:1])
    results["settings"] = {
        "dataset": args.dataset,
        "root": str(Path(args.root).resolve()),
        "split": args.split,
        "synthetic": synthetic,
        "method": label,
        "model": getattr(args, "model", None),
        "baseline": getattr(args, "baseline", None),
        "blur_dir": getattr(args, "blur_dir", "blur") if args.dataset == "gopro" else "input",
        "max_sequences": args.max_sequences,
        "max_frames": args.max_frames,
        "lpips_requested": bool(args.lpips),
        "lpips_status": lpips_metric.status if lpips_metric else f"{NOT_COMPUTED}: --lpips not requested",
        "protocol": (
            "BasicSR: RGB, uint8 rounding, crop border 0, SSIM 11x11 Gaussian sigma 1.5; per video then over videos"
        ),
        "tce_units": "8-bit (0-255)",
        "seconds": round(time.time() - start, 2),
    }
    if getattr(args, "model", None) is not None:
        results["settings"].update(
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            strength=args.strength,
            noise_scale=getattr(args, "noise_scale", None),
            self_ensemble=getattr(args, "self_ensemble", 1),
            segment_frames=segment_frames,
            seed=args.seed,
            device=device,
        )
    out = Path(args.out)
    write_text(out, json.dumps(_jsonable(results), indent=2) + "\n")
    write_text(out.with_suffix(".csv"), results_csv(results))

    where = f"{'synthetic ' if synthetic else ''}{args.dataset} {args.split}"
    if getattr(args, "baseline", None) == "identity":
        rows = [("identity = blurred input (measured)", results["summary"])]
    else:
        rows = [("blurred input (measured)", results["input_summary"]), (f"{label} (measured)", results["summary"])]
    reported_on = "GoPro" if args.dataset == "gopro" else "DVD"
    rows += [(f"{name}, {reported_on} test", values) for name, values in REPORTED[args.dataset]]
    print(f"\nResults on {where}: {results['summary']['videos']} videos, {results['summary']['frames']} frames")
    print(format_table(rows))
    if synthetic:
        print("Reported rows are on the real test set; they are not comparable with synthetic data.")
    if results["summary"]["lpips"] is not None and isinstance(results["summary"]["lpips"], str):
        print(f"LPIPS {results['summary']['lpips']}")
    print(f"Wrote {out} and {out.with_suffix('.csv')}" + (f"; figures in {args.figures}" if args.figures else ""))
    return 0
