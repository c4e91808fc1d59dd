"""Tiny real components for tests: every class is the real one, at a size that runs in milliseconds on a CPU."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from pipeline_video_deblur import PixelShuffleVAE, VideoDeblurPipeline, VideoDeblurUNet3DModel

CROSS_DIM = 16


def tiny_unet(latent_channels: int = 4, sample_size: int | None = None) -> VideoDeblurUNet3DModel:
    torch.manual_seed(0)
    return VideoDeblurUNet3DModel(
        sample_size=sample_size,
        in_channels=2 * latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=4,
    )


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=32,
    )


def tiny_clip(hidden_size: int = 16, image_size: int = 32, seed: int = 0) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
        projection_dim=CROSS_DIM,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        clip_sample=False,
        timestep_spacing="trailing",
    )


def tiny_components(pixel_vae: bool = False, sample_size: int | None = None) -> dict:
    """Components of a tiny pipeline. The two encoders have different sizes so that swapping them shows."""
    vae = PixelShuffleVAE(factor=2, scaling_factor=1.0) if pixel_vae else tiny_vae()
    latent_channels = 12 if pixel_vae else 4
    return {
        "vae": vae,
        "unet": tiny_unet(latent_channels, sample_size=sample_size),
        "image_encoder": tiny_clip(hidden_size=16, image_size=32, seed=0),
        "blur_encoder": tiny_clip(hidden_size=24, image_size=24, seed=1),
        "feature_extractor": CLIPImageProcessor(crop_size=32, size=32),
        "scheduler": tiny_scheduler(),
    }


def tiny_pipeline(
    pixel_vae: bool = False, residual: bool = False, sample_size: int | None = None
) -> VideoDeblurPipeline:
    pipe = VideoDeblurPipeline(**tiny_components(pixel_vae, sample_size), residual=residual)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_video(frames: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth random clip (F, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(frames, 3, max(height // 8, 1), max(width // 8, 1), generator=g)
    return torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
