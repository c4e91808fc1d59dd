"""How the benchmarks write their results: each file appears whole or not at all (written beside, then renamed)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write to; it replaces ``path`` when the block ends without an error.

    The temporary keeps ``path``'s extension, from which PIL and matplotlib pick the image format.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data, **dump_kwargs) -> None:
    """``data`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, **dump_kwargs)
