"""Dead-leaves stills: what they look like, determinism, resuming, and the real CLI feeding `synth --photos`."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline_video_deblur.data.dead_leaves import dead_leaves_image, write_dead_leaves

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _cli(*args):
    command = [sys.executable, "-m", "pipeline_video_deblur.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)


def test_a_still_has_shapes_edges_and_colour():
    image = dead_leaves_image(np.random.default_rng(0), size=96)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert np.array_equal(image, dead_leaves_image(np.random.default_rng(0), size=96))
    assert not np.array_equal(image, dead_leaves_image(np.random.default_rng(1), size=96))
    # Many shapes of many colours (occluding regions), not noise: most neighbouring pixels are alike, some differ
    # a lot.
    quantised = (image // 16).reshape(-1, 3)
    assert len(np.unique(quantised, axis=0)) > 20
    step = np.abs(np.diff(image.astype(float), axis=1)).max(-1)
    assert np.median(step) < 8 and (step > 40).mean() > 0.01
    # Colour, not only grey: some pixels have clearly different channels.
    assert (image.astype(int).max(-1) - image.astype(int).min(-1) > 30).mean() > 0.05
    # The canvas is covered: no large patch of the black background is left.
    assert (image.max(-1) < 4).mean() < 0.01


def test_a_still_is_the_one_earlier_versions_drew():
    # A folder resumed or grown with `--reuse` mixes stills drawn by different versions of this code, so still k of a
    # seed must stay the same image when the drawing is changed (as when it was made faster). The digest is that of
    # the version that drew the shipped model's 3,840 stills.
    image = dead_leaves_image(np.random.default_rng([3, 0]), size=96)
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == "ee07c6fd2ad9abc6"


def test_cli_writes_resumes_and_feeds_synth(tmp_path):
    out = tmp_path / "leaves"
    done = _cli("leaves", "--out", str(out), "--count", "2", "--size", "48", "--seed", "3", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "Wrote 2 dead-leaves stills" in done.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["leaves.json", "leaves_00000.png", "leaves_00001.png"]  # nothing temporary left
    assert json.loads((out / "leaves.json").read_text()) == {
        "generator": "dead_leaves", "seed": 3, "size": 48, "count": 2
    }  # fmt: skip
    first = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.png")}
    # More stills later: the ones written stay untouched; still k is the same whatever the count and workers.
    paths = write_dead_leaves(out, count=3, seed=3, size=48)
    assert [p.name for p in paths] == ["leaves_00000.png", "leaves_00001.png", "leaves_00002.png"]
    for name, (data, mtime) in first.items():
        assert (out / name).read_bytes() == data and (out / name).stat().st_mtime_ns == mtime
    alone = write_dead_leaves(tmp_path / "alone", count=3, seed=3, size=48, workers=1)
    assert [p.read_bytes() for p in alone] == [p.read_bytes() for p in paths]
    assert json.loads((out / "leaves.json").read_text())["count"] == 3
    # Another seed in the same folder is refused, and nothing changes.
    other = _cli("leaves", "--out", str(out), "--count", "4", "--size", "48", "--seed", "4")
    assert other.returncode != 0 and "use another --out folder" in other.stderr and "'seed': 4" in other.stderr
    assert not (out / "leaves_00003.png").exists()
    # The stills are content for `synth --photos`.
    synth = _cli(
        "synth", "--photos", str(out), "--out", str(tmp_path / "data"), "--split", "train", "--sequences", "1",
        "--frames", "3", "--size", "24x32", "--seed", "0",
    )  # fmt: skip
    assert synth.returncode == 0, synth.stderr
    meta = json.loads((tmp_path / "data" / "train" / "synth_train_000" / "meta.json").read_text())
    assert meta["photos"] == ["leaves_00000.png", "leaves_00001.png", "leaves_00002.png"]
    sharp = np.asarray(Image.open(tmp_path / "data" / "train" / "synth_train_000" / "sharp" / "000000.png"))
    assert sharp.shape == (24, 32, 3)


def test_reuse_links_the_stills_another_folder_drew(tmp_path):
    small = write_dead_leaves(tmp_path / "leaves_3", count=3, seed=3, size=48)
    done = _cli(
        "leaves", "--out", str(tmp_path / "leaves_5"), "--count", "5", "--size", "48", "--seed", "3",
        "--reuse", str(tmp_path / "leaves_3"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    big = sorted((tmp_path / "leaves_5").glob("leaves_*.png"))
    assert [p.name for p in big] == [f"leaves_{k:05d}.png" for k in range(5)]
    # The first three are the other folder's files (hard links on one file system), the rest are drawn: the same
    # bytes as a folder drawn from scratch, and nothing temporary is left.
    assert [p.stat().st_ino for p in big[:3]] == [p.stat().st_ino for p in small]
    fresh = write_dead_leaves(tmp_path / "fresh", count=5, seed=3, size=48)
    assert [p.read_bytes() for p in big] == [p.read_bytes() for p in fresh]
    assert sorted(p.name for p in (tmp_path / "leaves_5").iterdir()) == ["leaves.json"] + [p.name for p in big]
    # Stills of other settings, or a folder that `leaves` did not write, are refused before anything is written.
    other = _cli(
        "leaves", "--out", str(tmp_path / "b"), "--count", "5", "--size", "48", "--seed", "4",
        "--reuse", str(tmp_path / "leaves_3"),
    )  # fmt: skip
    assert other.returncode == 1 and "its stills would differ" in other.stderr and "'seed': 3" in other.stderr
    with pytest.raises(ValueError, match="--reuse '.*nowhere' is not a folder with leaves.json"):
        write_dead_leaves(tmp_path / "b", count=5, seed=3, size=48, reuse=tmp_path / "nowhere")
    assert not (tmp_path / "b").exists()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="--count must be at least 1, got 0"):
        write_dead_leaves(tmp_path / "a", count=0)
    with pytest.raises(ValueError, match="--size must be at least 32 px, got 8"):
        write_dead_leaves(tmp_path / "a", count=1, size=8)
    with pytest.raises(ValueError, match="--workers must be at least 1, got 0"):
        write_dead_leaves(tmp_path / "a", count=1, size=32, workers=0)
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        write_dead_leaves(tmp_path / "file", count=1, size=32)
    assert (tmp_path / "file").read_text() == "mine"
    (tmp_path / "old").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "old" / "leaves_00000.png")
    with pytest.raises(ValueError, match="holds leaves_\\*.png stills but no leaves.json"):
        write_dead_leaves(tmp_path / "old", count=1, size=32)
    done = _cli("leaves", "--out", str(tmp_path / "b"), "--count", "-1")
    assert (
        done.returncode == 1
        and done.stderr.strip() == "video-deblur leaves: error: --count must be at least 1, got -1"
    )
    with pytest.raises(ValueError, match="radii must satisfy 0 < min < max"):
        dead_leaves_image(np.random.default_rng(0), size=32, min_radius=5, max_radius=5)
