"""The quality benchmarks as real subprocesses on the embedded default model, at quick-look sizes.

They are scripts that print figures (run at full size for the model card); these tests keep them runnable:
each makes the benchmark's synthetic test clips in a temporary cache, scores them and writes JSON and a figure.
"""

import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
# The embedded model's own guidance scale, which a benchmark run without --guidance-scale must use
with open(os.path.join(ROOT, "pipeline_video_deblur", "default_model", "model_index.json")) as index:
    MODEL_GUIDANCE = json.load(index).get("guidance_scale", 2.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # Shared by the tests of this module: the clips are made once, by the first benchmark that needs them.
    return tmp_path_factory.mktemp("benchmark") / "synth_test_seed0"


def benchmark(script, *args, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_quality_scores_every_method(cache, tmp_path):
    # No --figure here or below: each plot must land beside its --out, never over the committed one in results/.
    out, figure = tmp_path / "quality.json", tmp_path / "quality.png"
    result = benchmark(
        "quality.py",
        *("--cache", cache, "--out", out, "--device", "cpu"),
        *("--max-clips", 1, "--steps", 2, "--fast-steps", 1, "--default-seeds", 2),
        *("--noise-scale", 1, "--fast-noise-scale", 0.5),  # the default setting's draws differ at noise 1
        *("--fast-self-ensemble", 2),
    )
    data = json.loads(out.read_text())
    methods = data["methods"]
    default_row = f"default (2 steps, CFG {MODEL_GUIDANCE:g}, noise 1)"  # the model's own guidance
    assert set(methods) == {
        "blurred input",
        "unsharp baseline",
        "VAE round trip (sharp)",
        "fast (1 steps, CFG 1, strength 1, noise 0.5, x2 ensemble)",
        default_row,
        default_row + " [seed 1]",
        default_row + " [mean of 2 seeds]",
    }, list(methods)
    # The weight-free pixel-shuffle VAE is exactly invertible: its ceiling is infinite.
    assert math.isinf(methods["VAE round trip (sharp)"]["psnr"])
    blurred = methods["blurred input"]
    assert 15 < blurred["psnr"] < 40 and 0 < blurred["ssim"] < 1, blurred
    for name in ("fast (1 steps, CFG 1, strength 1, noise 0.5, x2 ensemble)", default_row):
        row = methods[name]
        assert 10 < row["psnr"] < 60 and row["seconds_per_frame"] > 0 and row["clips"] == 1, row
    assert data["device"] == "cpu"
    # The clips the benchmark made in its cache, told by their meta.json
    assert data["data"] == "video-deblur synth --split test --sequences 4 --frames 16 --size 128x128 --seed 0"
    # Two draws of the default setting (seeds 0 and 1) differ; the targets use their mean.
    draws = [methods[default_row], methods[default_row + " [seed 1]"]]
    assert draws[0]["psnr"] != draws[1]["psnr"]
    mean = methods[default_row + " [mean of 2 seeds]"]
    for key in ("psnr", "ssim", "tce", "colour_shift_percent"):
        assert mean[key] == pytest.approx((draws[0][key] + draws[1][key]) / 2), key
    assert mean["psnr_std"] == pytest.approx(abs(draws[0]["psnr"] - draws[1]["psnr"]) / 2)
    assert mean["seeds"] == 2 and data["settings"]["default_seeds"] == 2
    assert data["settings"]["noise_scale"] == 1 and data["settings"]["fast_noise_scale"] == 0.5
    assert data["settings"]["fast_self_ensemble"] == 2 and data["settings"]["self_ensemble"] == 1
    assert data["targets"]["default_gain_db"] == pytest.approx(mean["psnr"] - blurred["psnr"])
    assert "blurred input" in result.stdout and "PSNR" in result.stdout
    with PIL.Image.open(figure) as image:
        assert image.width >= 128 * 5 and image.height >= 128  # five 128 px panels


def test_timestep_error_and_sample_spread(cache, tmp_path):
    out, figure = tmp_path / "timestep.json", tmp_path / "timestep.png"
    benchmark("timestep_error.py", "--cache", cache, "--out", out, "--max-clips", 1, "--num-frames", 4)
    rows = json.loads(out.read_text())["rows"]
    assert [r["t"] for r in rows] == sorted((r["t"] for r in rows), reverse=True) and rows[0]["t"] == 999
    # At t = 19 the noisy latents nearly are the target: any denoiser, the model included, is far better than
    # predicting the blurred input.
    assert rows[-1]["gain_over_identity_db"] > 10, rows[-1]
    assert all(r["model"] >= 0 and r["identity"] > 0 for r in rows)
    # The regression rows: t = 999 from the sampler's starts, with the identity of the t = 999 row.
    regression = json.loads(out.read_text())["regression_t999"]
    assert [r["start"] for r in regression] == ["noise", "zero"]
    for r in regression:
        assert r["identity"] == pytest.approx(rows[0]["identity"]) and r["model"] > 0
        assert r["gain_over_identity_db"] == pytest.approx(10 * math.log10(r["identity"] / r["model"]))
    assert figure.stat().st_size > 0

    out, figure = tmp_path / "spread.json", tmp_path / "spread.png"
    benchmark(
        "sample_spread.py",
        *("--cache", cache, "--out", out, "--device", "cpu"),
        *("--clips", 1, "--num-frames", 4, "--seeds", 2, "--steps", 2),
    )
    spread = json.loads(out.read_text())
    assert [r["k"] for r in spread["rows"]] == [1, 2]
    # The mean of one draw is that draw.
    assert spread["rows"][0]["mean_of_k_psnr"] == pytest.approx(spread["rows"][0]["draw_psnr"])
    assert spread["draw_mse_ratio_to_one_step"] > 0
    with PIL.Image.open(figure) as image:
        assert image.width > 0


def test_strength_sweep(cache, tmp_path):
    out = tmp_path / "strength.json"
    result = benchmark(
        "strength_sweep.py",
        *("--cache", cache, "--out", out, "--device", "cpu", "--max-clips", 1, "--num-frames", 4),
        *("--steps", 2, "--strengths", "1,0.5"),
    )
    data = json.loads(out.read_text())
    rows = data["rows"]
    # The input first, then the strengths in ascending order; strength s runs round(s * steps) steps.
    assert [(r["strength"], r["steps_run"]) for r in rows] == [(0.0, 0), (0.5, 1), (1.0, 2)]
    assert data["frames_per_clip"] == [4] and data["setting"]["steps"] == 2
    assert data["setting"]["guidance_scale"] == MODEL_GUIDANCE
    # One denoising step from the noised input changes the frames (the model is not the identity).
    assert rows[1]["psnr"] != rows[0]["psnr"] and all(10 < r["psnr"] < 60 for r in rows), rows
    assert data["best_psnr"]["strength"] in (0.5, 1.0)
    assert "strength 0.5 (1 steps)" in result.stdout
    with PIL.Image.open(out.with_suffix(".png")) as image:
        assert image.width > 0


def test_noise_scale_sweep(cache, tmp_path):
    out = tmp_path / "noise.json"
    result = benchmark(
        "noise_scale_sweep.py",
        *("--cache", cache, "--out", out, "--device", "cpu", "--max-clips", 1, "--num-frames", 4),
        *("--steps", 2, "--noise-scales", "1,0", "--seeds", 2),
    )
    data = json.loads(out.read_text())
    rows = data["rows"]
    # The input first, then the scales in ascending order; 0 runs once (every seed gives the same clip), 1 twice.
    assert [(r["noise_scale"], r.get("seeds")) for r in rows] == [(None, None), (0.0, 1), (1.0, 2)]
    assert rows[2]["psnr_std"] > 0  # two draws at noise 1 differ
    assert data["frames_per_clip"] == [4] and data["setting"]["steps"] == 2 and data["setting"]["eta"] == 0
    assert all(10 < r["psnr"] < 60 for r in rows) and rows[1]["psnr"] != rows[0]["psnr"], rows
    assert data["best_psnr"]["noise_scale"] in (0.0, 1.0)
    assert "noise 1 [seed 1]" in result.stdout and "noise 1 [mean of 2 seeds]" in result.stdout
    with PIL.Image.open(out.with_suffix(".png")) as image:
        assert image.width > 0


def test_window_sweep(cache, tmp_path):
    out = tmp_path / "window.json"
    result = benchmark(
        "window_sweep.py",
        *("--cache", cache, "--out", out, "--device", "cpu", "--max-clips", 1, "--num-frames", 6),
        *("--steps", 1, "--guidance-scale", 1, "--windows", "6:2,4:2,6:2"),
    )
    data = json.loads(out.read_text())
    rows = data["rows"]
    # The input first, then the windows in the order given, a repeat dropped.
    assert [(r["num_frames"], r["frame_overlap"]) for r in rows] == [(None, None), (6, 2), (4, 2)]
    assert data["default_window"] == {"num_frames": 16, "frame_overlap": 4} and data["frames_per_clip"] == [6]
    assert all(10 < r["psnr"] < 60 for r in rows), rows
    # One window of the whole clip and two overlapping ones blend different answers.
    assert rows[1]["psnr"] != rows[2]["psnr"] and rows[1]["psnr"] != rows[0]["psnr"]
    assert "window 4 / overlap 2" in result.stdout and "best PSNR: window" in result.stdout
    with PIL.Image.open(out.with_suffix(".png")) as image:
        assert image.width > 0


def test_self_ensemble(cache, tmp_path):
    out = tmp_path / "ensemble.json"
    result = benchmark(
        "self_ensemble.py",
        *("--cache", cache, "--out", out, "--device", "cpu", "--max-clips", 1, "--num-frames", 4),
    )
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["runs"], r["label"]) for r in rows] == [
        (0, "blurred input"),
        (1, "one run"),
        (2, "x2 ensemble"),
        (4, "x4 ensemble"),
        (8, "x8 ensemble"),
        (16, "x8 ensemble + time reversal"),
    ]
    assert all(10 < r["psnr"] < 60 for r in rows), rows
    assert len({round(r["psnr"], 6) for r in rows}) == len(rows)  # every row is its own answer
    assert rows[4]["seconds_per_frame"] > rows[1]["seconds_per_frame"]  # 8 runs cost more than one
    gains = data["gain_over_one_run_db"]
    assert gains["x8 ensemble"] == pytest.approx(rows[4]["psnr"] - rows[1]["psnr"])
    assert data["setting"]["steps"] == 1 and data["setting"]["noise_scale"] == 0 and data["frames_per_clip"] == [4]
    assert "x8 ensemble + time reversal:" in result.stdout
    with PIL.Image.open(out.with_suffix(".png")) as image:
        assert image.width > 0


