"""--sampler_trajectory_fraction: samples drawn where the sampler's later steps are, from its first estimate
(train/common.py, train/deblur_training.py)."""

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
import deblur_training  # noqa: E402


def sampler() -> DDIMScheduler:
    # The shipped model's sampler: scaled-linear betas, trailing spacing, v-prediction.
    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        set_alpha_to_one=False,
        clip_sample=False,
    )


def later_timesteps(steps: int = 50) -> torch.Tensor:
    scheduler = sampler()
    scheduler.set_timesteps(steps)
    return scheduler.timesteps[1:]


class Estimates:
    """A stand-in for the model's first step: returns `x0 + offset` for the rows asked, and records the calls."""

    def __init__(self, x0: torch.Tensor, offset: float = 0.3):
        self.x0, self.offset, self.calls = x0, offset, []

    def __call__(self, start: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        self.calls.append((start.clone(), rows.clone()))
        return self.x0[rows] + self.offset


def forward_draws(batch, step):
    """A training step's draws before the trajectory ones: the schedule, the noise stream at `step`, the targets,
    and the forward process's noise, timesteps and noisy samples."""
    alphas = sampler().alphas_cumprod
    rng = common.NoiseRNG(torch.device("cpu"), seed=0)
    rng.reseed(step)
    x0 = torch.randn(batch, 4, 3, 5, 5, generator=torch.Generator().manual_seed(step))
    noise, timesteps, _ = common.diffusion_draws(rng, tuple(x0.shape), 1000, 0.1, "cpu")
    return alphas, rng, x0, noise, timesteps, add_noise(alphas, x0, noise, timesteps)


def draws(batch, probability, noise_scale=0.0, step=0, trajectory=None, start_fraction=0.0):
    alphas, rng, x0, noise, timesteps, forward = forward_draws(batch, step)
    if start_fraction:
        forward, noise, timesteps = common.inference_start_draws(
            rng, alphas, x0, forward, noise, timesteps, start_fraction, noise_scale
        )
    estimates = Estimates(x0)
    trajectory = later_timesteps() if trajectory is None else trajectory
    out = common.sampler_trajectory_draws(
        rng, alphas, x0, forward, noise, timesteps, probability, trajectory, estimates, noise_scale
    )
    return alphas, x0, estimates, (forward, noise, timesteps), out


@pytest.mark.parametrize("noise_scale", [0.0, 1.0])
def test_picked_samples_get_the_ddim_step_from_the_models_estimate_and_a_target_that_recovers_x0(noise_scale):
    trajectory = torch.tensor([979])  # the second timestep of the 50-step trailing schedule
    alphas, x0, estimates, (_, noise, _), (noisy, new_noise, timesteps) = draws(
        6, 1.0, noise_scale, trajectory=trajectory
    )
    assert torch.equal(timesteps, torch.full((6,), 979))
    ((start, rows),) = estimates.calls  # one batched call for all the picked samples
    assert torch.equal(rows, torch.arange(6)) and torch.equal(start, noise * noise_scale)
    # x_t is what the real DDIM sampler (eta 0) makes from that start when the model's estimate is x0 + 0.3.
    scheduler = sampler()
    scheduler.set_timesteps(50)
    t_start = torch.full((6,), 999)
    v_estimate = v_target(
        alphas, x0 + 0.3, (start - alphas[999].sqrt() * (x0 + 0.3)) / (1 - alphas[999]).sqrt(), t_start
    )
    assert torch.allclose(x0_from_v(alphas, start, v_estimate, t_start), x0 + 0.3, atol=1e-5)
    expected = scheduler.step(v_estimate, 999, start, eta=0.0).prev_sample
    assert torch.allclose(noisy, expected, atol=1e-5)
    if noise_scale == 0.0:
        # From a noise-free start the input is a small scaled copy of the estimate (about 0.9 % at t = 979).
        ratio = noisy / (x0 + 0.3)
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-4)
        assert 0.005 < float(ratio.flatten()[0]) < 0.015
    # The v-target made from the implied noise is the v whose clean sample from that x_t is the target itself.
    target = v_target(alphas, x0, new_noise, timesteps)
    assert torch.allclose(x0_from_v(alphas, noisy, target, timesteps), x0, atol=1e-4)


