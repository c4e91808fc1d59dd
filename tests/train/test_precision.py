"""Mixed precision on a CPU: which attention processor `--attention` resolves to, and what frozen models are cast."""

from __future__ import annotations

import sys

import pytest
import torch
from train_helpers import TRAIN

sys.path.insert(0, str(TRAIN))
import common  # noqa: E402


@pytest.mark.parametrize(
    ("choice", "device", "precision", "expected"),
    [
        ("auto", "cpu", "bf16", "explicit"),  # the CPU's bf16 matmuls: the measured fast path
        ("auto", "cpu", "no", "sdpa"),  # float32 runs keep diffusers' default, as every shipped version trained
        ("auto", "cpu", "fp16", "sdpa"),
        ("auto", "cuda", "bf16", "sdpa"),  # fused kernels on a GPU
        ("sdpa", "cpu", "bf16", "sdpa"),  # an explicit choice is kept
        ("explicit", "cuda", "no", "explicit"),
    ],
)
def test_attention_resolves(choice, device, precision, expected):
    assert common.attention_for(choice, device, precision) == expected


def test_attention_refuses_unknown_choice():
    with pytest.raises(ValueError, match=r"--attention must be one of auto, sdpa, explicit, got 'flash'"):
        common.attention_for("flash", "cpu", "bf16")


def test_cast_frozen_keeps_weight_free_models_float32():
    from tiny import tiny_pipeline

    pipe = tiny_pipeline(pixel_vae=True, sample_size=16)
    assert common.cast_frozen(pipe.vae, torch.bfloat16).dtype == torch.float32  # no weights: frames stay exact
    assert common.cast_frozen(pipe.image_encoder, torch.bfloat16).dtype == torch.bfloat16
    kl = tiny_pipeline().vae
    assert common.cast_frozen(kl, torch.bfloat16).dtype == torch.bfloat16
    assert common.cast_frozen(pipe.image_encoder.float(), torch.float32).dtype == torch.float32


def test_attention_processor_maps_each_resolved_choice_to_its_diffusers_class():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    assert type(common.attention_processor("explicit")) is AttnProcessor
    assert type(common.attention_processor("sdpa")) is AttnProcessor2_0
    with pytest.raises(ValueError, match=r"attention must be one of explicit, sdpa, got 'auto'"):
        common.attention_processor("auto")  # resolve 'auto' with attention_for first


@pytest.mark.parametrize(
    "device, precision, bf16_units, warned",
    [
        ("cpu", "bf16", False, True),  # emulated bf16: the one case that warns
        ("cpu", "bf16", True, False),  # AVX512-BF16 / AMX
        ("cpu", "no", False, False),
        ("cpu", None, False, False),
        ("cuda", "bf16", False, False),  # the CPU's units do not matter on a GPU
    ],
)
def test_cpu_bf16_warning_only_where_bf16_is_emulated(device, precision, bf16_units, warned):
    warning = common.cpu_bf16_warning(device, precision, bf16_units)
    if warned:
        assert "without bf16 units" in warning and torch.backends.cpu.get_cpu_capability() in warning
        assert "--mixed_precision no" in warning
    else:
        assert warning is None


def test_cpu_has_bf16_units_follows_torch():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert common.cpu_has_bf16_units() is expected