def test_sampler_steps(cache, tmp_path):
    out = tmp_path / "steps.json"
    result = benchmark(
        "sampler_steps.py",
        *("--cache", cache, "--out", out, "--device", "cpu", "--max-clips", 1, "--num-frames", 4),
        *("--steps", 3, "--guidance-scales", "2,1"),
    )
    data = json.loads(out.read_text())
    assert data["steps"] == 3 and data["frames_per_clip"] == [4] and data["noise_scale"] == 0
    low, high = data["curves"]  # sorted by scale
    assert (low["guidance_scale"], high["guidance_scale"]) == (1.0, 2.0)
    for curve in data["curves"]:
        assert [r["t"] for r in curve["rows"]] == [999, 666, 332]  # the shipped scheduler's trailing schedule
        assert all(10 < r["psnr"] < 60 for r in curve["rows"])
        # the last step's estimate is, up to the final alpha, what the run returns
        assert abs(curve["rows"][-1]["psnr"] - curve["output"]["psnr"]) < 0.3
        best = max(curve["rows"], key=lambda r: r["psnr"])
        assert curve["best_step"]["step"] == best["step"]
        assert curve["lost_after_best_db"] == pytest.approx(best["psnr"] - curve["rows"][-1]["psnr"])
    assert low["rows"][1]["psnr"] != high["rows"][1]["psnr"]  # guidance changes the path
    assert data["sharp_detail"] > data["blurred_input"]["detail"] > 0  # blur removes detail
    for curve in data["curves"]:
        for row in curve["rows"] + [curve["output"]]:
            assert row["detail"] > 0 and row["detail_error"] > 0 and row["smooth_error"] > 0
    assert "<- best" in result.stdout and "output" in result.stdout
    with PIL.Image.open(out.with_suffix(".png")) as image:
        assert image.width > 0
    refused = benchmark("sampler_steps.py", "--guidance-scales", "2,0", "--cache", cache, check=False)
    assert refused.returncode != 0 and "argument --guidance-scales: expected comma-separated numbers > 0" in (
        refused.stderr
    )


