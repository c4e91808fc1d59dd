"""The one device check the CLI and the ComfyUI nodes share (pipeline_video_deblur.devices)."""

import pytest
import torch

from pipeline_video_deblur.cli import check_device
from pipeline_video_deblur.devices import device_problem


def test_the_cpu_is_always_usable():
    assert device_problem(torch.device("cpu")) is None
    assert device_problem(torch.device("cpu", 0)) is None
    check_device("cpu")


def test_an_absent_accelerator_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "cuda:1", "mps"):
        problem = device_problem(torch.device(name))
        assert problem is not None and problem.startswith("is not available on this machine (torch ")
    with pytest.raises(ValueError, match=r"--device 'cuda' is not available on this machine .*; use cpu"):
        check_device("cuda")


def test_a_device_number_past_the_last_device_is_refused(monkeypatch):
    # No GPU here: torch.cuda is told there are two devices, as on a 2-GPU machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_problem(torch.device("cuda")) is None
    assert device_problem(torch.device("cuda:1")) is None
    assert device_problem(torch.device("cuda:2")) == "is not on this machine: it has 2 cuda device(s), numbered from 0"
    with pytest.raises(ValueError, match=r"--device 'cuda:2' is not on this machine: it has 2 cuda device\(s\)"):
        check_device("cuda:2")


def test_a_name_that_is_no_device_is_refused():
    with pytest.raises(ValueError, match="--device 'nosuch' is not a device; expected cpu, cuda, cuda:N or mps"):
        check_device("nosuch")
