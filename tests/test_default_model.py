"""The embedded default model: loads offline, deblurs, ships inside the wheel, stays small."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import tiny_video

from pipeline_video_deblur import DEFAULT_MODEL_PATH, VideoDeblurPipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shipped_files() -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(folder, name), DEFAULT_MODEL_PATH)
        for folder, _, names in os.walk(DEFAULT_MODEL_PATH)
        for name in names
        if "__pycache__" not in folder
    )


def test_the_default_model_is_complete_small_and_safetensors_only():
    files = shipped_files()
    for required in ("model_index.json", "README.md", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"):
        assert required in files, f"{required} missing from {DEFAULT_MODEL_PATH}"
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    size = sum(os.path.getsize(os.path.join(DEFAULT_MODEL_PATH, f)) for f in files)
    assert size < 30e6, f"the default model is {size / 1e6:.1f} MB; the budget is 30 MB"
    index = json.load(open(os.path.join(DEFAULT_MODEL_PATH, "model_index.json")))
    assert index["_class_name"] == "VideoDeblurPipeline"


def test_the_cards_links_stay_inside_the_model_folder():
    """The card and its version history link to each other; the Hub gets this folder alone, so every relative
    link must name a file in it."""
    import re

    shipped = set(shipped_files())
    cards = [f for f in shipped if f.endswith(".md")]
    assert {"README.md", "HISTORY.md"} <= set(cards)
    for card in cards:
        text = open(os.path.join(DEFAULT_MODEL_PATH, card), encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" in target:
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(card), target))
            assert path in shipped, f"{card} links to {target}, which is not in {DEFAULT_MODEL_PATH}"


def test_from_default_loads_offline_and_deblurs_a_short_clip():
    code = (
        "import torch, numpy as np;"
        "from pipeline_video_deblur import VideoDeblurPipeline;"
        "pipe = VideoDeblurPipeline.from_default(); pipe.set_progress_bar_config(disable=True);"
        "video = torch.rand(4, 3, 40, 48);"
        "out = pipe(video, num_inference_steps=2, guidance_scale=1.0, output_type='np',"
        " generator=torch.Generator().manual_seed(0)).frames[0];"
        "assert out.shape == (4, 40, 48, 3), out.shape; assert np.isfinite(out).all(); print('ok')"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home", "NO_PROXY": "*"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("torch_dtype", [torch.float32, torch.bfloat16])
def test_torch_dtype_loads_in_that_dtype_without_a_deprecation_warning(torch_dtype):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = VideoDeblurPipeline.from_default(torch_dtype=torch_dtype)
    assert pipe.unet.dtype == torch_dtype and pipe.blur_encoder.dtype == torch_dtype
    # Recent diffusers renamed `torch_dtype` to `dtype`; the pipeline passes it on under the name diffusers reads.
    assert not [str(w.message) for w in caught if "torch_dtype" in str(w.message)]


def test_default_model_output_is_deterministic_and_keeps_the_clip_shape():
    pipe = VideoDeblurPipeline.from_default()
    pipe.set_progress_bar_config(disable=True)
    video = tiny_video(frames=4, height=32, width=32)
    first = pipe(video, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).frames
    second = pipe(video, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).frames
    assert first.shape == (1, 4, 32, 32, 3)
    np.testing.assert_array_equal(first, second)
    # Its own noise_scale is 0 (chosen by measurement, stated on its card): with DDIM's eta 0 no seed matters
    assert pipe.config.noise_scale == 0
    card = open(os.path.join(DEFAULT_MODEL_PATH, "README.md")).read()
    assert "`noise_scale: 0`" in card
    # and its own guidance_scale, also chosen by measurement and stated on its card, is what a call without one uses
    assert f"`guidance_scale: {pipe.config.guidance_scale:g}`" in card
    with open(os.path.join(DEFAULT_MODEL_PATH, "model_index.json")) as index:
        assert json.load(index)["guidance_scale"] == pipe.config.guidance_scale  # stored, not the fallback
    other = pipe(video, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(1)).frames
    np.testing.assert_array_equal(first, other)
    drawn = pipe(video, num_inference_steps=2, output_type="np", noise_scale=1.0).frames
    assert np.abs(drawn - first).max() > 1e-3


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import setuptools"], capture_output=True).returncode != 0,
    reason="setuptools is not installed in this environment, so the wheel cannot be built offline",
)
def test_the_built_wheel_carries_the_default_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), REPO],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheels = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(tmp_path / wheels[0]) as wheel:
        names = set(wheel.namelist())
    for shipped in shipped_files():
        assert f"pipeline_video_deblur/default_model/{shipped}" in names, f"{shipped} is not in the wheel"


def test_ship_script_copies_components_sets_the_tile_and_keeps_the_card(tmp_path):
    from tiny import tiny_pipeline

    source = tmp_path / "stage2"
    tiny_pipeline(pixel_vae=True, residual=True, sample_size=8).save_pretrained(source)
    (source / "loss_log.csv").write_text("step,epoch,loss\n1,1,0.9\n2,1,0.5\n")
    target = tmp_path / "default_model"
    target.mkdir()
    (target / "README.md").write_text("# card\n")
    (target / "HISTORY.md").write_text("# every version\n")
    (target / "stale.txt").write_text("from an older model\n")
    pipe = VideoDeblurPipeline.from_pretrained(source)
    tile = 2 * pipe.size_multiple
    ship = [sys.executable, os.path.join(REPO, "train", "recipes", "ship_default_model.py"), str(source), str(target)]
    refused = subprocess.run([*ship, "--noise-scale", "-1"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "--noise-scale must be a finite number >= 0, got -1.0" in refused.stderr
    assert not (target / "model_index.json").exists()
    refused = subprocess.run([*ship, "--guidance-scale", "nan"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "--guidance-scale must be a finite number, got nan" in refused.stderr
    assert not (target / "model_index.json").exists()
    options = ("--tile-size", str(tile), "--noise-scale", "0.25", "--guidance-scale", "1.5")
    result = subprocess.run([*ship, *options], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]

    shipped = VideoDeblurPipeline.from_pretrained(target)
    assert shipped.unet.config.sample_size == tile // shipped.vae_scale_factor  # the default tile, in latents
    assert shipped.default_tile_size == tile
    for name, weights in [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("image_encoder", "model.safetensors"),
        ("blur_encoder", "model.safetensors"),
    ]:
        stored = load_file(target / name / weights)
        assert {v.dtype for v in stored.values()} == {torch.float16}, name
        assert getattr(shipped, name).dtype == torch.float32, name  # stored in float16, loaded back as float32
    assert VideoDeblurPipeline.from_pretrained(target, torch_dtype=torch.bfloat16).blur_encoder.dtype == torch.bfloat16
    video = torch.rand(2, 3, tile, tile)
    frames = shipped(video, num_inference_steps=1, guidance_scale=2.0, output_type="np").frames[0]
    assert frames.dtype == np.float32 and np.isfinite(frames).all()
    assert shipped.config.residual is True and shipped.config.noise_scale == 0.25
    assert shipped.config.guidance_scale == 1.5 and shipped.default_guidance_scale == 1.5
    assert (target / "README.md").read_text() == "# card\n"  # the card is kept
    assert (target / "HISTORY.md").read_text() == "# every version\n"  # and the history beside it
    assert not (target / "stale.txt").exists()  # nothing else of the old folder survives
    assert "_name_or_path" not in (target / "model_index.json").read_text()  # no path of the training machine
    record = json.loads((target / "training.json").read_text())
    assert record["runs"][-1]["last_logged_step"] == 2 and record["runs"][-1]["last_loss"] == 0.5

    bad = subprocess.run([*ship, "--tile-size", str(tile + 1)], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and f"--tile-size {tile + 1} is not a positive multiple" in bad.stderr
    assert (target / "README.md").is_file()  # a refused run leaves the shipped model as it was

    # Shipping again with --keep-replaced moves the model it replaces aside instead of deleting it.
    before = load_file(target / "unet" / "diffusion_pytorch_model.safetensors")
    kept = tmp_path / "work" / "replaced"
    again = subprocess.run([*ship, "--keep-replaced", str(kept)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"the model it replaced is in {kept}" in again.stdout
    assert (kept / "README.md").read_text() == "# card\n"
    assert len(json.loads((kept / "training.json").read_text())["runs"]) == 1
    after = load_file(kept / "unet" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert len(json.loads((target / "training.json").read_text())["runs"]) == 2
    # without --noise-scale / --guidance-scale the model keeps those measured for the model it replaces
    assert VideoDeblurPipeline.from_pretrained(target).config.noise_scale == 0.25
    assert VideoDeblurPipeline.from_pretrained(target).config.guidance_scale == 1.5
    # A --keep-replaced folder that holds another model is refused before anything changes; a leftover .old
    # (an interrupted ship) is never deleted.
    other = tmp_path / "other"
    shutil.copytree(kept, other)
    weights = other / "unet" / "diffusion_pytorch_model.safetensors"
    changed = {k: v + 1 for k, v in load_file(weights).items()}
    save_file(changed, weights)
    refused = subprocess.run([*ship, "--keep-replaced", str(other)], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "exists and is not a copy of the model being replaced" in refused.stderr
    assert len(json.loads((target / "training.json").read_text())["runs"]) == 2
    os.replace(other, str(target) + ".old")
    refused = subprocess.run(ship, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "left from an interrupted ship" in refused.stderr
    assert (tmp_path / "default_model.old" / "unet").is_dir()


def test_ship_script_averages_the_weights_of_runs_of_one_chain(tmp_path):
    from tiny import tiny_pipeline

    first, second = tmp_path / "run_a", tmp_path / "run_b"
    pipe = tiny_pipeline(pixel_vae=True, residual=True, sample_size=8)
    pipe.save_pretrained(first)
    with torch.no_grad():  # a later run of the same chain: the same architecture, other weights
        for p in pipe.unet.parameters():
            p.add_(1.0)
        for p in pipe.blur_encoder.parameters():
            p.sub_(0.5)
    pipe.save_pretrained(second)
    target = tmp_path / "default_model"
    ship = [sys.executable, os.path.join(REPO, "train", "recipes", "ship_default_model.py"), str(second), str(target)]

    def refused(*extra):
        result = subprocess.run([*ship, *extra], capture_output=True, text=True, timeout=600)
        assert result.returncode != 0 and not target.exists()
        return result.stderr

    assert "names the source or one folder twice" in refused("--average-with", str(second))
    assert f"--average-with {tmp_path}: not a pipeline folder" in refused("--average-with", str(tmp_path))
    other_vae = tmp_path / "other_vae"
    tiny_pipeline(pixel_vae=False, residual=True, sample_size=8).save_pretrained(other_vae)
    assert f"--average-with {other_vae}: its vae differs from the source's" in refused(
        "--average-with", str(other_vae)
    )

    result = subprocess.run([*ship, "--average-with", str(first)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = VideoDeblurPipeline.from_pretrained(first), VideoDeblurPipeline.from_pretrained(second)
    shipped = VideoDeblurPipeline.from_pretrained(target)
    for name in ("unet", "blur_encoder", "image_encoder"):
        mine, theirs, mean = (getattr(p, name).state_dict() for p in (a, b, shipped))
        for key, value in mean.items():
            if value.is_floating_point():
                expected = ((mine[key].float() + theirs[key].float()) / 2).half().float()
                assert torch.allclose(value.float(), expected, atol=1e-3), f"{name}.{key}"
    unet_a = dict(a.unet.named_parameters())
    moved = [(p.float() - unet_a[k].float()).mean().item() for k, p in shipped.unet.named_parameters()]
    assert all(abs(m - 0.5) < 1e-2 for m in moved)  # halfway between the two runs, not either of them
    frames = shipped(torch.rand(2, 3, 16, 16), num_inference_steps=1, output_type="np").frames[0]
    assert np.isfinite(frames).all()
    run = json.loads((target / "training.json").read_text())["runs"][-1]
    assert run["source"] == os.path.relpath(second) and run["averaged_with"] == [os.path.relpath(first)]
    assert "weights" not in run

    # --weights: a weighted mean, the source's weight first; refused unless it gives one positive weight per model
    shutil.rmtree(target)
    assert "--weights needs --average-with" in refused("--weights", "1", "2")
    assert "expected 2 weights, one for the source and one per --average-with folder, got 1" in refused(
        "--average-with", str(first), "--weights", "1"
    )
    assert "--weights: -1 is not a positive finite number" in refused(
        "--average-with", str(first), "--weights", "1", "-1"
    )
    weighted = [*ship, "--average-with", str(first), "--weights", "1", "3"]
    result = subprocess.run(weighted, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = VideoDeblurPipeline.from_pretrained(target)
    moved = [(p.float() - unet_a[k].float()).mean().item() for k, p in shipped.unet.named_parameters()]
    assert all(abs(m - 0.25) < 1e-2 for m in moved)  # a quarter of the way from run a (weight 3) to run b (weight 1)
    blur_a = dict(a.blur_encoder.named_parameters())
    moved = [(p.float() - blur_a[k].float()).mean().item() for k, p in shipped.blur_encoder.named_parameters()]
    assert all(abs(m + 0.125) < 1e-2 for m in moved)
    run = json.loads((target / "training.json").read_text())["runs"][-1]
    assert run["averaged_with"] == [os.path.relpath(first)] and run["weights"] == [1.0, 3.0]