def test_long_clip_memory(tmp_path):
    out = tmp_path / "memory.json"
    result = benchmark("long_clip_memory.py", "--frames", "40,20", "--size", 32, "--segment-frames", 16, "--out", out)
    data = json.loads(out.read_text())
    rows = data["rows"]
    # each length (sorted) in both modes, each a real run of the CLI with its own peak memory
    assert [(r["frames"], r["segment_frames"]) for r in rows] == [(20, 16), (20, 0), (40, 16), (40, 0)]
    assert all(r["peak_mib"] > 100 for r in rows), rows  # torch alone takes more than that
    assert set(data["mib_per_frame"]) == {"segments of 16", "whole clip"}
    assert "MiB of peak memory per extra frame" in result.stdout
    with PIL.Image.open(out.with_suffix(".png")) as image:
        assert image.width > 0


def test_regressor_probe(cache, tmp_path):
    from pipeline_video_deblur.data.synthetic import make_synthetic_dataset

    train = tmp_path / "train_data"
    make_synthetic_dataset(train, split="train", sequences=2, frames=4, size=(64, 64), seed=0, progress=False)
    out, figure = tmp_path / "probe.json", tmp_path / "probe.png"
    result = benchmark(
        "regressor_probe.py",
        *("--train-data", train, "--steps", 3, "--eval-every", 2, "--lr", 0.002),
        *("--cache", cache, "--out", out),
    )
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["step"] for r in rows] == [2, 3] and data["train_sequences"] == 2  # every --eval-every, and the end
    for r in rows:
        assert r["test_gain_db"] == pytest.approx(r["test_psnr"] - r["test_input_psnr"])
        assert math.isfinite(r["test_gain_db"]) and 10 < r["test_input_psnr"] < 60
    assert rows[0]["test_gain_db"] != rows[1]["test_gain_db"]  # the network trains between the evaluations
    assert "step      3" in result.stdout
    with PIL.Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 0


