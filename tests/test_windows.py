import pytest
import torch

from pipeline_video_deblur.windows import WindowPlan, ramp_weights, split_range


@pytest.mark.parametrize(
    "length,window,overlap",
    [(37, 16, 4), (16, 16, 4), (5, 16, 4), (17, 16, 4), (100, 8, 0), (9, 4, 3), (1, 1, 0)],
)
def test_spans_cover_everything_with_full_windows(length, window, overlap):
    spans = split_range(length, window, overlap)
    covered = torch.zeros(length)
    for start, end in spans:
        assert 0 <= start < end <= length
        assert end - start == min(window, length)
        covered[start:end] += 1
    assert bool((covered >= 1).all())
    for (s0, e0), (s1, _) in zip(spans, spans[1:]):
        assert e0 - s1 >= overlap  # neighbours share at least `overlap` items
        assert s1 > s0


@pytest.mark.parametrize("length,window,overlap", [(37, 16, 4), (23, 8, 3), (16, 16, 4), (50, 10, 1)])
def test_weights_sum_to_one_everywhere(length, window, overlap):
    spans = split_range(length, window, overlap)
    weights = ramp_weights(spans, length)
    total = torch.zeros(length)
    for (start, end), w in zip(spans, weights):
        assert w.shape == (end - start,)
        assert bool((w > 0).all())
        total[start:end] += w
    torch.testing.assert_close(total, torch.ones(length))


def test_plan_weights_sum_to_one_over_frames_and_pixels():
    plan = WindowPlan(frames=19, height=13, width=22, num_frames=8, frame_overlap=3, tile_size=8, tile_overlap=2)
    total = torch.zeros(1, 1, 19, 13, 22)
    for _, frames, rows, cols, weight in plan:
        total[:, :, frames, rows, cols] += weight
    torch.testing.assert_close(total, torch.ones_like(total))
    assert len(plan) == len(plan.frame_spans) * len(plan.row_spans) * len(plan.col_spans) > 1


def test_weights_are_smooth_ramps_in_overlaps():
    spans = split_range(20, 12, 4)
    weights = ramp_weights(spans, 20)
    first, second = weights
    shared = spans[0][1] - spans[1][0]
    assert bool((first[-shared:].diff() < 0).all())  # falls
    assert bool((second[:shared].diff() > 0).all())  # rises
    assert float(first[0]) == 1.0


@pytest.mark.parametrize("bad", [dict(window=0, overlap=0), dict(window=4, overlap=4), dict(window=4, overlap=-1)])
def test_bad_window_arguments_are_refused(bad):
    with pytest.raises(ValueError, match="window|overlap"):
        split_range(10, **bad)
