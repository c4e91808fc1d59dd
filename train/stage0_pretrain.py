#!/usr/bin/env python
"""Stage 0: pretrain a small text-to-video-style model here, standing in for the public ModelScope T2V checkpoint.

It makes what `video-deblur convert` takes, so a model made here goes through exactly the path a public
checkpoint does (DESIGN 3):

1. a VAE: `--vae_type pixel_shuffle` (default) is weight-free and lossless (pixel unshuffle by `--vae_factor`);
   `--vae_type autoencoder_kl` trains a small `AutoencoderKL` on single frames first (`--vae_train_steps`,
   L1 + a tiny KL term);
2. a `UNet3DConditionModel` (in = out = latent channels) trained with v-prediction (DDPM, T = 1000) on sharp
   clips, jointly with a small CLIP vision encoder (`CLIPVisionModelWithProjection`) whose embedding of the clip's
   sharp centre frame is the UNet's one cross-attention token (the stand-in for the text prompt); the token is
   zeroed with probability `--condition_dropout`, as text is in T2V training.

Output (`--output_dir`), the diffusers T2V layout plus the CLIP folder::

    unet/ (UNet3DConditionModel, sample_size = the latent training size)  vae/  scheduler/ (DDIM, v-prediction)
    image_encoder/ (CLIPVisionModelWithProjection + preprocessor_config.json)  model_index.json (written last)

then::

    video-deblur convert --t2v OUT --clip OUT/image_encoder -o converted/

    accelerate launch train/stage0_pretrain.py --train_data_dir synth/ --output_dir stage0/ \
        --resolution 64 --num_frames 8 --train_batch_size 2 --max_train_steps 3000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pipeline_video_deblur import PixelShuffleVAE, VideoDeblurUNet3DModel  # noqa: E402
from pipeline_video_deblur.atomic import replace_dir  # noqa: E402
from pipeline_video_deblur.losses import add_noise, deblur_loss  # noqa: E402

logger = logging.getLogger("train")

# Normalisation of OpenAI's CLIP (which OpenCLIP's ViT-H/14 keeps): the stand-in is trained with what the real
# encoder expects.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[1], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help=(
            "optional: a stage 0 output folder to continue from (its VAE, UNet and image encoder); sizes flags are "
            "then ignored"
        ),
    )
    vae = parser.add_argument_group("VAE")
    vae.add_argument("--vae_type", choices=["pixel_shuffle", "autoencoder_kl"], default="pixel_shuffle")
    vae.add_argument("--vae_factor", type=int, default=2, help="pixel_shuffle: downsampling factor")
    vae.add_argument(
        "--vae_block_out_channels",
        type=common._int_list,
        default=[32, 64],
        help="autoencoder_kl widths (factor 2^(n-1))",
    )
    vae.add_argument("--vae_layers_per_block", type=int, default=1)
    vae.add_argument("--vae_latent_channels", type=int, default=4)
    vae.add_argument(
        "--vae_train_steps", type=int, default=2000, help="autoencoder_kl: training steps before the UNet"
    )
    vae.add_argument("--vae_learning_rate", type=float, default=1e-3)
    vae.add_argument("--vae_kl_weight", type=float, default=1e-6)
    vae.add_argument("--vae_frames_per_step", type=int, default=16, help="autoencoder_kl: frames per VAE step")
    vae.add_argument(
        "--vae_scaling_factor",
        type=float,
        default=None,
        help="latent scale; default 1 / std of the training latents (measured)",
    )
    unet = parser.add_argument_group("UNet")
    unet.add_argument("--unet_block_out_channels", type=common._int_list, default=[32, 64, 64])
    unet.add_argument("--unet_layers_per_block", type=int, default=1)
    unet.add_argument(
        "--unet_down_block_types",
        default=None,
        help=(
            "comma-separated, e.g. DownBlock3D,CrossAttnDownBlock3D,DownBlock3D (no attention at full resolution: "
            "much faster on a CPU). Default: CrossAttnDownBlock3D at every level but the last, as ModelScope T2V"
        ),
    )
    unet.add_argument(
        "--unet_up_block_types", default=None, help="comma-separated; default: the mirror of the down blocks"
    )
    unet.add_argument(
        "--unet_attention_head_dim",
        type=int,
        default=8,
        help="UNet3DConditionModel's attention_head_dim (it uses it as the head count)",
    )
    unet.add_argument(
        "--unet_norm_num_groups",
        type=int,
        default=None,
        help="default: the largest of 32, 16, 8, 4 dividing every width",
    )
    unet.add_argument(
        "--cross_attention_dim", type=int, default=64, help="UNet context size = the CLIP projection size"
    )
    clip = parser.add_argument_group("CLIP image encoder")
    clip.add_argument("--clip_hidden_size", type=int, default=64)
    clip.add_argument("--clip_layers", type=int, default=2)
    clip.add_argument("--clip_heads", type=int, default=None, help="default: hidden size / 16")
    clip.add_argument("--clip_image_size", type=int, default=64)
    clip.add_argument("--clip_patch_size", type=int, default=8)
    diffusion = parser.add_argument_group("diffusion")
    diffusion.add_argument(
        "--beta_schedule", default="scaled_linear", help="DDPM betas (ModelScope T2V: scaled_linear 0.00085-0.012)"
    )
    diffusion.add_argument("--beta_start", type=float, default=0.00085)
    diffusion.add_argument("--beta_end", type=float, default=0.012)
    diffusion.add_argument("--coherence_weight", type=float, default=0.0, help="Eq. 5 weight (T2V pretraining: 0)")
    diffusion.add_argument(
        "--validation_guidance_scale", type=float, default=1.0, help="CFG scale of validation samples"
    )
    common.add_common_args(parser, learning_rate=3e-4)
    args = parser.parse_args(argv)
    common.check_common_args(args)
    if args.clip_image_size % args.clip_patch_size:
        raise ValueError(
            f"--clip_image_size {args.clip_image_size} is not a multiple of --clip_patch_size {args.clip_patch_size}"
        )
    unet_block_types(args)  # raises on a bad list, before anything is loaded
    return args


def norm_groups(widths: list[int], requested: int | None) -> int:
    if requested is not None:
        bad = [w for w in widths if w % requested]
        if bad:
            raise ValueError(f"--unet_norm_num_groups {requested} does not divide the widths {bad}")
        return requested
    for groups in (32, 16, 8, 4, 2, 1):
        if all(w % groups == 0 for w in widths):
            return groups
    return 1


# ----------------------------------------------------------------------------------------------------------------
# Models


def build_vae(args):
    if args.vae_type == "pixel_shuffle":
        return PixelShuffleVAE(factor=args.vae_factor, scaling_factor=1.0)
    from diffusers import AutoencoderKL

    widths = args.vae_block_out_channels
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=tuple(widths),
        layers_per_block=args.vae_layers_per_block,
        norm_num_groups=norm_groups(widths, None),
        latent_channels=args.vae_latent_channels,
        sample_size=args.resolution,
        scaling_factor=1.0,
    )


def vae_factor(vae) -> int:
    if hasattr(vae.config, "block_out_channels"):
        return 2 ** (len(vae.config.block_out_channels) - 1)
    return int(vae.config.factor)


def latent_channels_of(vae) -> int:
    return vae.latent_channels if isinstance(vae, PixelShuffleVAE) else vae.config.latent_channels


def build_unet(args, latent_channels: int) -> VideoDeblurUNet3DModel:
    widths = args.unet_block_out_channels
    down, up = unet_block_types(args)
    return VideoDeblurUNet3DModel(
        sample_size=args.resolution // args.vae_factor_value,
        in_channels=latent_channels,  # a T2V UNet: noisy latents only (convert adds the condition channels)
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(widths),
        layers_per_block=args.unet_layers_per_block,
        norm_num_groups=norm_groups(widths, args.unet_norm_num_groups),
        cross_attention_dim=args.cross_attention_dim,
        attention_head_dim=args.unet_attention_head_dim,
    )


def unet_block_types(args) -> tuple[tuple[str, ...], tuple[str, ...]]:
    levels = len(args.unet_block_out_channels)
    if args.unet_down_block_types:
        down = tuple(t.strip() for t in args.unet_down_block_types.split(","))
    else:
        down = ("CrossAttnDownBlock3D",) * (levels - 1) + ("DownBlock3D",)
    if args.unet_up_block_types:
        up = tuple(t.strip() for t in args.unet_up_block_types.split(","))
    else:
        up = tuple(t.replace("Down", "Up") for t in reversed(down))
    allowed = {"CrossAttnDownBlock3D", "DownBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"}
    for name, types in (("--unet_down_block_types", down), ("--unet_up_block_types", up)):
        if len(types) != levels or not set(types) <= allowed:
            raise ValueError(
                f"{name} must list {levels} block types (one per --unet_block_out_channels) from {sorted(allowed)}, "
                f"got {list(types)}"
            )
    return down, up


def build_clip(args):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    heads = args.clip_heads or max(1, args.clip_hidden_size // 16)
    config = CLIPVisionConfig(
        hidden_size=args.clip_hidden_size,
        intermediate_size=4 * args.clip_hidden_size,
        num_hidden_layers=args.clip_layers,
        num_attention_heads=heads,
        image_size=args.clip_image_size,
        patch_size=args.clip_patch_size,
        projection_dim=args.cross_attention_dim,
    )
    return CLIPVisionModelWithProjection(config)


def build_schedulers(args):
    from diffusers import DDIMScheduler, DDPMScheduler

    betas = dict(
        num_train_timesteps=1000, beta_schedule=args.beta_schedule, beta_start=args.beta_start, beta_end=args.beta_end
    )
    train_scheduler = DDPMScheduler(**betas, prediction_type="v_prediction", clip_sample=False)
    sample_scheduler = DDIMScheduler(
        **betas, prediction_type="v_prediction", clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=False
    )
    return train_scheduler, sample_scheduler


class T2VModel(torch.nn.Module):
    """UNet and CLIP encoder, trained together, as one module for accelerate / DDP / DeepSpeed."""

    def __init__(self, unet, image_encoder):
        super().__init__()
        self.unet, self.image_encoder = unet, image_encoder

    def forward(self, noisy, timesteps, centre_frames, keep):
        context = common.clip_embed(self.image_encoder, centre_frames, CLIP_MEAN, CLIP_STD)[:, None]  # (B, 1, D)
        context = context * keep.view(-1, 1, 1).to(context.dtype)
        return self.unet(noisy, timesteps, encoder_hidden_states=context).sample


def encode_frames(vae, frames: torch.Tensor, scaling: float, chunk: int = 16) -> torch.Tensor:
    """Frames (B, F, 3, H, W) in [0, 1] -> latents (B, C, F, h, w) times `scaling` (as the pipeline's encode_video)."""
    batch, count = frames.shape[:2]
    flat = frames.flatten(0, 1)  # (B, F, 3, H, W) -> (B*F, 3, H, W)
    latents = torch.cat([vae.encode((c * 2 - 1).to(vae.dtype)).latent_dist.mode() for c in flat.split(chunk)]).float()
    latents = latents.reshape(batch, count, *latents.shape[1:]) * scaling
    return latents.permute(0, 2, 1, 3, 4)  # (B, F, C, h, w) -> (B, C, F, h, w)


def decode_frames(vae, latents: torch.Tensor, scaling: float, chunk: int = 16) -> torch.Tensor:
    """Latents (B, C, F, h, w) -> frames (B, F, 3, H, W) in [0, 1]."""
    batch, _, count = latents.shape[:3]
    flat = (latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / scaling).to(vae.dtype)  # -> (B*F, C, h, w)
    images = torch.cat([vae.decode(c).sample.float() for c in flat.split(chunk)])
    return ((images + 1) / 2).clamp(0, 1).reshape(batch, count, *images.shape[1:])


# ----------------------------------------------------------------------------------------------------------------
# Phase 1: the VAE


def train_autoencoder(args, accelerator, vae, dataloader, sampler, clips) -> None:
    """Train the small AutoencoderKL on single sharp frames (main process; others wait and load the result)."""
    from tqdm.auto import tqdm

    vae.to(accelerator.device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    step, epoch = 0, 0
    progress = tqdm(total=args.vae_train_steps, desc="stage0 vae", dynamic_ncols=True)
    while step < args.vae_train_steps:
        sampler.set_epoch(10_000 + epoch)  # a data order of its own
        for batch in dataloader:
            frames = batch["sharp"].flatten(0, 1)  # (B, F, 3, H, W) -> (B*F, 3, H, W)
            pick = torch.randperm(frames.shape[0], generator=generator)[: args.vae_frames_per_step]
            x = frames[pick].to(accelerator.device) * 2 - 1
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample(generator=None)).sample
            l1 = F.l1_loss(recon, x)
            kl = posterior.kl().mean()
            loss = l1 + args.vae_kl_weight * kl
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            progress.set_postfix(l1=f"{l1.item():.4f}")
            accelerator.log({"vae/l1": l1.item(), "vae/kl": kl.item()}, step=step)
            if step >= args.vae_train_steps:
                break
        epoch += 1
    progress.close()
    vae.eval().requires_grad_(False)
    if clips:
        with torch.no_grad():
            scores = []
            for clip in clips:
                sharp = clip["sharp"][None].to(accelerator.device)
                recon = decode_frames(vae, encode_frames(vae, sharp, 1.0), 1.0)[0].cpu()
                scores.append(common.psnr(recon, clip["sharp"]))
        logger.info(f"VAE round trip on {len(clips)} held-out clips: {sum(scores) / len(scores):.2f} dB PSNR")
        accelerator.log({"validation/vae_psnr": sum(scores) / len(scores)}, step=0)


def measure_scaling(args, accelerator, vae, dataloader, sampler, batches: int = 8) -> float:
    """1 / std of the unscaled latents over a few training batches (`common.inverse_std`)."""
    return common.inverse_std(
        dataloader, sampler, lambda batch: encode_frames(vae, batch["sharp"].to(accelerator.device), 1.0), batches
    )


# ----------------------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    # 1. Check paths before loading anything
    output_dir = common.check_output_dir(
        args.output_dir,
        {
            "--train_data_dir": args.train_data_dir,
            "--pretrained_model_name_or_path": args.pretrained_model_name_or_path,
        },
        resume=args.resume_from_checkpoint,
        overwrite=args.overwrite_output_dir,
    )
    accelerator = common.make_accelerator(args, "stage0_pretrain")
    weight_dtype = common.weight_dtype_of(accelerator)

    # 2. Models: new at the flags' sizes, or continued from an earlier stage 0 output
    init = Path(args.pretrained_model_name_or_path) if args.pretrained_model_name_or_path else None
    if init is not None:
        if not (init / "model_index.json").is_file():
            raise FileNotFoundError(
                f"--pretrained_model_name_or_path {init} is not a stage 0 output (no model_index.json)"
            )
        vae_class = json.loads((init / "vae" / "config.json").read_text())["_class_name"]
        vae = (PixelShuffleVAE if vae_class == "PixelShuffleVAE" else AutoencoderKL).from_pretrained(init / "vae")
        args.vae_type = "pixel_shuffle" if vae_class == "PixelShuffleVAE" else "autoencoder_kl"
        args.vae_scaling_factor = vae.config.scaling_factor
    else:
        vae = build_vae(args)
    args.vae_factor_value = vae_factor(vae)
    latent_channels = latent_channels_of(vae)

    # 3. Data (errors for a missing folder, short clips and sizes come here, before training)
    if init is None:
        multiple = args.vae_factor_value * 2 ** (len(args.unet_block_out_channels) - 1)
    else:
        widths = UNet3DConditionModel.load_config(init / "unet")["block_out_channels"]
        multiple = args.vae_factor_value * 2 ** (len(widths) - 1)
    common.check_resolution(args.resolution, multiple, "the VAE factor times the UNet's downsampling")
    common.check_resolution(
        args.validation_resolution, multiple, "the VAE factor times the UNet's downsampling", "--validation_resolution"
    )
    dataset = common.load_dataset(args, "train", args.resolution, args.num_frames, augment=True)
    dataloader, sampler = common.make_train_dataloader(args, dataset)
    clips = common.validation_clips(args)

    # 4. Phase 1: the VAE (trained once; a resumed run reuses the VAE it finished)
    vae_dir = output_dir / "vae"
    if args.vae_type == "autoencoder_kl" and init is None:
        finished = (vae_dir / "config.json").is_file() and args.resume_from_checkpoint is not None
        if finished:
            logger.info(f"reusing the VAE trained earlier in {vae_dir}")
        elif accelerator.is_main_process:
            train_autoencoder(args, accelerator, vae, dataloader, sampler, clips)
            tmp = output_dir / "vae.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            vae.save_pretrained(str(tmp))
            replace_dir(tmp, vae_dir)
        accelerator.wait_for_everyone()
        vae = AutoencoderKL.from_pretrained(str(vae_dir))
    vae.requires_grad_(False).eval().to(accelerator.device)
    original_vae_state = {k: v.detach().cpu().clone() for k, v in vae.state_dict().items()}  # float32, for saving
    if args.vae_scaling_factor is None:
        args.vae_scaling_factor = measure_scaling(args, accelerator, vae, dataloader, sampler)
        logger.info(f"latent scaling factor {args.vae_scaling_factor:.4f} (1 / std of the training latents)")
    vae.register_to_config(scaling_factor=float(args.vae_scaling_factor))
    scaling = float(args.vae_scaling_factor)
    common.cast_frozen(vae, weight_dtype)

    # 5. Phase 2: the UNet and the CLIP encoder, together
    if init is not None:
        unet = VideoDeblurUNet3DModel.from_config(UNet3DConditionModel.load_config(init / "unet"))
        unet.load_state_dict(UNet3DConditionModel.from_pretrained(init / "unet").state_dict())
        unet.register_to_config(sample_size=args.resolution // args.vae_factor_value)
        # float32 whatever it was stored in (transformers 5 keeps a float16 encoder, as the default model ships, in
        # float16)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(init / "image_encoder").float()
    else:
        torch.manual_seed(args.seed)
        unet = build_unet(args, latent_channels)
        image_encoder = build_clip(args)
    if image_encoder.config.projection_dim != unet.config.cross_attention_dim:
        raise ValueError(
            f"CLIP projection_dim {image_encoder.config.projection_dim} != UNet cross_attention_dim "
            f"{unet.config.cross_attention_dim}"
        )
    unet.train().requires_grad_(True)
    image_encoder.train().requires_grad_(True)
    common.set_attention(args, accelerator, unet)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        image_encoder.gradient_checkpointing_enable()
    params = [*unet.parameters(), *image_encoder.parameters()]
    train_scheduler, sample_scheduler = build_schedulers(args)
    alphas_cumprod = train_scheduler.alphas_cumprod.to(accelerator.device)

    model, optimizer, dataloader, lr_scheduler, ema, noise_rng = common.prepare_training(
        args, accelerator, T2VModel(unet, image_encoder), params, dataloader
    )
    device = accelerator.device
    num_train_timesteps = train_scheduler.config.num_train_timesteps
    weights = common.timestep_weights(args, num_train_timesteps, device)

    def compute_loss(batch: dict) -> dict[str, torch.Tensor]:
        sharp = batch["sharp"].to(device, non_blocking=True)  # (B, F, 3, H, W)
        with torch.no_grad():
            x0 = encode_frames(vae, sharp, scaling)  # (B, C, F, h, w)
        noise, timesteps, keep = common.diffusion_draws(
            noise_rng, tuple(x0.shape), num_train_timesteps, args.condition_dropout, device, weights
        )
        noisy = add_noise(alphas_cumprod, x0, noise, timesteps)
        prediction = model(noisy, timesteps, sharp[:, (sharp.shape[1] - 1) // 2], keep)
        return deblur_loss(alphas_cumprod, prediction, noisy, x0, noise, timesteps, args.coherence_weight)

    @torch.no_grad()
    def validate(step: int) -> dict[str, float]:
        """Held-out v-loss at fixed timesteps and noise, and a sample from the held-out clip's centre frame."""
        if not clips:
            return {}
        modules = [unet, image_encoder]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        losses, rows = [], []
        try:
            with accelerator.autocast():
                for clip in clips:
                    sharp = clip["sharp"][None].to(device)  # (1, F, 3, H, W)
                    x0 = encode_frames(vae, sharp, scaling)
                    centre = sharp[:, (sharp.shape[1] - 1) // 2]
                    context = common.clip_embed(image_encoder, centre, CLIP_MEAN, CLIP_STD)[:, None]
                    for t in (100, 300, 500, 700, 900):
                        timesteps = torch.full((1,), t, device=device)
                        noise = torch.randn(x0.shape, generator=generator).to(device)
                        noisy = add_noise(alphas_cumprod, x0, noise, timesteps)
                        v = unet(noisy, timesteps, encoder_hidden_states=context).sample
                        losses.append(float(deblur_loss(alphas_cumprod, v, noisy, x0, noise, timesteps, 0.0)["loss"]))
                    # A DDIM sample (CFG against zero context when the scale is > 1).
                    sample_scheduler.set_timesteps(args.validation_inference_steps, device=device)
                    latents = torch.randn(x0.shape, generator=generator).to(device) * sample_scheduler.init_noise_sigma
                    for t in sample_scheduler.timesteps:
                        inp = sample_scheduler.scale_model_input(latents, t)
                        v = unet(inp, t, encoder_hidden_states=context).sample.float()
                        if args.validation_guidance_scale > 1:
                            v_uncond = unet(inp, t, encoder_hidden_states=torch.zeros_like(context)).sample.float()
                            v = v_uncond + args.validation_guidance_scale * (v - v_uncond)
                        latents = sample_scheduler.step(v, t, latents).prev_sample
                    frames = decode_frames(vae, latents, scaling)[0].cpu()
                    c = (frames.shape[0] - 1) // 2
                    rows.append([clip["sharp"][c], frames[0], frames[c], frames[-1]])
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        grid = common.save_comparison(rows, output_dir / "validation" / f"step-{step:06d}.png")
        common.log_image(accelerator, "validation/reference|first|centre|last", grid, step)
        return {"val_loss": sum(losses) / len(losses)}

    def save_model(folder: Path) -> None:
        # The T2V layout: a plain UNet3DConditionModel (what a public checkpoint has), VAE, scheduler, CLIP folder.
        config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
        plain = UNet3DConditionModel.from_config(config)
        plain.load_state_dict(unet.state_dict())
        plain.save_pretrained(str(folder / "unet"))
        save_vae = vae
        if weight_dtype != torch.float32:
            save_vae = type(vae).from_config(vae.config)  # float32; the weights are the cast-back originals
            save_vae.load_state_dict(original_vae_state)
        save_vae.save_pretrained(str(folder / "vae"))
        sample_scheduler.save_pretrained(str(folder / "scheduler"))
        image_encoder.save_pretrained(str(folder / "image_encoder"))
        size = image_encoder.config.image_size
        CLIPImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
        ).save_pretrained(str(folder / "image_encoder"))
        index = {
            "_class_name": "Stage0TextToVideoModel",
            "_note": (
                "made by train/stage0_pretrain.py; convert with: video-deblur convert --t2v THIS --clip "
                "THIS/image_encoder -o OUT"
            ),
            "unet": ["diffusers", "UNet3DConditionModel"],
            "vae": [type(save_vae).__module__.split(".")[0], type(save_vae).__name__],
            "scheduler": ["diffusers", type(sample_scheduler).__name__],
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "training": {
                "resolution": args.resolution,
                "num_frames": args.num_frames,
                "max_train_steps": args.max_train_steps,
                "vae_type": args.vae_type,
                "vae_scaling_factor": scaling,
                "unet_parameters": sum(p.numel() for p in unet.parameters()),
                "clip_parameters": sum(p.numel() for p in image_encoder.parameters()),
            },
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    trainer = common.Trainer(
        accelerator=accelerator,
        args=args,
        model=model,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        dataloader=dataloader,
        sampler=sampler,
        params=params,
        compute_loss=compute_loss,
        validate=validate,
        save_model=save_model,
        ema=ema,
        noise_rng=noise_rng,
        log_name="stage0",
    )
    logger.info(
        f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, CLIP "
        f"{sum(p.numel() for p in image_encoder.parameters()) / 1e6:.2f} M "
        f"parameters; latents {latent_channels} x {args.resolution // args.vae_factor_value}^2"
    )
    common.train(trainer)


if __name__ == "__main__":
    main(parse_args())
