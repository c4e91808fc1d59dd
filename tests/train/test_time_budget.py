"""Runs that must stop early: `--max_train_minutes` fits the step count and LR schedule to a wall-clock budget (a
time-limited GPU job); SIGTERM (a preempted or cancelled job) saves a checkpoint at the current step."""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace

import pytest
import torch
from train_helpers import PYTHON, REPO, TINY_TRAIN_FLAGS, TRAIN, run_script

sys.path.insert(0, str(TRAIN))
import common  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_measures_steps_after_the_warmup_and_fits_the_rest(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(common.time, "perf_counter", clock)
    budget = common.TimeBudget(1.0, first_step=200, max_steps=10_000)  # a resumed run, 60 s
    clock.now += 5.0  # a slow first stretch (start-up) that the measurement must leave out
    plan, seen = 10_000, {}
    for step in range(201, 261):
        clock.now += 0.5 if step > 210 else 0.0
        plan = seen[step] = budget.last_step(step, plan)
    # Steps 211..260 took 0.5 s each: 30 s of the 60 are gone at step 260, the other 30 s hold 30 * 0.97 / 0.5.
    assert set(seen[s] for s in range(201, 260)) == {10_000}
    assert seen[260] == 260 + int(30.0 * 0.97 / 0.5)
    clock.now += 31.0  # slower than measured: past the budget the run ends at the step it is at
    assert budget.last_step(261, plan) == 261
    assert common.TimeBudget(None, 0, 7).last_step(5, 7) == 7  # no budget: unchanged


def test_budget_revises_the_plan_up_after_a_slow_start_and_down_after_a_slowdown(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(common.time, "perf_counter", clock)
    budget = common.TimeBudget(100.0, first_step=0, max_steps=100_000)  # 6,000 s
    start = clock.now
    step, plan, plans = 0, 100_000, {}
    while step < plan:  # the training loop: it ends when it reaches the plan
        step += 1
        # Steps 1..60 (the first measurement) share the machine with another job: 4 s; then 1 s; 2 s from step 1,000.
        clock.now += 4.0 if step <= 60 else 1.0 if step < 1_000 else 2.0
        plan = plans[step] = budget.last_step(step, plan)
    first = plans[60]
    assert first == 60 + int((6_000 - 240) * 0.97 / 4.0)  # 1,456: fitted to the slow start
    assert plans[159] == first  # no revision between the revision points
    # Step 160: the last 100 steps took 1 s each; the 5,660 s left hold 5,490 more: revised up.
    assert plans[160] == 160 + int((6_000 - 340) * 0.97 / 1.0)
    assert plans[960] == plans[160]  # steady steps: within the tolerance, no revision
    # From step 1,000 steps take 2 s: the plan comes down again, and the run ends on its plan inside the budget.
    # Step 1,060: the last quarter of the 1,050 timed steps (262: from the revision point at 860) took 200 + 61 s.
    assert plans[1_060] == 1_060 + int((6_000 - 240 - 939 - 122) * 0.97 / (261 / 200))
    assert step == plan == min(plans[s] for s in range(1_060, step + 1)) > 2 * first
    assert clock.now - start <= 6_000


def test_budget_leaves_the_plan_alone_when_it_moves_by_little_and_never_passes_max_steps(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(common.time, "perf_counter", clock)
    budget = common.TimeBudget(10.0, first_step=0, max_steps=100_000)  # 600 s
    plan = 100_000
    for step in range(1, 300):
        clock.now += 1.0 if step % 2 else 1.01  # a jitter of 0.5 %: one plan from step 60 on
        plan = budget.last_step(step, plan)
        if step == 60:
            first = plan
        if step >= 60:
            assert plan == first
    capped = common.TimeBudget(10.0, first_step=0, max_steps=120)  # 1 s steps would fit 583
    plan = 120
    for step in range(1, 61):
        clock.now += 1.0
        plan = capped.last_step(step, plan)
    assert plan == 120


def test_refit_lr_schedule_ends_the_cosine_at_the_new_last_step():
    from diffusers.optimization import get_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    args = Namespace(lr_scheduler="cosine", lr_warmup_steps=10, max_train_steps=1000)
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=10, num_training_steps=1000)
    for _ in range(60):
        optimizer.step()
        scheduler.step()
    args.max_train_steps = 110
    common.refit_lr_schedule(scheduler, args, Namespace(num_processes=1))
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 50 / 990)))  # before
    lrs = {}
    for step in range(61, 111):
        optimizer.step()
        scheduler.step()
        lrs[step] = scheduler.get_last_lr()[0]
    assert lrs[85] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 75 / 100)))
    assert lrs[110] == pytest.approx(0.0, abs=1e-12)


