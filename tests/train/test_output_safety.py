"""What a training run does to its --output_dir: an earlier run is refused or replaced on request, checkpoints
are pruned only after the new one is complete, and only the trainer's own leftovers are cleaned (train/common.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys

import pytest
import torch
from train_helpers import TRAIN

sys.path.insert(0, str(TRAIN))
import common  # noqa: E402


def earlier_run_in(folder):
    folder.mkdir()
    (folder / "loss_log.csv").write_text("step,loss\n1,0.5\n")
    (folder / "checkpoint-3").mkdir()
    (folder / "model_index.json").write_text("{}")
    (folder / "unet").mkdir()
    return folder


def test_an_earlier_run_is_refused_unless_resumed_or_replaced(tmp_path):
    out = earlier_run_in(tmp_path / "out")
    with pytest.raises(ValueError, match=r"holds an earlier run \(loss_log.csv, checkpoint-3, model_index.json\)"):
        common.check_output_dir(out, {})
    assert (out / "loss_log.csv").is_file() and (out / "checkpoint-3").is_dir()  # refused: nothing touched

    common.check_output_dir(out, {}, resume="latest")  # resuming it is what the folder is for
    assert (out / "checkpoint-3").is_dir()

    common.check_output_dir(out, {}, overwrite=True)  # allowed; the deleting waits for the main process
    assert (out / "checkpoint-3").is_dir()
    with pytest.raises(ValueError, match="choose one"):
        common.check_output_dir(out, {}, resume="latest", overwrite=True)
    common.check_output_dir(tmp_path / "new", {})  # a new folder: nothing to refuse

    # `latest` with no checkpoint left but a finished model: a new run would replace the model, so it is refused.
    shutil.rmtree(out / "checkpoint-3")
    with pytest.raises(ValueError, match=r"holds an earlier run \(loss_log.csv, model_index.json\)"):
        common.check_output_dir(out, {}, resume="latest")
    (out / "model_index.json").unlink()  # a run killed before its first checkpoint: started again
    common.check_output_dir(out, {}, resume="latest")


def test_overwrite_deletes_the_earlier_run_and_nothing_else(tmp_path):
    out = earlier_run_in(tmp_path / "out")
    for name in ("validation", "logs", "vae"):
        (out / name).mkdir()
    (out / "stage1_blur_encoder_args.json").write_text("{}")
    (out / "notes.txt").write_text("mine\n")
    args = parse("--output_dir", str(out), "--overwrite_output_dir")
    common.clear_earlier_run(args, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    common.clear_earlier_run(parse("--output_dir", str(out)), out)  # without the flag: nothing is deleted
    assert (out / "notes.txt").is_file()


def parse(*flags: str) -> argparse.Namespace:
    parser = common.add_common_args(argparse.ArgumentParser())
    return parser.parse_args(["--train_data_dir", "d", *flags])


def test_checkpoints_are_pruned_only_after_the_new_one_is_saved(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    for step in (1, 2):
        common.save_checkpoint(accelerator, tmp_path, step, total_limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]

    def fail(*args, **kwargs):  # a save that dies half-way (disk full, killed): the only checkpoint must survive
        raise OSError("No space left on device")

    real, accelerator.save_state = accelerator.save_state, fail
    with pytest.raises(OSError, match="No space"):
        common.save_checkpoint(accelerator, tmp_path, 3, total_limit=1)
    assert (tmp_path / "checkpoint-2").is_dir()

    accelerator.save_state = real
    with torch.no_grad():
        model.weight.fill_(7.0)
    common.save_checkpoint(accelerator, tmp_path, 2, total_limit=1)  # the same step again: replaced whole
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")) == ["checkpoint-2"]
    with torch.no_grad():
        model.weight.zero_()
    accelerator.load_state(str(tmp_path / "checkpoint-2"))
    assert torch.all(model.weight == 7.0)


def test_only_the_trainers_own_leftovers_are_cleaned(tmp_path):
    for name in ("checkpoint-5.tmp", "final.tmp", "vae.tmp", ".checkpoint-5.old-abc123", "my_notes.tmp", "data"):
        (tmp_path / name).mkdir()
    common.remove_stale_tmp(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "my_notes.tmp"]


def test_logs_rewritten_on_resume_keep_the_steps_before_it(tmp_path):
    (tmp_path / "loss_log.csv").write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n")
    (tmp_path / "validation_log.csv").write_text("step,psnr\n1,20\n3,21\n")
    common.LossLog(tmp_path, enabled=True, resume_step=2)
    common.truncate_validation_log(tmp_path, 2)
    assert (tmp_path / "loss_log.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,0.4"]
    assert (tmp_path / "validation_log.csv").read_text().splitlines() == ["step,psnr", "1,20"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss_log.csv", "validation_log.csv"]  # no temporaries


def test_a_stage_started_again_with_overwrite_output_dir(tmp_path, stage1_run, train_data, tiny_pipeline_dir):
    """The real script: the earlier run (2 steps, checkpoints 1 and 2) is replaced by a 1-step run, and a folder
    of the user's beside it stays."""
    from train_helpers import TINY_TRAIN_FLAGS, run_script

    out = tmp_path / "again"
    shutil.copytree(stage1_run, out)
    (out / "notes.txt").write_text("mine\n")
    flags = ["--pretrained_model_name_or_path", tiny_pipeline_dir, "--train_data_dir", train_data,
             "--output_dir", out, "--max_train_steps", "1", *TINY_TRAIN_FLAGS]  # fmt: skip
    refused = run_script([TRAIN / "stage1_blur_encoder.py", *flags], check=False)
    assert refused.returncode != 0 and "holds an earlier run" in refused.stderr
    assert (out / "checkpoint-2").is_dir()
    run_script([TRAIN / "stage1_blur_encoder.py", *flags, "--overwrite_output_dir"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert [line.split(",")[0] for line in (out / "loss_log.csv").read_text().splitlines()] == ["step", "1"]
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "model_index.json").is_file()
