#!/usr/bin/env python
"""Estimate the GPU memory of each training stage at the paper's settings, without a GPU and without weights.

How: the models are built on the meta device (no memory, no compute) at their real sizes: the ModelScope T2V UNet
(block widths 320/640/1280/1280, two layers per block, 1024-d cross-attention: 1.41 B parameters, here with the
doubled `conv_in`) and the OpenCLIP ViT-H/14 image tower (632 M). Then

- weights, gradients and AdamW states are parameters x bytes: float32 weights (4 B), float32 gradients (4 B) and
  two float32 Adam moments (8 B) for what trains, the frozen models at the autocast dtype (2 B);
- activations are what autograd keeps for the backward pass: one forward pass of the UNet on the meta device at
  the training shape (batch 1, 16 frames, 256 x 256 -> 32 x 32 latents) with `saved_tensors_hooks` counting the
  bytes of every saved tensor; with gradient checkpointing, the block inputs that stay saved plus the largest
  single block's activations (the backward pass recomputes one block at a time).

Not counted: the CUDA context and allocator slack (add 1-3 GB), transient buffers of single kernels, and the CLIP
activations (a 224 px image per clip: about 0.1 GB). Usage: `python train/estimate_memory.py [--frames 16 --size 256]`.
"""

from __future__ import annotations

import argparse

import torch

GiB = 2**30


def unet_memory(frames: int, latent: int, batch: int, checkpointing: bool, lora_rank: int = 64) -> dict:
    """Parameters of the UNet, bytes saved for backward (in all and per down / mid / up block), and the parameters
    of LoRA adapters of `lora_rank` on to_q / to_k / to_v / to_out.0."""
    from pipeline_video_deblur import VideoDeblurUNet3DModel

    with torch.device("meta"):
        unet = VideoDeblurUNet3DModel(
            in_channels=8,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=1024,
            attention_head_dim=64,
        ).to(torch.bfloat16)
    lora = sum(
        lora_rank * (module.in_features + module.out_features)
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0"))
    )
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    saved: dict[int, int] = {}
    per_block: dict[str, int] = {}
    current = ["stem"]
    blocks = {f"down_blocks.{i}": b for i, b in enumerate(unet.down_blocks)}
    blocks.update({"mid_block": unet.mid_block}, **{f"up_blocks.{i}": b for i, b in enumerate(unet.up_blocks)})
    for name, block in blocks.items():
        block.register_forward_pre_hook(lambda module, inputs, name=name: current.__setitem__(0, name))

    def pack(tensor):
        if id(tensor) not in saved:
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
            per_block[current[0]] = per_block.get(current[0], 0) + saved[id(tensor)]
        return tensor

    sample = torch.empty(batch, 8, frames, latent, latent, device="meta", dtype=torch.bfloat16, requires_grad=True)
    context = torch.empty(batch, 2, 1024, device="meta", dtype=torch.bfloat16)
    timesteps = torch.empty(batch, device="meta", dtype=torch.long)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unet(sample, timesteps, encoder_hidden_states=context)
    return {
        "params": sum(p.numel() for p in unet.parameters()),
        "saved": sum(saved.values()),
        "per_block": per_block,
        "lora": lora,
    }


def clip_params() -> int:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
        patch_size=14, projection_dim=1024,
    )  # fmt: skip
    with torch.device("meta"):
        return sum(p.numel() for p in CLIPVisionModelWithProjection(config).parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels (latents are 1/8)")
    parser.add_argument("--batch", type=int, default=1, help="clips per GPU")
    args = parser.parse_args()

    plain = unet_memory(args.frames, args.size // 8, args.batch, checkpointing=False)
    checkpointed = unet_memory(args.frames, args.size // 8, args.batch, checkpointing=True)
    unet, act, lora = plain["params"], plain["saved"], plain["lora"]
    # With checkpointing the block inputs stay saved, and the backward pass recomputes one block at a time.
    act_ckpt = checkpointed["saved"] + max(plain["per_block"].values())
    clip = clip_params()
    vae = 83.7e6  # the SD / ModelScope AutoencoderKL
    trained = 16  # bytes per trained parameter: fp32 weight + fp32 grad + two fp32 Adam moments
    print(f"LoRA rank 64 on the UNet's attention: {lora / 1e6:.0f} M params")
    print(f"UNet {unet / 1e9:.2f} B params, CLIP ViT-H/14 {clip / 1e6:.0f} M, VAE {vae / 1e6:.0f} M")
    print(f"UNet activations ({args.batch} x {args.frames} x {args.size}^2, bf16): {act / GiB:.1f} GiB, "
          f"{act_ckpt / GiB:.1f} GiB with --gradient_checkpointing")  # fmt: skip
    frozen_small = (clip + vae) * 2  # image_encoder and VAE at bf16
    rows = {
        # Stage 1: the UNet stays float32 (its conv_in trains), frozen; the blur encoder trains.
        "stage 1": unet * 4 + clip * trained + frozen_small,
        "stage 2 (full)": unet * trained + clip * trained + frozen_small,
        "stage 2 (full) + EMA": unet * (trained + 4) + clip * (trained + 4) + frozen_small,
        # LoRA: the UNet and the (frozen) blur encoder stay float32; only the adapters train.
        "stage 2 (LoRA r=64)": unet * 4 + lora * trained + clip * 4 + frozen_small,
    }
    for name, static in rows.items():
        print(
            f"{name:34s} weights+grads+Adam {static / GiB:5.1f} GiB | total {(static + act) / GiB:5.1f} GiB, "
            f"{(static + act_ckpt) / GiB:5.1f} GiB with checkpointing"
        )


if __name__ == "__main__":
    main()
