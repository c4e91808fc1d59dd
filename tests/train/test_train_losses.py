"""The training objective (pipeline_video_deblur/losses.py) against hand computations."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from pipeline_video_deblur.losses import add_noise, coherence_loss, deblur_loss, v_target, x0_from_v


def test_coherence_loss_matches_eq5_by_hand():
    # One sample, one channel, three frames of 1 x 2 "latents": (B, C, F, h, w) = (1, 1, 3, 1, 2).
    predicted = torch.tensor([[[[[1.0, 2.0]], [[2.0, 2.0]], [[4.0, 1.0]]]]])
    target = torch.tensor([[[[[0.0, 0.0]], [[1.0, 1.0]], [[1.0, 3.0]]]]])
    # Eq. 5: sum_j ||(v_{j+1} - v_j) - (o_{j+1} - o_j)||^2.
    #   j = 0: o diff (1, 0), v diff (1, 1) -> (0, 1) -> 1
    #   j = 1: o diff (2, -1), v diff (0, 2) -> (-2, 3) -> 4 + 9 = 13
    # Sum 14 over 2 x 2 = 4 elements of the frame differences -> mean 3.5 (our documented normalisation).
    assert coherence_loss(predicted, target).item() == 3.5
    assert coherence_loss(target, predicted).item() == 3.5  # symmetric
    # A constant offset per frame that is the same in every frame changes nothing.
    assert coherence_loss(target + 5.0, target).item() == 0.0


def test_coherence_loss_single_frame_is_zero_and_differentiable():
    x = torch.randn(2, 4, 1, 3, 3, requires_grad=True)
    loss = coherence_loss(x, torch.zeros_like(x))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None


def test_v_target_and_x0_from_v_invert_each_other():
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 5, 5, generator=generator)
    noise = torch.randn(3, 4, 2, 5, 5, generator=generator)
    timesteps = torch.tensor([0, 500, 999])
    noisy = add_noise(scheduler.alphas_cumprod, x0, noise, timesteps)
    v = v_target(scheduler.alphas_cumprod, x0, noise, timesteps)
    torch.testing.assert_close(noisy, scheduler.add_noise(x0, noise, timesteps))
    torch.testing.assert_close(v, scheduler.get_velocity(x0, noise, timesteps))
    torch.testing.assert_close(x0_from_v(scheduler.alphas_cumprod, noisy, v, timesteps), x0, atol=1e-5, rtol=1e-5)


def _two_samples(seed: int):
    """A DDPM schedule and two samples at t = 10 and 900: (scheduler, generator, x0, noise, timesteps, noisy, v)."""
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    generator = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(2, 2, 3, 4, 4, generator=generator), torch.randn(2, 2, 3, 4, 4, generator=generator)
    timesteps = torch.tensor([10, 900])
    noisy = add_noise(scheduler.alphas_cumprod, x0, noise, timesteps)
    v = v_target(scheduler.alphas_cumprod, x0, noise, timesteps)
    return scheduler, generator, x0, noise, timesteps, noisy, v


def test_deblur_loss_combines_base_and_coherence():
    scheduler, generator, x0, noise, timesteps, noisy, v = _two_samples(1)
    perfect = deblur_loss(scheduler.alphas_cumprod, v, noisy, x0, noise, timesteps, coherence_weight=0.1)
    assert perfect["loss"].item() < 1e-10
    wrong = v + torch.randn(v.shape, generator=generator)
    losses = deblur_loss(scheduler.alphas_cumprod, wrong, noisy, x0, noise, timesteps, coherence_weight=0.1)
    expected_coherence = coherence_loss(x0_from_v(scheduler.alphas_cumprod, noisy, wrong, timesteps), x0)
    torch.testing.assert_close(losses["loss_base"], torch.nn.functional.mse_loss(wrong, v))
    torch.testing.assert_close(losses["loss_coherence"], expected_coherence)
    torch.testing.assert_close(losses["loss"], losses["loss_base"] + 0.1 * expected_coherence)


def test_sample_weights_scale_each_sample_s_share_of_the_base_loss():
    scheduler, generator, x0, noise, timesteps, noisy, v = _two_samples(2)
    wrong = v + torch.randn(v.shape, generator=generator)
    alphas = scheduler.alphas_cumprod
    plain = deblur_loss(alphas, wrong, noisy, x0, noise, timesteps, coherence_weight=0.1)
    ones = deblur_loss(alphas, wrong, noisy, x0, noise, timesteps, 0.1, sample_weights=torch.ones(2))
    torch.testing.assert_close(ones["loss"], plain["loss"])
    weighted = deblur_loss(alphas, wrong, noisy, x0, noise, timesteps, 0.1, sample_weights=torch.tensor([0.25, 1.0]))
    first, second = (torch.nn.functional.mse_loss(wrong[i], v[i]) for i in range(2))
    torch.testing.assert_close(weighted["loss_base"], (0.25 * first + second) / 2)
    torch.testing.assert_close(weighted["loss_coherence"], plain["loss_coherence"])  # not weighted
    with pytest.raises(ValueError, match=r"sample_weights must have one factor per sample, shape \(2,\), got \(3,\)"):
        deblur_loss(alphas, wrong, noisy, x0, noise, timesteps, 0.1, sample_weights=torch.ones(3))
