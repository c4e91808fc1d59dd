"""Helpers of the Hub tests (imported by the test modules and by conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from pipeline_video_deblur.data import write_video

REPO_ROOT = Path(__file__).resolve().parents[2]


def synthetic_clip(frames: int = 8, size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth pattern moving right, box-blurred along the motion: uint8 (F, H, W, 3)."""
    rng = np.random.default_rng(seed)
    low = rng.random((size // 8, size // 8 + frames, 3))
    wide = np.kron(low, np.ones((8, 8, 1)))  # (size, size + 8*frames, 3)
    clip = []
    for f in range(frames):
        shots = [wide[:, f * 8 + k : f * 8 + k + size] for k in range(8)]
        clip.append(np.mean(shots, axis=0))
    return (np.stack(clip) * 255).round().astype(np.uint8)


def write_sample(path: Path, frames: int = 8, size: int = 64) -> Path:
    write_video(synthetic_clip(frames, size), path, fps=8.0)
    return path


# A Python that cannot import pipeline_video_deblur even though it is installed (editable) in this venv.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pipeline_video_deblur" or name.startswith("pipeline_video_deblur."):
                raise ModuleNotFoundError(f"{name} is blocked: this test runs without the package")
            return None

    sys.meta_path.insert(0, _Block())
    try:
        import pipeline_video_deblur  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("pipeline_video_deblur is importable: the blocker failed")
    """
)


def run_without_package(code: str, cwd: Path, modules_cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `code` in `python -I` (no PYTHON* variables, no script dir or cwd on sys.path) with the package blocked."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(modules_cache),
        "HF_HOME": str(cwd / "hf_home"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-I", "-c", BLOCKER + "\n" + code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
