"""How the benchmarks write their results: each file appears whole or not at all (written beside, then renamed)."""

from __future__ import annotations

import json

from pipeline_video_deblur.atomic import atomic_path

__all__ = ["atomic_path", "write_json"]


def write_json(path: str, data, **dump_kwargs) -> None:
    """``data`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, **dump_kwargs)
