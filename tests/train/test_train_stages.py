"""The training scripts as real subprocesses, 2 steps each on tiny components and tiny synthetic data."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import PYTHON, TINY_TRAIN_FLAGS, TRAIN, run_script

from pipeline_video_deblur import VideoDeblurPipeline

ACCELERATE_CPU = [
    PYTHON, "-m", "accelerate.commands.launch",
    "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip

TINY_STAGE0 = [
    "--unet_block_out_channels", "16,32",
    "--unet_attention_head_dim", "4",
    "--cross_attention_dim", "16",
    "--clip_hidden_size", "16",
    "--clip_layers", "1",
    "--clip_image_size", "32",
    "--clip_patch_size", "8",
]  # fmt: skip


def weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def changed(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def clip(frames: int = 4, size: int = 32) -> torch.Tensor:
    from tiny import tiny_video

    return tiny_video(frames=frames, height=size, width=size, seed=3)


# ----------------------------------------------------------------------------------------------------------------
# Stage 0


def test_stage0_pixel_shuffle_with_accelerate_launch(tmp_path, train_data):
    out = tmp_path / "stage0"
    run_script(
        [TRAIN / "stage0_pretrain.py", "--train_data_dir", train_data, "--output_dir", out, "--max_train_steps", "2",
         "--checkpointing_steps", "1", "--checkpoints_total_limit", "1", *TINY_STAGE0, *TINY_TRAIN_FLAGS],
        launcher=ACCELERATE_CPU,
    )  # fmt: skip
    # The T2V layout `video-deblur convert` takes, model_index.json written last.
    for name in ("unet/config.json", "vae/config.json", "scheduler/scheduler_config.json", "image_encoder/config.json",
                 "image_encoder/preprocessor_config.json", "model_index.json", "loss_log.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]  # total limit 1
    assert not list(out.glob("*.tmp"))
    assert len((out / "loss_log.csv").read_text().strip().splitlines()) == 3  # header + 2 steps
    assert list((out / "validation").glob("*.png"))

    from diffusers import DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPVisionModelWithProjection

    unet = UNet3DConditionModel.from_pretrained(out / "unet")
    assert unet.config.in_channels == unet.config.out_channels == 12  # pixel unshuffle x2 of RGB
    assert unet.config.sample_size == 16  # latent training size: the pipeline's default tile
    assert DDIMScheduler.from_pretrained(out / "scheduler").config.prediction_type == "v_prediction"
    encoder = CLIPVisionModelWithProjection.from_pretrained(out / "image_encoder")
    assert encoder.config.projection_dim == unet.config.cross_attention_dim
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    assert vae_config["_class_name"] == "PixelShuffleVAE" and vae_config["scaling_factor"] > 0

    # Through the converter, as a public checkpoint would go.
    from pipeline_video_deblur.convert import convert_t2v_to_deblur

    convert_t2v_to_deblur(out, out / "image_encoder", tmp_path / "converted", clip_format="transformers")
    pipe = VideoDeblurPipeline.from_pretrained(tmp_path / "converted")
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(clip(), num_inference_steps=1, guidance_scale=1.0, output_type="np").frames[0]
    assert frames.shape == (4, 32, 32, 3)


def test_stage0_autoencoder_kl_then_convert(tmp_path, train_data):
    out = tmp_path / "stage0_kl"
    run_script(
        [TRAIN / "stage0_pretrain.py", "--train_data_dir", train_data, "--output_dir", out, "--max_train_steps", "1",
         "--vae_type", "autoencoder_kl", "--vae_train_steps", "2", "--vae_block_out_channels", "8,16",
         "--vae_frames_per_step", "2", *TINY_STAGE0, *TINY_TRAIN_FLAGS, "--num_validation_clips", "0"],
    )  # fmt: skip
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(out / "vae")
    assert vae.config.latent_channels == 4 and vae.config.scaling_factor != 1.0  # measured: 1 / latent std

    from pipeline_video_deblur.convert import convert_t2v_to_deblur

    convert_t2v_to_deblur(out, out / "image_encoder", tmp_path / "converted", clip_format="transformers")
    pipe = VideoDeblurPipeline.from_pretrained(tmp_path / "converted")
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(clip(), num_inference_steps=1, guidance_scale=1.0, output_type="np").frames[0]
    assert frames.shape == (4, 32, 32, 3)

    # Continue from that output (weights kept from an earlier run): the VAE is reused, the UNet trains on.
    more = tmp_path / "stage0_more"
    run_script(
        [TRAIN / "stage0_pretrain.py", "--pretrained_model_name_or_path", out, "--train_data_dir", train_data,
         "--output_dir", more, "--max_train_steps", "1", *TINY_TRAIN_FLAGS, "--num_validation_clips", "0"],
    )  # fmt: skip
    assert not changed(weights(out / "vae"), weights(more / "vae"))
    assert json.loads((more / "vae" / "config.json").read_text())["scaling_factor"] == vae.config.scaling_factor
    assert changed(weights(out / "unet"), weights(more / "unet"))


# ----------------------------------------------------------------------------------------------------------------
# Stage 1


def test_stage1_changes_only_blur_encoder_and_condition_channels(stage1_run, tiny_pipeline_dir):
    before, after = tiny_pipeline_dir, stage1_run
    # Every frozen component is bit-identical.
    for name in ("vae", "image_encoder"):
        assert not changed(weights(before / name), weights(after / name)), name
    for name in ("scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json"):
        assert (before / name).read_text() == (after / name).read_text()
    # The UNet: only conv_in.weight changed, and only its condition channels.
    unet_before, unet_after = weights(before / "unet"), weights(after / "unet")
    assert changed(unet_before, unet_after) == {"conv_in.weight"}
    latent_channels = json.loads((after / "unet" / "config.json").read_text())["out_channels"]
    w0, w1 = unet_before["conv_in.weight"], unet_after["conv_in.weight"]
    assert torch.equal(w0[:, :latent_channels], w1[:, :latent_channels])  # pretrained channels bit-identical
    assert not torch.equal(w0[:, latent_channels:], w1[:, latent_channels:])
    # The blur encoder learned.
    assert changed(weights(before / "blur_encoder"), weights(after / "blur_encoder"))
    # Logs, validation, checkpoints, a loadable pipeline.
    rows = (after / "loss_log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3
    assert "psnr" in (after / "validation_log.csv").read_text()
    assert list((after / "validation").glob("step-*.png"))
    assert sorted(p.name for p in after.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    pipe = VideoDeblurPipeline.from_pretrained(after)
    assert pipe.config.residual is False


def test_clear_errors_before_training(tmp_path, train_data, tiny_pipeline_dir):
    base = [TRAIN / "stage1_blur_encoder.py", "--pretrained_model_name_or_path", tiny_pipeline_dir,
            "--max_train_steps", "1", *TINY_TRAIN_FLAGS]  # fmt: skip
    earlier = tmp_path / "o5"
    earlier.mkdir()
    (earlier / "loss_log.csv").write_text("step,loss\n1,0.5\n")
    # All five in one subprocess: each is raised before any training step.
    script = f"""
