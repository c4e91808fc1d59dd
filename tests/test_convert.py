"""The converter on tiny random stand-ins of a ModelScope-style T2V folder and of CLIP encoders (real classes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import open_clip
import pytest
import torch
from diffusers import DDPMScheduler, UNet3DConditionModel
from tiny import tiny_vae
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from pipeline_video_deblur.convert import (
    OPENAI_CLIP_MEAN,
    add_convert_args,
    convert_t2v_to_deblur,
    load_clip_image_encoder,
    open_clip_to_transformers,
    run_convert,
    widen_unet,
)

CROSS_DIM = 32


def tiny_t2v_unet(cross_attention_dim: int = CROSS_DIM) -> UNet3DConditionModel:
    torch.manual_seed(0)
    return UNet3DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
    ).eval()


def tiny_clip(projection_dim: int = CROSS_DIM) -> CLIPVisionModelWithProjection:
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=projection_dim,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_open_clip_config(**vision_overrides) -> dict:
    vision_cfg = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 8, **vision_overrides}
    text_cfg = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
    return {"embed_dim": CROSS_DIM, "vision_cfg": vision_cfg, "text_cfg": text_cfg}


def tiny_open_clip(quick_gelu: bool = False, **vision_overrides) -> open_clip.CLIP:
    torch.manual_seed(0)
    model = open_clip.CLIP(**tiny_open_clip_config(**vision_overrides), quick_gelu=quick_gelu).eval()
    with torch.no_grad():  # open_clip initialises LayerNorms to identity and layer scales to a constant
        for name, param in model.visual.named_parameters():
            if "ln" in name or "ls_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def t2v_folder(tmp_path_factory) -> Path:
    """A diffusers T2V folder: unet/, vae/, scheduler/ (epsilon DDPM, as ModelScope ships) and a text part."""
    root = tmp_path_factory.mktemp("t2v")
    tiny_t2v_unet().save_pretrained(root / "unet")
    tiny_vae().save_pretrained(root / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        root / "scheduler"
    )
    (root / "text_encoder").mkdir()  # ignored by the converter
    return root


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clip")
    tiny_clip().save_pretrained(root)
    return root


def unet_output(unet, latents: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unet(latents, 500, encoder_hidden_states=context).sample


def test_widened_unet_equals_source_for_any_condition():
    source = tiny_t2v_unet()
    unet = widen_unet(source)
    assert unet.config.in_channels == 8 and unet.config.out_channels == 4
    assert torch.equal(unet.conv_in.weight[:, 4:], torch.zeros_like(unet.conv_in.weight[:, 4:]))

    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    context = torch.randn(1, 2, CROSS_DIM, generator=torch.Generator().manual_seed(3))
    expected = unet_output(source, latents, context)
    for seed in (4, 5):
        condition = 10 * torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
        got = unet_output(unet, torch.cat([latents, condition], dim=1), context)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "quick_gelu, vision_overrides",
    [(False, {}), (True, {}), (False, {"ls_init_value": 0.5, "final_ln_after_pool": True})],
    ids=["gelu", "quick_gelu", "layer_scale"],
)
def test_open_clip_visual_converts_to_same_embeddings(quick_gelu, vision_overrides):
    model = tiny_open_clip(quick_gelu, **vision_overrides)
    encoder = open_clip_to_transformers(model)
    assert encoder.config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    assert encoder.config.projection_dim == CROSS_DIM

    pixels = images()
    with torch.no_grad():
        expected = model.encode_image(pixels, normalize=False)
        got = encoder(pixel_values=pixels).image_embeds
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_open_clip_checkpoint_loads_from_file_and_hub_folder(tmp_path):
    model = tiny_open_clip()
    with torch.no_grad():
        expected = model.encode_image(images(), normalize=False)

    weights = tmp_path / "tiny_open_clip.bin"
    torch.save(model.state_dict(), weights)
    encoder, processor = load_clip_image_encoder(weights, open_clip_config=tiny_open_clip_config())
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixel_values=images()).image_embeds, expected, atol=1e-4, rtol=0)
    assert isinstance(processor, CLIPImageProcessor)
    assert processor.crop_size == {"height": 32, "width": 32}
    assert tuple(processor.image_mean) == OPENAI_CLIP_MEAN

    # The Hub layout (open_clip_config.json beside open_clip_pytorch_model.bin) needs no config argument.
    hub = tmp_path / "hub"
    hub.mkdir()
    weights.rename(hub / "open_clip_pytorch_model.bin")
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_open_clip_config()}))
    encoder, _ = load_clip_image_encoder(hub)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixel_values=images()).image_embeds, expected, atol=1e-4, rtol=0)

    # A built-in architecture name goes through `open_clip.create_model` (here a tiny config registered by name).
    registered = tmp_path / "video-deblur-tiny-test.json"
    registered.write_text(json.dumps(tiny_open_clip_config()))
    open_clip.add_model_config(registered)
    encoder, _ = load_clip_image_encoder(hub / "open_clip_pytorch_model.bin", open_clip_model_name=registered.stem)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixel_values=images()).image_embeds, expected, atol=1e-4, rtol=0)

    # A checkpoint that does not fit the given architecture is refused with the hint to name the right one.
    with pytest.raises(ValueError, match="(?s)does not fit the given open_clip config.*open-clip-model"):
        load_clip_image_encoder(hub / "open_clip_pytorch_model.bin", open_clip_config=tiny_open_clip_config(width=48))


def test_mismatched_cross_attention_dim_is_refused(t2v_folder, tmp_path):
    clip = tmp_path / "clip16"
    tiny_clip(projection_dim=16).save_pretrained(clip)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"cross_attention_dim is 32 .* projection_dim is 16"):
        convert_t2v_to_deblur(t2v_folder, clip, out)
    assert not out.exists()


def test_convert_writes_a_loadable_pipeline(t2v_folder, clip_folder, tmp_path):
    from pipeline_video_deblur import VideoDeblurPipeline

    out = tmp_path / "deblur"
    pipe = convert_t2v_to_deblur(t2v_folder, clip_folder, out)

    # The blur encoder starts as an exact, separate copy of the image encoder.
    assert pipe.blur_encoder is not pipe.image_encoder
    blur_state = pipe.blur_encoder.state_dict()
    for name, tensor in pipe.image_encoder.state_dict().items():
        assert torch.equal(blur_state[name], tensor), name
        assert blur_state[name].data_ptr() != tensor.data_ptr(), name

    loaded = VideoDeblurPipeline.from_pretrained(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deblur"]  # no temporary folder left behind
    assert loaded.config.residual is False
    scheduler = loaded.scheduler.config
    assert scheduler.prediction_type == "v_prediction"
    assert scheduler.timestep_spacing == "trailing"
    assert not scheduler.clip_sample
    assert (scheduler.beta_schedule, scheduler.beta_start, scheduler.beta_end) == ("scaled_linear", 0.00085, 0.012)

    # The saved UNet still computes the T2V UNet's output, whatever the blurred latents.
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    condition = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    context = torch.randn(1, 2, CROSS_DIM, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        unet_output(loaded.unet, torch.cat([latents, condition], dim=1), context),
        unet_output(tiny_t2v_unet(), latents, context),
        atol=1e-5,
        rtol=0,
    )
    pixels = images()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.blur_encoder(pixel_values=pixels).image_embeds,
            loaded.image_encoder(pixel_values=pixels).image_embeds,
        )

    # An existing output is kept unless --overwrite; with it, the CLI replaces the folder.
    with pytest.raises(ValueError, match="already exists"):
        convert_t2v_to_deblur(t2v_folder, clip_folder, out)
    parser = add_convert_args(argparse.ArgumentParser())
    args = parser.parse_args(["--t2v", str(t2v_folder), "--clip", str(clip_folder), "-o", str(out), "--overwrite"])
    args.residual = True
    assert run_convert(args) == 0
    assert VideoDeblurPipeline.load_config(out)["residual"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deblur"]


def test_bad_paths_are_refused(t2v_folder, clip_folder, tmp_path):
    broken = tmp_path / "broken_t2v"
    broken.mkdir()
    (broken / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"unet/.*broken_t2v"):
        convert_t2v_to_deblur(broken, clip_folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="CLIP checkpoint not found"):
        convert_t2v_to_deblur(t2v_folder, tmp_path / "missing", tmp_path / "out")
    for output in (t2v_folder, clip_folder, t2v_folder.parent):
        with pytest.raises(ValueError, match="is \\(or contains\\) the input"):
            convert_t2v_to_deblur(t2v_folder, clip_folder, output, overwrite=True)
    # Inside an input (it would be replaced in place), and a folder of other things, even with --overwrite.
    with pytest.raises(ValueError, match="lies inside the input"):
        convert_t2v_to_deblur(t2v_folder, clip_folder, t2v_folder / "unet", overwrite=True)
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("years of work\n")
    with pytest.raises(ValueError, match=r"holds other things than a model \(thesis.tex\)"):
        convert_t2v_to_deblur(t2v_folder, clip_folder, documents, overwrite=True)
    assert (documents / "thesis.tex").read_text() == "years of work\n"
    run = tmp_path / "stage1_run"
    (run / "checkpoint-500").mkdir(parents=True)
    (run / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds a training run \(checkpoint-500\)"):
        convert_t2v_to_deblur(t2v_folder, clip_folder, run, overwrite=True)
    assert (run / "checkpoint-500").is_dir()
    with pytest.raises(ValueError, match="clip_format"):
        convert_t2v_to_deblur(t2v_folder, clip_folder, tmp_path / "out", clip_format="onnx")
    assert not (tmp_path / "out").exists()
