"""`video-deblur eval` as a subprocess on synthetic data, checked against metrics computed here; errors in-process."""

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline_video_deblur.data.synthetic import make_synthetic_dataset
from pipeline_video_deblur.metrics.evaluate import add_eval_args, run_eval

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline_video_deblur.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _read(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


def test_eval_identity_subprocess_matches_independent_metrics(tmp_path):
    data = tmp_path / "data"
    # synth in-process (the same code `video-deblur synth` runs): one subprocess is slow enough.
    make_synthetic_dataset(data, split="test", sequences=2, frames=3, size=(24, 32), seed=0, progress=False)
    assert sorted(p.name for p in (data / "test").iterdir()) == ["synth_test_000", "synth_test_001"]

    out = tmp_path / "results" / "identity.json"
    figures = tmp_path / "figures"
    done = _cli(
        "eval", "--dataset", "gopro", "--root", str(data), "--baseline", "identity", "--out", str(out),
        "--figures", str(figures), "--lpips",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "reported" in done.stdout and "32.22" in done.stdout and "35.98" in done.stdout
    results = json.loads(out.read_text())
    assert set(results) >= {"summary", "videos", "settings"}
    assert set(results["summary"]) >= {"psnr", "ssim", "lpips", "tce"}
    assert results["settings"]["baseline"] == "identity" and results["settings"]["synthetic"] is True

    psnrs, ssims, tces = [], [], []
    for name in ("synth_test_000", "synth_test_001"):
        blur, sharp = _read(data / "test" / name / "blur"), _read(data / "test" / name / "sharp")
        video = results["videos"][name]
        p = np.mean([peak_signal_noise_ratio(s, b, data_range=255) for b, s in zip(blur, sharp)])
        s = np.mean(
            [
                structural_similarity(
                    s,
                    b,
                    data_range=255,
                    channel_axis=-1,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                for b, s in zip(blur, sharp)
            ]
        )
        t = np.abs(np.diff(blur.astype(float), axis=0) - np.diff(sharp.astype(float), axis=0)).mean()
        assert video["frames"] == 3
        assert video["psnr"] == pytest.approx(p, abs=0.01)
        assert video["ssim"] == pytest.approx(s, abs=0.002)
        assert video["tce"] == pytest.approx(t, abs=1e-9)
        psnrs.append(p), ssims.append(s), tces.append(t)
    assert results["summary"]["psnr"] == pytest.approx(np.mean(psnrs), abs=0.01)  # mean over videos
    assert results["summary"]["ssim"] == pytest.approx(np.mean(ssims), abs=0.002)
    assert results["summary"]["tce"] == pytest.approx(np.mean(tces), abs=1e-9)
    lpips = results["summary"]["lpips"]
    assert isinstance(lpips, float) or lpips.startswith("not computed")  # a number only from weights on disk

    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["video"] for r in rows] == ["synth_test_000", "synth_test_001", "mean"]
    assert float(rows[-1]["psnr"]) == pytest.approx(results["summary"]["psnr"])
    assert sorted(p.name for p in figures.iterdir()) == ["synth_test_000_000001.png", "synth_test_001_000001.png"]


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_args(parser)
    argv = ["--dataset", "gopro", "--root", "x", "--baseline", "identity", "--out", "r.json"]
    args = parser.parse_args(argv)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_eval_in_process_unsharp_and_errors(tmp_path, capsys):
    root = tmp_path / "GOPRO_Large" / "test" / "seq"
    rng = np.random.default_rng(0)
    for kind in ("blur", "sharp"):
        (root / kind).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / kind / f"{i:06d}.png")
    out = tmp_path / "unsharp.json"
    assert run_eval(_args(root=str(tmp_path), baseline="unsharp", out=str(out), max_frames=1)) == 0
    results = json.loads(out.read_text())
    assert results["videos"]["seq"]["frames"] == 1 and results["videos"]["seq"]["tce"] is None
    assert "unsharp" in capsys.readouterr().out

    fresh = tmp_path / "fresh.json"  # the errors below come before anything is written
    with pytest.raises(ValueError, match="nowhere"):
        run_eval(_args(root=str(tmp_path / "nowhere"), out=str(fresh)))
    with pytest.raises(ValueError, match="'mnist'"):
        run_eval(_args(root=str(tmp_path), dataset="mnist", out=str(fresh)))
    (tmp_path / "GOPRO_Large" / "train").mkdir()
    with pytest.raises(ValueError, match="'train'.*no sequences"):
        run_eval(_args(root=str(tmp_path), split="train", out=str(fresh)))
    with pytest.raises(ValueError, match="does not exist"):
        run_eval(_args(root=str(tmp_path), baseline=None, model=str(tmp_path / "no_model"), out=str(fresh)))
    with pytest.raises(ValueError, match="max-frames"):
        run_eval(_args(root=str(tmp_path), max_frames=0, out=str(fresh)))
    # The CSV goes beside the JSON under the same stem: a .csv --out would have the CSV overwrite the JSON.
    with pytest.raises(ValueError, match=r"--out '.*r\.csv' ends in \.csv; expected the JSON path"):
        run_eval(_args(root=str(tmp_path), baseline="unsharp", out=str(tmp_path / "r.csv")))
    assert not (tmp_path / "r.csv").exists()

    # Earlier results are kept unless --overwrite: refused before the run, then replaced with it.
    before = out.read_text()
    with pytest.raises(ValueError, match=r"unsharp\.json and .*unsharp\.csv already exist\(s\); pass --overwrite"):
        run_eval(_args(root=str(tmp_path), baseline="unsharp", out=str(out), max_frames=2))
    assert out.read_text() == before
    assert run_eval(_args(root=str(tmp_path), baseline="unsharp", out=str(out), max_frames=2, overwrite=True)) == 0
    assert json.loads(out.read_text())["videos"]["seq"]["frames"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["GOPRO_Large", "unsharp.csv", "unsharp.json"]
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "seq_000000.png").write_bytes(b"an earlier figure")
    with pytest.raises(ValueError, match=r"--figures .*figures already exist\(s\)"):
        run_eval(_args(root=str(tmp_path), baseline="unsharp", out=str(tmp_path / "other.json"), figures=str(figures)))


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--strength", "1.5", "a number in (0, 1]"),
        ("--strength", "0", "a number in (0, 1]"),
        ("--steps", "0", "a positive integer"),
        ("--guidance-scale", "-2", "a positive number"),
        ("--max-sequences", "0", "a positive integer"),
        ("--max-frames", "-1", "a positive integer"),
        ("--noise-scale", "-0.1", "a number >= 0"),
    ],
)
def test_eval_arguments_out_of_range_are_refused_by_name(flag, value, expected, capsys):
    parser = argparse.ArgumentParser(prog="video-deblur eval")
    add_eval_args(parser)
    argv = ["--dataset", "gopro", "--root", "x", "--model", "default", "--out", "r.json", flag, value]
    with pytest.raises(SystemExit) as raised:
        parser.parse_args(argv)
    assert raised.value.code == 2
    assert f"argument {flag}: expected {expected}, got '{value}'" in capsys.readouterr().err


