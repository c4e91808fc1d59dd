"""Shared, session-scoped inputs of the training tests: a tiny synthetic dataset, a tiny pipeline folder, and one
stage 1 run that the stage 1, stage 2 and resume tests all start from (each training run costs a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import TINY_TRAIN_FLAGS, TRAIN, run_script


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    """Two train and two test sequences of six 32 x 32 frames, GoPro layout."""
    from pipeline_video_deblur.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("train_data") / "synth"
    make_synthetic_dataset(root, split="both", sequences=2, frames=6, size=(32, 32), seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A tiny VideoDeblurPipeline folder (pixel-shuffle VAE), as `video-deblur convert` would write one."""
    from tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("tiny_pipeline") / "pipe"
    tiny_pipeline(pixel_vae=True, sample_size=16).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def stage1_run(tmp_path_factory, train_data, tiny_pipeline_dir) -> Path:
    """Stage 1 for 2 steps with EMA and a checkpoint after every step (the resume test continues it)."""
    out = tmp_path_factory.mktemp("stage1") / "out"
    run_script(
        [
            TRAIN / "stage1_blur_encoder.py",
            "--pretrained_model_name_or_path", tiny_pipeline_dir,
            "--train_data_dir", train_data,
            "--output_dir", out,
            "--max_train_steps", "2",
            "--checkpointing_steps", "1",
            "--use_ema",
            "--learning_rate", "1e-3",
            *TINY_TRAIN_FLAGS,
        ]
    )  # fmt: skip
    return out
