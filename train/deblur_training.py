"""Stages 1 and 2 share everything but what they train: this module holds the shared part.

One optimiser step (DESIGN 1-2):

1. encode the blurred and the sharp clip with the (frozen) VAE: `cond` and `sharp` latents (B, C, F, h, w);
2. the diffusion target x0 is `sharp`, or `sharp - cond` with `--residual` (DESIGN 2.8);
3. draw t uniform in [0, 1000), noise, and a per-sample keep mask (0 with probability `--condition_dropout`);
   with `--inference_start_fraction`, that fraction of the samples gets the sampler's start at t = 999 instead
   (noise x the pipeline's `noise_scale`, no trace of the target; `common.inference_start_draws`), and with
   `--sampler_trajectory_fraction` a fraction gets the model's own first estimate from that start, stepped by DDIM
   straight to a later timestep of the sampler's schedule (`common.sampler_trajectory_draws`);
4. the UNet sees [x_t, cond] on the channel axis and the two image tokens of the blurred centre frame
   (`image_encoder`, `blur_encoder`), zeroed where the mask drops them;
5. L = MSE(v_pred, v) + lambda * L_coherence(x0_pred, x0) (Eq. 3-5), in latents (or in pixels with
   `--coherence_space pixel`).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import common
import torch
from common import clip_embed, diffusion_draws, log_image, psnr, save_comparison, timestep_weights  # noqa: F401

from pipeline_video_deblur import VideoDeblurPipeline
from pipeline_video_deblur.losses import add_noise, coherence_loss, deblur_loss, x0_from_v

logger = logging.getLogger("train")


def add_deblur_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--pretrained_model_name_or_path",
        required=True,
        help="VideoDeblurPipeline folder (from `video-deblur convert` or stage 1)",
    )
    group.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "target sharp - blurred latents (DESIGN 2.8); saved in the pipeline config. Default: the input "
            "pipeline's setting"
        ),
    )
    group.add_argument(
        "--coherence_weight", type=float, default=0.1, help="lambda of Eq. 4 (paper: 0.1); 0 disables it"
    )
    group.add_argument(
        "--coherence_space",
        choices=["latent", "pixel"],
        default="latent",
        help="Eq. 5 on predicted x0 latents (default) or decoded frames",
    )
    group.add_argument(
        "--latent_scaling_factor",
        type=_scaling_factor,
        default=None,
        help=(
            "set the VAE's latent scaling factor before training (saved with the pipeline): a number, or `auto` for "
            "1 / std of the training targets (with --residual the target, sharp - blurred, is much smaller than the "
            "latents; `auto` makes it unit-variance, the range the noise schedule is made for). Default: keep the "
            "input pipeline's"
        ),
    )
    group.add_argument(
        "--inference_start_fraction",
        type=float,
        default=0.0,
        help=(
            "fraction of the samples drawn at the sampler's first step as inference meets it: the last timestep, from "
            "the pipeline's start (noise x --inference_start_noise_scale, with no trace of the target, which the "
            "forward process leaves at t = T - 1 on a schedule without zero terminal SNR); the loss asks for the "
            "target from there. 0 (default) draws every sample from the forward process"
        ),
    )
    group.add_argument(
        "--inference_start_noise_scale",
        type=float,
        default=None,
        help="what those starts' noise is multiplied by (>= 0). Default: the input pipeline's `noise_scale`",
    )
    group.add_argument(
        "--sampler_trajectory_fraction",
        type=float,
        default=0.0,
        help=(
            "fraction of the samples drawn where the sampler's later steps are: the model's first estimate from "
            "the start (an extra forward pass in eval mode, without gradient, for those samples only; two with "
            "--sampler_trajectory_guidance_scale > 1) stepped by DDIM straight to a later timestep of a "
            "--sampler_trajectory_steps schedule, "
            "the noise-free input the later steps of a run from a noise-free start get (exact at its second step); "
            "the loss asks for the target from there. Taken from the samples that --inference_start_fraction "
            "leaves (the two add up to at most 1). Not with FSDP or DeepSpeed ZeRO-3 on several processes (the "
            "extra pass runs only where a sample was picked). 0 (default): none"
        ),
    )
    group.add_argument(
        "--sampler_trajectory_steps",
        type=int,
        default=50,
        help="the number of sampler steps whose timesteps (after the first) those draws use (default: 50)",
    )
    group.add_argument(
        "--sampler_trajectory_guidance_scale",
        type=float,
        default=1.0,
        help=(
            "the CFG scale of that first estimate, as the pipeline's `guidance_scale` (> 1: an unconditional "
            "prediction too, in the same pass on the doubled batch, combined as uncond + scale x (cond - uncond)). "
            "Set it to the scale you sample at (the pipeline default is 2) to train the inputs that run gives. "
            "1 (default): conditional only"
        ),
    )
    group.add_argument(
        "--sampler_trajectory_hops",
        type=int,
        default=1,
        help=(
            "2: those inputs are made from the model's estimate at the sampler's timestep just before the one "
            "drawn (itself reached from the first estimate; one more pass without gradient, at the same CFG), as "
            "the sampler's own later steps make them from estimates the steps before have refined, instead of "
            "from the first estimate. 1 (default): from the first estimate"
        ),
    )
    group.add_argument(
        "--sampler_trajectory_cache",
        nargs="+",
        default=None,
        metavar="FILE",
        help=(
            "one or more files from train/cache_sampler_path.py (several are joined into one set of crops: more crops"
            " with its --first_clip, or the path of a later checkpoint): the --sampler_trajectory_fraction draws take"
            " a cached training crop and the input the real sampler gave the model at one of its later timesteps (its"
            " whole path from the start, at the CFG the cache was made with), instead of building that input from the"
            " model's first estimate; no extra forward pass. The cache is made once from some weights and goes stale "
            "as training moves them: remake it from a later checkpoint for long runs. Default: none"
        ),
    )
    group.add_argument(
        "--sampler_trajectory_weight_cap",
        type=float,
        default=None,
        help=(
            "cap the loss weight of the --sampler_trajectory_fraction draws: their v-loss is scaled by min(1, CAP x "
            "(1 - alpha_t)), so that their weight on the error of the clean sample, 1 / (1 - alpha_t) under the "
            "v-loss (about 56 at the 50-step sampler's last timestep), is at most CAP; the other samples keep theirs. "
            "Default: none (the plain v-loss)"
        ),
    )
    group.add_argument("--validation_guidance_scale", type=float, default=2.0, help="CFG scale of the validation runs")
    return parser


def check_deblur_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.inference_start_fraction <= 1.0:
        raise ValueError(f"--inference_start_fraction must be in [0, 1], got {args.inference_start_fraction}")
    trajectory = args.sampler_trajectory_fraction
    if not 0.0 <= trajectory <= 1.0 - args.inference_start_fraction + 1e-9:
        raise ValueError(
            f"--sampler_trajectory_fraction must be in [0, 1 - --inference_start_fraction] = "
            f"[0, {1.0 - args.inference_start_fraction:g}], got {trajectory}"
        )
    guidance = args.sampler_trajectory_guidance_scale
    if not (math.isfinite(guidance) and guidance >= 1.0):
        raise ValueError(f"--sampler_trajectory_guidance_scale must be a finite number >= 1, got {guidance}")
    if args.sampler_trajectory_steps < 2:
        raise ValueError(f"--sampler_trajectory_steps must be at least 2, got {args.sampler_trajectory_steps}")
    if args.sampler_trajectory_hops not in (1, 2):
        raise ValueError(f"--sampler_trajectory_hops must be 1 or 2, got {args.sampler_trajectory_hops}")
    if args.sampler_trajectory_cache is not None:
        if trajectory <= 0:
            raise ValueError(
                f"--sampler_trajectory_cache {' '.join(args.sampler_trajectory_cache)} needs "
                "--sampler_trajectory_fraction > 0 (the share of the samples drawn from it), got 0"
            )
        if args.sampler_trajectory_hops != 1:
            raise ValueError(
                "--sampler_trajectory_hops 2 builds inputs from the model's estimates; with --sampler_trajectory_cache "
                f"the inputs are the cached path's: use --sampler_trajectory_hops 1, got {args.sampler_trajectory_hops}"
            )
    cap = args.sampler_trajectory_weight_cap
    if cap is not None:
        if not (math.isfinite(cap) and cap >= 1.0):
            raise ValueError(f"--sampler_trajectory_weight_cap must be a finite number >= 1, got {cap}")
        if trajectory <= 0:
            raise ValueError(
                f"--sampler_trajectory_weight_cap {cap:g} weights the --sampler_trajectory_fraction draws: it needs "
                "--sampler_trajectory_fraction > 0, got 0"
            )
    scale = args.inference_start_noise_scale
    if scale is not None and not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"--inference_start_noise_scale must be a finite number >= 0, got {scale}")


def _scaling_factor(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected `auto` or a positive number, got {value!r}")
    return number


def prepare(args: argparse.Namespace, log_name: str):
    """What stages 1 and 2 set up alike, in order: paths checked before anything loads, the accelerator, the
    pipeline (with `--residual` and `--latent_scaling_factor` applied), the training data and validation clips.

    Returns `(accelerator, weight_dtype, pipe, dataloader, sampler, clips)`.
    """
    common.check_output_dir(
        args.output_dir,
        {
            "--pretrained_model_name_or_path": args.pretrained_model_name_or_path,
            "--train_data_dir": args.train_data_dir,
        },
        resume=args.resume_from_checkpoint,
        overwrite=args.overwrite_output_dir,
    )
    accelerator = common.make_accelerator(args, log_name)
    weight_dtype = common.weight_dtype_of(accelerator)

    # Errors for sizes and clip lengths come here, before training
    pipe = load_pipeline(args, accelerator, weight_dtype)
    common.set_attention(args, accelerator, pipe.unet)
    for flag in ("--resolution", "--validation_resolution"):
        common.check_resolution(
            getattr(args, flag[2:]), pipe.size_multiple, "the VAE factor times the UNet's downsampling", flag
        )
    dataset = common.load_dataset(args, "train", args.resolution, args.num_frames, augment=True)
    dataloader, sampler = common.make_train_dataloader(args, dataset)
    clips = common.validation_clips(args)
    if args.latent_scaling_factor is not None:
        factor = args.latent_scaling_factor
        if factor == "auto":
            factor = measure_target_scaling(args, accelerator, pipe, dataloader, sampler)
        previous = pipe.vae.config.scaling_factor
        pipe.vae.register_to_config(scaling_factor=float(factor))
        logger.info(f"latent scaling factor {previous:.4f} -> {float(factor):.4f}")
    return accelerator, weight_dtype, pipe, dataloader, sampler, clips


def measure_target_scaling(args, accelerator, pipe: VideoDeblurPipeline, dataloader, sampler, batches: int = 8):
    """1 / std of the unscaled diffusion targets (sharp latents, or sharp - blurred with --residual) over a few
    training batches (`common.inverse_std`: reproducible, so a resumed run measures the same value)."""

    def unscaled_target(batch: dict) -> torch.Tensor:
        sharp = pipe.encode_video(batch["sharp"].to(accelerator.device)).float()
        target = sharp - pipe.encode_video(batch["blur"].to(accelerator.device)).float() if args.residual else sharp
        return target / pipe.vae.config.scaling_factor

    return common.inverse_std(dataloader, sampler, unscaled_target, batches)


def load_pipeline(args: argparse.Namespace, accelerator, weight_dtype: torch.dtype) -> VideoDeblurPipeline:
    """Load the input pipeline, apply `--residual`, and put frozen parts on the device in `weight_dtype`."""
    path = Path(args.pretrained_model_name_or_path)
    if path.exists() and not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"--pretrained_model_name_or_path {path} is not a pipeline folder (no model_index.json)"
        )
    pipe = VideoDeblurPipeline.from_pretrained(str(path))
    if args.residual is not None and bool(args.residual) != bool(pipe.config.residual):
        logger.info(f"residual target: {pipe.config.residual} in the input pipeline, {args.residual} from --residual")
        pipe.register_to_config(residual=bool(args.residual))
    args.residual = bool(pipe.config.residual)
    pipe.set_progress_bar_config(disable=True)
    for frozen in (pipe.vae, pipe.image_encoder):
        frozen.requires_grad_(False).eval().to(accelerator.device)
        common.cast_frozen(frozen, weight_dtype)
    logger.info(f"frozen models: vae {pipe.vae.dtype}, image_encoder {pipe.image_encoder.dtype}")
    pipe.unet.to(accelerator.device)
    pipe.blur_encoder.to(accelerator.device)
    return pipe


class DeblurModel(torch.nn.Module):
    """What the optimiser trains (UNet and blur encoder, each fully or partly), as one module, so that accelerate,
    DDP and DeepSpeed wrap a single model. The frozen `image_encoder` is reached through the pipeline."""

    def __init__(self, pipe: VideoDeblurPipeline, unet_frozen: bool = False):
        super().__init__()
        self.unet = pipe.unet
        self.blur_encoder = pipe.blur_encoder
        self.unet_frozen = unet_frozen
        self._pipe = [pipe]  # a list: not registered as a submodule

    def train(self, mode: bool = True):
        # A frozen UNet body (stage 1) runs as at inference: no dropout in its temporal convolutions.
        super().train(mode)
        if self.unet_frozen:
            self.unet.eval()
        return self

    def forward(self, noisy, cond, timesteps, centre_frames, keep):
        context = self._pipe[0].encode_image(centre_frames)  # (B, 2, D): image_encoder, blur_encoder tokens
        context = context * keep.view(-1, 1, 1).to(context.dtype)  # condition dropout: zero both tokens
        unet_input = torch.cat([noisy, cond.to(noisy.dtype)], dim=1)  # (B, 2C, F, h, w)
        return self.unet(unet_input, timesteps, encoder_hidden_states=context).sample


def make_loss_fn(args, accelerator, pipe: VideoDeblurPipeline, model, noise_rng):
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if noise_scheduler.config.prediction_type != "v_prediction":
        logger.warning(
            f"the pipeline's scheduler has prediction_type={noise_scheduler.config.prediction_type!r}; training uses "
            "v-prediction (Eq. 3), the pipeline's sampler must be v_prediction to use the result"
        )
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(accelerator.device)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    device = accelerator.device
    weights = timestep_weights(args, num_train_timesteps, device)
    start_noise_scale = args.inference_start_noise_scale
    if start_noise_scale is None:
        start_noise_scale = pipe.default_noise_scale
    if args.inference_start_fraction > 0:
        logger.info(
            f"{args.inference_start_fraction:.0%} of the samples start at t = {num_train_timesteps - 1} from noise x "
            f"{start_noise_scale:g} (the sampler's start), the rest from the forward process"
        )

    trajectory = path_cache = None
    if args.sampler_trajectory_cache is not None:
        path_cache = common.SamplerPathCache(args.sampler_trajectory_cache, args.resolution, args.num_frames)
        trajectory_probability = trajectory_pick_probability(args)
        logger.info(
            f"{args.sampler_trajectory_fraction:.0%} of the samples are drawn on the sampler's cached path: "
            + path_cache.describe()
        )
    elif args.sampler_trajectory_fraction > 0:
        from diffusers import DDIMScheduler

        sampler = DDIMScheduler.from_config(pipe.scheduler.config)
        sampler.set_timesteps(args.sampler_trajectory_steps)
        trajectory = sampler.timesteps[1:].to(device)
        trajectory_probability = trajectory_pick_probability(args)
        refuse_sharded_trajectory_draws(accelerator)
        logger.info(
            f"{args.sampler_trajectory_fraction:.0%} of the samples are drawn on the {args.sampler_trajectory_steps}-step "
            f"sampler's path after its first step (t = {int(trajectory[0])} .. {int(trajectory[-1])}), from its "
            f"first estimate at CFG {args.sampler_trajectory_guidance_scale:g}"
            + (", refined at the timestep before the one drawn" if args.sampler_trajectory_hops == 2 else "")
        )
    if args.sampler_trajectory_weight_cap is not None:
        logger.info(
            f"those draws' v-loss is scaled by min(1, {args.sampler_trajectory_weight_cap:g} x (1 - alpha_t)): "
            f"their weight on the clean sample's error is at most {args.sampler_trajectory_weight_cap:g}"
        )

    def compute_loss(batch: dict) -> dict[str, torch.Tensor]:
        blur = batch["blur"].to(device, non_blocking=True)  # (B, F, 3, H, W) in [0, 1]
        sharp = batch["sharp"].to(device, non_blocking=True)
        with torch.no_grad():
            cond = pipe.encode_video(blur).float()  # (B, C, F, h, w)
            sharp_latents = pipe.encode_video(sharp).float()
        x0 = sharp_latents - cond if args.residual else sharp_latents
        noise, timesteps, keep = diffusion_draws(
            noise_rng, tuple(x0.shape), num_train_timesteps, args.condition_dropout, device, weights
        )
        noisy = add_noise(alphas_cumprod, x0, noise, timesteps)
        if args.inference_start_fraction > 0:
            noisy, noise, timesteps = common.inference_start_draws(
                noise_rng,
                alphas_cumprod,
                x0,
                noisy,
                noise,
                timesteps,
                args.inference_start_fraction,
                start_noise_scale,
            )
        path_rows = torch.zeros(0, dtype=torch.long, device=device)
        if path_cache is not None:
            blur, sharp, cond, x0, noisy, noise, timesteps, path_rows = cached_path_draws(
                pipe,
                path_cache,
                noise_rng,
                alphas_cumprod,
                trajectory_probability,
                args.residual,
                blur,
                sharp,
                cond,
                x0,
                noisy,
                noise,
                timesteps,
                return_rows=True,
            )
        centre = blur[:, (blur.shape[1] - 1) // 2]  # the pipeline embeds the centre frame of each window
        if trajectory is not None:
            start_estimate = first_estimate_fn(
                model, alphas_cumprod, cond, centre, args.sampler_trajectory_guidance_scale
            )
            later_estimate = None
            if args.sampler_trajectory_hops == 2:
                later_estimate = estimate_fn(
                    model, alphas_cumprod, cond, centre, args.sampler_trajectory_guidance_scale
                )
            noisy, noise, timesteps, path_rows = common.sampler_trajectory_draws(
                noise_rng,
                alphas_cumprod,
                x0,
                noisy,
                noise,
                timesteps,
                trajectory_probability,
                trajectory,
                start_estimate,
                start_noise_scale,
                hops=args.sampler_trajectory_hops,
                later_estimate=later_estimate,
                return_rows=True,
            )
        cap = args.sampler_trajectory_weight_cap
        path_weights = common.path_loss_weights(alphas_cumprod, timesteps, path_rows, cap)
        prediction = model(noisy, cond, timesteps, centre, keep)
        loss_args = (alphas_cumprod, prediction, noisy, x0, noise, timesteps)
        if args.coherence_space == "latent":
            return deblur_loss(*loss_args, args.coherence_weight, sample_weights=path_weights)
        losses = deblur_loss(*loss_args, coherence_weight=0.0, sample_weights=path_weights)
        predicted_x0 = x0_from_v(alphas_cumprod, noisy, prediction, timesteps)
        if args.residual:
            predicted_x0 = predicted_x0 + cond
        frames = decode_with_grad(pipe, predicted_x0)  # (B, F, 3, H, W) in [-1, 1]
        losses["loss_coherence"] = coherence_loss(frames, sharp * 2 - 1, frame_dim=1)
        losses["loss"] = losses["loss_base"] + args.coherence_weight * losses["loss_coherence"]
        return losses

    return compute_loss


def cached_path_draws(
    pipe,
    path_cache,
    rng,
    alphas_cumprod,
    probability,
    residual,
    blur,
    sharp,
    cond,
    x0,
    noisy,
    noise,
    timesteps,
    return_rows: bool = False,
):
    """Replace the samples `path_cache.draw` picks (those not at the sampler's start, each with `probability`) by a
    cached crop at one of the sampler's later timesteps: its frames, latents and target, the input the sampler gave
    the model there, and the noise implied by (that input, the target), so that the v-target asks for the target
    from where the sampler really is. The rest are returned as they were; with `return_rows`, the picked rows'
    indices come last."""
    last = alphas_cumprod.shape[0] - 1
    rows, clips, steps = path_cache.draw(rng, timesteps, probability, last)
    noisy, noise = noisy.float(), noise.float()
    extra = (rows,) if return_rows else ()  # on the timesteps' device, where `draw` made them
    if not rows.numel():
        return (blur, sharp, cond, x0, noisy, noise, timesteps, *extra)
    device = x0.device
    cached_blur, cached_sharp = path_cache.frames(clips, device)
    with torch.no_grad():
        cached_cond = pipe.encode_video(cached_blur).float()
        cached_x0 = pipe.encode_video(cached_sharp).float()
    if residual:
        cached_x0 = cached_x0 - cached_cond
    x_t, t = path_cache.inputs(clips, steps, device)
    if x_t.shape[1:] != x0.shape[1:]:
        raise ValueError(
            f"--sampler_trajectory_cache {path_cache.path} holds latents of shape {tuple(x_t.shape[1:])}; this model "
            f"makes {tuple(x0.shape[1:])}: make the cache with the model being trained"
        )
    blur, sharp, cond, x0 = blur.clone(), sharp.clone(), cond.clone(), x0.clone()
    noisy, noise, timesteps = noisy.clone(), noise.clone(), timesteps.clone()
    blur[rows], sharp[rows], cond[rows], x0[rows] = (
        cached_blur.to(blur.dtype),
        cached_sharp.to(sharp.dtype),
        cached_cond,
        cached_x0,
    )
    noisy[rows], timesteps[rows] = x_t, t.to(timesteps.dtype)
    noise[rows] = common.noise_from_x0(alphas_cumprod, x_t, cached_x0, t)
    return (blur, sharp, cond, x0, noisy, noise, timesteps, *extra)


def trajectory_pick_probability(args: argparse.Namespace) -> float:
    """The chance that `sampler_trajectory_draws` picks a sample the start draws left: Q / (1 - P), so that a
    fraction Q of all the samples is picked."""
    left = 1.0 - args.inference_start_fraction
    return 0.0 if left <= 0 else min(1.0, args.sampler_trajectory_fraction / left)


def refuse_sharded_trajectory_draws(accelerator) -> None:
    """The extra forward pass of the trajectory draws runs only on processes that picked a sample; sharded
    parameters (FSDP, DeepSpeed ZeRO-3) gather them in every forward on every process, so it would hang there."""
    from accelerate.utils import DistributedType

    if accelerator.num_processes <= 1:
        return
    kind = accelerator.distributed_type
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if kind == DistributedType.FSDP or (kind == DistributedType.DEEPSPEED and getattr(plugin, "zero_stage", 0) == 3):
        raise ValueError(
            f"--sampler_trajectory_fraction is not supported with {kind} sharding of the parameters on "
            f"{accelerator.num_processes} processes; use DDP or DeepSpeed ZeRO-1/2, or --sampler_trajectory_fraction 0"
        )


def estimate_fn(
    model, alphas_cumprod: torch.Tensor, cond: torch.Tensor, centre: torch.Tensor, guidance_scale: float = 1.0
):
    """`estimate(x_t, t, rows)`: the clean sample the model implies from the inputs `x_t` at the timesteps `t` (one
    per row), for the batch rows `rows`, without gradient and in eval mode (no dropout), as the sampler runs it; the
    model's mode is restored after. At `guidance_scale` 1 the prediction is the conditional one (keep = 1); above 1
    it is guided as the pipeline guides it, uncond + scale x (cond - uncond), the unconditional pass with the image
    tokens zeroed (keep = 0), as the pipeline's negative context is, run in one batch with the conditional one."""

    @torch.no_grad()
    def estimate(x_t: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(rows.shape[0], device=x_t.device)
        was_training = model.training
        model.eval()
        try:
            if guidance_scale > 1.0:
                # One pass on the doubled batch, as the pipeline runs CFG: cheaper than two passes on a CPU.
                doubled = torch.cat([rows, rows])
                both = model(
                    torch.cat([x_t, x_t]),
                    cond[doubled],
                    torch.cat([t, t]),
                    centre[doubled],
                    torch.cat([keep, torch.zeros_like(keep)]),
                ).float()
                v, uncond = both.chunk(2)
                v = uncond + guidance_scale * (v - uncond)
            else:
                v = model(x_t, cond[rows], t, centre[rows], keep).float()
        finally:
            model.train(was_training)
        return x0_from_v(alphas_cumprod, x_t, v, t)

    return estimate


def first_estimate_fn(
    model, alphas_cumprod: torch.Tensor, cond: torch.Tensor, centre: torch.Tensor, guidance_scale: float = 1.0
):
    """`start_estimate(start, rows)` for `common.sampler_trajectory_draws`: `estimate_fn`'s estimate at the last
    timestep, from the sampler's start."""
    last = alphas_cumprod.shape[0] - 1
    estimate = estimate_fn(model, alphas_cumprod, cond, centre, guidance_scale)

    def start_estimate(start: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return estimate(start, torch.full((rows.shape[0],), last, device=start.device, dtype=torch.long), rows)

    return start_estimate


def decode_with_grad(pipe: VideoDeblurPipeline, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, C, F, h, w) -> frames (B, F, 3, H, W) in [-1, 1] through the frozen VAE, differentiably."""
    batch, _, frames = latents.shape[:3]
    flat = latents.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B, C, F, h, w) -> (B*F, C, h, w)
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    images = pipe.vae.decode((flat / pipe.vae.config.scaling_factor + shift).to(pipe.vae.dtype)).sample.float()
    return images.reshape(batch, frames, *images.shape[1:])


def make_validate_fn(args, accelerator, pipe: VideoDeblurPipeline, clips: list[dict]):
    output_dir = Path(args.output_dir)

    @torch.no_grad()
    def validate(step: int) -> dict[str, float]:
        if not clips:
            return {}
        modules = [pipe.unet, pipe.blur_encoder]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        rows, scores, inputs = [], [], []
        try:
            for clip in clips:
                blur, sharp = clip["blur"], clip["sharp"]  # (F, 3, H, W)
                generator = torch.Generator(device="cpu").manual_seed(args.seed)
                with accelerator.autocast():
                    output = pipe(
                        blur,
                        num_inference_steps=args.validation_inference_steps,
                        guidance_scale=args.validation_guidance_scale,
                        num_frames=blur.shape[0],
                        frame_overlap=0,
                        generator=generator,
                        output_type="pt",
                    ).frames[0]  # (F, 3, H, W)
                output = output.float().cpu()
                scores.append(psnr(output, sharp))
                inputs.append(psnr(blur, sharp))
                centre = (blur.shape[0] - 1) // 2
                rows.append([blur[centre], output[centre], sharp[centre]])
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        grid = save_comparison(rows, output_dir / "validation" / f"step-{step:06d}.png")
        log_image(accelerator, "validation/blurred|output|sharp", grid, step)
        return {"psnr": sum(scores) / len(scores), "psnr_input": sum(inputs) / len(inputs)}

    return validate


def train(
    args: argparse.Namespace,
    accelerator,
    pipe: VideoDeblurPipeline,
    weight_dtype: torch.dtype,
    dataloader,
    sampler,
    clips: list[dict],
    params: list[torch.nn.Parameter],
    log_name: str,
    unet_frozen: bool = False,
    after_optimizer_step=None,
    before_save=None,
) -> None:
    """Train `params` (what stage 1 or 2 chose) of the pipeline's UNet and blur encoder, then save the pipeline."""
    model, optimizer, dataloader, lr_scheduler, ema, noise_rng = common.prepare_training(
        args, accelerator, DeblurModel(pipe, unet_frozen=unet_frozen), params, dataloader
    )
    trainer = common.Trainer(
        accelerator=accelerator,
        args=args,
        model=model,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        dataloader=dataloader,
        sampler=sampler,
        params=params,
        compute_loss=make_loss_fn(args, accelerator, pipe, model, noise_rng),
        validate=make_validate_fn(args, accelerator, pipe, clips),
        save_model=make_save_fn(args, pipe, weight_dtype, before_save=before_save),
        ema=ema,
        noise_rng=noise_rng,
        after_optimizer_step=after_optimizer_step,
        log_name=log_name,
    )
    common.train(trainer)


def make_save_fn(args, pipe: VideoDeblurPipeline, weight_dtype: torch.dtype, before_save=None):
    """Save the pipeline: trained UNet and blur encoder, frozen parts reloaded in float32 if they were cast."""

    def save_model(folder: Path) -> None:
        if before_save is not None:
            before_save(folder)
        unet, blur_encoder = pipe.unet, pipe.blur_encoder
        if weight_dtype != torch.float32:
            # The frozen VAE and image encoder were cast for speed: save the input's float32 weights instead.
            out = VideoDeblurPipeline.from_pretrained(
                args.pretrained_model_name_or_path, unet=unet, blur_encoder=blur_encoder
            )
        else:
            out = pipe
        out.register_to_config(residual=bool(args.residual))
        out.vae.register_to_config(scaling_factor=pipe.vae.config.scaling_factor)  # --latent_scaling_factor
        out.save_pretrained(str(folder))

    return save_model
