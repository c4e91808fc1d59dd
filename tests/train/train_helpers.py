"""Helpers of the training tests: run a script as a subprocess, tiny flags shared by every run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "train"
PYTHON = sys.executable

# Tiny everywhere: 32 x 32 crops, 4 frames, batch 1, 2 steps; validation on one clip with one denoising step.
TINY_TRAIN_FLAGS = [
    "--resolution", "32",
    "--num_frames", "4",
    "--train_batch_size", "1",
    "--report_to", "none",
    "--num_validation_clips", "1",
    "--validation_inference_steps", "1",
    "--validation_steps", "0",
    "--seed", "0",
]  # fmt: skip


def parse_deblur_args(*flags: str):
    """Stages 1/2's shared flags (`deblur_training.add_deblur_args`), parsed and checked as the scripts do."""
    import argparse

    sys.path.insert(0, str(TRAIN))
    import deblur_training

    parser = deblur_training.add_deblur_args(argparse.ArgumentParser())
    args = parser.parse_args(["--pretrained_model_name_or_path", "p", *flags])
    deblur_training.check_deblur_args(args)
    return args


def run_script(
    args: list[str], launcher: list[str] | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a training script as a real subprocess, with one CPU thread (the test machine is small and shared)."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        CUDA_VISIBLE_DEVICES="",
        **(env or {}),
    )
    command = (launcher or [PYTHON]) + [str(a) for a in args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result
