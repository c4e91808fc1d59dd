"""The remote-code layout: what `write_remote_code` writes, and `package_layout`, which loads such a folder (or Hub
repo) with this package's classes. Loading it where the package is missing is tested in test_hub_push.py, through
the card's snippet."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline_video_deblur
from pipeline_video_deblur import PixelShuffleVAE, VideoDeblurPipeline, VideoDeblurUNet3DModel
from pipeline_video_deblur.remote_code import (
    is_remote_layout,
    package_layout,
    package_model_index,
    read_model_index,
    relative_imports,
    write_remote_code,
)

PACKAGE_DIR = Path(pipeline_video_deblur.__file__).resolve().parent


def run_tiny(pipe) -> np.ndarray:
    video = np.linspace(0, 255, 4 * 32 * 32 * 3).reshape(4, 32, 32, 3).astype(np.uint8)
    pipe.set_progress_bar_config(disable=True)
    return pipe(video, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").frames[0]


def test_relative_imports_finds_what_diffusers_finds(tmp_path):
    from diffusers.utils.dynamic_modules_utils import get_relative_imports

    module = tmp_path / "m.py"
    module.write_text(
        "from .a import x\nimport .b\ndef f():\n    from .c import y\nfrom . import d\n"
        "from os import path\nimport json\n"
    )
    assert relative_imports(module) == ["a", "b", "c"] == sorted(get_relative_imports(module))
    pipeline_file = PACKAGE_DIR / "pipeline_video_deblur.py"
    assert relative_imports(pipeline_file) == sorted(get_relative_imports(pipeline_file))


def test_write_remote_code_layout(tiny_copy):
    before = read_model_index(tiny_copy)
    configs = {p: p.read_text() for p in tiny_copy.rglob("config.json")}

    written = write_remote_code(tiny_copy)

    index = read_model_index(tiny_copy)
    assert index["_class_name"] == ["pipeline_video_deblur", "VideoDeblurPipeline"]
    assert index["unet"] == ["unet_3d_deblur", "VideoDeblurUNet3DModel"]
    assert index["vae"] == ["pixel_shuffle_vae", "PixelShuffleVAE"]
    for name in ("image_encoder", "blur_encoder", "feature_extractor", "scheduler"):
        assert index[name] == before[name]
    assert index["residual"] == before["residual"]
    # The code at the places diffusers looks, identical to the package's files.
    expected = {
        "pipeline_video_deblur.py": PACKAGE_DIR / "pipeline_video_deblur.py",
        "unet/unet_3d_deblur.py": PACKAGE_DIR / "models" / "unet_3d_deblur.py",
        "vae/pixel_shuffle_vae.py": PACKAGE_DIR / "models" / "pixel_shuffle_vae.py",
    }
    for name in relative_imports(PACKAGE_DIR / "pipeline_video_deblur.py"):
        expected[f"{name}.py"] = PACKAGE_DIR / f"{name}.py"
    assert set(written) == set(expected) | {"model_index.json"}
    for relative, source in expected.items():
        assert (tiny_copy / relative).read_bytes() == source.read_bytes(), relative
    # Component configs name classes only: unchanged.
    assert {p: p.read_text() for p in tiny_copy.rglob("config.json")} == configs


def test_write_remote_code_with_a_learned_vae(tmp_path):
    """A diffusers VAE (AutoencoderKL) stays a diffusers entry: only the package's own classes ship code."""
    from tiny import tiny_pipeline

    folder = tmp_path / "kl"
    tiny_pipeline(pixel_vae=False).save_pretrained(folder)
    write_remote_code(folder)
    index = read_model_index(folder)
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert not list((folder / "vae").glob("*.py"))
    assert (folder / "unet" / "unet_3d_deblur.py").is_file()


def test_write_remote_code_refuses_a_remote_layout_and_other_pipelines(tiny_copy):
    write_remote_code(tiny_copy)
    with pytest.raises(ValueError, match="already has the remote-code layout"):
        write_remote_code(tiny_copy)
    index = read_model_index(tiny_copy)
    index["_class_name"] = "StableDiffusionPipeline"
    (tiny_copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="expected a VideoDeblurPipeline folder"):
        write_remote_code(tiny_copy)
    with pytest.raises(ValueError, match="no model_index.json"):
        write_remote_code(tiny_copy / "unet")


def test_package_model_index_inverts_write_remote_code(tiny_copy):
    before = read_model_index(tiny_copy)
    write_remote_code(tiny_copy)
    remote = read_model_index(tiny_copy)
    assert is_remote_layout(remote) and not is_remote_layout(before)
    assert package_model_index(remote, tiny_copy) == before
    assert package_model_index(before, tiny_copy) == before


def test_package_model_index_refuses_classes_the_package_lacks(tiny_copy):
    write_remote_code(tiny_copy)
    index = read_model_index(tiny_copy)
    index["unet"] = ["unet_3d_deblur", "SomeoneElsesUNet"]
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        package_model_index(index, tiny_copy)


def test_package_layout_loads_with_the_package_classes(tiny_folder, tiny_copy):
    reference = run_tiny(VideoDeblurPipeline.from_pretrained(tiny_folder))
    write_remote_code(tiny_copy)
    # Poison the shipped code: package_layout must never run it.
    (tiny_copy / "unet" / "unet_3d_deblur.py").write_text("raise RuntimeError('the remote code ran')\n")

    with package_layout(tiny_copy) as view:
        assert Path(view) != tiny_copy
        assert not list(Path(view).rglob("*.py"))
        pipe = VideoDeblurPipeline.from_pretrained(view)
    assert not os.path.exists(view), "the view outlives the load"
    assert type(pipe) is VideoDeblurPipeline
    assert type(pipe.unet) is VideoDeblurUNet3DModel and type(pipe.vae) is PixelShuffleVAE
    np.testing.assert_array_equal(run_tiny(pipe), reference)
    # Saved again, the folder is in the package layout.
    pipe.save_pretrained(tiny_copy.parent / "resaved")
    assert read_model_index(tiny_copy.parent / "resaved")["unet"][0] == "pipeline_video_deblur.models.unet_3d_deblur"


def test_package_layout_passes_a_package_folder_and_a_plain_repo_through(tiny_folder, monkeypatch, tmp_path):
    with package_layout(tiny_folder) as view:
        assert view == tiny_folder

    import huggingface_hub

    index_file = tmp_path / "model_index.json"
    shutil.copyfile(tiny_folder / "model_index.json", index_file)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(index_file))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **kw: pytest.fail("downloaded a plain repo"))
    with package_layout("someone/plain-repo") as view:
        assert view == "someone/plain-repo"


def test_package_layout_of_a_hub_repo_downloads_no_pickles(tiny_copy, monkeypatch):
    write_remote_code(tiny_copy)
    calls = {}

    def fake_hf_hub_download(repo_id, filename, **kwargs):
        calls["index"] = (repo_id, filename, kwargs)
        return str(tiny_copy / filename)

    def fake_snapshot_download(repo_id, **kwargs):
        calls["snapshot"] = (repo_id, kwargs)
        return str(tiny_copy)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with package_layout("someone/tiny", revision="main", torch_dtype=torch.float32) as view:
        pipe = VideoDeblurPipeline.from_pretrained(view)
    assert type(pipe.unet) is VideoDeblurUNet3DModel
    assert calls["index"] == ("someone/tiny", "model_index.json", {"revision": "main"})
    repo_id, kwargs = calls["snapshot"]
    assert repo_id == "someone/tiny" and kwargs["revision"] == "main"
    assert {"*.bin", "*.pt", "*.ckpt", "*.pth"} <= set(kwargs["ignore_patterns"])
