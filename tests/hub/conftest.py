"""Fixtures of the Hub tests: a tiny saved pipeline, a sample video, a Python that cannot import the package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hub_helpers import write_sample


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every Hub test runs on one thread (the fixture is in tests/conftest.py)."""


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny `VideoDeblurPipeline` saved with `save_pretrained` (package layout), with the weight-free
    `PixelShuffleVAE`, so that two components (unet, vae) are custom code."""
    from tiny import tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny") / "tiny-pipeline"
    tiny_pipeline(pixel_vae=True).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_copy(tiny_folder, tmp_path) -> Path:
    """A private copy of `tiny_folder` that a test may change."""
    target = tmp_path / "tiny-pipeline"
    shutil.copytree(tiny_folder, target)
    return target


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> Path:
    """An 8-frame 64 x 64 blurred mp4, standing in for examples/sample_blurred.mp4."""
    return write_sample(tmp_path_factory.mktemp("sample") / "sample_blurred.mp4")
