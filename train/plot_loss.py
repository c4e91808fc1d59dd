#!/usr/bin/env python
"""Plot the loss curve of a training run from the `loss_log.csv` its script wrote (and `validation_log.csv`).

python train/plot_loss.py stage1/ -o stage1/loss.png
python train/plot_loss.py stage0/ stage1/ stage2/ -o runs.png   # several runs, steps placed one after another
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from pipeline_video_deblur.atomic import atomic_path


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over `window` points (1 = raw)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot loss_log.csv (and validation_log.csv) of training runs.")
    parser.add_argument("runs", nargs="+", help="output folders of training runs (or loss_log.csv files)")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--smooth", type=int, default=0, help="moving-average window; 0 = about 1/20 of the steps")
    parser.add_argument("--log", action="store_true", help="logarithmic loss axis")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for run in args.runs:
        path = Path(run)
        log = path if path.is_file() else path / "loss_log.csv"
        if not log.is_file():
            print(f"plot_loss: no loss_log.csv in {run}", file=sys.stderr)
            return 2
        validation = log.parent / "validation_log.csv"
        runs.append((log.parent.name, read_csv(log), read_csv(validation) if validation.is_file() else []))

    has_validation = any(v for _, _, v in runs)
    fig, axes = plt.subplots(1, 2 if has_validation else 1, figsize=(11 if has_validation else 6.5, 4), squeeze=False)
    loss_ax = axes[0][0]
    offset = 0
    for name, rows, validation in runs:
        steps = [offset + r["step"] for r in rows]
        for key, style in (("loss", "-"), ("loss_coherence", ":")):
            values = [r[key] for r in rows if key in r]
            if not values or (key == "loss_coherence" and not any(values)):
                continue
            window = args.smooth or max(1, len(values) // 20)
            label = f"{name} {key}" + (f" (avg {window})" if window > 1 else "")
            loss_ax.plot(steps[: len(values)], smooth(values, window), style, label=label)
        if validation and has_validation:
            for key in [k for k in validation[0] if k != "step"]:
                axes[0][1].plot(
                    [offset + v["step"] for v in validation], [v[key] for v in validation], "o-", label=f"{name} {key}"
                )
        if len(runs) > 1 and rows:
            offset = steps[-1]
    loss_ax.set_xlabel("optimiser step")
    loss_ax.set_ylabel("loss")
    if args.log:
        loss_ax.set_yscale("log")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    if has_validation:
        axes[0][1].set_xlabel("optimiser step")
        axes[0][1].set_ylabel("validation")
        axes[0][1].grid(alpha=0.3)
        axes[0][1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(args.output) as tmp:  # the old figure stays until the new one is complete
        fig.savefig(tmp, dpi=110, format=Path(args.output).suffix[1:].lower() or "png")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