def test_train_step(tmp_path):
    out = tmp_path / "step.json"
    result = benchmark("train_step.py", "--size", 32, "--frames", 2, "--repeats", 1, "--threads", 1, "--out", out)
    data = json.loads(out.read_text())
    rows = {(r["precision"], r["attention"]): r for r in data["rows"]}
    assert set(rows) == {(p, a) for p in ("fp32", "bf16") for a in ("sdpa", "explicit")}
    assert rows["fp32", "sdpa"]["speedup_over_fp32_sdpa"] == 1.0
    for r in rows.values():
        assert r["seconds_per_step"] > 0
        assert r["speedup_over_fp32_sdpa"] == pytest.approx(
            rows["fp32", "sdpa"]["seconds_per_step"] / r["seconds_per_step"]
        )
    assert (data["size"], data["frames"], data["threads"]) == (32, 2, 1)
    assert "bf16       explicit" in result.stdout and "fastest:" in result.stdout
    refused = benchmark("train_step.py", "--precisions", "fp32,fp8", "--out", out, check=False)
    assert (
        refused.returncode != 0
        and "argument --precisions: expected a comma-separated list of fp32, bf16, got 'fp32,fp8' ('fp8' is not one)"
        in refused.stderr
    )
    refused = benchmark("train_step.py", "--size", 40, "--out", tmp_path / "other.json", check=False)
    assert refused.returncode != 0 and "--size must be a multiple of 16 for this model, got 40" in refused.stderr
    assert not (tmp_path / "other.json").exists()


