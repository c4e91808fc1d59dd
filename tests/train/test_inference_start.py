"""--inference_start_fraction: samples drawn at t = T - 1 from the sampler's start (train/common.py,
train/deblur_training.py)."""

from __future__ import annotations

import sys

import pytest
import torch
from diffusers import DDIMScheduler
from train_helpers import TRAIN
from train_helpers import parse_deblur_args as parse

from pipeline_video_deblur.losses import add_noise, v_target, x0_from_v

sys.path.insert(0, str(TRAIN))
import common  # noqa: E402


def schedule() -> torch.Tensor:
    # The shipped model's schedule: scaled-linear betas, no zero terminal SNR.
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return scheduler.alphas_cumprod


def draws(batch: int, fraction: float, noise_scale: float, step: int = 0):
    alphas = schedule()
    rng = common.NoiseRNG(torch.device("cpu"), seed=0)
    rng.reseed(step)
    x0 = torch.randn(batch, 4, 3, 5, 5, generator=torch.Generator().manual_seed(step))
    noise, timesteps, _ = common.diffusion_draws(rng, tuple(x0.shape), 1000, 0.1, "cpu")
    forward = add_noise(alphas, x0, noise, timesteps)
    noisy, new_noise, new_timesteps = common.inference_start_draws(
        rng, alphas, x0, forward, noise, timesteps, fraction, noise_scale
    )
    return alphas, x0, (noise, timesteps, forward), (noisy, new_noise, new_timesteps)


def test_the_forward_process_leaves_a_trace_of_the_target_at_the_last_timestep():
    # Why the option exists: at t = 999 the shipped schedule keeps 6.8 % of x0 in x_t; the sampler's start has none.
    assert 0.06 < float(schedule()[-1].sqrt()) < 0.075


@pytest.mark.parametrize("noise_scale", [0.0, 0.5, 1.0])
def test_picked_samples_get_the_samplers_start_and_a_target_that_recovers_x0(noise_scale):
    alphas, x0, (noise, _, _), (noisy, new_noise, timesteps) = draws(8, fraction=1.0, noise_scale=noise_scale)
    assert torch.equal(timesteps, torch.full((8,), 999))
    assert torch.equal(noisy, noise * noise_scale)  # what the pipeline starts from: no trace of x0
    # The v-target made from the implied noise is the v whose clean sample, from that start, is x0 itself.
    target = v_target(alphas, x0, new_noise, timesteps)
    assert torch.allclose(x0_from_v(alphas, noisy, target, timesteps), x0, atol=1e-5)
    # And that start is what the forward process makes from x0 and the implied noise.
    assert torch.allclose(add_noise(alphas, x0, new_noise, timesteps), noisy, atol=1e-5)
    if noise_scale == 1.0:
        assert not torch.allclose(new_noise, noise)  # the trace is taken out of the noise the loss sees


def test_only_the_fraction_is_moved_and_the_rest_keep_the_forward_process():
    picked_share = []
    for step in range(20):
        _, _, (noise, timesteps, forward), (noisy, new_noise, new_timesteps) = draws(32, 0.25, 0.0, step)
        picked = new_timesteps != timesteps
        kept = ~picked
        assert torch.equal(noisy[kept], forward[kept]) and torch.equal(new_noise[kept], noise[kept])
        assert torch.equal(new_timesteps[kept], timesteps[kept])
        assert torch.all(noisy[picked] == 0) and torch.all(new_timesteps[picked] == 999)
        picked_share.append(float(picked.float().mean()))
    assert abs(sum(picked_share) / len(picked_share) - 0.25) < 0.06
    # Seeded: the same step draws the same samples.
    assert torch.equal(draws(32, 0.25, 0.0, 3)[3][2], draws(32, 0.25, 0.0, 3)[3][2])


def test_defaults_draw_everything_from_the_forward_process():
    args = parse()
    assert args.inference_start_fraction == 0.0 and args.inference_start_noise_scale is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--inference_start_fraction", "1.5"], "--inference_start_fraction must be in [0, 1], got 1.5"),
        (["--inference_start_fraction", "nan"], "--inference_start_fraction must be in [0, 1], got nan"),
        (
            ["--inference_start_noise_scale", "-1"],
            "--inference_start_noise_scale must be a finite number >= 0, got -1",
        ),
    ],
)
def test_bad_values_are_refused(flags, message):
    with pytest.raises(ValueError) as error:
        parse(*flags)
    assert message in str(error.value)
