"""`video-deblur run` as a real subprocess on real video files and frame folders."""

import os
import subprocess
import sys

import av
import numpy as np
import PIL.Image
import pytest
import torch
from tiny import tiny_components, tiny_pipeline, tiny_video

from pipeline_video_deblur import VideoDeblurPipeline
from pipeline_video_deblur.data import read_video, write_video

CLI = [sys.executable, "-m", "pipeline_video_deblur.cli"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "blurred.mp4"
    frames = (tiny_video(frames=5, height=36, width=44).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    write_video(frames, path, fps=24)
    return path


def video_deblur(*args, check=True, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_run_on_an_mp4_keeps_frame_count_size_and_rate(model_dir, clip_mp4, tmp_path):
    out = tmp_path / "sharp.mp4"
    result = video_deblur("run", clip_mp4, "-o", out, "--model", model_dir, "--steps", "2", "--num-frames", "4")
    assert "wrote 5 frames" in result.stdout
    clip = read_video(out)
    assert clip.frames.shape == (5, 36, 44, 3)
    assert abs(clip.fps - 24) < 1e-3
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in ("h264", "libx264", "mpeg4", "hevc")
    assert not [p for p in os.listdir(tmp_path) if p != "sharp.mp4"]  # no temporary leftovers


def test_run_on_a_folder_writes_pngs_with_the_input_names(model_dir, tmp_path):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    rng = np.random.default_rng(0)
    names = ["a_001.png", "a_002.png", "a_010.png"]
    for i, name in enumerate(names):
        image = PIL.Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA")  # RGBA is accepted
        if i == 1:
            image = image.convert("L")  # and grayscale
        image.save(frames_dir / name)
    out = tmp_path / "out"
    video_deblur("run", frames_dir, "-o", out, "--model", model_dir, "--steps", "1", "--guidance-scale", "1")
    assert sorted(os.listdir(out)) == names
    assert PIL.Image.open(out / "a_010.png").size == (30, 20)


def test_noise_scale_zero_gives_the_same_frames_for_every_seed(model_dir, tmp_path):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate((tiny_video(frames=3).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)):
        PIL.Image.fromarray(frame).save(frames_dir / f"{i}.png")
    outputs = {}
    for noise, seed in ((0, 0), (0, 1), (1, 0), (1, 1)):
        out = tmp_path / f"out_{noise}_{seed}"
        options = ("--steps", 2, "--noise-scale", noise, "--seed", seed)
        video_deblur("run", frames_dir, "-o", out, "--model", model_dir, *options)
        outputs[noise, seed] = np.stack([np.asarray(PIL.Image.open(out / f"{i}.png")) for i in range(3)])
    np.testing.assert_array_equal(outputs[0, 0], outputs[0, 1])
    assert not np.array_equal(outputs[1, 0], outputs[1, 1])


def test_guidance_scale_defaults_to_the_models_own(tmp_path):
    """Without --guidance-scale the run uses the model's `guidance_scale` (model_index.json), not a fixed 2."""
    model = tmp_path / "guidance3"
    VideoDeblurPipeline(**tiny_components(), guidance_scale=3.0).save_pretrained(model)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate((tiny_video(frames=3).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)):
        PIL.Image.fromarray(frame).save(frames_dir / f"{i}.png")
    outputs = {}
    for name, options in (("own", ()), ("three", ("--guidance-scale", 3)), ("two", ("--guidance-scale", 2))):
        out = tmp_path / f"out_{name}"
        video_deblur("run", frames_dir, "-o", out, "--model", model, "--steps", 2, "--seed", 0, *options)
        outputs[name] = np.stack([np.asarray(PIL.Image.open(out / f"{i}.png")) for i in range(3)])
    np.testing.assert_array_equal(outputs["own"], outputs["three"])
    assert not np.array_equal(outputs["own"], outputs["two"])


def test_existing_output_is_kept_unless_overwrite(model_dir, clip_mp4, tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"precious")
    result = video_deblur("run", clip_mp4, "-o", out, "--model", model_dir, "--steps", "1", check=False)
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert out.read_bytes() == b"precious"
    video_deblur("run", clip_mp4, "-o", out, "--model", model_dir, "--steps", "1", "--overwrite")
    assert read_video(out).frames.shape[0] == 5


def bad_input_cases(tmp_path, clip_mp4, model_dir):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    PIL.Image.new("RGB", (16, 16)).save(mixed / "0.png")
    PIL.Image.new("RGB", (20, 16)).save(mixed / "1.png")
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "model_index.json").write_text("{}")
    return {
        "missing path": ([tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4", "--model", model_dir], "nope.mp4"),
        "corrupt video": ([corrupt, "-o", tmp_path / "o.mp4", "--model", model_dir], "corrupt.mp4"),
        "empty folder": ([empty, "-o", tmp_path / "o", "--model", model_dir], "empty"),
        "mixed sizes": ([mixed, "-o", tmp_path / "o", "--model", model_dir], "size"),
        "model without components": ([clip_mp4, "-o", tmp_path / "o.mp4", "--model", not_a_model], "unet"),
        "zero steps": ([clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--steps", "0"], "'0'"),
        "negative strength": ([clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--strength", "-1"], "'-1'"),
        "strength above 1": (
            [clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--strength", "1.5"],
            "expected a number in (0, 1], got '1.5'",
        ),
        "infinite guidance": (
            [clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--guidance-scale", "inf"],
            "argument --guidance-scale: expected a positive number, got 'inf'",
        ),
        "nan strength": (
            [clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--strength", "nan"],
            "argument --strength: expected a number in (0, 1], got 'nan'",
        ),
        "negative noise scale": (
            [clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--noise-scale", "-0.5"],
            "argument --noise-scale: expected a number >= 0, got '-0.5'",
        ),
        "self-ensemble of 3": (
            [clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--self-ensemble", "3"],
            "argument --self-ensemble: invalid choice: 3 (choose from 1, 2, 4, 8)",
        ),
        "segment shorter than a window": (
            [clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--segment-frames", "8"],
            "--segment-frames must be 0 (the whole clip at once) or at least --num-frames=16, got 8",
        ),
        "output is input": ([clip_mp4, "-o", clip_mp4, "--model", model_dir], "input"),
        # before the device and the model are looked at: the output is checked first of all
        "unwritable format": (
            [clip_mp4, "-o", tmp_path / "o.gif", "--model", tmp_path / "no_model", "--device", "nosuch"],
            "'.gif' videos",
        ),
        "not a device": (
            [clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--device", "nosuch"],
            "--device 'nosuch' is not a device",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing path",
        "corrupt video",
        "empty folder",
        "mixed sizes",
        "model without components",
        "zero steps",
        "negative strength",
        "strength above 1",
        "infinite guidance",
        "nan strength",
        "negative noise scale",
        "self-ensemble of 3",
        "segment shorter than a window",
        "output is input",
        "unwritable format",
        "not a device",
    ],
)
def test_bad_input_gets_one_clear_line_and_no_output(case, tmp_path, clip_mp4, model_dir):
    args, expected = bad_input_cases(tmp_path, clip_mp4, model_dir)[case]
    before = sorted(os.listdir(tmp_path))
    result = (
        video_deblur("run", *args, "--steps", "1", check=False)
        if "--steps" not in map(str, args)
        else (video_deblur("run", *args, check=False))
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert expected in lines[-1], result.stderr
    assert sorted(os.listdir(tmp_path)) == before  # no output file, no leftovers


def test_an_output_that_holds_the_input_is_refused_and_nothing_is_lost(model_dir, tmp_path):
    """`-o` naming a folder above the input must not replace it, even with --overwrite (it would delete the input
    and everything beside it); a folder output gets PNGs whatever the input frames were."""
    work = tmp_path / "work"
    frames_dir = work / "in"
    frames_dir.mkdir(parents=True)
    for i in range(3):
        PIL.Image.new("RGB", (20, 16), (40 * i, 80, 120)).save(frames_dir / f"{i}.jpg", quality=95)
    (work / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    link = tmp_path / "link"
    link.symlink_to(work)
    for target in (work, link, frames_dir / ".."):
        result = video_deblur(
            "run", frames_dir, "-o", target, "--model", model_dir, "--steps", "1", "--overwrite", check=False
        )
        assert result.returncode != 0 and "holds the input" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    link.unlink()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (work / "notes.txt").read_text() == "mine"
    out = tmp_path / "out"
    video_deblur("run", frames_dir, "-o", out, "--model", model_dir, "--steps", "1", "--guidance-scale", "1")
    assert sorted(os.listdir(out)) == ["0.png", "1.png", "2.png"]
    assert PIL.Image.open(out / "1.png").format == "PNG"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_an_absent_device_is_named_before_any_weights_load(model_dir, clip_mp4, tmp_path):
    result = video_deblur(
        "run", clip_mp4, "-o", tmp_path / "o.mp4", "--model", model_dir, "--device", "cuda:0", check=False
    )
    assert result.returncode != 0 and "--device 'cuda:0' is not available on this machine" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_long_clip_is_deblurred_segment_by_segment_into_one_output(model_dir, tmp_path):
    """30 frames in segments of 8: every frame comes out once, in order, under its own name, with a bar of frames;
    at noise 0 the frames no segment boundary touches are those of the whole clip at once."""
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    clip = (tiny_video(frames=30, height=16, width=24).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    for i, frame in enumerate(clip):
        PIL.Image.fromarray(frame).save(frames_dir / f"f{i}.png")
    options = ("--model", model_dir, "--steps", 1, "--num-frames", 4, "--frame-overlap", 1, "--noise-scale", 0)
    outputs = {}
    for segment in (8, 0):
        out = tmp_path / f"out_{segment}"
        result = video_deblur("run", frames_dir, "-o", out, "--segment-frames", segment, *options)
        assert "wrote 30 frames of 24x16" in result.stdout
        assert sorted(os.listdir(out)) == sorted(f"f{i}.png" for i in range(30))
        outputs[segment] = np.stack([np.asarray(PIL.Image.open(out / f"f{i}.png")) for i in range(30)])
        assert ("30/30" in result.stderr) == (segment == 8), result.stderr  # the bar of frames, for 4 segments
    # segments [0, 8), [7, 15), [14, 22), [21, 30) share frames 7, 14 and 21; in one step, frames 0-3 are blended
    # from the same two windows, [0, 4) and [3, 7), in both runs, so they come out alike (to one 8-bit level: the
    # VAE and the encoders see other batches, which changes float rounding)
    assert np.abs(outputs[8][:4].astype(int) - outputs[0][:4].astype(int)).max() <= 1
    # every frame, in order, is what deblur_segments gives in process (to one 8-bit level, as above)
    from pipeline_video_deblur import VideoDeblurPipeline
    from pipeline_video_deblur.segments import deblur_segments

    pipe = VideoDeblurPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = deblur_segments(
        pipe, clip, segment_frames=8, frame_overlap=1, num_frames=4, num_inference_steps=1, noise_scale=0.0
    )
    assert np.abs(outputs[8].astype(int) - np.stack(list(expected)).astype(int)).max() <= 1


def test_a_home_relative_path_is_expanded(model_dir, clip_mp4, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "in.mp4").write_bytes(clip_mp4.read_bytes())
    result = video_deblur(
        "run", "~/in.mp4", "-o", "~/out.mp4", "--model", model_dir, "--steps", 1, env={"HOME": str(home)}
    )
    assert "wrote 5 frames" in result.stdout
    assert read_video(home / "out.mp4").frames.shape == (5, 36, 44, 3)


def test_self_ensemble_writes_the_pipelines_averaged_frames(model_dir, tmp_path):
    """--self-ensemble 4 writes what the pipeline gives in process with self_ensemble=4 (to one 8-bit level, as
    above), which is not the single run."""
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    clip = (tiny_video(frames=3, height=16, width=24).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    for i, frame in enumerate(clip):
        PIL.Image.fromarray(frame).save(frames_dir / f"{i}.png")
    outputs = {}
    for size in (1, 4):
        out = tmp_path / f"out_{size}"
        video_deblur("run", frames_dir, "-o", out, "--model", model_dir, "--steps", 2, "--self-ensemble", size)
        outputs[size] = np.stack([np.asarray(PIL.Image.open(out / f"{i}.png")) for i in range(3)]).astype(int)
    from pipeline_video_deblur import VideoDeblurPipeline

    pipe = VideoDeblurPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    expected = pipe(clip, num_inference_steps=2, self_ensemble=4, generator=generator, output_type="np").frames[0]
    assert np.abs(outputs[4] - (expected * 255).round().astype(int)).max() <= 1
    assert np.abs(outputs[4] - outputs[1]).max() > 1