def test_bad_arguments_are_named(tmp_path):
    result = benchmark("quality.py", "--max-clips", 0, "--cache", tmp_path, check=False)
    assert result.returncode != 0 and "argument --max-clips: expected a positive integer, got '0'" in result.stderr
    result = benchmark("timestep_error.py", "--max-clips", 0, "--cache", tmp_path, check=False)
    assert result.returncode != 0 and "argument --max-clips: expected a positive integer, got '0'" in result.stderr
    result = benchmark("quality.py", "--fast-strength", 1.5, "--cache", tmp_path, check=False)
    assert (
        result.returncode != 0 and "argument --fast-strength: expected a number in (0, 1], got '1.5'" in result.stderr
    )
    result = benchmark("strength_sweep.py", "--strengths", "0.5,2", "--cache", tmp_path, check=False)
    assert (
        result.returncode != 0
        and "argument --strengths: expected comma-separated numbers in (0, 1], got '0.5,2' ('2' is not one)"
        in result.stderr
    )
    result = benchmark("strength_sweep.py", "--strengths", "0.01", "--steps", 10, "--cache", tmp_path, check=False)
    assert result.returncode != 0 and "strength 0.01 with --steps 10 runs no denoising step" in result.stderr
    assert not (tmp_path / "test").exists()  # refused before it made any clip
    result = benchmark("noise_scale_sweep.py", "--noise-scales", "0,-1", "--cache", tmp_path, check=False)
    assert (
        result.returncode != 0
        and "argument --noise-scales: expected comma-separated numbers >= 0, got '0,-1' ('-1' is not one)"
        in result.stderr
    )
    result = benchmark("window_sweep.py", "--windows", "16:4,8:8", "--cache", tmp_path, check=False)
    assert (
        result.returncode != 0
        and "argument --windows: expected comma-separated FRAMES:OVERLAP pairs with FRAMES >= 1 and "
        "0 <= OVERLAP < FRAMES, got '16:4,8:8' ('8:8' is not one)"
        in result.stderr
    )
    result = benchmark("long_clip_memory.py", "--frames", "10,0", "--out", tmp_path / "m.json", check=False)
    assert (
        result.returncode != 0
        and "argument --frames: expected comma-separated numbers that are positive integers, got '10,0' ('0' is not one)"
        in result.stderr
    )
    result = benchmark("sample_spread.py", "--seeds", 0, "--cache", tmp_path, check=False)
    assert result.returncode != 0 and "argument --seeds: expected a positive integer, got '0'" in result.stderr
    result = benchmark("sample_spread.py", "--guidance-scale", 0, "--cache", tmp_path, check=False)
    assert result.returncode != 0 and "argument --guidance-scale: expected a positive number, got '0'" in result.stderr
    result = benchmark("quality.py", "--fast-guidance-scale", -1, "--cache", tmp_path, check=False)
    assert (
        result.returncode != 0
        and "argument --fast-guidance-scale: expected a positive number, got '-1'" in result.stderr
    )
    # The README's comparison script refuses before it loads a model or writes its image.
    out = tmp_path / "comparison.png"
    script = os.path.join(ROOT, "examples", "make_sample_comparison.py")
    for flag, value, expected in (
        ("--strength", "0", "a number in (0, 1]"),
        ("--steps", "0", "a positive integer"),
        ("--guidance-scale", "x", "a positive number"),
        ("--self-ensemble", "3", "invalid choice: 3 (choose from 1, 2, 4, 8)"),
    ):
        result = subprocess.run(
            [sys.executable, script, flag, value, "--out", str(out)], capture_output=True, text=True, timeout=600
        )
        message = expected if "choice" in expected else f"expected {expected}, got '{value}'"
        assert result.returncode == 2 and f"argument {flag}: {message}" in result.stderr
        assert not out.exists()


