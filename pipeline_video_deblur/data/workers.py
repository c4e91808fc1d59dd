"""Worker processes and temporary names of the data writers (`video-deblur synth` and `leaves`).

A writer stopped from outside (Ctrl-C, `timeout`, a killed job) must leave neither idle worker processes nor
half-written files behind:

- `worker_pool` starts spawn-context workers that exit on their own once their parent is gone (even after a
  SIGKILL, which no cleanup code sees), and on an error or interrupt in its block cancels the queued jobs instead
  of waiting for all of them;
- `tmp_tag` names a temporary file or folder after the host and process writing it, so that `remove_stale_tmp`
  can delete the leftovers of a writer that died, and never those of one still writing.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

PARENT_POLL_SECONDS = 0.5
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
TMP_TAG = re.compile(r"-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}")


def tmp_tag(pid: int | None = None) -> str:
    """`-<host>-<pid>-<random>`: unique to one write, and says which process (this one by default) made it."""
    return f"-{_HOST}-{os.getpid() if pid is None else int(pid)}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a process that exited but was not reaped yet (a zombie) still answers os.kill
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_tmp(folder: str | os.PathLike, pattern: str) -> list[Path]:
    """Delete the entries of `folder` matching the glob `pattern` whose `tmp_tag` names a process of this host that
    no longer runs. Entries of live processes, of other hosts (a shared file system) and without a tag are kept.
    Returns what was deleted."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(pattern):
        match = TMP_TAG.search(path.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent:  # re-parented: the writer that started this worker is gone
            os._exit(1)


def _start_worker(parent: int, initializer: Callable[[], None] | None) -> None:
    # SIGTERM is the parent's to handle: `timeout` and job schedulers signal the whole process group, and a worker
    # killed mid-job would leave its temporary files; the parent cancels the queue and lets the running jobs finish.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()
    if initializer is not None:
        initializer()


@contextmanager
def worker_pool(workers: int, initializer: Callable[[], None] | None = None) -> Iterator[ProcessPoolExecutor]:
    """A `ProcessPoolExecutor` of `workers` spawn-context processes (not fork: the parent may hold torch's thread
    pools, which a forked child must not inherit) that exit with their parent; leaving the block by an exception
    (KeyboardInterrupt and SystemExit included) cancels the jobs not yet started and waits only for those running,
    so that each of them is written whole."""
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer),
    )
    try:
        yield pool
    except BaseException:
        # Waiting keeps the executor referenced until its manager thread has cancelled the queue: once the executor
        # is garbage-collected, the manager runs every queued job to the end instead.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
