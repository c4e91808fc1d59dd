"""Deepening a trained UNet (more layers per block, same function): `deepen_unet` and `train/recipes/deepen_unet.py`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import CROSS_DIM, tiny_pipeline, tiny_video

from pipeline_video_deblur import VideoDeblurPipeline, VideoDeblurUNet3DModel
from pipeline_video_deblur.models.unet_3d_deblur import deepen_unet

REPO = Path(__file__).resolve().parents[2]


def _trained_like_unet() -> VideoDeblurUNet3DModel:
    """The shipped model's block layout at a tiny size, every weight moved off its initial value: diffusers starts
    the temporal layers as the identity, which would hide a layer put in the wrong place."""
    torch.manual_seed(0)
    unet = VideoDeblurUNet3DModel(
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=4,
    )
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def _run(unet, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 8, 3, 16, 16, generator=g)
    context = torch.randn(2, 2, CROSS_DIM, generator=g)
    with torch.no_grad():
        return unet(sample, torch.tensor([20, 900]), encoder_hidden_states=context).sample


@pytest.mark.parametrize("start, layers", [(1, 2), (1, 3), (2, 3)])
def test_a_deepened_unet_computes_the_same_function(start, layers):
    unet = _trained_like_unet()
    if start > 1:
        unet = deepen_unet(unet, start)
        with torch.no_grad():  # train the added layers a little, so that they are no identity any more
            for p in unet.parameters():
                p.add_(0.05 * torch.randn_like(p))
        unet.eval()  # diffusers' temporal convolutions have dropout 0.1
    deep = deepen_unet(unet, layers)

    assert not deep.training  # the source's mode: in train mode the temporal convolutions' dropout would act
    assert deep.config.layers_per_block == layers
    assert len(deep.down_blocks[0].resnets) == layers and len(deep.up_blocks[-1].resnets) == layers + 1
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in unet.parameters())
    reference = _run(unet)
    assert reference.abs().mean() > 0.1
    torch.testing.assert_close(_run(deep), reference, rtol=0, atol=1e-6)


def test_the_added_layers_train():
    """The zeroed outputs get gradients, so one optimiser step moves the deepened model off the old function."""
    unet = _trained_like_unet()
    deep = deepen_unet(unet, 2).train()
    added = deep.down_blocks[1].resnets[1].conv2.weight
    assert added.abs().max() == 0
    sample = torch.randn(1, 8, 2, 16, 16)
    out = deep(sample, torch.tensor([500]), encoder_hidden_states=torch.randn(1, 2, CROSS_DIM)).sample
    out.pow(2).mean().backward()
    assert added.grad is not None and added.grad.abs().max() > 0
    torch.optim.SGD(deep.parameters(), lr=0.1).step()
    assert added.abs().max() > 0
    assert not torch.allclose(_run(deep.eval()), _run(unet), atol=1e-6)


def test_fewer_layers_are_refused():
    unet = _trained_like_unet()
    with pytest.raises(
        ValueError, match=r"layers_per_block=0: expected an int >= the UNet's own layers_per_block \(1\)"
    ):
        deepen_unet(unet, 0)


def test_the_recipe_script_writes_a_deeper_pipeline_that_deblurs_the_same(tmp_path):
    source = tmp_path / "model"
    pipe = tiny_pipeline(pixel_vae=True, residual=True)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pipe.save_pretrained(source)
    script = [sys.executable, str(REPO / "train" / "recipes" / "deepen_unet.py")]
    target = tmp_path / "deeper"

    done = subprocess.run(
        [*script, str(source), str(target), "--layers-per-block", "2"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "layers_per_block 1 -> 2" in done.stdout
    assert json.loads((target / "unet" / "config.json").read_text())["layers_per_block"] == 2
    assert not list(tmp_path.glob("*.tmp*"))

    video = tiny_video(frames=4, height=32, width=32)
    outputs = []
    for folder in (source, target):
        loaded = VideoDeblurPipeline.from_pretrained(folder)
        loaded.set_progress_bar_config(disable=True)
        outputs.append(
            loaded(video, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").frames
        )
    assert loaded.config.residual and loaded.unet.config.layers_per_block == 2
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-5)

    # An existing target is refused and left as it is; so is a UNet with more layers than asked for.
    before = (target / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = subprocess.run(
        [*script, str(source), str(target), "--layers-per-block", "3"], capture_output=True, text=True
    )
    assert again.returncode != 0 and f"{target} exists" in again.stderr
    assert (target / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    fewer = subprocess.run(
        [*script, str(target), str(tmp_path / "shallower"), "--layers-per-block", "1"], capture_output=True, text=True
    )
    assert fewer.returncode != 0 and "already has 2; expected 2 or more" in fewer.stderr
    assert not (tmp_path / "shallower").exists()
