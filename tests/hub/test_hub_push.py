"""`video-deblur push` and the model card: everything up to the upload, the upload's error path against a local
server, and the card's two usage snippets run for real (one where the package cannot be imported)."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_helpers import run_without_package, synthetic_clip, write_sample
from huggingface_hub import ModelCard

from pipeline_video_deblur import VideoDeblurPipeline
from pipeline_video_deblur.cli import main
from pipeline_video_deblur.data import read_video
from pipeline_video_deblur.hub import check_repo_id, stage
from pipeline_video_deblur.metrics.evaluate import VideoResult, _jsonable, evaluate_sequences

REPO_ID = "someone/tiny-video-deblur"


@pytest.fixture
def results_file(tmp_path) -> Path:
    """A results.json as `video-deblur eval` writes it (its own functions), measured at 2 steps and half the
    starting noise."""
    sharp = synthetic_clip(4, 32, seed=1)
    blur = synthetic_clip(4, 32, seed=2)
    output = ((sharp.astype(np.float32) + blur) / 2).round().astype(np.uint8)
    results = evaluate_sequences([VideoResult("seq_a", blur, output, sharp)], lpips_metric=None)
    results["settings"] = {
        "dataset": "gopro",
        "root": str(tmp_path / "private" / "GOPRO_Large"),
        "split": "test",
        "synthetic": True,
        "model": str(tmp_path / "John Smith" / "model"),  # a user name with a space: cut whole
        "steps": 2,
        "guidance_scale": 2.0,
        "strength": 1.0,
        "noise_scale": 0.5,
        "seed": 0,
        "lpips_status": f"not computed: AlexNet backbone weights not found at {tmp_path}/private/cache/alexnet.pth",
    }
    # Local paths where eval writes them: the figure files, and the reason LPIPS was not computed.
    results["figures"] = [str(tmp_path / "private" / "figures" / "seq_a.png")]
    results["summary"]["lpips"] = results["settings"]["lpips_status"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_jsonable(results), indent=2))
    return path


@pytest.fixture
def no_upload(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        pytest.fail("a dry run or a failed check reached the Hub API")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)


def python_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.DOTALL)


def push(capsys, *args) -> tuple[int, str, str]:
    code = main(["push", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------------------------------------------
# Checks before anything leaves the machine


@pytest.mark.parametrize("repo_id", ["user/name", "User-1/my.model_v2", "a/b"])
def test_check_repo_id_accepts(repo_id):
    assert check_repo_id(repo_id) == repo_id


@pytest.mark.parametrize("repo_id", ["name", "user/name/extra", "/name", "user/", "us er/name", "user/na--me", "-u/n"])
def test_check_repo_id_refuses(repo_id):
    with pytest.raises(ValueError, match="must be 'user/name'"):
        check_repo_id(repo_id)


def test_push_refuses_a_bad_repo_id(tiny_folder, capsys, no_upload):
    code, out, err = push(capsys, tiny_folder, "--repo-id", "just-a-name", "--dry-run")
    assert code == 1
    assert "video-deblur push: error: --repo-id must be 'user/name'" in err and "just-a-name" in err


def test_push_without_a_token_says_so(tiny_folder, capsys, monkeypatch, no_upload):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    code, out, err = push(capsys, tiny_folder, "--repo-id", REPO_ID)
    assert code == 1
    assert "no Hugging Face token" in err and "--token" in err and "HF_TOKEN" in err


def test_push_refuses_a_folder_that_does_not_load(tiny_copy, capsys, no_upload):
    config = json.loads((tiny_copy / "unet" / "config.json").read_text())
    config["block_out_channels"] = [8, 8]  # the weights no longer fit
    (tiny_copy / "unet" / "config.json").write_text(json.dumps(config))
    code, out, err = push(capsys, tiny_copy, "--repo-id", REPO_ID, "--token", "hf_test", "--dry-run")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("video-deblur push: error: ")
    assert "does not load with VideoDeblurPipeline.from_pretrained" in err.strip().splitlines()[-1]


def test_push_refuses_pickled_weights(tiny_copy, capsys, no_upload):
    weights = tiny_copy / "unet" / "diffusion_pytorch_model.safetensors"
    shutil.copyfile(weights, tiny_copy / "unet" / "diffusion_pytorch_model.bin")
    code, out, err = push(capsys, tiny_copy, "--repo-id", REPO_ID, "--dry-run")
    assert code == 1
    assert "not safetensors" in err and "unet/diffusion_pytorch_model.bin" in err


def test_push_refuses_a_missing_folder_and_bad_results(tmp_path, tiny_folder, capsys, no_upload):
    code, _, err = push(capsys, tmp_path / "nowhere", "--repo-id", REPO_ID, "--dry-run")
    assert code == 1 and "does not exist" in err
    (tmp_path / "results.json").write_text("{not json")
    code, _, err = push(capsys, tiny_folder, "--repo-id", REPO_ID, "--dry-run", "--results", tmp_path / "results.json")
    assert code == 1 and "not valid JSON" in err
    # A baseline's scores are not the model's: eval --baseline results are refused, not shown as "this model".
    (tmp_path / "unsharp.json").write_text(
        json.dumps({"summary": {"psnr": 25.0}, "settings": {"baseline": "unsharp"}})
    )
    code, _, err = push(capsys, tiny_folder, "--repo-id", REPO_ID, "--dry-run", "--results", tmp_path / "unsharp.json")
    assert code == 1 and "scores the 'unsharp' baseline, not a model" in err


def test_dry_run_prints_files_sizes_and_card(tiny_folder, capsys, no_upload):
    code, out, err = push(capsys, tiny_folder, "--repo-id", REPO_ID, "--dry-run")
    assert code == 0, err
    assert f"would upload {tiny_folder} to https://huggingface.co/{REPO_ID}" in out
    files = dict(re.findall(r"^  (\S+)\s+[\d.]+ [KMG]?B\s+\(([\d,]+) bytes\)$", out, flags=re.MULTILINE))
    for name in (
        "README.md",
        "model_index.json",
        "pipeline_video_deblur.py",
        "unet/unet_3d_deblur.py",
        "vae/pixel_shuffle_vae.py",
        "unet/diffusion_pytorch_model.safetensors",
        "image_encoder/model.safetensors",
    ):
        assert name in files, f"{name} missing from the dry-run listing"
    size = (tiny_folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert files["unet/diffusion_pytorch_model.safetensors"] == f"{size:,}"
    assert not [f for f in files if f.endswith((".bin", ".pt", ".ckpt"))]
    assert "model card (README.md):" in out and "library_name: diffusers" in out


# ----------------------------------------------------------------------------------------------------------------
# The card


def test_card_metadata_and_honesty_without_records(tiny_folder, tmp_path):
    target = tmp_path / "staged"
    target.mkdir()
    stage(tiny_folder, target, REPO_ID)
    card = ModelCard.load(target / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "video-to-video"
    assert card.data.license == "apache-2.0"
    assert "video-deblurring" in card.data.tags
    assert "no training record" in card.text
    assert "reports no scores" in card.text
    assert "dB" not in card.text  # no score of any kind without results.json
    assert "`noise_scale` below 1 trades invented texture for fidelity" in " ".join(card.text.split())


def test_local_paths_are_cut_to_their_names_in_any_setting():
    from pipeline_video_deblur.hub import _public_setting

    assert _public_setting("/home/John Smith/model") == ".../model"  # a whole path, spaces and all
    assert _public_setting(["C:\\Users\\me\\x.png", 3]) == [".../x.png", 3]
    assert _public_setting("/data/a/x.png,/data/b/y.png") == ".../x.png,.../y.png"  # a list keeps every name
    assert _public_setting("~/a/x; /b/y") == ".../x;.../y"
    assert _public_setting("/data/clips,v2/x.png") == ".../x.png"  # a comma inside one path is not a list
    assert _public_setting("weights not found at /root/.cache/alexnet.pth") == "weights not found at .../alexnet.pth"
    assert _public_setting("gopro, test") == "gopro, test"  # no path: as it was


def test_card_carries_training_records_and_the_evaluation(tiny_copy, tmp_path, results_file):
    (tiny_copy / "README.md").write_text(
        "---\nbase_model: someone/tiny-t2v\ndatasets:\n- someone/synthetic-gopro\n---\n\n"
        "# Tiny default\n\nTrained for 1234 steps on synthetic clips.\n"
    )
    (tiny_copy / "training.json").write_text(json.dumps({"stage2": {"steps": 1234, "lr": 5e-05}, "residual": True}))
    results = json.loads(results_file.read_text())
    target = tmp_path / "staged"
    target.mkdir()
    stage(tiny_copy, target, REPO_ID, results_path=str(results_file))
    card = ModelCard.load(target / "README.md")

    assert card.data.base_model == "someone/tiny-t2v"
    assert card.data.datasets == ["someone/synthetic-gopro"]
    # The folder's own card, its headings nested under ours, and training.json, both verbatim in value.
    assert "### Tiny default" in card.text and "Trained for 1234 steps" in card.text
    assert "| stage2.steps | 1234 |" in card.text and "| stage2.lr | 5e-05 |" in card.text
    assert (target / "training.json").read_text() == (tiny_copy / "training.json").read_text()
    # The evaluation: eval's numbers, rounded for display only, with the blurred input beside them.
    summary, baseline = results["summary"], results["input_summary"]
    assert f"| PSNR (dB) | {summary['psnr']:.2f} | {baseline['psnr']:.2f} | higher is better |" in card.text
    assert f"| SSIM | {summary['ssim']:.4f} | {baseline['ssim']:.4f} |" in card.text
    assert "| LPIPS (AlexNet) | not computed: AlexNet backbone weights not found at .../alexnet.pth |" in card.text
    assert "synthetic" in card.text and "not comparable" in card.text
    assert "| seq_a | 4 |" in card.text
    # Machine-local paths stay home, in the card and in the published results.json.
    assert str(tmp_path) not in card.text
    published = json.loads((target / "results.json").read_text())
    assert "root" not in published["settings"] and str(tmp_path) not in json.dumps(published)
    assert "John Smith" not in card.text and "John Smith" not in json.dumps(published)
    assert published["settings"]["model"] == ".../model"
    assert published["videos"] == results["videos"] and published["figures"] == [".../seq_a.png"]
    assert published["summary"] == {
        **summary,
        "lpips": "not computed: AlexNet backbone weights not found at .../alexnet.pth",
    }
    # Pushing the staged folder again takes back the folder's card, not the whole generated card.
    from pipeline_video_deblur.hub import source_card

    _, body = source_card(target)
    assert body.startswith("# Tiny default") and "## Usage" not in body


def test_card_snippet_takes_the_measured_options():
    from pipeline_video_deblur.hub import _call_options

    assert _call_options(None) == {"num_inference_steps": 50}  # no results: the pipeline's defaults
    settings = {"steps": 4, "guidance_scale": 1.0, "strength": 0.8, "noise_scale": 0.4, "seed": 0}
    assert _call_options({"settings": settings}) == {
        "num_inference_steps": 4,
        "strength": 0.8,
        "guidance_scale": 1.0,
        "noise_scale": 0.4,
    }
    # A value that is not a number (an old or hand-written results.json) is left out: the model's own applies.
    for odd in (None, True, "0.4"):
        assert "noise_scale" not in _call_options({"settings": {"noise_scale": odd}})
    # results measured with the self-ensemble give a snippet that runs it; 1 (the default) and odd values do not
    assert _call_options({"settings": {"self_ensemble": 8}}) == {"num_inference_steps": 50, "self_ensemble": 8}
    for plain in (1, 3, True, "8", None):
        assert "self_ensemble" not in _call_options({"settings": {"self_ensemble": plain}})
    from pipeline_video_deblur.hub import SNIPPET_SELF_ENSEMBLE_SIZES
    from pipeline_video_deblur.pipeline_video_deblur import SELF_ENSEMBLE_SIZES

    assert SNIPPET_SELF_ENSEMBLE_SIZES == tuple(size for size in SELF_ENSEMBLE_SIZES if size != 1)
    for size in SNIPPET_SELF_ENSEMBLE_SIZES:
        assert _call_options({"settings": {"self_ensemble": size}})["self_ensemble"] == size


def test_card_package_snippet_runs(tiny_folder, tmp_path, results_file, monkeypatch):
    """The card's first snippet (with the package), with the repo id replaced by the staged folder."""
    target = tmp_path / "staged"
    target.mkdir()
    card = stage(tiny_folder, target, REPO_ID, results_path=str(results_file))
    snippet = python_blocks(card.text)[0]
    assert f'"{REPO_ID}"' in snippet and "num_inference_steps=2" in snippet and "noise_scale=0.5" in snippet
    work = tmp_path / "work"
    work.mkdir()
    write_sample(work / "blurred.mp4", frames=4, size=32)
    monkeypatch.chdir(work)
    exec(compile(snippet.replace(f'"{REPO_ID}"', repr(str(target))), "card-snippet", "exec"), {})
    sharp = read_video(work / "sharp.mp4")
    assert sharp.frames.shape == (4, 32, 32, 3)


