"""Whether a torch device can be used on this machine: one answer for the CLI and the ComfyUI nodes."""

from __future__ import annotations

import torch


def device_problem(device: torch.device) -> str | None:
    """None when `device` can be used here, else what stops it, worded to follow the device's name in a message
    (`f"--device {name!r} {problem}"`).

    The CPU is always there. MPS is asked through `torch.backends.mps`, CUDA, XPU and the other accelerators
    through `torch.<type>.is_available()` and `device_count()`; a type torch knows but offers no such question for
    passes, and `.to()` will tell.
    """
    if device.type == "cpu":
        return None
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    if backend is None or not hasattr(backend, "is_available"):
        return None
    if not backend.is_available():
        return f"is not available on this machine (torch {torch.__version__})"
    count = backend.device_count() if hasattr(backend, "device_count") else None
    if device.index is not None and count is not None and device.index >= count:
        return f"is not on this machine: it has {count} {device.type} device(s), numbered from 0"
    return None
