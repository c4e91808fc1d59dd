"""The Gradio demo's logic and Space files, without a browser (test_demo_browser.py drives it in Chromium)."""

from __future__ import annotations

import importlib.util
import re
import sys

import gradio as gr
import pytest
from hub_helpers import REPO_ROOT, write_sample
from huggingface_hub import SpaceCardData

from pipeline_video_deblur.data import read_video

DEMO_DIR = REPO_ROOT / "examples" / "hub_demo"


def load_app(monkeypatch, **env):
    """Import examples/hub_demo/app.py afresh with the given environment (its settings are read at import)."""
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    spec = importlib.util.spec_from_file_location("hub_demo_app", DEMO_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "hub_demo_app", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app(monkeypatch, tiny_folder, sample_video):
    return load_app(
        monkeypatch, VIDEO_DEBLUR_MODEL=tiny_folder, VIDEO_DEBLUR_SAMPLE=sample_video, VIDEO_DEBLUR_STEPS=2
    )


def test_deblur_returns_video_comparison_and_time(app, sample_video):
    calls = []

    def progress(value, desc=None, unit=None):
        calls.append((value, desc))

    video_path, image, timing = app.deblur(str(sample_video), 2, 1.0, 0, progress=progress)

    clip = read_video(video_path)
    assert clip.frames.shape == (8, 64, 64, 3)
    assert image.size[1] == 64 and image.size[0] > 128  # before | gap | after
    assert re.match(
        r"Deblurred 8 frames of 64x64 in \d+\.\d s \(2 steps, CFG 2, strength 1, starting noise 1, seed 0, CPU\)\.",
        timing,
    )
    # The progress bar follows the pipeline's steps.
    assert ((1, 2), "Denoising") in calls and ((2, 2), "Denoising") in calls


def test_old_requests_files_are_removed(monkeypatch, tiny_folder, sample_video, tmp_path):
    import os
    import time

    outputs = tmp_path / "outputs"
    app = load_app(monkeypatch, VIDEO_DEBLUR_MODEL=tiny_folder, VIDEO_DEBLUR_STEPS=1, VIDEO_DEBLUR_OUTPUTS=outputs)
    noop = lambda *a, **k: None  # noqa: E731
    first = app.deblur(str(sample_video), 1, 1.0, 0, progress=noop)[0]
    hours_ago = time.time() - 2 * app.OUTPUT_MAX_AGE_S
    os.utime(os.path.dirname(first), (hours_ago, hours_ago))  # a request two hours old
    recent = app.deblur(str(sample_video), 1, 1.0, 0, progress=noop)[0]
    latest = app.deblur(str(sample_video), 1, 1.0, 0, progress=noop)[0]
    assert not os.path.exists(first)  # its folder is gone; the recent ones stay
    assert os.path.isfile(recent) and os.path.isfile(latest) and recent != latest
    assert len(list(outputs.glob("request-*"))) == 2


def test_deblur_is_deterministic_per_seed(app, sample_video):
    first = read_video(app.deblur(str(sample_video), 2, 1.0, 3, progress=lambda *a, **k: None)[0]).frames
    again = read_video(app.deblur(str(sample_video), 2, 1.0, 3, progress=lambda *a, **k: None)[0]).frames
    assert (first == again).all()


def test_starting_noise_slider_starts_at_the_models_own(monkeypatch, tiny_copy, sample_video):
    """The slider's initial value is the pipeline's `noise_scale` config, and the Deblur button sends it."""
    import json

    index = json.loads((tiny_copy / "model_index.json").read_text())
    index["noise_scale"] = 0.35
    index["guidance_scale"] = 1.5  # the demo samples at the model's own guidance too
    (tiny_copy / "model_index.json").write_text(json.dumps(index))
    app = load_app(monkeypatch, VIDEO_DEBLUR_MODEL=tiny_copy, VIDEO_DEBLUR_SAMPLE=sample_video)
    demo = app.build_demo()
    sliders = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "noise_scale"]
    assert len(sliders) == 1
    slider = sliders[0]
    assert isinstance(slider, gr.Slider) and slider.label == "Starting noise"
    assert (slider.value, slider.minimum, slider.maximum, slider.step) == (0.35, 0.0, 1.0, 0.05)
    assert "0.35" in slider.info
    clicks = [fn for fn in demo.fns.values() if fn.name == "deblur"]
    assert len(clicks) == 1 and slider in clicks[0].inputs
    # Left out (an old caller, or None), the call takes the model's own value too.
    timing = app.deblur(str(sample_video), 2, 1.0, 0, progress=lambda *a, **k: None)[2]
    assert "CFG 1.5, strength 1, starting noise 0.35, seed 0" in timing