def test_only_samples_left_by_the_start_draws_are_picked_and_the_rest_keep_their_draws():
    steps = later_timesteps()
    shares = []
    for step in range(20):
        _, _, estimates, (forward, noise, timesteps), (noisy, new_noise, new_timesteps) = draws(
            32, 0.5, step=step, start_fraction=0.5
        )
        at_start = timesteps == 999
        picked = torch.zeros(32, dtype=torch.bool)
        for _, rows in estimates.calls:
            picked[rows] = True
        assert not torch.any(picked & at_start)
        assert torch.all(torch.isin(new_timesteps[picked], steps))
        kept = ~picked
        assert torch.equal(noisy[kept], forward[kept]) and torch.equal(new_noise[kept], noise[kept])
        assert torch.equal(new_timesteps[kept], timesteps[kept])
        shares.append(float(picked.float().mean()))
    assert abs(sum(shares) / len(shares) - 0.25) < 0.06  # 0.5 of the half the start draws left


def test_the_random_stream_does_not_depend_on_what_is_picked():
    # The draws after these (the next step's) must not shift with the picks: as many numbers are drawn either way.
    states = []
    for probability in (0.0, 1.0):
        alphas = sampler().alphas_cumprod
        rng = common.NoiseRNG(torch.device("cpu"), seed=0)
        rng.reseed(5)
        x0 = torch.randn(8, 4, 3, 5, 5)
        noise, timesteps, _ = common.diffusion_draws(rng, tuple(x0.shape), 1000, 0.1, "cpu")
        forward = add_noise(alphas, x0, noise, timesteps)
        common.sampler_trajectory_draws(
            rng, alphas, x0, forward, noise, timesteps, probability, later_timesteps(), Estimates(x0), 0.0
        )
        states.append(rng.generator.get_state())
    assert torch.equal(states[0], states[1])


def test_nothing_picked_means_no_model_call_and_unchanged_draws():
    _, _, estimates, (forward, noise, timesteps), (noisy, new_noise, new_timesteps) = draws(8, 0.0)
    assert estimates.calls == []
    assert torch.equal(noisy, forward) and torch.equal(new_noise, noise) and torch.equal(new_timesteps, timesteps)


class RecordingModel(torch.nn.Module):
    """A real module with dropout standing in for `DeblurModel`: records each call's inputs and training mode, and
    returns v = 2 x noisy + keep (so the conditional and unconditional predictions differ by 1)."""

    def __init__(self):
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)
        self.calls = []

    def forward(self, noisy, cond, timesteps, centre, keep):
        self.calls.append(
            dict(noisy=noisy, cond=cond, timesteps=timesteps, centre=centre, keep=keep, training=self.training)
        )
        return self.dropout(noisy * 2 + keep.view(-1, 1, 1, 1, 1))


@pytest.mark.parametrize("training", [True, False])
def test_the_first_estimate_is_the_conditional_eval_mode_clean_sample_at_the_last_timestep(training):
    alphas = sampler().alphas_cumprod
    model = RecordingModel().train(training)
    cond, centre = torch.randn(4, 2, 3, 5, 5), torch.randn(4, 3, 8, 8)
    start = torch.randn(2, 2, 3, 5, 5)
    rows = torch.tensor([1, 3])
    with torch.enable_grad():
        estimate = deblur_training.first_estimate_fn(model, alphas, cond, centre)(start, rows)
    (call,) = model.calls
    assert call["training"] is False and model.training is training  # eval for the pass, the mode restored after
    assert torch.equal(call["timesteps"], torch.full((2,), 999)) and torch.equal(call["keep"], torch.ones(2))
    assert torch.equal(call["cond"], cond[rows]) and torch.equal(call["centre"], centre[rows])
    assert not estimate.requires_grad
    t = torch.full((2,), 999)
    assert torch.allclose(estimate, x0_from_v(alphas, start, start * 2 + 1, t))  # no dropout in the estimate


