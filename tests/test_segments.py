"""Long clips in bounded memory: `deblur_segments` on a real tiny pipeline, against calls of the pipeline itself."""

import numpy as np
import pytest
import torch
from tiny import tiny_pipeline, tiny_video

from pipeline_video_deblur.segments import check_segment_frames, deblur_segments, overlap_weights, segment_spans


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def clip():
    return (tiny_video(frames=40, height=16, width=16).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


OPTIONS = {"num_inference_steps": 2, "guidance_scale": 1.0}


def direct(pipe, frames, generator):
    """`pipe` on one segment, as deblur_segments calls it, in float."""
    out = pipe(frames, num_frames=8, frame_overlap=2, output_type="np", generator=generator, **OPTIONS)
    return out.frames[0]


def to_uint8(frames):
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def test_segments_are_pipeline_calls_blended_where_they_overlap(pipe, clip):
    calls = []
    out = deblur_segments(
        pipe,
        iter(clip),  # a one-pass iterator, as a FrameStream's frames arrive
        segment_frames=16,
        frame_overlap=2,
        num_frames=8,
        on_segment=lambda first, count: calls.append((first, count)),
        generator=torch.Generator().manual_seed(0),
        **OPTIONS,
    )
    out = np.stack(list(out))
    # 40 frames in segments of 16 sharing 2: [0, 16), [14, 30), and the last 12 left join the third, [28, 40)
    assert calls == [(0, 16), (14, 16), (28, 12)]
    assert out.shape == clip.shape and out.dtype == np.uint8

    generator = torch.Generator().manual_seed(0)  # the same draws, in the same order
    parts = [direct(pipe, clip[first : first + count], generator) for first, count in calls]
    w = overlap_weights(2)[:, None, None, None]
    expected = np.concatenate(
        [
            parts[0][:14],
            (1 - w) * parts[0][14:] + w * parts[1][:2],
            parts[1][2:14],
            (1 - w) * parts[1][14:] + w * parts[2][:2],
            parts[2][2:],
        ]
    )
    np.testing.assert_array_equal(out, to_uint8(expected))


def test_a_clip_up_to_one_and_a_half_segments_is_one_pipeline_call(pipe, clip):
    for length, segment in ((24, 16), (40, 0)):
        calls = []
        out = deblur_segments(
            pipe,
            clip[:length],
            segment_frames=segment,
            frame_overlap=2,
            num_frames=8,
            on_segment=lambda first, count, calls=calls: calls.append((first, count)),
            generator=torch.Generator().manual_seed(1),
            **OPTIONS,
        )
        out = np.stack(list(out))
        assert calls == [(0, length)]
        expected = direct(pipe, clip[:length], torch.Generator().manual_seed(1))
        np.testing.assert_array_equal(out, to_uint8(expected))


def test_overlap_weights_hand_over_smoothly():
    w = overlap_weights(4)
    assert np.all(np.diff(w) > 0) and 0 < w[0] < 0.5 < w[-1] < 1
    np.testing.assert_allclose(w + w[::-1], 1, atol=1e-6)  # symmetric: the earlier segment's weights mirror these


@pytest.mark.parametrize(
    ("segment", "message"),
    [(4, "at least num_frames=8"), (-1, "got -1"), (2.5, "an integer, got 2.5"), (True, "an integer")],
)
def test_bad_segment_lengths_are_refused_with_the_value(pipe, clip, segment, message):
    with pytest.raises(ValueError, match=message):
        check_segment_frames(segment, 8, 2)
    with pytest.raises(ValueError, match=message):
        next(deblur_segments(pipe, clip, segment_frames=segment, frame_overlap=2, num_frames=8, **OPTIONS))


def test_no_frames_and_arguments_it_sets_are_refused(pipe):
    with pytest.raises(ValueError, match="holds no frames"):
        next(deblur_segments(pipe, [], segment_frames=16, frame_overlap=2, num_frames=8, **OPTIONS))
    with pytest.raises(ValueError, match="output_type"):
        next(deblur_segments(pipe, [], output_type="pil", num_frames=8, frame_overlap=2))


def test_segment_spans_are_the_calls_deblur_segments_makes():
    class Counter:  # stands in for the pipeline's output shape only: the plan does not depend on the model
        def __call__(self, video, **kwargs):
            return type("Out", (), {"frames": [np.zeros(video.shape, np.float32)]})()

    for length in (1, 8, 16, 24, 25, 39, 40, 41, 100):
        for segment, overlap in ((16, 2), (8, 0), (0, 2), (9, 4)):
            calls = []
            out = deblur_segments(
                Counter(), np.zeros((length, 2, 2, 3), np.uint8), segment_frames=segment, frame_overlap=overlap,
                num_frames=8, on_segment=lambda first, count, calls=calls: calls.append((first, count)),
            )  # fmt: skip
            assert len(list(out)) == length
            assert segment_spans(length, segment, overlap) == calls, (length, segment, overlap)
    with pytest.raises(ValueError, match="`length` must be a positive number of frames, got 0"):
        segment_spans(0, 16, 2)
    with pytest.raises(ValueError, match="`segment_frames` must be 0 .* got 4"):
        segment_spans(100, 4, 4)  # no more than the overlap: a segment would not move on
    with pytest.raises(ValueError, match="got -8"):
        segment_spans(100, -8, 2)


def test_float_frames_in_and_out(pipe, clip):
    """Float frames in [0, 1] give the same result as their uint8 originals; `as_uint8=False` yields the
    unrounded float32 frames that the uint8 ones are rounded from."""
    kwargs = {"segment_frames": 16, "frame_overlap": 2, "num_frames": 8, **OPTIONS}
    as_float = clip[:30].astype(np.float32) / 255
    floats = np.stack(list(deblur_segments(pipe, as_float, as_uint8=False, generator=torch.Generator().manual_seed(3),
                                           **kwargs)))  # fmt: skip
    uint8 = np.stack(list(deblur_segments(pipe, clip[:30], generator=torch.Generator().manual_seed(3), **kwargs)))
    assert floats.dtype == np.float32 and floats.shape == clip[:30].shape
    assert 0 <= floats.min() and floats.max() <= 1
    np.testing.assert_array_equal(to_uint8(floats), uint8)
