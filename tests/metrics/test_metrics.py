"""Metrics against scikit-image, their edge cases, LPIPS availability, the unsharp baseline and figures."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage.data import astronaut
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline_video_deblur.metrics import (
    LPIPSMetric,
    comparison_figure,
    error_map,
    evaluate_sequences,
    mean_over,
    psnr,
    score_video,
    ssim,
    tce,
    to_uint8,
    unsharp,
)
from pipeline_video_deblur.metrics.lpips_metric import alexnet_weights_path


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    clean = astronaut()[100:164, 200:280]  # (64, 80, 3) uint8, bundled
    noisy = np.clip(clean.astype(float) + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    return clean, noisy


def test_psnr_and_ssim_match_scikit_image(pair):
    clean, noisy = pair
    assert psnr(noisy, clean) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=255), abs=0.01)
    reference = structural_similarity(
        clean,
        noisy,
        data_range=255,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(noisy, clean) == pytest.approx(reference, abs=0.002)
    assert ssim(noisy[..., 0], clean[..., 0]) == pytest.approx(
        structural_similarity(
            clean[..., 0], noisy[..., 0], data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        ),
        abs=0.002,
    )


def test_float_frames_are_rounded_like_uint8(pair):
    clean, noisy = pair
    assert psnr(noisy / 255.0, clean / 255.0) == psnr(noisy, clean)
    assert ssim(noisy / 255.0, clean) == ssim(noisy, clean)
    assert to_uint8(np.array([0.5 / 255, 1.6 / 255, 1.0])).tolist() == [0, 2, 255]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(noisy.astype(np.float32), clean.astype(np.float32))  # 0-255 floats are a range error
    with pytest.raises(ValueError, match="same shape"):
        psnr(clean, clean[:10])


def test_identical_frames_give_inf_and_averages_keep_it(pair):
    clean, noisy = pair
    assert psnr(clean, clean) == math.inf
    assert ssim(clean, clean) == pytest.approx(1.0)
    assert mean_over([math.inf, 30.0]) == math.inf
    assert mean_over([30.0, 32.0, None, "not computed: x"]) == 31.0
    assert mean_over([None]) is None
    video = np.stack([clean, clean])
    blurred = np.stack([noisy, noisy])
    results = evaluate_sequences([("same", blurred, video, video), ("other", blurred, blurred, video)])
    assert results["videos"]["same"]["psnr"] == math.inf and results["videos"]["same"]["identical_frames"] == 2
    assert results["summary"]["psnr"] == math.inf  # not hidden by the finite video
    assert results["summary"]["ssim"] == pytest.approx((1.0 + ssim(noisy, clean)) / 2)
    assert results["summary"]["lpips"].startswith("not computed")
    assert results["input_summary"]["psnr"] == pytest.approx(psnr(noisy, clean))


def test_tce():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 200, (4, 12, 13, 3)).astype(np.uint8)
    assert tce(target, target) == 0.0
    assert tce(target + 20, target) == 0.0  # a constant offset changes nothing over time
    output = target.copy()
    output[2] += 9  # one frame off by 9: its two frame differences are off by 9 each
    assert tce(output, target) == pytest.approx(2 * 9 / 3)
    assert tce(output / 255.0, target) == pytest.approx(2 * 9 / 3)
    with pytest.raises(ValueError, match="F >= 2"):
        tce(target[:1], target[:1])
    assert score_video(target[:1], target[:1])["tce"] is None


def test_lpips_not_computed_without_backbone_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    metric = LPIPSMetric()
    assert not metric.available
    assert metric.status.startswith("not computed") and "alexnet" in metric.status.lower()
    with pytest.raises(RuntimeError, match="not computed"):
        metric(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8))


def test_lpips_computed_from_weights_on_disk(tmp_path, monkeypatch, pair):
    """Stand-in backbone weights in a temporary hub folder: the loading path runs, and nothing is downloaded."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    torch.manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for index, shape in shapes.items():
        state[f"features.{index}.weight"] = torch.randn(shape) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(shape[0])
    path = alexnet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    metric = LPIPSMetric()
    assert metric.available and metric.status == "computed"
    clean, noisy = pair
    assert metric(clean, clean) == pytest.approx(0.0, abs=1e-6)
    assert metric(noisy, clean) > 0.0
    weight = metric.model.net.slice2._modules["3"].weight
    torch.testing.assert_close(weight, state["features.3.weight"])


def test_unsharp(pair):
    clean, _ = pair
    np.testing.assert_array_equal(unsharp(clean, amount=0.0), clean)
    video = np.stack([clean, clean])
    out = unsharp(video, amount=1.0, radius=1.5)
    assert out.shape == video.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], unsharp(clean, amount=1.0, radius=1.5))  # no smoothing across frames
    soft = np.asarray(Image.fromarray(clean).filter(ImageFilter.GaussianBlur(1.0)))
    assert psnr(unsharp(soft, amount=1.0, radius=1.0), clean) > psnr(soft, clean)  # sharpening helps on blur
    with pytest.raises(ValueError, match="radius"):
        unsharp(clean, radius=0)


def test_comparison_figure(tmp_path, pair):
    clean, noisy = pair
    errors = error_map(noisy, clean)
    assert errors.shape == clean.shape[:2]
    assert errors.mean() == pytest.approx(np.abs(noisy.astype(float) - clean).mean())
    path = comparison_figure(noisy, noisy, clean, tmp_path / "fig" / "cmp.png", title="t", method="identity")
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > 4 * clean.shape[1]
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["cmp.png"]
