"""Writing files and folders so that each appears whole or not at all, and nothing is lost on the way.

A file is written under a temporary name beside its final one and renamed into place (`os.replace`, atomic on one
file system); a folder that replaces another moves the old one aside first and deletes it only once the new one is
in place. Used by the CLI, evaluation, data synthesis, training and the benchmarks alike.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path` to write to; it replaces `path` when the block ends without an error,
    and is removed when it does not.

    The temporary name is hidden, unique to the call (two writers never share it) and keeps `path`'s extension,
    from which PIL, matplotlib and safetensors' readers pick the format.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    root, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{root}-tmp{uuid.uuid4().hex[:8]}{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """`text` at `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished folder `new` to `target`. An existing `target` is moved aside first and deleted only
    once `new` is in place; if that rename fails, the previous `target` is put back."""
    new, target = Path(new), Path(target)
    if not target.exists() and not target.is_symlink():
        os.replace(new, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside / target.name, target)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