def test_card_remote_snippet_runs_without_the_package(tiny_folder, tmp_path, results_file):
    """The card's second snippet in a Python that cannot import pipeline_video_deblur: diffusers loads the staged
    folder's own code with trust_remote_code=True, and it computes what the package computes."""
    target = tmp_path / "staged"
    target.mkdir()
    card = stage(tiny_folder, target, REPO_ID, results_path=str(results_file))
    snippet = python_blocks(card.text)[1]
    assert "trust_remote_code=True" in snippet and "pipeline_video_deblur" not in snippet
    code = snippet.replace(f'"{REPO_ID}"', repr(str(target)))
    code += (
        "\nassert type(pipe).__module__.startswith('diffusers_modules'), type(pipe).__module__"
        "\nassert type(pipe.unet).__module__.startswith('diffusers_modules'), type(pipe.unet).__module__"
        f"\nnp.save({str(tmp_path / 'remote.npy')!r}, frames)\n"
    )
    result = run_without_package(code, cwd=tmp_path, modules_cache=tmp_path / "modules")
    assert result.returncode == 0, result.stderr[-3000:]

    remote = np.load(tmp_path / "remote.npy")
    pipe = VideoDeblurPipeline.from_pretrained(tiny_folder)
    pipe.set_progress_bar_config(disable=True)
    video = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    local = pipe(
        video,
        num_inference_steps=2,
        strength=1.0,
        guidance_scale=2.0,
        noise_scale=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    local = np.stack([np.asarray(f, dtype=np.float32) / 255 for f in local.frames[0]])
    assert remote.shape == (8, 64, 64, 3)
    np.testing.assert_allclose(remote, local, atol=1 / 255 + 1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The upload's error path


class _Refuse(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def _refuse(self):
        type(self).requests.append(f"{self.command} {self.path}")
        body = b'{"error": "refused by the test server"}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _refuse

    def log_message(self, *args):
        pass


def test_upload_error_is_one_clear_line(tiny_folder, capsys, monkeypatch):
    import huggingface_hub.constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    try:
        code, out, err = push(capsys, tiny_folder, "--repo-id", REPO_ID, "--token", "hf_test_token")
    finally:
        server.shutdown()
    assert code == 1
    assert (
        err.strip().splitlines()[-1].startswith(f"video-deblur push: error: upload to {REPO_ID} at {endpoint} failed")
    )
    assert any(r.startswith("POST /api/repos/create") for r in _Refuse.requests), _Refuse.requests


def test_a_pushed_folder_pushes_again_unchanged(tiny_copy, tmp_path):
    """A folder downloaded from the Hub (remote-code layout, generated card) loads with the package and stages to
    the same files: the code is regenerated, not nested, and the folder's own card is taken back."""
    (tiny_copy / "README.md").write_text("# Tiny default\n\nTrained briefly.\n")
    first = tmp_path / "first"
    first.mkdir()
    stage(tiny_copy, first, REPO_ID)
    second = tmp_path / "second"
    second.mkdir()
    stage(first, second, REPO_ID)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
