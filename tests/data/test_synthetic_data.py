"""The GoPro-recipe synthetic generator: layout, determinism, the photo split, blur that is really there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline_video_deblur.data.synthetic import (
    EXPOSURE_CHOICES,
    PHOTO_FILES,
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    load_photo,
    make_synthetic_dataset,
    parse_size,
    photos_in_folder,
)

SIZE = (24, 32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, split="both", sequences=2, frames=4, size=SIZE, seed=0, progress=False)
    return root


def _read(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def _same_sequences(a, b, split, names):
    for name in names:
        for kind in ("blur", "blur_gamma", "sharp"):
            for png in (a / split / name / kind).iterdir():
                assert png.read_bytes() == (b / split / name / kind / png.name).read_bytes(), (name, kind, png.name)
        assert (a / split / name / "meta.json").read_text() == (b / split / name / "meta.json").read_text()


def test_layout_and_meta(synth_root):
    for split in ("train", "test"):
        sequences = sorted(p.name for p in (synth_root / split).iterdir())
        assert sequences == [f"synth_{split}_000", f"synth_{split}_001"]  # nothing temporary left
        for name in sequences:
            folder = synth_root / split / name
            for kind in ("blur", "blur_gamma", "sharp"):
                frames = _read(folder / kind)
                assert frames.shape == (4, *SIZE, 3) and frames.dtype == np.uint8
                assert [p.name for p in sorted((folder / kind).iterdir())] == [f"{i:06d}.png" for i in range(4)]
            meta = json.loads((folder / "meta.json").read_text())
            assert meta["seed"] == 0 and meta["split"] == split and meta["size"] == list(SIZE)
            assert meta["exposure_subframes"] in EXPOSURE_CHOICES and meta["exposure_subframes"] % 2 == 1
            assert 1 <= len(meta["objects"]) <= 3


def test_test_photos_never_in_train(synth_root):
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    for split, allowed in (("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS)):
        for folder in (synth_root / split).iterdir():
            meta = json.loads((folder / "meta.json").read_text())
            used = {meta["background"]["photo"], *(o["photo"] for o in meta["objects"])}
            assert used <= set(allowed), (split, used)


def test_clips_are_blurred_and_moving(synth_root):
    for folder in (synth_root / "test").iterdir():
        blur, blur_gamma, sharp = (_read(folder / k).astype(float) for k in ("blur", "blur_gamma", "sharp"))
        assert np.abs(blur - sharp).mean() > 1.0  # really blurred
        assert np.abs(blur_gamma - blur).mean() > 0.05  # linear-light averaging differs from gamma-encoded
        assert np.abs(np.diff(sharp, axis=0)).mean(axis=(1, 2, 3)).min() > 1.0  # never static


def test_deterministic_for_a_seed(synth_root, tmp_path):
    make_synthetic_dataset(tmp_path / "a", split="test", sequences=2, frames=4, size=SIZE, seed=0, progress=False)
    make_synthetic_dataset(tmp_path / "b", split="test", sequences=1, frames=4, size=SIZE, seed=1, progress=False)
    _same_sequences(synth_root, tmp_path / "a", "test", ["synth_test_000", "synth_test_001"])
    assert not np.array_equal(
        _read(tmp_path / "a" / "test" / "synth_test_000" / "sharp"),
        _read(tmp_path / "b" / "test" / "synth_test_000" / "sharp"),
    )


def test_refuses_to_overwrite_and_checks_arguments(synth_root):
    with pytest.raises(FileExistsError, match="synth_train_000"):
        make_synthetic_dataset(synth_root, split="train", sequences=1, frames=4, size=SIZE, progress=False)
    with pytest.raises(ValueError, match="split"):
        make_synthetic_dataset(synth_root, split="val", progress=False)
    with pytest.raises(ValueError, match="16x16"):
        make_synthetic_dataset(synth_root, size=(8, 8), progress=False)
    assert parse_size("128x96") == (128, 96) and parse_size("64") == (64, 64)
    with pytest.raises(ValueError, match="HxW"):
        parse_size("big")


def test_skip_existing_resumes_an_interrupted_run(synth_root, tmp_path):
    root = tmp_path / "resumed"
    make_synthetic_dataset(root, split="test", sequences=1, frames=4, size=SIZE, seed=0, progress=False)
    kept = root / "test" / "synth_test_000" / "sharp" / "000000.png"
    stamp = kept.stat().st_mtime_ns
    # A leftover temporary folder of an interrupted write is not a sequence: it is ignored, not kept.
    (root / "test" / ".synth_test_001.tmp-deadbeef" / "blur").mkdir(parents=True)
    written = make_synthetic_dataset(
        root, split="test", sequences=2, frames=4, size=SIZE, seed=0, progress=False, skip_existing=True
    )
    assert [p.name for p in written] == ["synth_test_001"]
    assert kept.stat().st_mtime_ns == stamp  # the existing sequence was not rewritten
    _same_sequences(root, synth_root, "test", ["synth_test_000", "synth_test_001"])  # as if never interrupted
    assert (
        make_synthetic_dataset(
            root, split="test", sequences=2, frames=4, size=SIZE, seed=0, progress=False, skip_existing=True
        )
        == []
    )
    # A sequence written with other settings is never mixed into the data.
    with pytest.raises(ValueError, match=r"synth_test_000.*'frames': '4 \(wanted 3\)'"):
        make_synthetic_dataset(root, split="test", sequences=2, frames=3, size=SIZE, seed=0, skip_existing=True)
    with pytest.raises(ValueError, match=r"'seed': '0 \(wanted 5\)'"):
        make_synthetic_dataset(root, split="test", sequences=1, frames=4, size=SIZE, seed=5, skip_existing=True)
    with pytest.raises(ValueError, match="exclude each other"):
        make_synthetic_dataset(root, split="test", overwrite=True, skip_existing=True)
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        make_synthetic_dataset(root, split="test", workers=0)


def test_cli_workers_write_the_same_sequences(synth_root, tmp_path):
    # The real `video-deblur synth`, two worker processes: byte-identical to the sequential output.
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline_video_deblur.cli", "synth", "--out", str(tmp_path / "cli")]
    command += ["--split", "train", "--sequences", "2", "--frames", "4", "--size", "24x32", "--seed", "0"]
    done = subprocess.run(command + ["--workers", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Wrote 2 sequences" in done.stdout
    _same_sequences(tmp_path / "cli", synth_root, "train", ["synth_train_000", "synth_train_001"])
    again = subprocess.run(command + ["--skip-existing"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "Wrote 0 sequences" in again.stdout, again.stderr


def test_every_photo_is_bundled_offline():
    for name in PHOTO_FILES:
        photo = load_photo(name)
        assert photo.ndim == 3 and photo.shape[-1] == 3 and min(photo.shape[:2]) >= 256
        assert photo.dtype == np.float32 and 0.0 <= photo.min() and photo.max() <= 1.0


def _own_stills(folder):
    """Three stills of the kinds users have: an RGB PNG, a grayscale JPEG, an RGBA PNG; plus a non-image file."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 80, dtype=np.float32)
    rgb = np.stack([ramp[None, :].repeat(60, 0), ramp[:60, None].repeat(80, 1), rng.uniform(0, 255, (60, 80))], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(folder / "b_street.png")
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8), mode="L").save(folder / "a_wall.JPG")
    rgba = np.concatenate([rgb[:48, :48], np.full((48, 48, 1), 200.0)], -1).astype(np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / "c_sign.png")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_cli_renders_from_a_folder_of_own_stills(tmp_path):
    # The real `video-deblur synth --photos DIR`: sequences built only from the user's stills, resumable.
    stills = _own_stills(tmp_path / "stills")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline_video_deblur.cli", "synth", "--out", str(tmp_path / "own")]
    command += ["--split", "train", "--sequences", "3", "--frames", "3", "--size", "24x32", "--seed", "0"]
    done = subprocess.run(command + ["--photos", str(stills)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Wrote 3 sequences" in done.stdout
    names = ["a_wall.JPG", "b_street.png", "c_sign.png"]
    backgrounds = set()
    for folder in sorted((tmp_path / "own" / "train").iterdir()):
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["photos_dir"] == str(stills.resolve()) and meta["photos"] == names
        used = {meta["background"]["photo"], *(o["photo"] for o in meta["objects"])}
        assert used <= {str(stills.resolve() / n) for n in names}, used
        backgrounds.add(meta["background"]["photo"])
        sharp = _read(folder / "sharp")
        assert sharp.shape == (3, *SIZE, 3)
        assert np.abs(_read(folder / "blur").astype(float) - sharp).mean() > 1.0
    assert len(backgrounds) == 3  # the backgrounds cycle through the folder
    again = subprocess.run(
        command + ["--photos", str(stills), "--skip-existing"], capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0 and "Wrote 0 sequences" in again.stdout, again.stderr
    # Resuming without the stills (the bundled photos) must not mix two kinds of data in one folder.
    mixed = subprocess.run(command + ["--skip-existing"], capture_output=True, text=True, env=env, timeout=300)
    assert mixed.returncode != 0 and "photos_dir" in mixed.stderr and "synth_train_000" in mixed.stderr


def test_own_stills_are_checked(tmp_path):
    stills = _own_stills(tmp_path / "stills")
    with pytest.raises(ValueError, match="same stills in train and test"):
        make_synthetic_dataset(tmp_path / "x", split="both", photos_dir=stills, progress=False)
    with pytest.raises(ValueError, match=r"'.*missing' is not a directory; expected a folder of stills \(.png"):
        make_synthetic_dataset(tmp_path / "x", split="train", photos_dir=tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no stills"):
        make_synthetic_dataset(tmp_path / "x", split="train", photos_dir=tmp_path / "empty", progress=False)
    Image.fromarray(np.zeros((8, 40, 3), dtype=np.uint8)).save(stills / "d_tiny.png")
    with pytest.raises(ValueError, match=r"d_tiny.png' is 40x8; stills must be at least 16 px"):
        make_synthetic_dataset(tmp_path / "x", split="train", photos_dir=stills, progress=False)
    (stills / "d_tiny.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"d_tiny.png' cannot be read as an image"):
        make_synthetic_dataset(tmp_path / "x", split="train", photos_dir=stills, progress=False)
    assert not (tmp_path / "x").exists()  # nothing written on bad input
    # Hidden files are not stills: a macOS ._ copy, or what a killed `leaves` run left (.leaves_00001.<hex>.tmp.png).
    (stills / "d_tiny.png").unlink()
    (stills / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (stills / ".leaves_00001.0123abcd.tmp.png").write_bytes(b"half a png")
    names = [Path(p).name for p in photos_in_folder(stills)]
    assert names and not [n for n in names if n.startswith(".")]
    with pytest.raises(ValueError, match="Unknown photo 'nope': not an image file"):
        load_photo("nope")
