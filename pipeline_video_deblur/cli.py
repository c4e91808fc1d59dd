"""`video-deblur`: run, eval, synth, leaves, convert and push from the command line.

Every subcommand reports bad input as one line on stderr and a non-zero exit, with no traceback and no
partial output (set VIDEO_DEBLUR_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time


def _number(kind: type, minimum: float, inclusive: bool, description: str, maximum: float | None = None):
    """An argparse type: `kind(value)`, refused with the value and what was expected when out of range
    (`minimum` excluded unless `inclusive`; `maximum`, when given, included) or not finite (nan, inf)."""

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = None
        if (
            number is None
            or not math.isfinite(number)  # nan passes every comparison below, inf the ones without a maximum
            or number < minimum
            or (not inclusive and number == minimum)
            or (maximum is not None and number > maximum)
        ):
            raise argparse.ArgumentTypeError(f"expected {description}, got {value!r}")
        return number

    return parse


positive_int = _number(int, 1, True, "a positive integer")
non_negative_int = _number(int, 0, True, "a non-negative integer")
positive_float = _number(float, 0, False, "a positive number")
strength_fraction = _number(float, 0, False, "a number in (0, 1]", maximum=1)
non_negative_float = _number(float, 0, True, "a number >= 0")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by every subcommand that runs the pipeline."""
    parser.add_argument(
        "--model", default="default", help="pipeline folder or Hub id; 'default' is the embedded default model"
    )
    parser.add_argument("--steps", type=positive_int, default=50, help="denoising steps (default 50)")
    parser.add_argument(
        "--guidance-scale",
        type=positive_float,
        default=None,
        help="CFG scale; <= 1 disables CFG (default: the model's own, 2 for a model that sets none)",
    )
    parser.add_argument("--strength", type=strength_fraction, default=1.0, help="(0, 1]; < 1 starts from the input")
    parser.add_argument(
        "--noise-scale",
        type=non_negative_float,
        default=None,
        help="starting noise x this (>= 0; < 1 trades invented texture for fidelity; default: the model's own)",
    )
    parser.add_argument(
        "--self-ensemble",
        type=int,
        default=1,
        choices=(1, 2, 4, 8),
        help="deblur under 1, 2, 4 or 8 mirrored / transposed copies of the frames and average them: that many "
        "times the time for a more faithful result (default 1)",
    )
    parser.add_argument("--num-frames", type=positive_int, default=16, help="frames per temporal window")
    parser.add_argument(
        "--frame-overlap",
        type=non_negative_int,
        default=None,
        help="frames shared by neighbouring windows (default: 4, or half the window if that is shorter)",
    )
    parser.add_argument("--tile-size", type=positive_int, default=None, help="spatial tile side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])


def load_pipeline(model: str, device: str | None = None, dtype: str = "float32"):
    """Load `model` ('default', a folder or a Hub id) with a clear error when it is not a pipeline."""
    import torch

    from .pipeline_video_deblur import VideoDeblurPipeline

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    if model == "default":
        pipe = VideoDeblurPipeline.from_default(torch_dtype=torch_dtype)
    else:
        if os.path.exists(model):
            if not os.path.isdir(model):
                raise ValueError(f"--model {model!r} is a file; expected a pipeline folder with model_index.json")
            missing = [
                name
                for name in ("model_index.json", "unet", "vae", "image_encoder", "blur_encoder", "scheduler")
                if not os.path.exists(os.path.join(model, name))
            ]
            if missing:
                raise ValueError(
                    f"--model {model!r} is not a VideoDeblurPipeline folder: missing {', '.join(missing)}"
                )
        elif model.startswith((".", "/", "~")) or model.count("/") != 1:
            raise ValueError(f"--model {model!r} does not exist (expected a folder, a Hub id user/name, or 'default')")
        pipe = VideoDeblurPipeline.from_pretrained(model, torch_dtype=torch_dtype)
    return pipe.to(device)


def check_device(device: str) -> None:
    """A clear error, before any weights load, when `device` is not a device name or is not on this machine."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"--device {device!r} is not a device; expected cpu, cuda, cuda:N or mps") from error
    from .devices import device_problem

    problem = device_problem(parsed)
    if problem is not None:
        raise ValueError(f"--device {device!r} {problem}; use cpu")


# ----------------------------------------------------------------------------------------------------------------
# run


def add_run_args(parser: argparse.ArgumentParser) -> None:
    from .segments import DEFAULT_SEGMENT_FRAMES

    parser.add_argument("input", help="a video file (anything PyAV reads) or a folder of frames (png/jpg)")
    parser.add_argument("-o", "--output", required=True, help="an .mp4 (or other video) file, or a folder for PNGs")
    add_model_args(parser)
    parser.add_argument(
        "--segment-frames",
        type=non_negative_int,
        default=DEFAULT_SEGMENT_FRAMES,
        help=f"frames denoised at once (default {DEFAULT_SEGMENT_FRAMES}); a longer clip is read, denoised and written "
        "segment by segment, so memory does not grow with its length; 0: the whole clip at once",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _within(path: str, folder: str) -> bool:
    """True when `path` (which need not exist) is `folder` or lies inside it: its existing ancestors are compared
    with `folder` as files (`samefile`), which holds across symlinks, case-insensitive disks and drives."""
    if not os.path.isdir(folder):
        return False
    current = path
    while True:
        if os.path.exists(current) and os.path.samefile(current, folder):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def run_run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .data.video_io import FrameStream, FrameWriter, check_writable_output, is_video_file
    from .segments import check_segment_frames, deblur_segments

    args.input, args.output = os.path.expanduser(args.input), os.path.expanduser(args.output)
    # realpath: a symlink or `..` must not hide that the output is (or holds) the input; `_within` compares files,
    # not names, so a case-insensitive disk does not hide it either
    source, target = os.path.realpath(args.input), os.path.realpath(args.output)
    if not os.path.exists(source):
        raise ValueError(f"input {args.input!r} does not exist")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise ValueError(f"output {args.output!r} is the input; choose another path")
    if _within(source, target):
        raise ValueError(f"output {args.output!r} holds the input {args.input!r}; choose another path")
    if os.path.isdir(source) and _within(target, source):
        raise ValueError(f"output {args.output!r} is inside the input folder {args.input!r}; choose another path")
    if os.path.exists(target) and not args.overwrite:
        raise ValueError(f"output {args.output!r} exists; pass --overwrite to replace it")
    # before the run, which can take hours: an output that cannot be written, or a device that is not there, fails now
    check_writable_output(target, overwrite=args.overwrite)
    if args.device is not None:
        check_device(args.device)
    if args.frame_overlap is None:
        args.frame_overlap = min(4, args.num_frames // 2)
    if args.frame_overlap >= args.num_frames:
        raise ValueError(
            f"--frame-overlap must be smaller than --num-frames={args.num_frames}, got {args.frame_overlap}"
        )
    if args.segment_frames and args.segment_frames < args.num_frames:
        raise ValueError(
            f"--segment-frames must be 0 (the whole clip at once) or at least --num-frames={args.num_frames}, "
            f"got {args.segment_frames}"
        )
    check_segment_frames(args.segment_frames, args.num_frames, args.frame_overlap)

    clip = FrameStream(source)  # opened and checked here; its frames are read as the segments need them
    names = None
    if not is_video_file(target) and clip.names is not None:
        # a folder gets PNGs (lossless) under the input frames' names, whatever their format was
        names = [os.path.splitext(name)[0] + ".png" for name in clip.names]
        names = names if len(set(names)) == len(names) else None
    pipe = load_pipeline(args.model, args.device, args.dtype)
    started = time.perf_counter()
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    # a clip longer than one segment gets a bar of frames written; each segment's steps show under it
    bar = tqdm(total=clip.count, unit="frame", desc="video-deblur", disable=True)

    def on_segment(first: int, count: int) -> None:
        nonlocal bar
        if first > 0 and bar.disable:  # a second segment: the clip is long, show the frames' bar from now on
            bar = tqdm(total=clip.count, initial=first, unit="frame", desc="video-deblur")
            pipe.set_progress_bar_config(leave=False)

    with FrameWriter(target, fps=clip.fps, names=names, overwrite=args.overwrite) as writer:
        sharp = deblur_segments(
            pipe,
            clip,
            segment_frames=args.segment_frames,
            frame_overlap=args.frame_overlap,
            num_frames=args.num_frames,
            on_segment=on_segment,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            strength=args.strength,
            noise_scale=args.noise_scale,
            tile_size=args.tile_size,
            self_ensemble=args.self_ensemble,
            generator=generator,
        )
        for frame in sharp:
            writer.write(frame[None])
            bar.update()
        size = writer.frame_shape
    bar.close()
    elapsed = time.perf_counter() - started
    print(f"wrote {writer.count} frames of {size[1]}x{size[0]} to {args.output} in {elapsed:.1f} s")
    return 0


# ----------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="video-deblur", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="deblur a video file or a folder of frames")
    add_run_args(run)
    run.set_defaults(handler=run_run)

    from .data.synthetic import add_synth_args, run_synth

    synth = sub.add_parser("synth", help="write synthetic GoPro-layout blurred/sharp data")
    add_synth_args(synth)
    synth.set_defaults(handler=run_synth)

    from .data.dead_leaves import add_leaves_args, run_leaves

    leaves = sub.add_parser("leaves", help="write dead-leaves stills: procedural content for `synth --photos`")
    add_leaves_args(leaves)
    leaves.set_defaults(handler=run_leaves)

    from .metrics.evaluate import add_eval_args, run_eval

    evaluate = sub.add_parser("eval", help="score a model or a baseline on GoPro or DVD")
    add_eval_args(evaluate)
    evaluate.set_defaults(handler=run_eval)

    from .convert import add_convert_args, run_convert

    convert = sub.add_parser("convert", help="T2V + CLIP checkpoints -> a pipeline folder ready for stage 1")
    add_convert_args(convert)
    convert.set_defaults(handler=run_convert)

    import importlib.util

    if importlib.util.find_spec(f"{__package__}.hub") is not None:
        from .hub import add_push_args, run_push

        push = sub.add_parser("push", help="write a model card and upload a pipeline folder to the Hub")
        add_push_args(push)
        push.set_defaults(handler=run_push)
    return parser


def _exit_on_sigterm(signum, frame) -> None:
    # `kill` and `timeout` send SIGTERM, which by default ends Python at once: no `finally`, so half-written
    # temporary files and idle worker processes would stay. As SystemExit, cleanup runs as on Ctrl-C.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("video-deblur: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, OSError, RuntimeError) as error:
        if os.environ.get("VIDEO_DEBLUR_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"video-deblur {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