def test_stage2_stops_at_the_budget_with_a_checkpoint_and_the_model(tmp_path, stage1_run, train_data):
    out = tmp_path / "stage2"
    result = run_script(
        [TRAIN / "stage2_finetune.py", "--pretrained_model_name_or_path", stage1_run, "--train_data_dir", train_data,
         "--output_dir", out, "--max_train_steps", "100000", "--max_train_minutes", "0.05", "--residual",
         "--checkpointing_steps", "100000", *TINY_TRAIN_FLAGS]
    )  # fmt: skip
    with open(out / "loss_log.csv", newline="") as f:
        last = int(list(csv.DictReader(f))[-1]["step"])
    assert 1 <= last < 100_000
    assert re.search(rf"--max_train_minutes 0.05: ending at step {last} instead of \d+", result.stderr + result.stdout)
    assert (out / f"checkpoint-{last}").is_dir()  # resumable where it stopped
    assert (out / "model_index.json").is_file() and (out / "unet").is_dir()


def test_bad_budget_is_named(tmp_path, stage1_run, train_data):
    result = run_script(
        [TRAIN / "stage2_finetune.py", "--pretrained_model_name_or_path", stage1_run, "--train_data_dir", train_data,
         "--output_dir", tmp_path / "out", "--max_train_minutes", "0", *TINY_TRAIN_FLAGS],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--max_train_minutes must be positive, got 0.0" in result.stderr


def _stage2_flags(stage1_run, train_data, out) -> list:
    """Stage 2 on the tiny run, checkpointing only when told to stop (the SIGTERM tests)."""
    return ["--pretrained_model_name_or_path", stage1_run, "--train_data_dir", train_data, "--output_dir", out,
            "--residual", "--checkpointing_steps", "100000", *TINY_TRAIN_FLAGS]  # fmt: skip


def _start_until_first_step(command: list, env: dict) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    """Start a training job in its own session and wait until its loop has made a step: the process, its output
    (still growing, read by the returned thread) and that thread."""
    process = subprocess.Popen(
        [str(c) for c in command], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output = []
    reader = threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    _wait_for(process, output, r"\b[1-9]\d*/100000", 600)  # the loop has made a step
    return process, output, reader


def _wait_for(process: subprocess.Popen, output: list[str], pattern: str, seconds: float) -> re.Match:
    """Wait until the job's output matches `pattern`; the job is killed and the test fails if it ends first or
    `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not (match := re.search(pattern, "".join(output))):
        if process.poll() is not None or time.monotonic() >= deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("".join(output)[-3000:])
        time.sleep(0.05)
    return match


def test_sigterm_to_the_job_saves_a_checkpoint_at_the_step_and_a_resume_goes_on(tmp_path, stage1_run, train_data):
    out = tmp_path / "stage2"
    flags = _stage2_flags(stage1_run, train_data, out)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    command = [PYTHON, TRAIN / "stage2_finetune.py", *flags, "--max_train_steps", "100000"]
    command += ["--dataloader_num_workers", "1"]  # the job's signal reaches the loader's worker too
    process, output, reader = _start_until_first_step(command, env)
    os.killpg(process.pid, signal.SIGTERM)  # as SLURM does: every process of the job
    process.wait(timeout=300)
    reader.join(timeout=10)
    text = "".join(output)
    assert process.returncode == 128 + signal.SIGTERM, text[-3000:]
    checkpoints = [p.name for p in out.glob("checkpoint-*")]
    assert len(checkpoints) == 1, checkpoints
    step = int(checkpoints[0].split("-")[1])
    with open(out / "loss_log.csv", newline="") as f:
        assert int(list(csv.DictReader(f))[-1]["step"]) == step
    assert f"SIGTERM: stopped at step {step} with checkpoint-{step}" in text
    assert not (out / "model_index.json").exists()  # not finished: no model

    run_script(
        [TRAIN / "stage2_finetune.py", *flags, "--max_train_steps", step + 2, "--resume_from_checkpoint", "latest"]
    )
    with open(out / "loss_log.csv", newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)][-3:] == [step, step + 1, step + 2]
    assert (out / "model_index.json").is_file()


def test_sigterm_during_validation_stops_at_the_validated_step(tmp_path, stage1_run, train_data):
    """A SIGTERM that arrives while the loop validates (minutes on a CPU) saves the checkpoint at the step just
    validated, instead of training one more step first."""
    out = tmp_path / "stage2"
    flags = _stage2_flags(stage1_run, train_data, out)
    flags += ["--validation_steps", "1", "--validation_inference_steps", "200"]  # seconds a validation
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    command = [PYTHON, TRAIN / "stage2_finetune.py", *flags, "--max_train_steps", "100000"]
    process, output, reader = _start_until_first_step(command, env)
    step = int(_wait_for(process, output, r"step (\d+): validating\n", 300).group(1))
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=300)
    reader.join(timeout=10)
    text = "".join(output)
    assert process.returncode == 128 + signal.SIGTERM, text[-3000:]
    assert f"step {step}: validation " in text, text[-3000:]  # the validation in progress finished first
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{step}"], text[-3000:]
    with open(out / "loss_log.csv", newline="") as f:
        assert int(list(csv.DictReader(f))[-1]["step"]) == step
    assert f"SIGTERM: stopped at step {step} with checkpoint-{step}" in text


def _children_by_rank(parent: int) -> dict[int, int]:
    """pid of each training process under `parent` (accelerate's launcher), by its RANK."""
    ranks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if b"RANK" in env:
            ranks[int(env[b"RANK"])] = int(entry)
    return ranks


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the ranks' processes through /proc")
def test_two_processes_stop_together_when_only_the_main_one_gets_sigterm(tmp_path, stage1_run, train_data):
    """Under `accelerate launch` with two CPU processes, the main process's SIGTERM reaches the other one through the
    loop's per-step agreement: both stop after the same step, which is saved once, and the resume goes on from it."""
    out = tmp_path / "stage2"
    flags = _stage2_flags(stage1_run, train_data, out)
    # accelerate's `--cpu` runs one process whatever `--num_processes` says (more need mpirun); `--multi_gpu` starts
    # them through torchrun, and ACCELERATE_USE_CPU makes them one group over gloo instead of independent runs.
    launch = [PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    command = [*launch, TRAIN / "stage2_finetune.py", *flags, "--max_train_steps", "100000"]
    process, output, reader = _start_until_first_step(command, env)
    try:
        ranks = _children_by_rank(process.pid)
        assert sorted(ranks) == [0, 1], (ranks, "".join(output)[-3000:])
        os.kill(ranks[0], signal.SIGTERM)  # the main process only
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    reader.join(timeout=10)
    text = "".join(output)
    assert "(1 x 2 processes x 1 accumulation)" in text, text[-3000:]  # one run of two processes, not two runs
    assert process.returncode != 0, text[-3000:]  # the launcher reports its processes' exit status 143
    assert "ChildFailedError" not in text or "exitcode  : 143" in text, text[-3000:]
    checkpoints = [p.name for p in out.glob("checkpoint-*")]
    assert len(checkpoints) == 1, (checkpoints, text[-3000:])
    step = int(checkpoints[0].split("-")[1])
    assert f"SIGTERM: stopped at step {step} with checkpoint-{step}" in text
    assert not (out / "model_index.json").exists()

    run_script(
        [TRAIN / "stage2_finetune.py", *flags, "--max_train_steps", step + 1, "--resume_from_checkpoint", "latest"],
        launcher=launch,
        env={"ACCELERATE_USE_CPU": "true"},
    )
    with open(out / "loss_log.csv", newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)][-2:] == [step, step + 1]
    assert (out / "model_index.json").is_file()
