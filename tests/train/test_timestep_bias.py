"""--timestep_bias_*: which training timesteps are drawn, and the errors for bad values (train/common.py)."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch
from train_helpers import TRAIN

sys.path.insert(0, str(TRAIN))
import common  # noqa: E402


def parse(*flags: str) -> argparse.Namespace:
    parser = common.add_common_args(argparse.ArgumentParser())
    args = parser.parse_args(["--train_data_dir", "d", "--output_dir", "o", *flags])
    common.check_common_args(args)
    return args


def draw_timesteps(weights, steps: int, batch: int = 64) -> torch.Tensor:
    rng = common.NoiseRNG(torch.device("cpu"), seed=0)
    drawn = []
    for step in range(steps):
        rng.reseed(step)
        _, timesteps, _ = common.diffusion_draws(rng, (batch, 1), 1000, 0.1, "cpu", weights)
        drawn.append(timesteps)
    return torch.cat(drawn)


def test_default_draws_are_the_uniform_draws_of_earlier_versions():
    assert common.timestep_weights(parse(), 1000) is None
    assert common.timestep_weights(parse("--timestep_bias_strategy", "later"), 1000) is None  # multiplier 1
    # The same generator state gives the same timesteps as the plain randint of versions without the option, so a
    # run resumed across the change draws exactly what it would have.
    rng = common.NoiseRNG(torch.device("cpu"), seed=3)
    rng.reseed(7)
    _, timesteps, _ = common.diffusion_draws(rng, (4, 2, 3), 1000, 0.1, "cpu")
    rng.reseed(7)
    torch.randn((4, 2, 3), generator=rng.generator)
    assert torch.equal(timesteps, torch.randint(0, 1000, (4,), generator=rng.generator))


@pytest.mark.parametrize(
    "flags, favoured, expected_share",
    [
        # 250 timesteps weigh 3: 750 / (750 + 750) of the draws.
        (["--timestep_bias_strategy", "later", "--timestep_bias_multiplier", "3"], (750, 1000), 0.5),
        (["--timestep_bias_strategy", "earlier", "--timestep_bias_multiplier", "3"], (0, 250), 0.5),
        # 100 timesteps weigh 0.5: 50 / (50 + 900).
        (["--timestep_bias_strategy", "range", "--timestep_bias_multiplier", "0.5", "--timestep_bias_begin", "400",
          "--timestep_bias_end", "500"], (400, 500), 50 / 950),
    ],
)  # fmt: skip
def test_biased_draws_follow_the_weights(flags, favoured, expected_share):
    weights = common.timestep_weights(parse(*flags), 1000)
    assert weights.shape == (1000,) and abs(float(weights.sum()) - 1) < 1e-6
    begin, end = favoured
    inside = weights[begin:end]
    outside = torch.cat([weights[:begin], weights[end:]])
    assert torch.allclose(inside, inside[0]) and torch.allclose(outside, outside[0])
    timesteps = draw_timesteps(weights, steps=200)  # 12,800 draws
    assert timesteps.min() >= 0 and timesteps.max() <= 999
    share = float(((timesteps >= begin) & (timesteps < end)).float().mean())
    assert abs(share - expected_share) < 0.02, share
    assert torch.equal(timesteps, draw_timesteps(weights, steps=200))  # seeded


def test_weights_are_placed_on_the_training_device_once():
    # diffusion_draws samples from them every step without moving them: they must already be on its device.
    flags = ("--timestep_bias_strategy", "later", "--timestep_bias_multiplier", "4")
    weights = common.timestep_weights(parse(*flags), 1000, torch.device("meta"))
    assert weights.device.type == "meta" and weights.shape == (1000,)
    assert common.timestep_weights(parse(*flags), 1000).device.type == "cpu"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--timestep_bias_multiplier", "0"], "--timestep_bias_multiplier must be positive, got 0.0"),
        (["--timestep_bias_portion", "1.5"], "--timestep_bias_portion must be in (0, 1], got 1.5"),
        (["--timestep_bias_begin", "600", "--timestep_bias_end", "500"], "--timestep_bias_begin 600 and"),
    ],
)
def test_bad_bias_values_are_refused(flags, message):
    with pytest.raises(ValueError) as error:
        parse(*flags)
    assert message in str(error.value)


def test_range_past_the_schedule_is_refused():
    args = parse("--timestep_bias_strategy", "range", "--timestep_bias_multiplier", "2", "--timestep_bias_end", "1200")
    with pytest.raises(ValueError, match="--timestep_bias_end 1200 is past the scheduler's 1000 training timesteps"):
        common.timestep_weights(args, 1000)