def import_benchmark(name):
    """A benchmark script imported as a module (they import each other from their own folder)."""
    sys.path.insert(0, BENCHMARKS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(BENCHMARKS)


def test_detail_row_splits_the_error():
    detail_row = import_benchmark("sampler_steps").detail_row
    rng = np.random.default_rng(0)
    sharp = rng.integers(40, 200, size=(2, 16, 16, 3)).astype(np.uint8)
    clips = [("clip", sharp, sharp)]
    same = detail_row({"clip": sharp}, clips)
    assert same["detail_error"] == pytest.approx(0, abs=1e-9) and same["smooth_error"] == pytest.approx(0, abs=1e-9)
    assert same["detail"] > 100  # uniform noise is mostly detail
    brighter = detail_row({"clip": sharp + np.uint8(10)}, clips)  # a uniform shift is no detail
    assert brighter["detail"] == pytest.approx(same["detail"])
    assert brighter["detail_error"] == pytest.approx(0, abs=1e-9) and brighter["smooth_error"] == pytest.approx(100)
    flat = np.full_like(sharp, 120)
    lost = detail_row({"clip": flat}, clips)  # a flat clip has no detail and misses all of the sharp one's
    assert lost["detail"] == pytest.approx(0, abs=1e-9) and lost["detail_error"] == pytest.approx(same["detail"])


def test_describe_clips_names_the_synth_command_or_the_folder(tmp_path):
    # A result's "data" field says which clips it scored: the benchmark's own, another seed's (--cache), or a folder.
    from pipeline_video_deblur.data.synthetic import make_synthetic_dataset

    quality = import_benchmark("quality")
    BENCHMARK_DATA, describe_clips = quality.BENCHMARK_DATA, quality.describe_clips
    make_synthetic_dataset(tmp_path / "seed3", split="test", sequences=2, frames=2, size=(16, 24), seed=3)
    (tmp_path / "seed3" / "test" / ".synth_test_002.tmp1").mkdir()  # a killed writer's leftover: not a sequence
    assert describe_clips(tmp_path / "seed3") == (
        "video-deblur synth --split test --sequences 2 --frames 2 --size 16x24 --seed 3"
    )
    assert BENCHMARK_DATA == "video-deblur synth --split test --sequences 4 --frames 16 --size 128x128 --seed 0"
    # Two seeds' sequences in one folder, or a sequence without meta.json (real footage): the folder is named.
    make_synthetic_dataset(tmp_path / "mixed", split="test", sequences=1, frames=2, size=(16, 16), seed=1)
    (tmp_path / "mixed" / "test" / "synth_test_000").rename(tmp_path / "mixed" / "test" / "a")
    make_synthetic_dataset(tmp_path / "mixed", split="test", sequences=1, frames=2, size=(16, 16), seed=2)
    assert describe_clips(tmp_path / "mixed") == f"the clips under {tmp_path / 'mixed' / 'test'}"
    os.remove(tmp_path / "seed3" / "test" / "synth_test_001" / "meta.json")
    assert describe_clips(tmp_path / "seed3") == f"the clips under {tmp_path / 'seed3' / 'test'}"