def test_eval_model_runs_a_saved_pipeline(tmp_path):
    """`--model FOLDER` loads a VideoDeblurPipeline and scores its output (tiny random components, 2 steps)."""
    import tiny
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_synthetic_dataset(tmp_path / "data", split="test", sequences=1, frames=3, size=(32, 32), progress=False)
        tiny.tiny_pipeline().save_pretrained(tmp_path / "pipe")
        args = _args(
            root=str(tmp_path / "data"), baseline=None, model=str(tmp_path / "pipe"), steps=2, device="cpu",
            out=str(tmp_path / "r.json"), figures=str(tmp_path / "fig"),
        )  # fmt: skip
        assert run_eval(args) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "r.json").read_text())
    video = results["videos"]["synth_test_000"]
    assert video["frames"] == 3 and np.isfinite(video["psnr"]) and video["tce"] is not None
    assert results["settings"]["steps"] == 2 and results["settings"]["model"] == str(tmp_path / "pipe")
    assert results["settings"]["noise_scale"] == 1.0  # the noise scale used is recorded: here the model's own
    assert results["settings"]["guidance_scale"] == 2.0  # and the guidance scale: the model's own too
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["synth_test_000_000001.png"]


def test_eval_scores_what_run_writes_segment_by_segment(tmp_path):
    """`--segment-frames` (default 64, as `video-deblur run`): a sequence longer than 1.5 segments is deblurred by
    deblur_segments, so eval scores the frames `run` would write; 0 is one pipeline call; a bad value is refused
    before anything loads."""
    import tiny
    import torch

    from pipeline_video_deblur import VideoDeblurPipeline
    from pipeline_video_deblur.data.datasets import GoProDataset
    from pipeline_video_deblur.metrics.psnr_ssim import psnr
    from pipeline_video_deblur.segments import deblur_segments

    make_synthetic_dataset(tmp_path / "data", split="test", sequences=1, frames=26, size=(32, 32), progress=False)
    tiny.tiny_pipeline().save_pretrained(tmp_path / "pipe")
    common = {"root": str(tmp_path / "data"), "baseline": None, "model": str(tmp_path / "pipe"), "steps": 1,
              "device": "cpu", "noise_scale": 1.0}  # fmt: skip
    assert run_eval(_args(**common, segment_frames=16, out=str(tmp_path / "seg.json"))) == 0
    assert run_eval(_args(**common, segment_frames=0, out=str(tmp_path / "whole.json"))) == 0
    seg, whole = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("seg", "whole"))
    assert (seg["settings"]["segment_frames"], whole["settings"]["segment_frames"]) == (16, 0)

    blur, sharp = GoProDataset(tmp_path / "data", split="test", whole_sequences=True, augment=False).load_frames(0)
    pipe = VideoDeblurPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    frames = np.stack(list(deblur_segments(pipe, blur, segment_frames=16, num_inference_steps=1, noise_scale=1.0,
                                           generator=torch.Generator().manual_seed(0))))  # fmt: skip
    expected = np.mean([psnr(f, s) for f, s in zip(frames, sharp)])
    assert seg["videos"]["synth_test_000"]["psnr"] == pytest.approx(expected, abs=1e-6)
    assert seg["videos"]["synth_test_000"]["psnr"] != whole["videos"]["synth_test_000"]["psnr"]

    # --self-ensemble reaches the pipeline (scores of its self_ensemble=2 output) and is recorded
    assert run_eval(_args(**common, segment_frames=0, self_ensemble=2, out=str(tmp_path / "ens.json"))) == 0
    ensemble = json.loads((tmp_path / "ens.json").read_text())
    assert ensemble["settings"]["self_ensemble"] == 2 and whole["settings"]["self_ensemble"] == 1
    frames = pipe(blur, num_inference_steps=1, noise_scale=1.0, self_ensemble=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames[0]  # fmt: skip
    frames = (frames * 255).round().astype(np.uint8)
    expected = np.mean([psnr(f, s) for f, s in zip(frames, sharp)])
    assert ensemble["videos"]["synth_test_000"]["psnr"] == pytest.approx(expected, abs=1e-6)
    assert ensemble["videos"]["synth_test_000"]["psnr"] != whole["videos"]["synth_test_000"]["psnr"]

    with pytest.raises(
        ValueError, match=r"--segment-frames must be 0 \(each sequence at once\) or at least 16 .*, got 8"
    ):
        run_eval(
            _args(**{**common, "root": str(tmp_path / "missing")}, segment_frames=8, out=str(tmp_path / "b.json"))
        )


def test_self_ensemble_is_refused_with_a_baseline_and_its_choices_are_the_pipelines(tmp_path):
    """A baseline runs once: --self-ensemble with it is refused, not ignored. The flag's choices in `run` and `eval`
    are the pipeline's sizes (the CLI does not import the pipeline module to start; this keeps them together)."""
    from pipeline_video_deblur.cli import build_parser
    from pipeline_video_deblur.pipeline_video_deblur import SELF_ENSEMBLE_SIZES

    args = _args(root=str(tmp_path), baseline="unsharp", self_ensemble=4, out=str(tmp_path / "r.json"))
    with pytest.raises(ValueError, match=r"--self-ensemble 4 applies to --model only"):
        run_eval(args)
    assert not (tmp_path / "r.json").exists()

    def choices(parser):
        return next(tuple(a.choices) for a in parser._actions if "--self-ensemble" in a.option_strings)

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert choices(subcommands["run"]) == choices(subcommands["eval"]) == SELF_ENSEMBLE_SIZES
