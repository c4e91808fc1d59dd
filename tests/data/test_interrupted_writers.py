"""`video-deblur synth` and `leaves` stopped from outside (`timeout`, `kill`, a killed job): no idle worker processes
and no half-written sequences or stills stay behind, and the next run cleans up after a writer that was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline_video_deblur.data.workers import remove_stale_tmp, tmp_tag

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def start(*args) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline_video_deblur.cli", *map(str, args)]
    # A session of its own, so that a test can signal the whole group as `timeout` and job schedulers do.
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True
    )


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # an orphan that exited may wait as a zombie for its reaper


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def hidden_tmp(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


WRITERS = {
    "synth": (
        lambda out: ["synth", "--out", out, "--split", "train", "--sequences", 400, "--frames", 4, "--size", "32x32",
                     "--seed", 0, "--workers", 2],
        lambda out: out / "train",
        "synth_train_*",
    ),
    "leaves": (
        lambda out: ["leaves", "--out", out, "--count", 3000, "--size", 32, "--seed", 0, "--workers", 2],
        lambda out: out,
        "leaves_*.png",
    ),
}  # fmt: skip


def started_writer(tmp_path: Path, writer: str, at_least: int = 3):
    args, folder_of, pattern = WRITERS[writer]
    out = tmp_path / writer
    process = start(*args(out))
    folder = folder_of(out)
    try:
        wait_for(lambda: folder.is_dir() and len(list(folder.glob(pattern))) >= at_least, 240, f"{writer} writes")
        workers = children(process.pid)
        assert len(workers) >= 2, workers  # the pool's workers (and multiprocessing's resource tracker)
    except BaseException:
        process.kill()
        raise
    return process, workers, folder, pattern


@pytest.mark.parametrize("writer", ["synth", "leaves"])
def test_sigterm_cancels_the_queue_and_leaves_whole_outputs_and_no_workers(tmp_path, writer):
    process, workers, folder, pattern = started_writer(tmp_path, writer)
    os.killpg(process.pid, signal.SIGTERM)  # as `timeout` sends it: to the writer and its workers
    process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    wait_for(lambda: not any(alive(pid) for pid in workers), 15, f"the workers {sorted(workers)} exit")
    written = list(folder.glob(pattern))
    assert 3 <= len(written) < (400 if writer == "synth" else 3000)  # stopped early: the queue was cancelled
    assert hidden_tmp(folder) == []  # the running jobs finished whole
    if writer == "synth":
        assert all((sequence / "meta.json").is_file() for sequence in written)


def test_sigkill_workers_exit_with_their_parent_and_the_next_run_cleans_up(tmp_path):
    process, workers, folder, pattern = started_writer(tmp_path, "synth")
    process.kill()  # no cleanup code runs in the writer itself
    process.communicate(timeout=60)
    wait_for(lambda: not any(alive(pid) for pid in workers), 15, f"the workers {sorted(workers)} exit")
    written = len(list(folder.glob(pattern)))
    # What a killed worker leaves (planted too, in case this one finished its sequence first), beside a temporary
    # folder of a live writer and an untagged one, which the next run must keep.
    dead = folder / f".synth_train_399.tmp{tmp_tag(pid=max(workers))}"
    live, untagged = folder / f".synth_train_398.tmp{tmp_tag()}", folder / ".synth_train_397.tmp-0123abcd"
    for path in (dead, live, untagged):
        (path / "blur").mkdir(parents=True)
    rerun = start("synth", "--out", folder.parent, "--split", "train", "--sequences", written + 2, "--frames", 4,
                  "--size", "32x32", "--seed", 0, "--skip-existing")  # fmt: skip
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output[-2000:]
    assert len(list(folder.glob(pattern))) == written + 2
    assert hidden_tmp(folder) == sorted([live.name, untagged.name])


def test_remove_stale_tmp_deletes_only_dead_writers_of_this_host(tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()  # a pid that no longer runs
    dead = tmp_path / f".leaves_00001{tmp_tag(pid=finished.pid)}.tmp.png"
    mine = tmp_path / f".leaves_00002{tmp_tag()}.tmp.png"
    other_host = tmp_path / f".leaves_00003-otherhost-{finished.pid}-0123abcd.tmp.png"
    still = tmp_path / "leaves_00004.png"
    for path in (dead, mine, other_host, still):
        path.write_bytes(b"x")
    assert remove_stale_tmp(tmp_path, ".leaves_*.tmp.png") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, other_host, still))
    assert remove_stale_tmp(tmp_path / "missing", "*") == []