def test_starting_noise_reaches_the_pipeline(app, sample_video):
    """0 leaves DDIM (eta 0) no randomness: every seed gives the same clip; 1 draws a different one per seed."""
    noop = lambda *a, **k: None  # noqa: E731
    still = [read_video(app.deblur(str(sample_video), 2, 1.0, seed, 0.0, progress=noop)[0]).frames for seed in (0, 1)]
    assert (still[0] == still[1]).all()
    drawn = [read_video(app.deblur(str(sample_video), 2, 1.0, seed, 1.0, progress=noop)[0]).frames for seed in (0, 1)]
    assert (drawn[0] != drawn[1]).any()
    timing = app.deblur(str(sample_video), 2, 1.0, 0, 0.25, progress=noop)[2]
    assert "starting noise 0.25, seed 0" in timing
    with pytest.raises(gr.Error, match=r"`noise_scale` must be a finite number >= 0, got -0.5"):
        app.deblur(str(sample_video), 2, 1.0, 0, -0.5, progress=noop)


def test_self_ensemble_reaches_the_pipeline(app, sample_video, tmp_path):
    """The demo's self-ensemble of 2 is the pipeline's own (same clip, seed and settings, called directly), differs
    from a single run, moves the progress bar over both runs and shows in the time; other sizes are refused."""
    import numpy as np
    import torch

    from pipeline_video_deblur.data import write_video

    calls = []

    def progress(value, desc=None, unit=None):
        calls.append((value, desc))

    video_path, image, timing = app.deblur(str(sample_video), 2, 1.0, 5, 1.0, progress=progress, self_ensemble=2)
    assert "seed 5, self-ensemble of 2 runs, CPU)." in timing
    assert [value for value, desc in calls if desc == "Denoising"] == [(1, 4), (2, 4), (3, 4), (4, 4)]

    clip = read_video(sample_video)
    direct = app.get_pipeline()(
        clip.frames,
        num_inference_steps=2,
        strength=1.0,
        noise_scale=1.0,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
        self_ensemble=2,
    ).frames[0]
    direct = (direct * 255).round().astype(np.uint8)
    middle = len(direct) // 2
    # The comparison's right half is the demo's middle frame before video coding: the pipeline's, exactly.
    assert (np.asarray(image)[:, -direct.shape[2] :] == direct[middle]).all()
    written = tmp_path / "direct.mp4"
    write_video(direct, written, fps=clip.fps)  # 64 x 64: the demo writes it the same way, with no padding
    assert (read_video(video_path).frames == read_video(written).frames).all()

    single_path, single_image, single_timing = app.deblur(
        str(sample_video), 2, 1.0, 5, 1.0, progress=lambda *a, **k: None
    )
    assert "self-ensemble" not in single_timing
    assert (np.asarray(single_image) != np.asarray(image)).any()
    assert (read_video(single_path).frames != read_video(video_path).frames).any()

    noop = lambda *a, **k: None  # noqa: E731
    for bad in (3, 0, 16, True, "2", None):
        with pytest.raises(gr.Error, match=rf"Self-ensemble must be 1, 2, 4 or 8, got {re.escape(repr(bad))}\."):
            app.deblur(str(sample_video), 2, 1.0, 0, progress=noop, self_ensemble=bad)


def test_self_ensemble_control(app):
    """A 1 / 2 / 4 / 8 choice, 1 first, saying what it costs, sent by the Deblur button as deblur's last argument."""
    import inspect

    demo = app.build_demo()
    radios = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "self_ensemble"]
    assert len(radios) == 1
    radio = radios[0]
    assert isinstance(radio, gr.Radio) and radio.label == "Self-ensemble"
    assert [value for _, value in radio.choices] == [1, 2, 4, 8] and radio.value == 1
    assert "multiplies the time" in radio.info
    clicks = [fn for fn in demo.fns.values() if fn.name == "deblur"]
    assert len(clicks) == 1 and clicks[0].inputs[-1] is radio
    # Gradio passes the inputs in order, the progress tracker put in at its own place: the radio's value lands on
    # `self_ensemble`.
    values = list(range(len(clicks[0].inputs)))  # each input's position
    args, progress_index = gr.helpers.special_args(app.deblur, list(values))[:2]
    names = list(inspect.signature(app.deblur).parameters)
    assert names[progress_index] == "progress" and args[names.index("self_ensemble")] == values[-1]


def test_clear_errors(app, tmp_path):
    noop = lambda *a, **k: None  # noqa: E731
    with pytest.raises(gr.Error, match="Upload a video or pick the sample"):
        app.deblur(None, 2, 1.0, 0, progress=noop)
    garbage = tmp_path / "not_a_video.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(gr.Error, match="Cannot read this file as a video"):
        app.deblur(str(garbage), 2, 1.0, 0, progress=noop)
    with pytest.raises(gr.Error, match="leave no denoising step"):
        app.deblur(str(garbage), 1, 0.3, 0, progress=noop)
    with pytest.raises(gr.Error, match="Seed is empty"):  # a cleared number box gives None
        app.deblur(str(garbage), 2, 1.0, None, progress=noop)


