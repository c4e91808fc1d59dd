"""Deblurring a clip of any length in bounded memory: consecutive segments, blended where they overlap.

`VideoDeblurPipeline.__call__` holds the whole clip (its frames, latents and every window's prediction) at once,
so its memory grows with the clip. `deblur_segments` reads frames from any iterable (a `FrameStream` reads
them from disk one at a time), runs the pipeline on `segment_frames` of them at a time, and yields the sharp
frames in order as soon as they are final: memory grows with the segment, not the clip. Neighbouring segments
share `frame_overlap` frames, whose outputs are blended by the same raised-cosine ramp that blends the
pipeline's own temporal windows, so no seam shows where one segment hands over to the next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

DEFAULT_SEGMENT_FRAMES = 64
"""Frames per segment of `video-deblur run`: four windows of 16 frames; peak memory grows with it."""


def check_segment_frames(segment_frames: int, num_frames: int, frame_overlap: int) -> None:
    """Refuse a segment length with the value and what is expected: 0 (the whole clip at once) or at least one
    temporal window, `num_frames`, which is more than the `frame_overlap` neighbouring segments share."""
    if isinstance(segment_frames, bool) or not isinstance(segment_frames, int):
        raise ValueError(f"`segment_frames` must be an integer, got {segment_frames!r}")
    if segment_frames != 0 and segment_frames < max(num_frames, frame_overlap + 1):
        raise ValueError(
            f"`segment_frames` must be 0 (the whole clip at once) or at least num_frames={num_frames} "
            f"(one temporal window), got {segment_frames}"
        )


def segment_spans(
    length: int, segment_frames: int = DEFAULT_SEGMENT_FRAMES, frame_overlap: int = 4
) -> list[tuple[int, int]]:
    """`(first frame, frame count)` of each pipeline call `deblur_segments` makes on a clip of `length` frames, for
    a caller that knows the length beforehand (to size a progress bar or the memory one call needs)."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"`length` must be a positive number of frames, got {length!r}")
    check_segment_frames(segment_frames, 1, frame_overlap)  # more than the overlap, so each segment moves on
    longest = math.inf if segment_frames == 0 else segment_frames + segment_frames // 2
    spans = []
    first = 0
    while length - first > longest:
        spans.append((first, segment_frames))
        first += segment_frames - frame_overlap
    spans.append((first, length - first))
    return spans


def overlap_weights(overlap: int) -> np.ndarray:
    """The weight of the later segment at each of `overlap` shared frames (the earlier one gets 1 minus it): a
    raised cosine from near 0 to near 1, as `windows.ramp_weights` gives two windows sharing `overlap` frames."""
    position = np.arange(1, overlap + 1, dtype=np.float64) / (overlap + 1)
    return (0.5 - 0.5 * np.cos(math.pi * position)).astype(np.float32)


def deblur_segments(
    pipe,
    frames: Iterable[np.ndarray],
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
    frame_overlap: int = 4,
    num_frames: int = 16,
    on_segment: Callable[[int, int], None] | None = None,
    as_uint8: bool = True,
    **call_kwargs,
) -> Iterator[np.ndarray]:
    """Deblur `frames` segment by segment and yield the sharp frames, (H, W, 3) RGB, in order.

    Args:
        pipe: a `VideoDeblurPipeline`.
        frames: (H, W, 3) RGB frames of one size, uint8 or float in [0, 1], any number of them, e.g. a
            `FrameStream`.
        segment_frames: frames per call of `pipe` (0: the whole clip in one call, as `pipe(clip)`). A clip
            at most 1.5 x `segment_frames` long is one segment; so is the last part of a longer one, so no
            segment is shorter than half of it.
        frame_overlap: frames shared by neighbouring temporal windows inside a segment and by neighbouring
            segments.
        num_frames: frames per temporal window.
        on_segment: called as `on_segment(first_frame, frame_count)` before each segment is denoised (the spans
            `segment_spans` lists).
        as_uint8: yield uint8 frames (the default) or float32 frames in [0, 1], unrounded.
        call_kwargs: the rest of `pipe`'s arguments (`num_inference_steps`, `guidance_scale`, `noise_scale`,
            `generator`, ...); one `generator` serves every segment in turn.
    """
    check_segment_frames(segment_frames, num_frames, frame_overlap)
    for name in ("output_type", "return_dict", "video"):
        if name in call_kwargs:
            raise ValueError(f"`{name}` is set by deblur_segments; got {name}={call_kwargs[name]!r}")
    source = iter(frames)
    buffer: list[np.ndarray] = []  # input frames not yet final: the shared frames first, then new ones
    tail: np.ndarray | None = None  # the previous segment's outputs for the frames it shares with the next
    first = 0  # index of buffer[0] in the clip
    exhausted = False
    lookahead = math.inf if segment_frames == 0 else segment_frames + segment_frames // 2 + 1
    while True:
        while not exhausted and len(buffer) < lookahead:
            try:
                buffer.append(next(source))
            except StopIteration:
                exhausted = True
        if not buffer:
            raise ValueError("`frames` holds no frames")
        last = exhausted  # then every frame left fits one segment of at most 1.5 x segment_frames
        count = len(buffer) if last else segment_frames
        if on_segment is not None:
            on_segment(first, count)
        sharp = pipe(
            np.stack(buffer[:count]),
            num_frames=num_frames,
            frame_overlap=frame_overlap,
            output_type="np",
            **call_kwargs,
        ).frames[0]
        if tail is not None:
            weight = overlap_weights(len(tail))[:, None, None, None]
            sharp[: len(tail)] = (1 - weight) * tail + weight * sharp[: len(tail)]
        if last:
            yield from _frames(sharp, as_uint8)
            return
        shared = frame_overlap
        yield from _frames(sharp[: count - shared], as_uint8)
        tail = sharp[count - shared : count] if shared else None
        buffer = buffer[count - shared :]
        first += count - shared


def _frames(frames: np.ndarray, as_uint8: bool) -> Iterator[np.ndarray]:
    for frame in frames:
        frame = np.clip(frame, 0, 1)
        yield (frame * 255).round().astype(np.uint8) if as_uint8 else frame.astype(np.float32, copy=False)
