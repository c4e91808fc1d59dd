"""How much of the synthetic deblurring map a plain pixel-space CNN learns on a CPU budget (issue 5's diagnosis).

    python benchmarks/regressor_probe.py --train-data runs/default_model/data          # 32 train sequences
    python benchmarks/regressor_probe.py --train-data runs/data_512 --steps 3000        # 512 sequences

Not the product's architecture and not a baseline to beat: a reference point for the default model. A residual
CNN (pixel unshuffle x2, 8 conv layers of 64 channels, ReLU, zero-initialised output: it starts as the identity)
regresses sharp frames from blurred ones with MSE, Adam, random 64 px crops of single frames, batch 8, on one
thread. Every `--eval-every` steps it scores, in PSNR gain over the blurred input (8-bit frames, mean per frame):

- `fit`: the first 16 frames of the first four training sequences (data it trains on);
- `test`: the quality benchmark's clips (`video-deblur synth --split test --sequences 4 --frames 16 --size 128x128
  --seed 0`, test photos only).

A gain on `fit` that `test` does not share is memorisation; neither gaining is a model or a budget too small for
the map. Seeds are fixed and the data order does not depend on the evaluations, so the figure at a step is the
same however often it is evaluated. Prints a table, writes JSON and a plot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class ResidualCNN(nn.Module):
    def __init__(self, channels: int = 64, layers: int = 8, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.inp = nn.Conv2d(3 * factor * factor, channels, 3, padding=1)
        body = []
        for _ in range(layers):
            body += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.out = nn.Conv2d(channels, 3 * factor * factor, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(self.inp(F.pixel_unshuffle(x * 2 - 1, self.factor)))
        return x + F.pixel_shuffle(self.out(features), self.factor) / 2


def load_sequences(root: str, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(blur, sharp) float tensors (F, 3, H, W) in [0, 1] per sequence of a GoPro-layout folder."""
    from pipeline_video_deblur.data.datasets import GoProDataset

    dataset = GoProDataset(root, split=split, whole_sequences=True)
    out = []
    for index in range(len(dataset.sequence_names)):
        blur, sharp = dataset.load_frames(index)[:2]
        out.append(tuple(torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255 for a in (blur, sharp)))
    return out


def psnr_gain(net: nn.Module, clips) -> tuple[float, float]:
    """(input PSNR, output PSNR), 8-bit frames, mean over frames."""
    quantise = lambda x: (x * 255 + 0.5).floor()  # noqa: E731
    before, after = [], []
    with torch.no_grad():
        for blur, sharp in clips:
            output = net(blur).clamp(0, 1)
            for b, o, s in zip(quantise(blur), quantise(output), quantise(sharp)):
                before.append(10 * np.log10(255**2 / ((b - s) ** 2).mean().item()))
                after.append(10 * np.log10(255**2 / ((o - s) ** 2).mean().item()))
    return float(np.mean(before)), float(np.mean(after))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-data", required=True, help="GoPro-layout root with a train/ folder")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--cache", default=os.path.join(HERE, "..", "runs", "benchmark_synth_test_seed0"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "regressor_probe.json"))
    parser.add_argument("--figure", default=None, help="the plot (default: --out with .png)")
    args = parser.parse_args()
    if args.steps < 1 or args.eval_every < 1:
        parser.error(f"--steps and --eval-every must be at least 1, got {args.steps} and {args.eval_every}")

    sys.path.insert(0, HERE)
    from quality import load_test_clips
    from results_io import figure_path, pyplot, save_figure, write_json

    args.figure = figure_path(args.out, args.figure)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = load_sequences(args.train_data, "train")
    test = [
        (torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(s).permute(0, 3, 1, 2).float() / 255)
        for _, b, s in load_test_clips(args.cache)
    ]
    fit = [(b[:16], s[:16]) for b, s in train[:4]]
    blur_all = torch.cat([b for b, _ in train])
    sharp_all = torch.cat([s for _, s in train])
    height, width = blur_all.shape[-2:]
    net = ResidualCNN()
    optimizer = torch.optim.Adam(net.parameters(), args.lr)
    generator = torch.Generator().manual_seed(0)
    rows, started = [], time.perf_counter()
    print(f"{len(train)} train sequences, {len(blur_all)} frames; {args.steps} steps", flush=True)
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(blur_all), (8,), generator=generator)
        top = torch.randint(0, height - 64 + 1, (8,), generator=generator)
        left = torch.randint(0, width - 64 + 1, (8,), generator=generator)
        blur, sharp = (
            torch.stack([frames[i, :, y : y + 64, x : x + 64] for i, y, x in zip(index, top, left)])
            for frames in (blur_all, sharp_all)
        )
        loss = F.mse_loss(net(blur), sharp)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            fit_in, fit_out = psnr_gain(net, fit)
            test_in, test_out = psnr_gain(net, test)
            rows.append({"step": step, "fit_gain_db": fit_out - fit_in, "test_gain_db": test_out - test_in,
                         "test_input_psnr": test_in, "test_psnr": test_out,
                         "minutes": (time.perf_counter() - started) / 60})  # fmt: skip
            print(f"step {step:6d}  fit gain {fit_out - fit_in:+.2f} dB  test gain {test_out - test_in:+.2f} dB "
                  f"({test_in:.2f} -> {test_out:.2f})  {rows[-1]['minutes']:.1f} min", flush=True)  # fmt: skip

    results = {"train_data": args.train_data, "train_sequences": len(train), "lr": args.lr, "rows": rows}
    write_json(args.out, results)

    figure, axis = pyplot().subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    axis.plot(steps, [r["fit_gain_db"] for r in rows], "o-", label="training clips (fit)")
    axis.plot(steps, [r["test_gain_db"] for r in rows], "s-", label="benchmark clips (test photos)")
    axis.axhline(0, color="grey", lw=0.8)
    axis.set_xlabel("step")
    axis.set_ylabel("PSNR gain over the input (dB)")
    axis.set_title(f"plain CNN regressor, {len(train)} train sequences, lr {args.lr:g}")
    axis.legend()
    save_figure(figure, args.figure)
    print(f"wrote {args.out} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
