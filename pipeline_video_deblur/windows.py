"""Temporal windows, spatial tiles and their blending weights (DESIGN 2.6).

A clip of any length and size is denoised as overlapping windows (frames) x tiles (latent pixels). At every
denoising step each window's prediction is weighted by a smooth ramp in its overlaps and the weighted
predictions are summed; the weights of all windows sum to one at every position, so neighbouring windows
agree and the seams vanish.
"""

from __future__ import annotations

import math

import torch


def split_range(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Cover `range(length)` with windows of `window` items that overlap by at least `overlap`.

    Windows start every `window - overlap` items; the last one is shifted back to end at `length`, so every
    window has the full size unless the range is shorter than one window. Returns `(start, end)` pairs.
    """
    if length < 1:
        raise ValueError(f"`length` must be at least 1, got {length}")
    if window < 1:
        raise ValueError(f"`window` must be at least 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"`overlap` must be in [0, window={window}), got {overlap}")
    if length <= window:
        return [(0, length)]
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    return [(s, s + window) for s in starts]


def ramp_weights(spans: list[tuple[int, int]], length: int) -> list[torch.Tensor]:
    """Blending weights for `spans` over `range(length)`, each a 1D tensor of its span's size.

    Each span's raw weight rises along a raised cosine over the part it shares with the previous span and
    falls over the part it shares with the next one (never reaching zero, so every position is covered);
    the raw weights are then normalised so that, at every position, the weights of all spans sum to one.
    """
    raw = []
    for i, (start, end) in enumerate(spans):
        w = torch.ones(end - start, dtype=torch.float64)
        if i > 0:
            shared = max(spans[i - 1][1] - start, 0)
            if shared > 0:
                pos = torch.arange(1, shared + 1, dtype=torch.float64) / (shared + 1)
                w[:shared] = torch.minimum(w[:shared], 0.5 - 0.5 * torch.cos(math.pi * pos))
        if i < len(spans) - 1:
            shared = max(end - spans[i + 1][0], 0)
            if shared > 0:
                pos = torch.arange(shared, 0, -1, dtype=torch.float64) / (shared + 1)
                w[-shared:] = torch.minimum(w[-shared:], 0.5 - 0.5 * torch.cos(math.pi * pos))
        raw.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, end), w in zip(spans, raw):
        total[start:end] += w
    if bool((total <= 0).any()):
        uncovered = torch.nonzero(total <= 0).flatten().tolist()
        raise ValueError(f"positions {uncovered[:10]} are not covered by spans {spans}")
    return [(w / total[start:end]).float() for (start, end), w in zip(spans, raw)]


class WindowPlan:
    """The windows x tiles that cover a latent clip of `frames` x `height` x `width`, with their weights.

    Iterate over it to get `(frame_slice, row_slice, col_slice, weight)` where `weight` has shape
    (1, 1, f, h, w) and broadcasts over (B, C, F, H, W) latents. All weights sum to one at every latent.
    """

    def __init__(
        self,
        frames: int,
        height: int,
        width: int,
        num_frames: int,
        frame_overlap: int,
        tile_size: int | None = None,
        tile_overlap: int = 0,
    ):
        self.frame_spans = split_range(frames, num_frames, min(frame_overlap, num_frames - 1))
        tile_h = tile_size if tile_size is not None else height
        tile_w = tile_size if tile_size is not None else width
        self.row_spans = split_range(height, tile_h, min(tile_overlap, tile_h - 1))
        self.col_spans = split_range(width, tile_w, min(tile_overlap, tile_w - 1))
        self.frame_weights = ramp_weights(self.frame_spans, frames)
        self.row_weights = ramp_weights(self.row_spans, height)
        self.col_weights = ramp_weights(self.col_spans, width)

    def __len__(self) -> int:
        return len(self.frame_spans) * len(self.row_spans) * len(self.col_spans)

    def __iter__(self):
        for fi, (f0, f1) in enumerate(self.frame_spans):
            for ri, (r0, r1) in enumerate(self.row_spans):
                for ci, (c0, c1) in enumerate(self.col_spans):
                    weight = (
                        self.frame_weights[fi][:, None, None]
                        * self.row_weights[ri][None, :, None]
                        * self.col_weights[ci][None, None, :]
                    )  # (f, h, w)
                    yield fi, slice(f0, f1), slice(r0, r1), slice(c0, c1), weight[None, None]