@pytest.mark.parametrize("scale", [2.0, 3.5])
def test_a_guided_first_estimate_combines_the_two_halves_of_one_pass_as_the_pipeline_does(scale):
    alphas = sampler().alphas_cumprod
    model = RecordingModel().train()
    cond, centre = torch.randn(4, 2, 3, 5, 5), torch.randn(4, 3, 8, 8)
    start = torch.randn(2, 2, 3, 5, 5)
    rows = torch.tensor([0, 2])
    estimate = deblur_training.first_estimate_fn(model, alphas, cond, centre, scale)(start, rows)
    (call,) = model.calls  # one pass on the doubled batch: the conditional half first, then the unconditional one
    assert torch.equal(call["keep"], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert call["training"] is False and model.training  # eval mode for the pass, the mode restored after
    # Same input, rows and timestep for both halves.
    assert torch.equal(call["noisy"], torch.cat([start, start]))
    assert torch.equal(call["cond"], cond[rows].repeat(2, 1, 1, 1, 1))
    assert torch.equal(call["centre"], centre[rows].repeat(2, 1, 1, 1))
    assert torch.equal(call["timesteps"], torch.full((4,), 999))
    # uncond + scale x (cond - uncond) = 2 start + scale, as the pipeline's guidance gives from these two outputs.
    t = torch.full((2,), 999)
    assert torch.allclose(estimate, x0_from_v(alphas, start, start * 2 + scale, t))


@pytest.mark.parametrize(
    "start_fraction, fraction, probability", [(0.5, 0.25, 0.5), (0.0, 0.3, 0.3), (0.5, 0.5, 1.0), (1.0, 0.0, 0.0)]
)
def test_the_fraction_of_all_samples_becomes_a_pick_probability_among_those_left(
    start_fraction, fraction, probability
):
    args = parse("--inference_start_fraction", str(start_fraction), "--sampler_trajectory_fraction", str(fraction))
    assert deblur_training.trajectory_pick_probability(args) == pytest.approx(probability)


def test_sharded_parameters_on_several_processes_are_refused():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    def accelerator(kind, processes, zero_stage=None):
        plugin = SimpleNamespace(zero_stage=zero_stage) if zero_stage else None
        return SimpleNamespace(
            num_processes=processes, distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=plugin)
        )

    deblur_training.refuse_sharded_trajectory_draws(accelerator(DistributedType.FSDP, 1))
    deblur_training.refuse_sharded_trajectory_draws(accelerator(DistributedType.MULTI_GPU, 4))
    deblur_training.refuse_sharded_trajectory_draws(accelerator(DistributedType.DEEPSPEED, 4, zero_stage=2))
    for kind, stage in ((DistributedType.FSDP, None), (DistributedType.DEEPSPEED, 3)):
        with pytest.raises(ValueError, match="--sampler_trajectory_fraction is not supported with .* on 4 processes"):
            deblur_training.refuse_sharded_trajectory_draws(accelerator(kind, 4, zero_stage=stage))