import sys
sys.path.insert(0, {str(TRAIN)!r})
import stage1_blur_encoder as s
cases = {{
    "missing": ["--train_data_dir", {str(tmp_path / "nowhere")!r}, "--output_dir", {str(tmp_path / "o1")!r}],
    "short": ["--train_data_dir", {str(train_data)!r}, "--output_dir", {str(tmp_path / "o2")!r}, "--num_frames", "7"],
    "resolution": [
        "--train_data_dir", {str(train_data)!r}, "--output_dir", {str(tmp_path / "o3")!r}, "--resolution", "30"
    ],
    "output_is_input": ["--train_data_dir", {str(train_data)!r}, "--output_dir", {str(tiny_pipeline_dir)!r}],
    "earlier_run": ["--train_data_dir", {str(train_data)!r}, "--output_dir", {str(earlier)!r}],
}}
base = {[str(a) for a in base[1:]]!r}
for name, extra in cases.items():
    try:
        s.main(s.parse_args(base + extra))
    except (ValueError, FileNotFoundError) as error:
        print(name, "::", error)
    else:
        print(name, ":: NO ERROR")
"""
    result = run_script(["-c", script])
    lines = dict(line.split(" :: ", 1) for line in result.stdout.splitlines() if " :: " in line)
    assert "does not exist" in lines["missing"]
    assert "fewer than num_frames=7" in lines["short"] and "--num_frames 7" in lines["short"]
    assert "--resolution 30 is not a multiple of 4" in lines["resolution"]
    assert "overlaps the input" in lines["output_is_input"]
    assert (
        "holds an earlier run (loss_log.csv)" in lines["earlier_run"]
        and "--overwrite_output_dir" in lines["earlier_run"]
    )
    assert (earlier / "loss_log.csv").read_text() == "step,loss\n1,0.5\n"
    assert not (tmp_path / "o2" / "checkpoint-1").exists()


# ----------------------------------------------------------------------------------------------------------------
# Stage 2


def test_stage2_full_finetune_changes_unet_and_keeps_residual(tmp_path, stage1_run, train_data):
    out = tmp_path / "stage2"
    result = run_script(
        [TRAIN / "stage2_finetune.py", "--pretrained_model_name_or_path", stage1_run, "--train_data_dir", train_data,
         "--output_dir", out, "--max_train_steps", "2", "--learning_rate", "1e-3", "--residual",
         "--latent_scaling_factor", "auto", "--timestep_bias_strategy", "later", "--timestep_bias_multiplier", "4",
         "--inference_start_fraction", "0.5", "--sampler_trajectory_fraction", "0.5",
         "--sampler_trajectory_steps", "10", "--sampler_trajectory_guidance_scale", "2", "--augment_transpose",
         *TINY_TRAIN_FLAGS]
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert "augmentation: random flips, temporal reversal and transposes (all eight flips and rotations)" in log
    # The input pipeline has no noise_scale of its own: the starts are drawn at the standard sampler's 1.
    assert "50% of the samples start at t = 999 from noise x 1 (the sampler's start)" in log
    assert (
        "50% of the samples are drawn on the 10-step sampler's path after its first step (t = 899 .. 99), "
        "from its first estimate at CFG 2" in log
    )
    unet_changed = changed(weights(stage1_run / "unet"), weights(out / "unet"))
    assert len(unet_changed) > 10 and "conv_in.bias" in unet_changed  # the whole UNet trains now
    assert changed(weights(stage1_run / "blur_encoder"), weights(out / "blur_encoder"))
    for name in ("vae", "image_encoder"):
        assert not changed(weights(stage1_run / name), weights(out / name)), name
    pipe = VideoDeblurPipeline.from_pretrained(out)
    assert pipe.config.residual is True  # --residual is saved with the pipeline
    # `--latent_scaling_factor auto` measured 1 / std of the residual targets and saved it with the VAE: with it,
    # sharp - blurred over the whole train split is about unit-variance (the residual is far smaller than the
    # latents, so the input pipeline's factor leaves it well under 1).
    from pipeline_video_deblur.data.datasets import GoProDataset

    dataset = GoProDataset(train_data, split="train", whole_sequences=True)
    clips = [dataset.load_frames(i)[:2] for i in range(len(dataset.sequence_names))]

    def residual_std(p):
        with torch.no_grad():
            diffs = [
                p.encode_video(torch.from_numpy(sharp).permute(0, 3, 1, 2)[None].float() / 255)
                - p.encode_video(torch.from_numpy(blur).permute(0, 3, 1, 2)[None].float() / 255)
                for blur, sharp in clips
            ]
        return float(torch.cat([d.flatten() for d in diffs]).std())

    before = VideoDeblurPipeline.from_pretrained(stage1_run)
    assert pipe.vae.config.scaling_factor != before.vae.config.scaling_factor
    assert residual_std(before) < 0.5
    assert 0.6 < residual_std(pipe) < 1.6


def test_stage2_bf16_on_cpu_uses_explicit_attention_and_saves_float32(tmp_path, stage1_run, train_data):
    out = tmp_path / "stage2_bf16"
    result = run_script(
        [TRAIN / "stage2_finetune.py", "--pretrained_model_name_or_path", stage1_run, "--train_data_dir", train_data,
         "--output_dir", out, "--max_train_steps", "2", "--learning_rate", "1e-3", "--residual", "--use_ema",
         "--mixed_precision", "bf16", "--inference_start_fraction", "0.5", "--sampler_trajectory_fraction", "0.5",
         "--sampler_trajectory_steps", "10", "--sampler_trajectory_guidance_scale", "2", *TINY_TRAIN_FLAGS]
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert "attention: explicit (--attention auto, cpu, mixed precision bf16)" in log
    # The accelerator warns where this CPU would emulate bf16, and only there
    bf16_units = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert ("mixed precision bf16 on a CPU without bf16 units" in log) is not bf16_units
    # The weight-free pixel-shuffle VAE stays float32 (the frames and latents are not rounded); CLIP runs in bf16.
    assert "frozen models: vae torch.float32, image_encoder torch.bfloat16" in log
    unet = weights(out / "unet")
    assert {t.dtype for t in unet.values()} == {torch.float32}  # the trained weights stay float32
    assert "conv_in.bias" in changed(weights(stage1_run / "unet"), unet)
    for name in ("vae", "image_encoder"):  # saved as the input had them, not as cast for training
        before = weights(stage1_run / name)
        after = weights(out / name)
        assert not changed(before, after) and all(before[k].dtype == after[k].dtype for k in before), name
    pipe = VideoDeblurPipeline.from_pretrained(out)
    # The processor is a training-time choice: the saved model loads with diffusers' default attention.
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_latent_scaling_factor_flag_refuses_bad_values(tmp_path, stage1_run, train_data):
    result = run_script(
        [TRAIN / "stage2_finetune.py", "--pretrained_model_name_or_path", stage1_run, "--train_data_dir", train_data,
         "--output_dir", tmp_path / "o", "--latent_scaling_factor", "-1", *TINY_TRAIN_FLAGS],
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--latent_scaling_factor: expected `auto` or a positive number, got '-1'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_stage2_lora_saves_loads_and_fuses(tmp_path, stage1_run, train_data):
    out = tmp_path / "stage2_lora"
    run_script(
        [TRAIN / "stage2_finetune.py", "--pretrained_model_name_or_path", stage1_run, "--train_data_dir", train_data,
         "--output_dir", out, "--max_train_steps", "2", "--learning_rate", "1e-2", "--lora_rank", "4",
         *TINY_TRAIN_FLAGS]
    )  # fmt: skip
    lora = load_file(out / "pytorch_lora_weights.safetensors")
    assert lora and all(k.startswith("unet.") for k in lora)
    assert any(k.endswith("to_q.lora.down.weight") for k in lora) and any(
        k.endswith("to_out.0.lora.up.weight") for k in lora
    )
    assert {v.shape[0] for k, v in lora.items() if k.endswith("lora.down.weight")} == {4}
    # Base weights untouched except through the fused LoRA; blur encoder frozen.
    assert not changed(weights(stage1_run / "blur_encoder"), weights(out / "blur_encoder"))
    assert changed(weights(stage1_run / "unet"), weights(out / "unet"))

    from pipeline_video_deblur.lora import fuse_lora, load_lora

    def run(pipe):
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        return pipe(clip(), num_inference_steps=2, guidance_scale=2.0, generator=generator, output_type="pt").frames[0]

    base = run(VideoDeblurPipeline.from_pretrained(stage1_run))
    pipe = VideoDeblurPipeline.from_pretrained(stage1_run)
    load_lora(pipe, out)
    unfused = run(pipe)
    assert not torch.allclose(unfused, base, atol=1e-4)  # the adapters do something
    fuse_lora(pipe)
    assert not any("lora" in name for name, _ in pipe.unet.named_parameters())
    fused = run(pipe)
    torch.testing.assert_close(fused, unfused, atol=1e-4, rtol=1e-4)
    saved = run(VideoDeblurPipeline.from_pretrained(out))  # the saved pipeline has them fused in
    torch.testing.assert_close(saved, unfused, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Resume


def test_resume_from_latest_checkpoint_matches_uninterrupted_run(tmp_path, stage1_run, tiny_pipeline_dir, train_data):
    common = ["--pretrained_model_name_or_path", tiny_pipeline_dir, "--train_data_dir", train_data,
              "--checkpointing_steps", "1", "--use_ema", "--learning_rate", "1e-3", *TINY_TRAIN_FLAGS]  # fmt: skip
    # `stage1_run` stopped after 2 steps (checkpoints 1 and 2); a half-written checkpoint must be ignored.
    resumed = tmp_path / "resumed"
    shutil.copytree(stage1_run, resumed)
    shutil.copytree(resumed / "checkpoint-1", resumed / "checkpoint-3.tmp")
    run_script([TRAIN / "stage1_blur_encoder.py", *common, "--output_dir", resumed, "--max_train_steps", "4",
                "--resume_from_checkpoint", "latest"])  # fmt: skip
    straight = tmp_path / "straight"
    run_script([TRAIN / "stage1_blur_encoder.py", *common, "--output_dir", straight, "--max_train_steps", "4"])

    for out in (resumed, straight):
        steps = [line.split(",")[0] for line in (out / "loss_log.csv").read_text().strip().splitlines()[1:]]
        assert steps == ["1", "2", "3", "4"]
        assert (out / "checkpoint-4").is_dir() and not list(out.glob("*.tmp"))
    # Same global step, and (CPU, deterministic data order and noise) the same losses and weights.
    loss_resumed = (resumed / "loss_log.csv").read_text().splitlines()
    loss_straight = (straight / "loss_log.csv").read_text().splitlines()
    column = loss_resumed[0].split(",").index("loss")
    assert [r.split(",")[column] for r in loss_resumed[1:]] == [r.split(",")[column] for r in loss_straight[1:]]
    for name in ("blur_encoder", "unet"):
        a, b = weights(resumed / name), weights(straight / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=f"{name}.{key}")
    ema_a = torch.load(resumed / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False)
    ema_b = torch.load(straight / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False)
    assert ema_a["optimization_step"] == ema_b["optimization_step"] == 4


def test_resume_after_an_epoch_boundary_continues_that_epochs_order(tmp_path, tiny_pipeline_dir, train_data):
    """6 clips in batches of 3: two steps per epoch. Resumed from checkpoint-2 (the end of epoch 0) and from
    checkpoint-3 (inside epoch 1, one batch to skip), a run must draw epoch 1's order and crops: accelerate's loader
    resets the sampler to its own pass count, 0 in a new process, unless told the epoch."""
    flags = list(TINY_TRAIN_FLAGS)
    flags[flags.index("--train_batch_size") + 1] = "3"
    common = ["--pretrained_model_name_or_path", tiny_pipeline_dir, "--train_data_dir", train_data,
              "--checkpointing_steps", "1", "--learning_rate", "1e-3", "--max_train_steps", "4", *flags]  # fmt: skip
    straight = tmp_path / "straight"
    log = run_script([TRAIN / "stage1_blur_encoder.py", *common, "--output_dir", straight])
    assert "6 clips, batch 3" in log.stdout + log.stderr
    rows_straight = (straight / "loss_log.csv").read_text().splitlines()
    column = rows_straight[0].split(",").index("loss")
    for start in (2, 3):
        resumed = tmp_path / f"resumed_from_{start}"
        shutil.copytree(straight, resumed)
        for later in range(start + 1, 5):
            shutil.rmtree(resumed / f"checkpoint-{later}")
        run_script([TRAIN / "stage1_blur_encoder.py", *common, "--output_dir", resumed, "--resume_from_checkpoint",
                    "latest"])  # fmt: skip
        rows = (resumed / "loss_log.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
        assert [r.split(",")[column] for r in rows[1:]] == [r.split(",")[column] for r in rows_straight[1:]], start
        a, b = weights(resumed / "blur_encoder"), weights(straight / "blur_encoder")
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=f"from checkpoint-{start}: {key}")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
