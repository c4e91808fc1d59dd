"""Peak memory of `video-deblur run` against the clip's length: segment by segment (the default) and whole.

    python benchmarks/long_clip_memory.py                              # 32, 96 and 192 frames of 128 x 128
    python benchmarks/long_clip_memory.py --frames 64,256 --size 256   # other lengths, 256 x 256 frames
    python benchmarks/long_clip_memory.py --segment-frames 32          # another segment length

`video-deblur run` reads, denoises and writes a clip `--segment-frames` frames at a time (64 by default), so its
memory should not grow with the clip's length; `--segment-frames 0` holds the whole clip, as `pipe(clip)` does.
For every length this script writes a smooth moving clip to a temporary .mp4, runs the real CLI in a fresh process
for each mode (one step, no guidance: the fast setting, so the run is short and the frames dominate memory) and
reads that process's peak resident memory (`getrusage` of the child). It prints a table and writes JSON and a
figure (peak MiB against frames, one line per mode).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from quality import number_list  # noqa: E402
from results_io import pyplot, save_figure, write_json  # noqa: E402

from pipeline_video_deblur.cli import positive_int  # noqa: E402
from pipeline_video_deblur.data import write_video  # noqa: E402
from pipeline_video_deblur.segments import DEFAULT_SEGMENT_FRAMES  # noqa: E402

frame_counts = number_list(positive_int, "that are positive integers")

# Runs `video-deblur run` with the given arguments as its child and prints the child's peak resident memory (KiB on
# Linux): a fresh process per measurement, so no run's peak hides another's.
_MEASURE = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "pipeline_video_deblur.cli", "run", *sys.argv[1:]])
if done.returncode:
    sys.exit(done.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def moving_clip(frames: int, size: int) -> np.ndarray:
    """A smooth pattern drifting by a pixel a frame: (F, size, size, 3) uint8."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    clip = [
        np.stack(
            [
                np.sin(2 * np.pi * (3 * x + 0.01 * i)),
                np.cos(2 * np.pi * (2 * y - 0.01 * i)),
                np.sin(2 * np.pi * (x + y + 0.02 * i)),
            ],
            axis=-1,
        )
        for i in range(frames)
    ]
    return ((np.stack(clip) * 0.5 + 0.5) * 255).round().astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' (embedded) or a pipeline folder")
    parser.add_argument(
        "--frames", type=frame_counts, default=frame_counts("32,96,192"), help="clip lengths (default 32,96,192)"
    )
    parser.add_argument("--size", type=positive_int, default=128, help="frame side in pixels (default 128)")
    parser.add_argument(
        "--segment-frames",
        type=positive_int,
        default=DEFAULT_SEGMENT_FRAMES,
        help=f"the segmented mode's segment length (default {DEFAULT_SEGMENT_FRAMES}, the CLI's)",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results", "long_clip_memory.json"))
    parser.add_argument("--figure", default=None, help="the plot (default: --out with .png)")
    args = parser.parse_args()
    figure_path = args.figure or os.path.splitext(args.out)[0] + ".png"

    modes = {f"segments of {args.segment_frames}": args.segment_frames, "whole clip": 0}
    rows = []
    print(f"{'frames':>7} {'mode':<16} {'peak MiB':>9} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as work:
        for count in args.frames:
            source = os.path.join(work, f"clip_{count}.mp4")
            write_video(moving_clip(count, args.size), source, fps=24)
            for mode, segment in modes.items():
                output = os.path.join(work, f"out_{count}_{segment}.mp4")
                command = [source, "-o", output, "--model", args.model, "--steps", "1", "--guidance-scale", "1"]
                command += ["--segment-frames", str(segment), "--overwrite"]
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=False
                )
                seconds = time.perf_counter() - started
                if done.returncode:
                    print(done.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"video-deblur run failed on {count} frames ({mode}): exit {done.returncode}")
                peak = int(done.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB
                rows.append({"frames": count, "mode": mode, "segment_frames": segment, "peak_mib": peak})
                rows[-1]["seconds"] = seconds
                print(f"{count:>7} {mode:<16} {peak:>9.0f} {seconds:>8.1f}", flush=True)

    def growth(mode: str) -> float:
        """MiB of peak memory per extra frame, from the shortest clip to the longest."""
        points = [r for r in rows if r["mode"] == mode]
        first, last = points[0], points[-1]
        return (last["peak_mib"] - first["peak_mib"]) / max(last["frames"] - first["frames"], 1)

    result = {
        "command": "video-deblur run CLIP -o OUT --steps 1 --guidance-scale 1 --segment-frames N",
        "model": args.model,
        "frame_size": [args.size, args.size],
        "machine": f"{os.cpu_count()} CPU cores",
        "rows": rows,
        "mib_per_frame": {mode: growth(mode) for mode in modes},
    }
    write_json(args.out, result)
    for mode in modes:
        print(f"{mode}: {growth(mode):+.2f} MiB of peak memory per extra frame")

    figure, axis = pyplot().subplots(figsize=(6, 4))
    for mode in modes:
        points = [r for r in rows if r["mode"] == mode]
        axis.plot([r["frames"] for r in points], [r["peak_mib"] for r in points], "o-", label=mode)
    axis.set_xlabel(f"clip length (frames of {args.size} x {args.size})")
    axis.set_ylabel("peak resident memory (MiB)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(f"video-deblur run, {args.model} model, 1 step")
    save_figure(figure, figure_path)
    print(f"wrote {args.out} and {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