def test_defaults_draw_no_trajectory_samples():
    args = parse()
    assert args.sampler_trajectory_fraction == 0.0 and args.sampler_trajectory_steps == 50
    assert args.sampler_trajectory_guidance_scale == 1.0
    assert (
        parse("--inference_start_fraction", "0.5", "--sampler_trajectory_fraction", "0.5").sampler_trajectory_fraction
        == 0.5
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sampler_trajectory_fraction", "-0.1"], "--sampler_trajectory_fraction must be in [0, 1 - "),
        (
            ["--inference_start_fraction", "0.75", "--sampler_trajectory_fraction", "0.5"],
            "--sampler_trajectory_fraction must be in [0, 1 - --inference_start_fraction] = [0, 0.25], got 0.5",
        ),
        (["--sampler_trajectory_steps", "1"], "--sampler_trajectory_steps must be at least 2, got 1"),
        (
            ["--sampler_trajectory_guidance_scale", "0.5"],
            "--sampler_trajectory_guidance_scale must be a finite number >= 1, got 0.5",
        ),
        (["--sampler_trajectory_guidance_scale", "nan"], "--sampler_trajectory_guidance_scale must be a finite"),
        (["--sampler_trajectory_guidance_scale", "inf"], "--sampler_trajectory_guidance_scale must be a finite"),
    ],
)
def test_bad_values_are_refused(flags, message):
    with pytest.raises(ValueError) as error:
        parse(*flags)
    assert message in str(error.value)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_the_first_estimate_is_what_the_pipeline_s_first_step_predicts(scale):
    """The real `DeblurModel` on a tiny pipeline: the estimate equals the clean sample implied by the guided model
    output the pipeline hands its scheduler at its first step, from the same start, blurred latents and frame."""
    from tiny import tiny_pipeline, tiny_video

    torch.manual_seed(0)
    pipe = tiny_pipeline()
    seen = {}
    step = pipe.scheduler.step

    def record_first_step(model_output, timestep, sample, *args, **kwargs):
        seen.setdefault("step", (model_output.clone(), int(timestep), sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    def record_unet_input(module, inputs):
        seen.setdefault("unet_input", inputs[0].clone())

    pipe.scheduler.step = record_first_step
    hook = pipe.unet.register_forward_pre_hook(record_unet_input)
    video = tiny_video(4)
    try:
        pipe(video, num_inference_steps=2, guidance_scale=scale, noise_scale=1.0, generator=torch.manual_seed(1))
    finally:
        hook.remove()
    model_output, timestep, start = seen["step"]
    assert timestep == 999
    cond = seen["unet_input"][:1, start.shape[1] :]  # the blurred clip's latents, concatenated after the sample
    centre = video[None, (video.shape[0] - 1) // 2]  # the frame training embeds, as the pipeline's one window does

    model = deblur_training.DeblurModel(pipe).train()
    alphas = pipe.scheduler.alphas_cumprod
    estimate = deblur_training.first_estimate_fn(model, alphas, cond, centre, scale)(start, torch.tensor([0]))
    expected = x0_from_v(alphas, start, model_output, torch.tensor([999]))
    assert torch.allclose(estimate, expected, atol=1e-5)
    assert not torch.allclose(expected, x0_from_v(alphas, start, torch.zeros_like(start), torch.tensor([999])))


def test_the_training_loss_makes_its_first_estimates_at_the_guidance_scale_asked(monkeypatch, tmp_path):
    """The flag reaches the loss: `make_loss_fn` builds its estimates at --sampler_trajectory_guidance_scale."""
    import stage2_finetune
    from accelerate import Accelerator
    from tiny import tiny_pipeline, tiny_video

    scales = []
    real = deblur_training.first_estimate_fn

    def recording(model, alphas, cond, centre, guidance_scale=1.0):
        scales.append(guidance_scale)
        return real(model, alphas, cond, centre, guidance_scale)

    monkeypatch.setattr(deblur_training, "first_estimate_fn", recording)
    args = stage2_finetune.parse_args(
        ["--pretrained_model_name_or_path", "p", "--train_data_dir", "d", "--output_dir", str(tmp_path),
         "--sampler_trajectory_fraction", "1",
         "--sampler_trajectory_guidance_scale", "3", "--sampler_trajectory_steps", "10"]
    )  # fmt: skip
    accelerator = Accelerator(cpu=True)  # the real one, as test_output_safety builds it
    pipe = tiny_pipeline()
    model = deblur_training.DeblurModel(pipe)
    rng = common.NoiseRNG(torch.device("cpu"), 0)
    rng.reseed(0)
    compute_loss = deblur_training.make_loss_fn(args, accelerator, pipe, model, rng)
    clip = tiny_video(4)[None]
    losses = compute_loss({"blur": clip, "sharp": clip.flip(-1)})
    assert scales == [3.0] and torch.isfinite(losses["loss"])


class LaterEstimates:
    """A stand-in for the model's later estimates: `x0 + offset` for the rows asked, recording each call."""

    def __init__(self, x0: torch.Tensor, offset: float = 0.1):
        self.x0, self.offset, self.calls = x0, offset, []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.clone(), t.clone(), rows.clone()))
        return self.x0[rows] + self.offset


def two_hop_draws(batch, trajectory, step=0, hops=2):
    alphas, rng, x0, noise, timesteps, forward = forward_draws(batch, step)
    first, later = Estimates(x0), LaterEstimates(x0)
    out = common.sampler_trajectory_draws(
        rng, alphas, x0, forward, noise, timesteps, 1.0, trajectory, first, 0.0, hops=hops, later_estimate=later
    )
    return alphas, x0, first, later, out, rng.generator.get_state()


def test_two_hops_make_the_input_the_sampler_s_step_from_its_estimate_at_the_timestep_before():
    trajectory = later_timesteps(5)  # 799, 599, 399, 199
    alphas, x0, first, later, (noisy, new_noise, timesteps), _ = two_hop_draws(16, trajectory)
    ((start, rows),) = first.calls
    ((x_prev, t_prev, later_rows),) = later.calls  # one batched call for the picked samples past the second step
    picked_t = timesteps[rows]
    past_second = picked_t != 799
    assert bool(past_second.any()) and bool((~past_second).any())  # this draw has both kinds
    assert torch.equal(later_rows, rows[past_second])
    # The later estimate is asked at the sampler's timestep just before the one drawn (5-step trailing: + 200) ...
    assert torch.equal(t_prev, picked_t[past_second] + 200)
    scheduler = sampler()
    scheduler.set_timesteps(5)
    first_estimate, later_estimate = x0 + 0.3, x0 + 0.1

    def start_eps(row):  # the noise implied by the start and the first estimate
        i = int((rows == row).nonzero())
        return (start[i] - alphas[999].sqrt() * first_estimate[row]) / (1 - alphas[999]).sqrt()

    for k, row in enumerate(later_rows.tolist()):
        # ... on the input the first estimate gives there (a DDIM jump from the start, eta 0) ...
        a = alphas[int(t_prev[k])]
        assert torch.allclose(x_prev[k], a.sqrt() * first_estimate[row] + (1 - a).sqrt() * start_eps(row), atol=1e-5)
        # ... and the input at the drawn timestep is the real sampler's step from there with that estimate.
        t = torch.tensor([int(t_prev[k])])
        eps = (x_prev[k : k + 1] - a.sqrt() * later_estimate[row : row + 1]) / (1 - a).sqrt()
        v = v_target(alphas, later_estimate[row : row + 1], eps, t)
        expected = scheduler.step(v, int(t_prev[k]), x_prev[k : k + 1], eta=0.0).prev_sample
        assert torch.allclose(noisy[row : row + 1], expected, atol=1e-5)
    # Picked at the sampler's second timestep: the first estimate's step, exact there, as with one hop.
    for row in rows[~past_second].tolist():
        expected = alphas[799].sqrt() * first_estimate[row] + (1 - alphas[799]).sqrt() * start_eps(row)
        assert torch.allclose(noisy[row], expected, atol=1e-5)
    # Either way the v-target recovers the target from the new input.
    target = v_target(alphas, x0, new_noise, timesteps)
    assert torch.allclose(x0_from_v(alphas, noisy, target, timesteps), x0, atol=1e-4)


def test_two_hops_draw_the_same_timesteps_and_random_numbers_as_one():
    trajectory = later_timesteps()
    *_, (noisy1, _, t1), state1 = two_hop_draws(16, trajectory, step=3, hops=1)
    _, _, _, later, (noisy2, _, t2), state2 = two_hop_draws(16, trajectory, step=3, hops=2)
    assert torch.equal(t1, t2) and torch.equal(state1, state2)
    changed = t2 != 979
    assert not torch.allclose(noisy1[changed], noisy2[changed])  # made from the later estimate instead
    assert torch.equal(noisy1[~changed], noisy2[~changed])


def test_two_hops_at_the_second_timestep_only_need_no_later_estimate():
    _, _, first, later, _, _ = two_hop_draws(6, torch.tensor([979]))
    assert len(first.calls) == 1 and later.calls == []


def test_two_hops_without_a_later_estimate_or_other_hop_counts_are_refused():
    alphas = sampler().alphas_cumprod
    rng = common.NoiseRNG(torch.device("cpu"), seed=0)
    x0 = torch.zeros(2, 4, 3, 5, 5)
    t = torch.zeros(2, dtype=torch.long)
    for hops, later in ((2, None), (3, LaterEstimates(x0)), (0, None)):
        with pytest.raises(ValueError, match=f"hops must be 1, or 2 with a later_estimate, got {hops}"):
            common.sampler_trajectory_draws(
                rng, alphas, x0, x0, x0, t, 1.0, later_timesteps(), Estimates(x0), 0.0, hops, later
            )
    with pytest.raises(ValueError, match="--sampler_trajectory_hops must be 1 or 2, got 3"):
        parse("--sampler_trajectory_hops", "3")
    assert parse().sampler_trajectory_hops == 1


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_the_later_estimate_is_the_eval_mode_guided_clean_sample_at_each_row_s_own_timestep(scale):
    alphas = sampler().alphas_cumprod
    model = RecordingModel().train()
    cond, centre = torch.randn(4, 2, 3, 5, 5), torch.randn(4, 3, 8, 8)
    x_t = torch.randn(2, 2, 3, 5, 5)
    rows, t = torch.tensor([3, 1]), torch.tensor([519, 39])
    estimate = deblur_training.estimate_fn(model, alphas, cond, centre, scale)(x_t, t, rows)
    (call,) = model.calls
    assert call["training"] is False and model.training
    assert torch.equal(call["timesteps"], t if scale == 1.0 else torch.cat([t, t]))
    assert torch.equal(call["cond"][:2], cond[rows]) and torch.equal(call["centre"][:2], centre[rows])
    assert torch.allclose(estimate, x0_from_v(alphas, x_t, x_t * 2 + scale, t))


def test_the_training_loss_with_two_hops_asks_the_model_at_the_sampler_s_later_timesteps(monkeypatch, tmp_path):
    """--sampler_trajectory_hops 2 reaches the loss: the real model is asked for later estimates at timesteps of the
    sampler's schedule, below its start, at the guidance scale asked."""
    import stage2_finetune
    from accelerate import Accelerator
    from tiny import tiny_pipeline, tiny_video

    asked = []
    real = deblur_training.estimate_fn

    def recording(model, alphas, cond, centre, guidance_scale=1.0):
        estimate = real(model, alphas, cond, centre, guidance_scale)

        def wrapped(x_t, t, rows):
            asked.append((t.tolist(), guidance_scale))
            return estimate(x_t, t, rows)

        return wrapped

    monkeypatch.setattr(deblur_training, "estimate_fn", recording)
    args = stage2_finetune.parse_args(
        ["--pretrained_model_name_or_path", "p", "--train_data_dir", "d", "--output_dir", str(tmp_path),
         "--sampler_trajectory_fraction", "1", "--sampler_trajectory_hops", "2",
         "--sampler_trajectory_guidance_scale", "2", "--sampler_trajectory_steps", "10"]
    )  # fmt: skip
    pipe = tiny_pipeline()
    model = deblur_training.DeblurModel(pipe)
    rng = common.NoiseRNG(torch.device("cpu"), 0)
    compute_loss = deblur_training.make_loss_fn(args, Accelerator(cpu=True), pipe, model, rng)
    clip = tiny_video(4)[None]
    for step in range(4):
        rng.reseed(step)
        assert torch.isfinite(compute_loss({"blur": clip, "sharp": clip.flip(-1)})["loss"])
    scheduler = sampler()
    scheduler.set_timesteps(10)
    later = scheduler.timesteps[1:-1].tolist()  # a timestep before the drawn one: never the start, never the last
    first = [t for t, _ in asked if t == [999]]
    refined = [t for t, _ in asked if t != [999]]
    assert len(first) == 4 and refined and all(t[0] in later for t in refined)
    assert {scale for _, scale in asked} == {2.0}


def test_return_rows_names_the_picked_samples_and_changes_nothing_else():
    alphas, rng, x0, noise, timesteps, forward = forward_draws(16, 3)
    plain = common.sampler_trajectory_draws(
        rng, alphas, x0, forward, noise, timesteps, 0.5, later_timesteps(), Estimates(x0), 0.0
    )
    alphas, rng, x0, noise, timesteps, forward = forward_draws(16, 3)
    estimates = Estimates(x0)
    *out, rows = common.sampler_trajectory_draws(
        rng, alphas, x0, forward, noise, timesteps, 0.5, later_timesteps(), estimates, 0.0, return_rows=True
    )
    for a, b in zip(plain, out):
        assert torch.equal(a, b)
    ((_, called),) = estimates.calls
    assert torch.equal(rows, called) and 0 < rows.numel() < 16
    _, _, _, none = common.sampler_trajectory_draws(
        rng, alphas, x0, forward, noise, timesteps, 0.0, later_timesteps(), Estimates(x0), 0.0, return_rows=True
    )
    assert none.numel() == 0


def test_the_weight_cap_scales_only_the_path_draws_and_only_where_their_weight_passes_it():
    alphas = sampler().alphas_cumprod
    timesteps = torch.tensor([19, 19, 659, 979, 500])
    rows = torch.tensor([0, 2, 3])  # row 1 has the same t but was drawn from the forward process
    weights = common.path_loss_weights(alphas, timesteps, rows, cap=5.0)
    # Under the v-loss the x0 error of a sample at t weighs 1 / (1 - alpha_t): about 56 at t = 19, 1.1 at t = 659.
    assert 50 < float(1 / (1 - alphas[19])) < 60 and float(1 / (1 - alphas[659])) < 1.2
    torch.testing.assert_close(weights, torch.tensor([5 * (1 - float(alphas[19])), 1.0, 1.0, 1.0, 1.0]))
    assert float(weights[0] / (1 - alphas[19])) == pytest.approx(5.0)  # the capped x0 weight is the cap
    assert common.path_loss_weights(alphas, timesteps, rows, cap=None) is None
    assert common.path_loss_weights(alphas, timesteps, torch.zeros(0, dtype=torch.long), cap=5.0) is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--sampler_trajectory_weight_cap", "5"],
            "--sampler_trajectory_weight_cap 5 weights the --sampler_trajectory_fraction draws: it needs "
            "--sampler_trajectory_fraction > 0, got 0",
        ),
        (
            ["--sampler_trajectory_fraction", "0.25", "--sampler_trajectory_weight_cap", "0.5"],
            "--sampler_trajectory_weight_cap must be a finite number >= 1, got 0.5",
        ),
        (
            ["--sampler_trajectory_fraction", "0.25", "--sampler_trajectory_weight_cap", "nan"],
            "--sampler_trajectory_weight_cap must be a finite number >= 1, got nan",
        ),
    ],
)
def test_bad_weight_caps_are_refused(flags, message):
    with pytest.raises(ValueError) as error:
        parse(*flags)
    assert message in str(error.value)
    assert parse().sampler_trajectory_weight_cap is None
