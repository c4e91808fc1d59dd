"""What the three training scripts share: flags, data, checkpoints, logs, validation images and the loop.

The scripts are run as `python train/stageN_*.py` or `accelerate launch train/stageN_*.py`; each puts its own
folder on `sys.path` and imports this module. Nothing here is part of the installed package.

Reproducibility and resume (`--resume_from_checkpoint latest`):

- the data order is a function of (`--seed`, epoch) only (`EpochSampler`), and every clip's random crop and
  flips are drawn from an RNG seeded by (`--seed`, epoch, index) (`SeededItems`), so the batches after a resume
  are the ones an uninterrupted run would have seen, whatever the number of data workers;
- the noise, timesteps and condition-dropout draws of every batch come from a generator re-seeded from
  (`--seed`, process, optimiser step, micro-batch) (`NoiseRNG`); model, optimiser, LR scheduler and EMA weights
  are in the checkpoint;
- a checkpoint is written to `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` when complete, so a
  killed run never leaves a half-written folder that `latest` would pick.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline_video_deblur.atomic import atomic_path, replace_dir, write_text
from pipeline_video_deblur.losses import add_noise, noise_from_x0

logger = logging.getLogger("train")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
LOSS_LOG = "loss_log.csv"
VALIDATION_LOG = "validation_log.csv"


# ----------------------------------------------------------------------------------------------------------------
# Flags


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def add_common_args(parser: argparse.ArgumentParser, learning_rate: float = 5e-5) -> argparse.ArgumentParser:
    """The flags every stage takes, named as in the diffusers training examples."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_data_dir",
        required=True,
        help="dataset root: GoPro layout ({train,test}/<seq>/{blur,sharp}) or DVD layout",
    )
    data.add_argument("--dataset", choices=["gopro", "dvd"], default="gopro", help="layout of --train_data_dir")
    data.add_argument("--blur_dir", default="blur", help="GoPro blurred-frame folder: blur (default) or blur_gamma")
    data.add_argument("--num_frames", type=int, default=16, help="frames per training clip (paper: 16)")
    data.add_argument("--resolution", type=int, default=256, help="side of the random square crops (paper: 256)")
    data.add_argument(
        "--augment_transpose",
        action="store_true",
        help="also swap height and width of half the training crops, so that with the flips every one of the eight "
        "flips and rotations of the square is drawn (BasicSR's use_rot); off: flips and temporal reversal only",
    )
    data.add_argument("--train_batch_size", type=int, default=1, help="clips per device per step")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="0 loads in the main process")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--max_train_steps", type=int, default=1000, help="optimiser steps in all (resume included)")
    opt.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help="wall-clock budget of this launch's training loop (a time-limited GPU job): after its first 60 steps the "
        "run measures its speed and lowers --max_train_steps, and the LR schedule with it, to the steps that fit, "
        "then fits that end again every 100 steps from its recent speed (never past --max_train_steps); past the "
        "budget it stops at the next step. Either way it ends as a finished run does: a checkpoint, then "
        "the model",
    )
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    opt.add_argument("--learning_rate", type=float, default=learning_rate)
    opt.add_argument("--scale_lr", action="store_true", help="multiply the LR by batch x accumulation x processes")
    opt.add_argument(
        "--lr_scheduler",
        default="constant",
        choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
    )
    opt.add_argument("--lr_warmup_steps", type=int, default=0)
    opt.add_argument("--adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument("--adam_weight_decay", type=float, default=1e-2)
    opt.add_argument("--adam_epsilon", type=float, default=1e-8)
    opt.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 disables it")
    opt.add_argument(
        "--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="defaults to accelerate's config"
    )
    opt.add_argument(
        "--attention",
        choices=list(ATTENTION_CHOICES),
        default="auto",
        help="the UNet's attention processor: 'sdpa' (diffusers' default, torch's scaled_dot_product_attention), "
        "'explicit' (diffusers' AttnProcessor: scores, softmax and product as separate matmuls), or 'auto' "
        "(default): explicit on a CPU under --mixed_precision bf16, where its bf16 matmuls run on the CPU's "
        "matrix units and the step was measured 1.3 to 1.6x as fast (benchmarks/train_step.py), sdpa everywhere else",
    )
    opt.add_argument(
        "--gradient_checkpointing", action="store_true", help="recompute activations: less memory, ~30%% slower"
    )
    opt.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs")
    opt.add_argument(
        "--use_ema", action="store_true", help="keep an EMA of the trained weights; used for validation and saving"
    )
    opt.add_argument("--ema_decay", type=float, default=0.9999)
    opt.add_argument(
        "--condition_dropout", type=float, default=0.1, help="probability of zeroing a sample's image tokens (for CFG)"
    )
    opt.add_argument(
        "--timestep_bias_strategy",
        choices=["none", "earlier", "later", "range"],
        default="none",
        help="draw some training timesteps more often (as diffusers' SDXL script): 'later' favours the noisiest "
        "--timestep_bias_portion of them, where the model must deblur rather than denoise; 'none' is uniform",
    )
    opt.add_argument(
        "--timestep_bias_multiplier", type=float, default=1.0, help="weight of the favoured timesteps (> 0)"
    )
    opt.add_argument(
        "--timestep_bias_portion", type=float, default=0.25, help="fraction of timesteps 'earlier'/'later' favour"
    )
    opt.add_argument("--timestep_bias_begin", type=int, default=0, help="first favoured timestep for 'range'")
    opt.add_argument("--timestep_bias_end", type=int, default=1000, help="end (exclusive) of 'range'")
    opt.add_argument("--seed", type=int, default=0)

    ckpt = parser.add_argument_group("checkpoints and logs")
    ckpt.add_argument(
        "--output_dir", required=True, help="where checkpoints, logs, validation images and the model go"
    )
    ckpt.add_argument("--checkpointing_steps", type=int, default=500, help="save a resumable checkpoint every N steps")
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most N checkpoints")
    ckpt.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    ckpt.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="start a new run in an --output_dir that holds an earlier one (its model, checkpoints, logs and "
        "validation images are deleted; other files are kept); without it such a folder is refused unless the run "
        "resumes",
    )
    ckpt.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all or none")
    ckpt.add_argument("--logging_dir", default="logs", help="tracker folder, relative to --output_dir")
    ckpt.add_argument(
        "--validation_steps", type=int, default=500, help="validate every N steps (0: never, except at the end)"
    )
    ckpt.add_argument(
        "--num_validation_clips", type=int, default=2, help="held-out clips (test split) used for validation"
    )
    ckpt.add_argument("--validation_inference_steps", type=int, default=10)
    ckpt.add_argument(
        "--validation_resolution",
        type=int,
        default=None,
        help="centre crop of the validation clips; defaults to --resolution",
    )
    ckpt.add_argument(
        "--validation_num_frames",
        type=int,
        default=None,
        help="frames of the validation clips; defaults to --num_frames",
    )
    return parser


