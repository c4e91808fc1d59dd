"""The pure IMAGE <-> clip module, loaded from its file alone: no ComfyUI, no pipeline, no node code."""

import importlib.util
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[2] / "comfy_nodes" / "image_convert.py"
_spec = importlib.util.spec_from_file_location("image_convert_under_test", PATH)
image_convert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_convert)
images_to_video, video_to_images = image_convert.images_to_video, image_convert.video_to_images


def random_images(frames=3, height=17, width=23, channels=3, dtype=torch.float32):
    torch.manual_seed(0)
    return torch.rand(frames, height, width, channels).to(dtype)


@pytest.mark.parametrize("shape", [(3, 17, 23), (1, 9, 11), (2, 32, 32)], ids=["odd", "single-frame", "square"])
def test_round_trip_keeps_shape_values_and_dtype(shape):
    images = random_images(*shape)
    video = images_to_video(images)
    assert video.shape == (shape[0], 3, shape[1], shape[2])
    assert video.dtype == torch.float32 and video.is_contiguous()
    assert 0 <= float(video.min()) and float(video.max()) <= 1
    assert torch.equal(video[:, 1], images[..., 1])  # channels first, same values
    back = video_to_images(video, like=images)
    assert back.shape == images.shape and back.dtype == torch.float32 and back.is_contiguous()
    assert torch.equal(back, images)


def test_rgba_drops_alpha_on_the_way_in_and_restores_it_on_the_way_out():
    images = random_images(channels=4)
    video = images_to_video(images)
    assert video.shape == (3, 3, 17, 23)
    assert torch.equal(video.permute(0, 2, 3, 1), images[..., :3])
    result = video_to_images(torch.zeros_like(video), like=images)
    assert result.shape == images.shape
    assert torch.equal(result[..., 3], images[..., 3])
    assert float(result[..., :3].abs().max()) == 0


def test_one_channel_is_repeated_in_and_averaged_out():
    images = random_images(channels=1)
    video = images_to_video(images)
    assert video.shape == (3, 3, 17, 23)
    assert torch.equal(video[:, 0], video[:, 2])
    back = video_to_images(video, like=images)
    assert back.shape == images.shape
    assert torch.allclose(back, images, atol=1e-6)


def test_half_precision_input_gives_float32():
    images = random_images(dtype=torch.float16)
    assert images_to_video(images).dtype == torch.float32
    assert video_to_images(images_to_video(images), like=images).dtype == torch.float32


def test_small_overshoot_is_clamped_far_values_are_refused():
    images = random_images()
    images[0, 0, 0, 0], images[0, 0, 1, 0] = -0.04, 1.06  # a bicubic resize's ringing
    video = images_to_video(images)
    assert float(video.min()) == 0 and float(video.max()) <= 1
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        images_to_video(random_images() * 0 + torch.tensor([0.0, 128.0, 255.0]))


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.zeros(0, 32, 32, 3), "empty batch"),
        (torch.zeros(32, 32, 3), "shape"),
        (torch.zeros(2, 32, 32, 2), "1, 3 or 4 channels"),
        (torch.zeros(2, 32, 32, 3, dtype=torch.uint8), "dtype torch.uint8"),
        (torch.full((2, 8, 8, 3), float("nan")), "NaN"),
        ([[0.5]], "list"),
    ],
    ids=["empty", "3d", "two-channels", "uint8", "nan", "not-a-tensor"],
)
def test_bad_images_are_value_errors_naming_the_value(images, match):
    with pytest.raises(ValueError, match=match):
        images_to_video(images)


def test_output_of_another_size_is_refused():
    images = random_images()
    with pytest.raises(ValueError, match="returned 3 frames of 16 x 23"):
        video_to_images(torch.zeros(3, 3, 16, 23), like=images)