def test_an_odd_sized_clip_comes_back_in_a_format_browsers_play(app, tmp_path):
    """H.264 in browsers is 4:2:0 only, which needs even sides: the demo repeats the last row instead of writing
    the odd size in 4:4:4 (which a browser shows as a blank player)."""
    import av
    import numpy as np

    from pipeline_video_deblur.data import write_video

    rng = np.random.default_rng(0)
    odd = tmp_path / "odd.mkv"
    write_video(rng.integers(0, 255, (4, 21, 30, 3), dtype=np.uint8), odd, fps=12)
    video_path, _, timing = app.deblur(str(odd), 2, 1.0, 0, progress=lambda *a, **k: None)
    assert "4 frames of 30x21" in timing
    with av.open(video_path) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.pix_fmt, stream.width, stream.height) == ("yuv420p", 30, 22)
    frames = read_video(video_path).frames
    assert np.abs(frames[:, 21].astype(int) - frames[:, 20].astype(int)).mean() < 3  # the repeated last row


def test_limits(monkeypatch, tiny_folder, tmp_path):
    app = load_app(
        monkeypatch,
        VIDEO_DEBLUR_MODEL=tiny_folder,
        VIDEO_DEBLUR_MAX_FRAMES=6,
        VIDEO_DEBLUR_MAX_SIDE=48,
        VIDEO_DEBLUR_MAX_STEPS=8,
    )
    noop = lambda *a, **k: None  # noqa: E731
    long_clip = write_sample(tmp_path / "long.mp4", frames=8, size=32)
    with pytest.raises(gr.Error, match="too long for the demo: it takes at most 6 frames"):
        app.deblur(str(long_clip), 2, 1.0, 0, progress=noop)
    # Denoising steps are counted after strength, in every run of the self-ensemble, before the clip is read.
    with pytest.raises(
        gr.Error, match=r"3 steps at strength 1 x self-ensemble 4 run 12 denoising steps; the demo runs at most 8\."
    ):
        app.deblur(str(long_clip), 3, 1.0, 0, progress=noop, self_ensemble=4)
    with pytest.raises(gr.Error, match=r"9 steps at strength 1 run 9 denoising steps; the demo runs at most 8\."):
        app.deblur(str(long_clip), 9, 1.0, 0, progress=noop)
    with pytest.raises(gr.Error, match="too long for the demo"):  # 8 steps at strength 0.5, twice: within the limit
        app.deblur(str(long_clip), 8, 0.5, 0, progress=noop, self_ensemble=2)
    large_clip = write_sample(tmp_path / "large.mp4", frames=4, size=64)
    with pytest.raises(gr.Error, match="64x64; the demo takes at most 48 pixels"):
        app.deblur(str(large_clip), 2, 1.0, 0, progress=noop)
    # the steps slider stops at the cap: a single run chosen on the page is never refused
    sliders = [b for b in app.build_demo().blocks.values() if getattr(b, "elem_id", None) == "steps"]
    assert [(s.minimum, s.maximum) for s in sliders] == [(1, 8)]


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("VIDEO_DEBLUR_MAX_STEPS", "0", "VIDEO_DEBLUR_MAX_STEPS must be a positive whole number, got '0'"),
        ("VIDEO_DEBLUR_MAX_FRAMES", "lots", "VIDEO_DEBLUR_MAX_FRAMES must be a positive whole number, got 'lots'"),
        ("VIDEO_DEBLUR_MAX_SIDE", "-4", "VIDEO_DEBLUR_MAX_SIDE must be a positive whole number, got '-4'"),
        ("VIDEO_DEBLUR_STEPS", "60", "VIDEO_DEBLUR_STEPS=60 is above VIDEO_DEBLUR_MAX_STEPS=50"),
    ],
)
def test_bad_settings_are_named(monkeypatch, tiny_folder, setting, value, message):
    monkeypatch.delenv("VIDEO_DEBLUR_MAX_STEPS", raising=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_app(monkeypatch, VIDEO_DEBLUR_MODEL=tiny_folder, **{setting: value})


def test_default_settings_are_documented(monkeypatch):
    for key in (
        "VIDEO_DEBLUR_MODEL",
        "VIDEO_DEBLUR_SAMPLE",
        "VIDEO_DEBLUR_MAX_FRAMES",
        "VIDEO_DEBLUR_MAX_SIDE",
        "VIDEO_DEBLUR_MAX_STEPS",
    ):
        monkeypatch.delenv(key, raising=False)
    app = load_app(monkeypatch)
    assert app.MODEL == "default" and app.MAX_FRAMES == 32 and app.MAX_SIDE == 256 and app.MAX_STEPS == 50
    readme = " ".join((DEMO_DIR / "README.md").read_text().split())
    assert "**32 frames**" in readme and "**256 pixels**" in readme and "**50 denoising steps**" in readme


def test_space_files():
    readme = (DEMO_DIR / "README.md").read_text()
    data = SpaceCardData(**__import__("yaml").safe_load(readme.split("---")[1]))
    assert data.sdk == "gradio"
    assert data.sdk_version == gr.__version__, "README.md's sdk_version must match the gradio the app is tested with"
    assert data.app_file == "app.py" and (DEMO_DIR / data.app_file).is_file()
    assert data.title and data.emoji
    requirements = [
        line.strip()
        for line in (DEMO_DIR / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(line.startswith("video-deblur") for line in requirements)
    assert not [line for line in requirements if re.match(r"^(torch|torchvision|gradio)\b", line)], requirements
