"""The training objective: v-prediction (Eq. 3) plus the temporal coherence loss (Eq. 4-5).

Shared by the training scripts (`train/`) and the tests, so that both compute exactly the same thing. Latents
are laid out (B, C, F, h, w), as the UNet takes them; `timesteps` are integer DDPM steps in [0, T).

With alpha_t the cumulative product of the scheduler's alphas, a clean sample x0 and noise eps:

    x_t = sqrt(alpha_t) x0 + sqrt(1 - alpha_t) eps                  (the forward process)
    v   = sqrt(alpha_t) eps - sqrt(1 - alpha_t) x0                   (the v-prediction target, Eq. 3)
    x0  = sqrt(alpha_t) x_t - sqrt(1 - alpha_t) v                    (x0 from a predicted v)
    eps = (x_t - sqrt(alpha_t) x0) / sqrt(1 - alpha_t)               (the noise a given x_t and x0 imply)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor):
    """sqrt(alpha_t) and sqrt(1 - alpha_t) per sample, shaped to broadcast against `like` (B, ...)."""
    alphas = alphas_cumprod.to(device=like.device, dtype=torch.float32)[timesteps.to(like.device)]
    shape = (-1,) + (1,) * (like.ndim - 1)
    return alphas.sqrt().view(shape), (1 - alphas).sqrt().view(shape)


def add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """The forward process: x_t = sqrt(alpha_t) x0 + sqrt(1 - alpha_t) eps, in float32."""
    a, s = _coefficients(alphas_cumprod, timesteps, x0)
    return a * x0.float() + s * noise.float()


def v_target(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """The v-prediction target (Eq. 3): v = sqrt(alpha_t) eps - sqrt(1 - alpha_t) x0, in float32.

    Equals diffusers' `scheduler.get_velocity(x0, noise, timesteps)`.
    """
    a, s = _coefficients(alphas_cumprod, timesteps, x0)
    return a * noise.float() - s * x0.float()


def noise_from_x0(alphas_cumprod: torch.Tensor, noisy: torch.Tensor, x0: torch.Tensor, timesteps: torch.Tensor):
    """The noise that makes `noisy` the forward process of `x0` at `timesteps`: eps = (x_t - sqrt(alpha_t) x0) /
    sqrt(1 - alpha_t), in float32 (DDIM's eps from its x0 estimate)."""
    a, s = _coefficients(alphas_cumprod, timesteps, noisy)
    return (noisy.float() - a * x0.float()) / s


def x0_from_v(alphas_cumprod: torch.Tensor, noisy: torch.Tensor, v: torch.Tensor, timesteps: torch.Tensor):
    """The clean sample implied by a v-prediction: x0 = sqrt(alpha_t) x_t - sqrt(1 - alpha_t) v, in float32."""
    a, s = _coefficients(alphas_cumprod, timesteps, noisy)
    return a * noisy.float() - s * v.float()


def coherence_loss(predicted: torch.Tensor, target: torch.Tensor, frame_dim: int = 2) -> torch.Tensor:
    r"""The temporal coherence loss, Eq. 5 of the paper, on clips laid out with frames along `frame_dim`.

    The paper writes L_coherence = \sum_j || (v_{j+1} - v_j) - (o_{j+1} - o_j) ||^2 over consecutive frames j,
    with v the ground truth and o the prediction. Here the sum of squares is divided by the number of elements
    of the frame differences (B x C x (F - 1) x h x w): a constant rescaling that makes the loss a mean, like the
    base MSE loss, so that the weight lambda = 0.1 means the same for every clip length and size. A clip with a
    single frame has no consecutive pair: the loss is 0 (and still in the autograd graph).

    Args:
        predicted: the predicted clip `o`, e.g. latents (B, C, F, h, w) (`frame_dim=2`).
        target: the ground-truth clip `v`, same shape.
        frame_dim: the frame axis.

    Returns:
        A float32 scalar.
    """
    if predicted.shape != target.shape:
        raise ValueError(
            f"predicted and target must have the same shape, got {tuple(predicted.shape)} and {tuple(target.shape)}"
        )
    if predicted.shape[frame_dim] < 2:
        return predicted.float().sum() * 0.0
    predicted_diff = torch.diff(predicted.float(), dim=frame_dim)  # o_{j+1} - o_j
    target_diff = torch.diff(target.float(), dim=frame_dim)  # v_{j+1} - v_j
    return F.mse_loss(predicted_diff, target_diff, reduction="mean")


def deblur_loss(
    alphas_cumprod: torch.Tensor,
    model_output: torch.Tensor,
    noisy: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    coherence_weight: float = 0.1,
    sample_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """L = L_base + lambda L_coherence (Eq. 4), the coherence term on the predicted clean latents (DESIGN 2.4).

    Args:
        alphas_cumprod: the DDPM schedule's cumulative alphas (T,).
        model_output: the UNet's v-prediction (B, C, F, h, w).
        noisy: the noisy latents x_t the UNet saw.
        x0: the clean target latents (sharp latents, or sharp minus blurred latents in residual mode).
        noise: the noise eps that made `noisy` from `x0`.
        timesteps: (B,) integer steps.
        coherence_weight: lambda (0.1 in the paper); 0 skips the coherence term's computation.
        sample_weights: optional (B,) factors on each sample's share of L_base (the mean over the batch of the
            per-sample MSE times its factor; all ones give the plain MSE). The coherence term is not weighted.

    Returns:
        `{"loss": L, "loss_base": L_base, "loss_coherence": L_coherence}`, float32 scalars.
    """
    target = v_target(alphas_cumprod, x0, noise, timesteps)
    if sample_weights is None:
        loss_base = F.mse_loss(model_output.float(), target, reduction="mean")
    else:
        if sample_weights.shape != (model_output.shape[0],):
            raise ValueError(
                f"sample_weights must have one factor per sample, shape ({model_output.shape[0]},), got "
                f"{tuple(sample_weights.shape)}"
            )
        per_sample = F.mse_loss(model_output.float(), target, reduction="none").flatten(1).mean(1)
        loss_base = (per_sample * sample_weights.to(per_sample)).mean()
    if coherence_weight:
        predicted_x0 = x0_from_v(alphas_cumprod, noisy, model_output, timesteps)
        loss_coherence = coherence_loss(predicted_x0, x0.float())
    else:
        loss_coherence = torch.zeros((), device=model_output.device)
    return {
        "loss": loss_base + coherence_weight * loss_coherence,
        "loss_base": loss_base,
        "loss_coherence": loss_coherence,
    }