def check_common_args(args: argparse.Namespace) -> None:
    """Option errors that need no file access, raised before anything is loaded."""
    positive = [
        "num_frames",
        "resolution",
        "train_batch_size",
        "max_train_steps",
        "gradient_accumulation_steps",
        "checkpointing_steps",
    ]
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.condition_dropout < 1:
        raise ValueError(f"--condition_dropout must be in [0, 1), got {args.condition_dropout}")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be at least 1, got {args.checkpoints_total_limit}")
    if args.validation_steps < 0 or args.num_validation_clips < 0:
        raise ValueError("--validation_steps and --num_validation_clips must be non-negative")
    if args.timestep_bias_multiplier <= 0:
        raise ValueError(f"--timestep_bias_multiplier must be positive, got {args.timestep_bias_multiplier}")
    if not 0 < args.timestep_bias_portion <= 1:
        raise ValueError(f"--timestep_bias_portion must be in (0, 1], got {args.timestep_bias_portion}")
    if not 0 <= args.timestep_bias_begin < args.timestep_bias_end:
        raise ValueError(
            f"--timestep_bias_begin {args.timestep_bias_begin} and --timestep_bias_end {args.timestep_bias_end} must "
            "satisfy 0 <= begin < end"
        )
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be non-negative, got {args.dataloader_num_workers}")
    if args.max_train_minutes is not None and not args.max_train_minutes > 0:
        raise ValueError(f"--max_train_minutes must be positive, got {args.max_train_minutes}")
    args.validation_resolution = args.validation_resolution or args.resolution
    args.validation_num_frames = args.validation_num_frames or args.num_frames


def check_resolution(resolution: int, multiple: int, what: str, flag: str = "--resolution") -> None:
    if resolution % multiple:
        raise ValueError(
            f"{flag} {resolution} is not a multiple of {multiple} ({what}); use e.g. "
            f"{max(multiple, resolution // multiple * multiple)} or {(resolution // multiple + 1) * multiple}"
        )


# What a run leaves in its --output_dir besides checkpoints: a new run there would replace them.
RUN_FILES = ("loss_log.csv", "validation_log.csv")
# Everything the trainers write there (the model's components, its marker, the logs and validation images; the
# tracker folder is --logging_dir): what --overwrite_output_dir deletes. Nothing else in the folder is touched.
TRAINER_OUTPUTS = (
    *RUN_FILES, "model_index.json", "validation", "unet", "vae", "scheduler", "image_encoder", "blur_encoder",
    "feature_extractor", "pytorch_lora_weights.safetensors",
)  # fmt: skip


def earlier_run(output_dir: Path) -> list[str]:
    """The traces of an earlier run in `output_dir`: its logs, checkpoints and saved model."""
    if not output_dir.is_dir():
        return []
    found = [name for name in RUN_FILES if (output_dir / name).is_file()]
    found += [path.name for _, path in list_checkpoints(output_dir)][:3]
    found += [name for name in ("model_index.json",) if (output_dir / name).is_file()]
    return found


def clear_earlier_run(args: argparse.Namespace, output_dir: Path) -> None:
    """--overwrite_output_dir: delete what an earlier run wrote (`TRAINER_OUTPUTS`, checkpoints, the tracker
    folder, the flags files). Called by the main process only, before the trackers start."""
    if not getattr(args, "overwrite_output_dir", False) or not output_dir.is_dir():
        return
    for path in output_dir.iterdir():
        ours = path.name in TRAINER_OUTPUTS or path.name == args.logging_dir or path.name.endswith("_args.json")
        if ours or (CHECKPOINT_PATTERN.match(path.name) and path.is_dir()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def check_output_dir(
    output_dir: str | os.PathLike,
    inputs: dict[str, str | os.PathLike | None],
    resume: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Refuse an output folder that is an input, lies inside one, or contains one (the model would overwrite it),
    and one that holds an earlier run unless this run resumes it (`resume`) or replaces it (`overwrite`; the
    deleting is `clear_earlier_run`'s, on the main process once every process has passed these checks).

    Read-only: every process runs it. `resume="latest"` with no checkpoint to resume starts a new run, which is
    refused too when the folder holds a finished model (its checkpoints deleted): it would be replaced.
    """
    out = Path(output_dir).resolve()
    for flag, path in inputs.items():
        if path is None or not os.path.exists(path):
            continue
        source = Path(path).resolve()
        if out == source or source in out.parents or out in source.parents:
            raise ValueError(
                f"--output_dir {output_dir} overlaps the input {flag} {path}; the trained model would be written into "
                "(or over) its own input. Choose another folder."
            )
    if resume is not None and overwrite:
        raise ValueError(
            "--resume_from_checkpoint continues the run in --output_dir and --overwrite_output_dir deletes it: "
            "choose one"
        )
    found = earlier_run(out)
    # A resumed run continues the earlier one, except `latest` with no checkpoint left beside a finished model: that
    # starts afresh and would replace the model, so it is refused like a run without resume.
    if resume is not None and (
        resume != "latest" or list_checkpoints(out) or not (out / "model_index.json").is_file()
    ):
        found = []
    if found and not overwrite:
        raise ValueError(
            f"--output_dir {output_dir} holds an earlier run ({', '.join(found)}); add --resume_from_checkpoint "
            "latest to continue it, --overwrite_output_dir to start again there (the earlier run's model, "
            "checkpoints, logs and validation images are deleted), or choose another folder"
        )
    return out


# ----------------------------------------------------------------------------------------------------------------
# Data


class EpochSampler(torch.utils.data.Sampler):
    """A random order that depends on (seed, epoch) only; yields `epoch * n + index` (decoded by `SeededItems`).

    Every process builds the same order (accelerate shards the batches), and a resumed run rebuilds the order of
    the interrupted epoch exactly, so `accelerator.skip_first_batches` can skip what was already consumed.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        offset = self.epoch * self.size
        return iter((offset + torch.randperm(self.size, generator=generator)).tolist())


class SeededItems(torch.utils.data.Dataset):
    """Wraps a dataset whose items draw random crops / flips from the global RNGs (python, numpy, torch):
    item `epoch * n + i` is item `i` drawn with every global RNG seeded by (seed, epoch, i), then restored."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, virtual_index: int):
        epoch, index = divmod(int(virtual_index), len(self.dataset))
        state = np.random.SeedSequence([self.seed, epoch, index]).generate_state(2)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(int(state[0]))
            np.random.seed(int(state[1]))
            torch.manual_seed(int(state[0]) ^ int(state[1]))
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


def load_dataset(args: argparse.Namespace, split: str, crop_size: int | None, num_frames: int, augment: bool):
    """Training windows of `split` (GoPro or DVD layout), with clear errors, before any training, for a missing
    folder, sequences shorter than `num_frames` and frames smaller than `crop_size`."""
    from PIL import Image as PILImage

    from pipeline_video_deblur.data.datasets import DVDDataset, GoProDataset

    root = Path(args.train_data_dir)
    transpose = augment and args.augment_transpose
    if not root.is_dir():
        raise FileNotFoundError(f"--train_data_dir {root} does not exist or is not a folder")
    try:
        if args.dataset == "gopro":
            dataset = GoProDataset(
                root,
                split,
                num_frames=num_frames,
                crop_size=crop_size,
                blur_dir=args.blur_dir,
                augment=augment,
                whole_sequences=False,
                transpose=transpose,
            )
        else:
            dataset = DVDDataset(
                root,
                split,
                num_frames=num_frames,
                crop_size=crop_size,
                augment=augment,
                whole_sequences=False,
                transpose=transpose,
            )
    except ValueError as error:
        raise ValueError(f"--train_data_dir {root} ({split} split, --num_frames {num_frames}): {error}") from None
    if augment:
        logger.info(
            "augmentation: random flips, temporal reversal"
            + (" and transposes (all eight flips and rotations)" if transpose else " (no transposes)")
        )
    if crop_size is not None:
        for sequence in dataset.sequences:
            with PILImage.open(sequence.sharp[0]) as image:
                width, height = image.size
            if height < crop_size or width < crop_size:
                raise ValueError(
                    f"sequence {sequence.name!r} in {root} ({split}) has {height}x{width} (HxW) frames, smaller than "
                    f"the {crop_size}x{crop_size} crops asked for (--resolution / --validation_resolution)"
                )
    return dataset


def _loader_worker_ignores_sigterm(worker_id: int) -> None:
    # A SIGTERM sent to the whole job (SLURM signals every process of it) is the main process's to handle: it saves a
    # checkpoint (`StopRequest`), which a loader worker killed under it would turn into a crash. Workers exit with it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_train_dataloader(args: argparse.Namespace, dataset) -> tuple[torch.utils.data.DataLoader, EpochSampler]:
    if len(dataset) < args.train_batch_size:
        raise ValueError(f"{len(dataset)} training clips are fewer than --train_batch_size {args.train_batch_size}")
    sampler = EpochSampler(len(dataset), args.seed)
    loader = torch.utils.data.DataLoader(
        SeededItems(dataset, args.seed),
        batch_size=args.train_batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_loader_worker_ignores_sigterm if args.dataloader_num_workers > 0 else None,
    )
    return loader, sampler


def validation_clips(args: argparse.Namespace) -> list[dict]:
    """Up to `--num_validation_clips` held-out clips: the first `--validation_num_frames` frames of test-split
    sequences (spread over them), centre-cropped to `--validation_resolution`. [] (with a warning) if none."""
    if args.num_validation_clips == 0:
        return []
    try:
        dataset = load_dataset(args, "test", None, args.validation_num_frames, augment=False)
    except (FileNotFoundError, ValueError) as error:
        logger.warning(f"validation disabled, no held-out clips: {error}")
        return []
    firsts = [i for i, (_, start) in enumerate(dataset.windows) if start == 0]  # one window per sequence
    count = min(args.num_validation_clips, len(firsts))
    picks = [firsts[i] for i in np.linspace(0, len(firsts) - 1, count).round().astype(int).tolist()]
    size = args.validation_resolution
    clips = []
    for index in picks:
        item = dataset[index]
        height, width = item["sharp"].shape[-2:]
        if height < size or width < size:
            raise ValueError(
                f"test sequence {item['sequence']!r} has {height}x{width} frames, smaller than "
                f"--validation_resolution {size}"
            )
        top, left = (height - size) // 2, (width - size) // 2
        crop = (..., slice(top, top + size), slice(left, left + size))
        clips.append(
            {
                "blur": item["blur"][crop].contiguous(),
                "sharp": item["sharp"][crop].contiguous(),
                "sequence": item["sequence"],
            }
        )
    return clips


# ----------------------------------------------------------------------------------------------------------------
# Random draws


class NoiseRNG:
    """The generator of the training noise, timesteps and dropout draws.

    Re-seeded before every batch from (seed, process, optimiser step, micro-batch): the draws of a step depend on
    nothing else, so a resumed run draws exactly what an uninterrupted one would, on every process, with no state
    to save (accelerate would save only the main process's generator)."""

    def __init__(self, device: torch.device, seed: int, process_index: int = 0):
        self.generator = torch.Generator(device=device)
        self.seed, self.process_index = seed, process_index

    def reseed(self, step: int, micro_step: int = 0) -> None:
        state = np.random.SeedSequence([self.seed, self.process_index, step, micro_step]).generate_state(2)
        self.generator.manual_seed(int(state[0]) << 32 | int(state[1]))


def timestep_weights(args: argparse.Namespace, num_train_timesteps: int, device=None) -> torch.Tensor | None:
    """Probabilities (T,) on `device` of drawing each training timestep under --timestep_bias_*; None for uniform
    draws.

    The favoured timesteps (the first or last `portion` of them, or [begin, end)) weigh `multiplier` times the
    others. None rather than a flat vector keeps the uniform default's draws identical to earlier versions, so a
    run resumed across this change draws what it would have."""
    strategy = args.timestep_bias_strategy
    if strategy == "none" or args.timestep_bias_multiplier == 1.0:
        return None
    weights = torch.ones(num_train_timesteps, dtype=torch.float64)
    count = max(1, int(round(args.timestep_bias_portion * num_train_timesteps)))
    if strategy == "later":
        favoured = slice(num_train_timesteps - count, num_train_timesteps)
    elif strategy == "earlier":
        favoured = slice(0, count)
    else:
        if args.timestep_bias_end > num_train_timesteps:
            raise ValueError(
                f"--timestep_bias_end {args.timestep_bias_end} is past the scheduler's {num_train_timesteps} "
                "training timesteps"
            )
        favoured = slice(args.timestep_bias_begin, args.timestep_bias_end)
    weights[favoured] *= args.timestep_bias_multiplier
    return (weights / weights.sum()).float().to(device)


def diffusion_draws(
    rng: NoiseRNG,
    shape: tuple[int, ...],
    num_train_timesteps: int,
    condition_dropout: float,
    device,
    weights: torch.Tensor | None = None,
):
    """Noise (shape), timesteps (B,) in [0, T) (uniform, or drawn with `weights` from `timestep_weights`, placed on
    `device` there once), and a keep mask (B,) that is 0 with probability `condition_dropout`."""
    g = rng.generator
    noise = torch.randn(shape, generator=g, device=device)
    if weights is None:
        timesteps = torch.randint(0, num_train_timesteps, (shape[0],), generator=g, device=device)
    else:
        timesteps = torch.multinomial(weights, shape[0], replacement=True, generator=g)
    keep = (torch.rand(shape[0], generator=g, device=device) >= condition_dropout).float()
    return noise, timesteps, keep


def inference_start_draws(
    rng: NoiseRNG,
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    noisy: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    fraction: float,
    noise_scale: float,
):
    """Move a `fraction` of the samples from the forward process (`noisy`, made from `noise` at `timesteps`) to the
    start the sampler gives the model at inference.

    The forward process at the last timestep still carries sqrt(alpha_{T-1}) x0 of the target (6.8 % on the
    scaled-linear schedule), which no sampler has: it starts from `noise_scale` x noise (DDIM's
    `init_noise_sigma` is 1). Each sample is picked with probability `fraction` (one draw per sample from `rng`,
    after `diffusion_draws`' draws, so the others are unchanged), put at t = T - 1 and given that start as x_t. Its
    noise is replaced by the noise implied by (x_t, x0), (x_t - sqrt(alpha) x0) / sqrt(1 - alpha), so that the
    v-target sqrt(alpha) eps - sqrt(1 - alpha) x0 made from it is the v whose implied clean sample is x0: the loss
    asks for the target from the start inference has. The rest keep their draws as they are.

    Returns `(noisy, noise, timesteps)`, float32 where computed.
    """
    picked = torch.rand(x0.shape[0], generator=rng.generator, device=x0.device) < fraction
    last = alphas_cumprod.shape[0] - 1
    timesteps = torch.where(picked, torch.full_like(timesteps, last), timesteps)
    view = (-1,) + (1,) * (x0.ndim - 1)
    noisy = torch.where(picked.view(view), noise.float() * noise_scale, noisy.float())
    implied = noise_from_x0(alphas_cumprod, noisy, x0, timesteps)
    return noisy, torch.where(picked.view(view), implied, noise.float()), timesteps


def sampler_trajectory_draws(
    rng: NoiseRNG,
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    noisy: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    probability: float,
    trajectory: torch.Tensor,
    start_estimate,
    noise_scale: float,
    hops: int = 1,
    later_estimate=None,
    return_rows: bool = False,
):
    """Move samples to where the sampler's later steps are, from its first step's estimate.

    From a start without noise (`noise_scale` 0), DDIM with eta 0 hands the model almost noise-free latents after
    its first step: x_t = sqrt(alpha_t) x0_hat + sqrt(1 - alpha_t) eps_hat, with x0_hat the first step's estimate
    and eps_hat the noise implied by (start, x0_hat), a scaled copy of x0_hat (0.9 % of it at t = 979). The forward
    process never gives such an input (its noise has std sqrt(1 - alpha_t)), so without these draws the later steps
    are trained on something they never see.

    Each sample not already at the last timestep is picked with `probability` (one draw per sample from `rng`, and
    one index into `trajectory` per sample, so the draws do not depend on what is picked). For the picked ones,
    `start_estimate(start, rows)` returns the model's x0 estimate (no gradient) at t = T - 1 from the sampler's start
    (`noise_scale` x their noise); x_t is that DDIM step to a timestep of `trajectory` (the sampler's later
    timesteps), and the noise is the one implied by (x_t, x0), so the v-target asks for the target from there. The
    rest keep their draws. At the sampler's second timestep this is exactly its input; at later ones the sampler's
    input is built from its later estimates, which the first one stands in for.

    `hops` 2 builds that input from a later estimate instead: the first estimate is stepped to the timestep of
    `trajectory` just before the picked one, `later_estimate(x_prev, t_prev, rows)` gives the model's estimate there
    (no gradient), and x_t is the DDIM step from that estimate, as the sampler's own step into t is. The estimate that
    the real sampler's later steps meet has been refined by the steps before them; a model trained only on inputs made
    from the first estimate learns to correct the first estimate's errors, and at those steps corrects again what
    is already corrected. Samples picked at the trajectory's first timestep (the sampler's second) keep the first
    estimate, which is exact there. One more model pass for the picked samples; `hops` 1 (default): none.

    Returns `(noisy, noise, timesteps)`, float32 where computed, and with `return_rows` the indices of the picked
    samples (`path_loss_weights` takes them).
    """
    if hops not in (1, 2) or (hops == 2 and later_estimate is None):
        raise ValueError(f"hops must be 1, or 2 with a later_estimate, got {hops!r}")
    generator = rng.generator
    device = x0.device
    draw = torch.rand(x0.shape[0], generator=generator, device=device)
    index = torch.randint(0, trajectory.shape[0], (x0.shape[0],), generator=generator, device=device)
    last = alphas_cumprod.shape[0] - 1
    picked = (timesteps != last) & (draw < probability)
    noisy, noise = noisy.float(), noise.float()
    rows = picked.nonzero().flatten()
    if not rows.numel():
        return (noisy, noise, timesteps, rows) if return_rows else (noisy, noise, timesteps)
    start = noise[rows] * noise_scale
    estimate = start_estimate(start, rows).float()
    start_eps = noise_from_x0(alphas_cumprod, start, estimate, torch.full_like(rows, last))
    trajectory = trajectory.to(device)
    new_t = trajectory[index[rows]].long()
    if hops == 2:
        previous = index[rows] - 1
        later = (previous >= 0).nonzero().flatten()
        if later.numel():
            t_prev = trajectory[previous[later]].long()
            x_prev = add_noise(alphas_cumprod, estimate[later], start_eps[later], t_prev)
            refined = later_estimate(x_prev, t_prev, rows[later]).float()
            estimate, start_eps = estimate.clone(), start_eps.clone()
            estimate[later] = refined
            start_eps[later] = noise_from_x0(alphas_cumprod, x_prev, refined, t_prev)
    x_t = add_noise(alphas_cumprod, estimate, start_eps, new_t)
    implied = noise_from_x0(alphas_cumprod, x_t, x0[rows], new_t)
    noisy, noise, timesteps = noisy.clone(), noise.clone(), timesteps.clone()
    noisy[rows], noise[rows], timesteps[rows] = x_t, implied, new_t.to(timesteps.dtype)
    return (noisy, noise, timesteps, rows) if return_rows else (noisy, noise, timesteps)


def path_loss_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, rows: torch.Tensor, cap: float | None
) -> torch.Tensor | None:
    """Per-sample factors on the v-loss that cap the weight of the samples drawn on the sampler's path.

    The v-loss of a sample is its error on the clean sample times 1 / (1 - alpha_t) = SNR_t + 1 (x0 = sqrt(alpha_t)
    x_t - sqrt(1 - alpha_t) v), about 56 at the 50-step sampler's last timestep against 1 at its first. On the
    path the input is almost clean at low t and the target has to correct the whole estimate's error, so those few
    samples make most of the loss (and of the clipped gradient). `rows` (from `sampler_trajectory_draws` or
    `cached_path_draws`) get min(1, cap x (1 - alpha_t)): their weight on the x0 error is at most `cap`; the rest
    get 1. `cap` None, or no rows: None (the plain mean).
    """
    if cap is None or not rows.numel():
        return None
    weights = torch.ones(timesteps.shape[0], device=timesteps.device, dtype=torch.float32)
    alphas = alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps[rows].long()]
    weights[rows] = (cap * (1 - alphas)).clamp(max=1.0)
    return weights


class SamplerPathCache:
    """The sampler's real inputs after its first step, for a fixed set of training crops, from
    `train/cache_sampler_path.py`: frames `blur`, `sharp` (N, F, 3, H, W) uint8, `states` (N, K, C, F, h, w) and
    `timesteps` (K,). Several files (made with the same sampler steps, e.g. more crops with `--first_clip`, or the
    path of a later checkpoint) are joined into one set of N1 + N2 + ... crops. Held in memory (on the CPU) and
    checked against the crops the run trains on."""

    def __init__(self, paths, resolution: int, num_frames: int):
        paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        if not paths:
            raise ValueError("--sampler_trajectory_cache needs at least one file")
        parts = [self._load(path, resolution, num_frames) for path in paths]
        first = parts[0]
        for path, part in zip(paths[1:], parts[1:]):
            if (
                not torch.equal(part["timesteps"], first["timesteps"])
                or part["states"].shape[2:] != first["states"].shape[2:]
            ):
                raise ValueError(
                    f"--sampler_trajectory_cache {path} holds latents {tuple(part['states'].shape[2:])} at timesteps "
                    f"{part['timesteps'].tolist()}; {paths[0]} holds {tuple(first['states'].shape[2:])} at "
                    f"{first['timesteps'].tolist()}: files joined into one cache must come from the same model "
                    "layout and sampler steps"
                )
        self.blur, self.sharp, self.states = (
            torch.cat([part.pop(name) for part in parts]) if len(parts) > 1 else first.pop(name)
            for name in ("blur", "sharp", "states")
        )
        self.timesteps = first["timesteps"]
        # What describe() reports of each file; the tensors above are the only copy of the frames and states.
        self.sources = [(path, part["clips"], part["metadata"]) for path, part in zip(paths, parts)]
        self.path = " ".join(str(path) for path in paths)

    @staticmethod
    def _load(path: Path, resolution: int, num_frames: int) -> dict:
        from safetensors import safe_open

        if not path.is_file():
            raise FileNotFoundError(
                f"--sampler_trajectory_cache {path} does not exist (make it with train/cache_sampler_path.py)"
            )
        with safe_open(str(path), framework="pt") as f:
            missing = {"blur", "sharp", "states", "timesteps"} - set(f.keys())
            if missing:
                raise ValueError(
                    f"--sampler_trajectory_cache {path} lacks {sorted(missing)}: not a train/cache_sampler_path.py file"
                )
            part = {name: f.get_tensor(name) for name in ("blur", "sharp", "states", "timesteps")}
            part["metadata"] = f.metadata() or {}
        part["timesteps"] = part["timesteps"].long()
        clips, frames, _, height, width = part["blur"].shape
        part["clips"] = clips
        if (frames, height, width) != (num_frames, resolution, resolution):
            raise ValueError(
                f"--sampler_trajectory_cache {path} holds {frames}-frame {height}x{width} crops; this run trains on "
                f"{num_frames}-frame {resolution}x{resolution} crops (--num_frames, --resolution): make the cache "
                "with the same"
            )
        if (
            part["states"].shape[:2] != (clips, part["timesteps"].shape[0])
            or part["sharp"].shape != part["blur"].shape
        ):
            raise ValueError(
                f"--sampler_trajectory_cache {path}: states {tuple(part['states'].shape)}, timesteps "
                f"{tuple(part['timesteps'].shape)} and frames {tuple(part['blur'].shape)} do not agree"
            )
        return part

    def __len__(self) -> int:
        return self.blur.shape[0]

    def describe(self) -> str:
        steps = f"{self.timesteps.shape[0]} timesteps (t = {int(self.timesteps[0])} .. {int(self.timesteps[-1])})"
        files = "; ".join(
            f"{clips} of {path} (model {metadata.get('model', '?')}, {metadata.get('settings', '{}')})"
            for path, clips, metadata in self.sources
        )
        return f"{len(self)} clips x {steps}: {files}"

    def draw(self, rng: NoiseRNG, timesteps: torch.Tensor, probability: float, last: int):
        """Pick each sample not already at the `last` timestep with `probability`, with a cached clip and one of
        its timesteps (three draws per sample from `rng`, whatever is picked). Returns (rows, clips, steps)."""
        generator, device, count = rng.generator, timesteps.device, timesteps.shape[0]
        draw = torch.rand(count, generator=generator, device=device)
        clip = torch.randint(0, len(self), (count,), generator=generator, device=device)
        step = torch.randint(0, self.timesteps.shape[0], (count,), generator=generator, device=device)
        rows = ((timesteps != last) & (draw < probability)).nonzero().flatten()
        return rows, clip[rows].cpu(), step[rows].cpu()

    def frames(self, clips: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The picked clips' (blur, sharp) frames (n, F, 3, H, W), float32 in [0, 1], on `device`."""
        return tuple(frames[clips].to(device).float() / 255.0 for frames in (self.blur, self.sharp))

    def inputs(self, clips: torch.Tensor, steps: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampler's inputs (n, C, F, h, w) float32 and their timesteps (n,) for the picked clips and steps."""
        return self.states[clips, steps].to(device).float(), self.timesteps[steps].to(device)


def clip_embed(encoder, frames: torch.Tensor, mean, std) -> torch.Tensor:
    """CLIP image embeddings (N, D) of frames (N, 3, H, W) in [0, 1]: resized to the encoder's size and normalised
    exactly as `VideoDeblurPipeline.encode_image` does, so stage 0 trains on the inputs the pipeline gives."""
    size = encoder.config.image_size
    mean = torch.tensor(mean, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=frames.device).view(1, 3, 1, 1)
    pixels = torch.nn.functional.interpolate(
        frames.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    pixels = ((pixels.clamp(0, 1) - mean) / std).to(dtype=encoder.dtype)
    return encoder(pixel_values=pixels).image_embeds


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and atomic saving


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (`checkpoint-<step>`; never the `.tmp` of an interrupted save), oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for path in out.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume_checkpoint(args: argparse.Namespace) -> Path | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(args.output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir():
        path = Path(args.output_dir) / args.resume_from_checkpoint
    if not path.is_dir() or not CHECKPOINT_PATTERN.match(path.name):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {args.resume_from_checkpoint}: no complete checkpoint-<step> folder there"
        )
    return path


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, total_limit: int | None) -> Path:
    """`accelerator.save_state` into `checkpoint-<step>.tmp`, renamed once every process has written its part."""
    out = Path(output_dir)
    final = out / f"checkpoint-{step}"
    tmp = out / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, final)
        # Pruned only once the new checkpoint is complete: a failed save leaves the earlier ones.
        if total_limit is not None:
            old = [path for s, path in list_checkpoints(out) if s != step]
            for path in old[: max(0, len(old) - (total_limit - 1))]:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# The folders an interrupted save leaves: checkpoint-<step>.tmp, final.tmp (the model), vae.tmp (stage 0), and the
# previous folder that `replace_dir` moved aside.
STALE_TMP = re.compile(r"^(checkpoint-\d+\.tmp|final\.tmp|vae\.tmp|\.(checkpoint-\d+|vae)\.old-.+)$")


def remove_stale_tmp(output_dir: Path) -> None:
    """Delete the leftovers of interrupted saves (see `STALE_TMP`; nothing else): they are never complete."""
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            if STALE_TMP.match(path.name) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def publish_folder(tmp: Path, output_dir: Path, marker: str) -> None:
    """Move the entries of the finished `tmp` folder into `output_dir`, `marker` (e.g. model_index.json) last.

    The folder is a complete model exactly when the marker file exists: it is removed first, each component
    folder replaced by a rename, and the marker renamed into place only after all of them.
    """
    (output_dir / marker).unlink(missing_ok=True)
    entries = sorted(tmp.iterdir(), key=lambda p: p.name == marker)
    for entry in entries:
        target = output_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(entry, target)
    shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# Logs, metrics and images


class LossLog:
    """`loss_log.csv` in the output folder: one row per optimiser step, written in batches (no per-step I/O)."""

    def __init__(self, output_dir: Path, enabled: bool, resume_step: int, flush_every: int = 50):
        self.path = output_dir / LOSS_LOG
        self.enabled, self.flush_every = enabled, flush_every
        self.rows: list[dict] = []
        self.fields: list[str] | None = None
        if enabled and self.path.is_file():
            # Rows after the resumed step were written by the interrupted run and are replayed: drop them.
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                kept = [row for row in reader if int(row["step"]) <= resume_step]
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(kept)

    def add(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        if len(self.rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self.rows:
            return
        if self.fields is None:
            self.fields = list(self.rows[0])
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(self.rows)
        self.rows = []


def truncate_validation_log(output_dir: Path, step: int) -> None:
    """Drop validation rows after `step` (written by an interrupted run that is now resumed from `step`)."""
    path = output_dir / VALIDATION_LOG
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, kept = reader.fieldnames, [row for row in reader if int(row["step"]) <= step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def append_validation_log(output_dir: Path, row: dict) -> None:
    path = output_dir / VALIDATION_LOG
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of clips (F, 3, H, W) in [0, 1]: per frame after rounding to uint8 (BasicSR), averaged over frames.
    Uses the project's metric when `pipeline_video_deblur.metrics` provides one."""
    try:
        from pipeline_video_deblur.metrics import psnr as project_psnr  # noqa: F401
    except ImportError:
        project_psnr = None
    if project_psnr is not None:
        try:
            return float(project_psnr(output, target))
        except Exception:  # a different signature: fall back to the inline formula below
            pass
    a = (output.float().clamp(0, 1) * 255).round()
    b = (target.float().clamp(0, 1) * 255).round()
    mse = ((a - b) ** 2).flatten(1).mean(dim=1)  # (F,)
    values = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
    return float(values.mean())


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (frame.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def save_comparison(rows: list[list[torch.Tensor]], path: Path, gap: int = 2) -> np.ndarray:
    """Save a grid of frames (3, H, W) in [0, 1]: one row per clip (e.g. blurred | output | sharp). Returns it."""
    tiles = [[to_uint8(f) for f in row] for row in rows]
    height = max(t.shape[0] for row in tiles for t in row)
    width = max(sum(t.shape[1] for t in row) + gap * (len(row) - 1) for row in tiles)
    grid = np.full((len(tiles) * (height + gap) - gap, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        x = 0
        for tile in row:
            y = r * (height + gap)
            grid[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
            x += tile.shape[1] + gap
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp)
    return grid


def log_image(accelerator, name: str, image: np.ndarray, step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(name, image, step, dataformats="HWC")


# ----------------------------------------------------------------------------------------------------------------
# Accelerator, optimiser, loop


def make_accelerator(args: argparse.Namespace, project_name: str):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    output_dir = Path(args.output_dir)
    report_to = None if args.report_to in (None, "", "none") else args.report_to
    if report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ImportError(
                "--report_to tensorboard needs the tensorboard package (pip install tensorboard), or pass "
                "--report_to none"
            ) from None
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)
        ),
    )
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )
    for noisy in ("diffusers", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warning = cpu_bf16_warning(accelerator.device.type, accelerator.mixed_precision, cpu_has_bf16_units())
    if warning:
        logger.warning(warning)
    set_seed(args.seed)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(output_dir)
        clear_earlier_run(args, output_dir)
        if report_to is not None:
            config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}
            accelerator.init_trackers(project_name, config=config)
        write_text(output_dir / f"{project_name}_args.json", json.dumps(vars(args), indent=2, default=str) + "\n")
    accelerator.wait_for_everyone()  # the folder is cleared and set up before any process reads from it
    return accelerator


ATTENTION_CHOICES = ("auto", "sdpa", "explicit")


def attention_for(choice: str, device_type: str, mixed_precision: str | None) -> str:
    """`--attention` resolved: 'auto' is 'explicit' on a CPU under bf16 autocast, 'sdpa' otherwise.

    Measured on the development machine's CPU (AMX bf16), a stage 2 step of the default model (batch 2, 8 frames,
    96 px): torch's CPU attention kernels keep the 576-token spatial attention of the top UNet level in float32
    work, so bf16 autocast alone gains 1.1 to 1.2x, while the explicit product runs it as bf16 matmuls: 1.3 to 1.6x
    in two measurements (`benchmarks/train_step.py` prints the four combinations; explicit in float32 is slower).
    On GPUs sdpa's fused kernels are faster and use less memory, so 'auto' keeps them."""
    if choice not in ATTENTION_CHOICES:
        raise ValueError(f"--attention must be one of {', '.join(ATTENTION_CHOICES)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "explicit" if device_type == "cpu" and mixed_precision == "bf16" else "sdpa"


def cpu_has_bf16_units() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX tiles, as torch detects them)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_bf16_warning(device_type: str, mixed_precision: str | None, bf16_units: bool) -> str | None:
    """The warning for bf16 autocast on a CPU that has no bf16 units (`cpu_has_bf16_units`), or None. torch then
    converts every bf16 matmul to float32 and back: on a 2-core AMD EPYC with AVX2 only (2026-12-07) the recipe's
    sampler-path cache took about 970 s a crop under bf16 against 60 s in float32."""
    if device_type != "cpu" or mixed_precision != "bf16" or bf16_units:
        return None
    return (
        f"mixed precision bf16 on a CPU without bf16 units (torch reports {torch.backends.cpu.get_cpu_capability()}, "
        "no AVX512-BF16 or AMX): bf16 is emulated there and runs many times slower than float32; expected "
        "--mixed_precision no (the recipe: leave STAGE2_PRECISION empty) on this CPU"
    )


def attention_processor(name: str):
    """The diffusers attention processor for a resolved `--attention` value: 'explicit' is `AttnProcessor` (scores,
    softmax and product as separate matmuls), 'sdpa' is `AttnProcessor2_0` (torch's scaled_dot_product_attention,
    diffusers' default)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    processors = {"explicit": AttnProcessor, "sdpa": AttnProcessor2_0}
    if name not in processors:
        raise ValueError(f"attention must be one of {', '.join(processors)}, got {name!r}")
    return processors[name]()


def set_attention(args: argparse.Namespace, accelerator, unet) -> str:
    """Give `unet` the attention processor `--attention` asks for (before `accelerator.prepare`); returns the one
    used. The processor is a runtime choice: saved weights and configs are the same either way."""
    chosen = attention_for(args.attention, accelerator.device.type, accelerator.mixed_precision)
    if chosen == "explicit":
        unet.set_attn_processor(attention_processor(chosen))
    logger.info(
        f"attention: {chosen} (--attention {args.attention}, {accelerator.device.type}, "
        f"mixed precision {accelerator.mixed_precision})"
    )
    return chosen


def weight_dtype_of(accelerator) -> torch.dtype:
    """The dtype frozen models are cast to (trained weights stay float32)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def cast_frozen(module: torch.nn.Module, weight_dtype: torch.dtype) -> torch.nn.Module:
    """Cast a frozen model to `weight_dtype`, except one with no weights (the pixel-shuffle VAE): casting it would
    only round the frames it encodes, and the latents the loss compares, to the low precision, for no saving."""
    if weight_dtype != torch.float32 and any(True for _ in module.parameters()):
        module.to(dtype=weight_dtype)
    return module


def make_optimizer(args: argparse.Namespace, params: list[torch.nn.Parameter], accelerator):
    from diffusers.optimization import get_scheduler

    lr = args.learning_rate
    if args.scale_lr:
        lr *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    optimizer = torch.optim.AdamW(
        params,
        lr=lr,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    # The LR scheduler is stepped once per process per optimiser step by accelerate: scale the counts alike.
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    return optimizer, lr_scheduler


class TimeBudget:
    """`--max_train_minutes`: fits the run's step count (and its LR schedule) to a wall-clock budget.

    Steps `first + WARMUP` to `first + WARMUP + MEASURED` are timed (the first few are slow: allocator, cuDNN
    autotuning, loader start-up); from their mean the budget's remaining time gives the last step that fits, with a
    margin. The plan is revised every `REVISE_EVERY` steps after that, up or down, from the mean step time over the
    last quarter of the timed steps (at least `REVISE_EVERY`; checkpoints and validation included), when it moves by
    more than `TOLERANCE` of the plan: a slow stretch at the start (another job sharing the machine) no longer
    shortens the whole run, and a run that slows down brings its schedule's end forward. Past the budget the run
    ends at the step it is at, whatever the plan. Never past `max_steps` (`--max_train_steps`). Each process computes
    its own answer; the training loop takes the main one's (`agree_on_main`), so a multi-GPU run stops at the same
    step everywhere.
    """

    WARMUP = 10
    MEASURED = 50
    REVISE_EVERY = 100
    TOLERANCE = 0.02
    MARGIN = 0.97

    def __init__(self, minutes: float | None, first_step: int, max_steps: int):
        self.seconds = None if minutes is None else minutes * 60
        self.first_step = first_step
        self.max_steps = max_steps
        self.start = time.perf_counter()
        self.marks: list[tuple[int, float]] = []  # (step, time) at the first timed step and each revision point

    def last_step(self, step: int, planned: int) -> int:
        """The step the run should end at, seen after optimiser step `step`; `planned` is the current plan (the last
        answer, or `max_steps` before the first)."""
        if self.seconds is None:
            return planned
        now = time.perf_counter()
        elapsed = now - self.start
        if elapsed >= self.seconds:
            return step
        timed_from = self.first_step + self.WARMUP
        if step == timed_from:
            self.marks.append((step, now))
        timed = step - timed_from
        if not self.marks or timed < self.MEASURED or (timed - self.MEASURED) % self.REVISE_EVERY:
            return planned
        span = max(self.REVISE_EVERY, timed // 4)
        since_step, since = next((s, t) for s, t in self.marks if s >= step - span)
        self.marks.append((step, now))
        per_step = (now - since) / (step - since_step)
        fit = max(step, min(self.max_steps, step + int((self.seconds - elapsed) * self.MARGIN / per_step)))
        if timed > self.MEASURED and abs(fit - planned) <= self.TOLERANCE * planned:
            return planned
        return fit


def agree_on_main(accelerator, *values):
    """The main process's `values` on every process, in one broadcast (none with a single process): what the
    training loop's per-step decisions (the time budget's last step, a SIGTERM) must agree on."""
    if accelerator.num_processes == 1:
        return list(values)
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list(list(values), from_process=0)


class StopRequest:
    """SIGTERM (what SLURM, Kubernetes and `kill` send before they kill a job) asks the loop to stop after the current
    step: it then saves a checkpoint there and exits with status 143, so that the job, requeued with
    `--resume_from_checkpoint latest`, loses no step. The model itself is not written: the run has not finished.
    The training loop takes the main process's `requested` (`agree_on_main`), so a multi-GPU run saves the same step
    everywhere."""

    def __init__(self):
        self.requested = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


def refit_lr_schedule(lr_scheduler, args: argparse.Namespace, accelerator) -> None:
    """Rebuild the LR schedule's shape for a changed `args.max_train_steps` (its position is kept)."""
    from diffusers.optimization import get_scheduler

    inner = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wraps it
    if not hasattr(inner, "lr_lambdas"):
        return
    # The schedule's shape may depend on the initial LR (polynomial decays to an absolute end LR): the real one.
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=inner.base_lrs[0])
    shape = get_scheduler(
        args.lr_scheduler,
        optimizer=dummy,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    if hasattr(shape, "lr_lambdas"):
        inner.lr_lambdas = [shape.lr_lambdas[0]] * len(inner.lr_lambdas)


def inverse_std(dataloader, sampler, values_of: Callable[[dict], torch.Tensor], batches: int = 8) -> float:
    """1 / std of `values_of(batch)` over the first `batches` training batches, in a data order of its own (epoch
    20,000 of the seeded sampler: reproducible, so a resumed run measures the same value; training sets its own
    epoch before every pass)."""
    values = []
    sampler.set_epoch(20_000)
    with torch.no_grad():
        for i, batch in enumerate(dataloader):
            if i >= batches:
                break
            values.append(values_of(batch).flatten().float().cpu())
    std = float(torch.cat(values).std())
    return 1.0 / max(std, 1e-6)


def prepare_training(args: argparse.Namespace, accelerator, model, params: list[torch.nn.Parameter], dataloader):
    """Optimiser and LR schedule, `accelerator.prepare`, the EMA of `params` (with `--use_ema`) and the per-step
    noise generator: what every stage sets up alike once its model and trainable parameters are chosen.

    Returns `(model, optimizer, dataloader, lr_scheduler, ema, noise_rng)`; `ema` is None without `--use_ema`.
    """
    optimizer, lr_scheduler = make_optimizer(args, params, accelerator)
    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        # Before `prepare`, while the trained weights are float32: DeepSpeed's bf16 casts the module in place,
        # and a bf16 shadow would round away the EMA's small updates.
        ema = EMAModel(params, decay=args.ema_decay)
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    noise_rng = NoiseRNG(accelerator.device, args.seed, accelerator.process_index)
    return model, optimizer, dataloader, lr_scheduler, ema, noise_rng


@dataclass
class Trainer:
    """The pieces of a training run the loop drives; each stage fills it in."""

    accelerator: object
    args: argparse.Namespace
    model: torch.nn.Module  # prepared: everything the optimiser trains, as one module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    dataloader: torch.utils.data.DataLoader
    sampler: EpochSampler
    params: list[torch.nn.Parameter]  # the trained parameters (clipping, EMA)
    compute_loss: Callable[[dict], dict[str, torch.Tensor]]
    validate: Callable[[int], dict[str, float]]  # at a global step; returns metrics to log
    save_model: Callable[[Path], None]  # writes the final model into a temporary folder
    model_marker: str = "model_index.json"
    ema: object | None = None
    noise_rng: NoiseRNG | None = None
    after_optimizer_step: Callable[[], None] | None = None
    log_name: str = "train"
    extra_checkpoint_objects: list = field(default_factory=list)

    def swap_ema(self, use: bool) -> None:
        """Swap the EMA weights in (use=True) or the training weights back (use=False)."""
        if self.ema is None:
            return
        if use:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
        else:
            self.ema.restore(self.params)


def train(t: Trainer) -> None:
    """Resume, train to `--max_train_steps` with checkpoints and validation, then save the final model."""
    from tqdm.auto import tqdm

    accelerator, args = t.accelerator, t.args
    output_dir = Path(args.output_dir)
    if t.ema is not None:
        accelerator.register_for_checkpointing(t.ema)
    for obj in t.extra_checkpoint_objects:
        accelerator.register_for_checkpointing(obj)

    steps_per_epoch = math.ceil(len(t.dataloader) / args.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise ValueError("the training dataloader is empty: fewer clips than --train_batch_size x processes")

    # Resume: the step comes from the folder name; model, optimiser, LR schedule, EMA, RNGs from its contents.
    global_step = 0
    checkpoint = resolve_resume_checkpoint(args)
    if checkpoint is not None:
        accelerator.print(f"resuming from {checkpoint}")
        accelerator.load_state(str(checkpoint))
        global_step = int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))
        if t.ema is not None:
            t.ema.to(accelerator.device)
    elif args.resume_from_checkpoint == "latest":
        accelerator.print(f"no checkpoint in {output_dir}: starting a new run")
    first_epoch = global_step // steps_per_epoch
    skip_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps

    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"{t.log_name}: {len(t.dataloader.dataset)} clips, batch {total_batch} ({args.train_batch_size} x "
        f"{accelerator.num_processes} processes x {args.gradient_accumulation_steps} accumulation), "
        f"{args.max_train_steps} steps, {sum(p.numel() for p in t.params) / 1e6:.2f} M trained parameters"
    )
    loss_log = LossLog(output_dir, accelerator.is_main_process, resume_step=global_step)
    if accelerator.is_main_process:
        truncate_validation_log(output_dir, global_step)
    progress = tqdm(
        total=args.max_train_steps,
        initial=global_step,
        desc=t.log_name,
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )

    def run_validation(step: int) -> None:
        if not accelerator.is_main_process:
            return
        logger.info(f"step {step}: validating")
        t.swap_ema(True)
        try:
            metrics = t.validate(step)
        finally:
            t.swap_ema(False)
        if metrics:
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=step)
            append_validation_log(output_dir, {"step": step, **metrics})
            logger.info(f"step {step}: validation " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    budget = TimeBudget(args.max_train_minutes, global_step, args.max_train_steps)
    stop = StopRequest()
    t.model.train()
    try:
        epoch = first_epoch
        micro_step = 0
        step_start = time.perf_counter()
        while global_step < args.max_train_steps:
            # accelerate's prepared loader sets its sampler's epoch to its own pass count when iterated, and a resumed
            # process counts from 0: set the loader's count (which also sets the sampler) or epoch 0 is replayed.
            t.sampler.set_epoch(epoch)
            if hasattr(t.dataloader, "set_epoch"):
                t.dataloader.set_epoch(epoch)
            loader = t.dataloader
            if epoch == first_epoch and skip_batches:
                loader = accelerator.skip_first_batches(t.dataloader, skip_batches)
                if hasattr(loader, "set_epoch"):  # accelerate < 1.15 starts the skipping loader's count at 0
                    loader.set_epoch(epoch)
            for batch in loader:
                if t.noise_rng is not None:
                    t.noise_rng.reseed(global_step, micro_step)
                micro_step += 1
                with accelerator.accumulate(t.model):
                    losses = t.compute_loss(batch)
                    accelerator.backward(losses["loss"])
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(t.params, args.max_grad_norm)
                    t.optimizer.step()
                    t.lr_scheduler.step()
                    t.optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue

                # One optimiser step done.
                micro_step = 0
                if t.after_optimizer_step is not None:
                    t.after_optimizer_step()
                if t.ema is not None:
                    t.ema.step(t.params)
                global_step += 1
                now = time.perf_counter()
                logs = {k: float(v.detach()) for k, v in losses.items()}
                logs["lr"] = t.lr_scheduler.get_last_lr()[0]
                logs["seconds_per_step"] = now - step_start
                step_start = now
                accelerator.log(logs, step=global_step)
                loss_log.add({"step": global_step, "epoch": epoch, **logs})
                progress.update(1)
                progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                # One broadcast a step for both decisions (multi-process runs only).
                last, stopping = agree_on_main(
                    accelerator, budget.last_step(global_step, args.max_train_steps), stop.requested
                )
                if last != args.max_train_steps:
                    logger.info(
                        f"--max_train_minutes {args.max_train_minutes:g}: ending at step {last} instead of "
                        f"{args.max_train_steps}"
                    )
                    args.max_train_steps = last
                    refit_lr_schedule(t.lr_scheduler, args, accelerator)
                    progress.total = last
                    progress.refresh()

                saved = global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps
                if saved:
                    loss_log.flush()
                    save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit)
                if (
                    args.validation_steps
                    and global_step % args.validation_steps == 0
                    and global_step < args.max_train_steps
                ):
                    loss_log.flush()
                    run_validation(global_step)
                    step_start = time.perf_counter()
                    # A SIGTERM during the validation (minutes on a CPU) stops here, not after one more step; every
                    # process asks (only the main one validates), so all of them stop at this step.
                    (stopping,) = agree_on_main(accelerator, stopping or stop.requested)
                if stopping:
                    if not saved:
                        loss_log.flush()
                        save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit)
                    loss_log.flush()
                    progress.close()
                    logger.warning(
                        f"SIGTERM: stopped at step {global_step} with checkpoint-{global_step}; continue with "
                        "--resume_from_checkpoint latest"
                    )
                    accelerator.end_training()
                    raise SystemExit(128 + signal.SIGTERM)
                if global_step >= args.max_train_steps:
                    break
            epoch += 1
    finally:
        stop.close()
    progress.close()
    loss_log.flush()

    # Final validation and the model, with the EMA weights swapped in.
    accelerator.wait_for_everyone()
    run_validation(global_step)
    if accelerator.is_main_process:
        t.swap_ema(True)
        try:
            tmp = output_dir / "final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            t.save_model(tmp)
            publish_folder(tmp, output_dir, t.model_marker)
        finally:
            t.swap_ema(False)
        logger.info(f"saved the model to {output_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()


def script_dir_on_path(file: str) -> None:
    """Let `python train/stageN.py` import this module whatever the working directory."""
    folder = os.path.dirname(os.path.abspath(file))
    if folder not in sys.path:
        sys.path.insert(0, folder)
