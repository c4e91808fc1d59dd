"""--sampler_trajectory_cache: the sampler's real path on training crops (train/cache_sampler_path.py), and the
training draws that put a cached crop at one of its later timesteps (train/deblur_training.py, train/common.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_helpers import PYTHON, REPO, TRAIN, run_script
from train_helpers import parse_deblur_args as parse

from pipeline_video_deblur import VideoDeblurPipeline
from pipeline_video_deblur.losses import v_target, x0_from_v

sys.path.insert(0, str(TRAIN))
import cache_sampler_path  # noqa: E402
import common  # noqa: E402
import deblur_training  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def path_cache(tmp_path_factory, train_data, tiny_pipeline_dir):
    """The real script, as a subprocess: 3 crops of 4 frames, 32 x 32, a 4-step sampler at CFG 2."""
    out = tmp_path_factory.mktemp("path_cache") / "path.safetensors"
    run_script(
        [TRAIN / "cache_sampler_path.py",
         "--pretrained_model_name_or_path", tiny_pipeline_dir,
         "--train_data_dir", train_data,
         "--resolution", "32", "--num_frames", "4", "--num_clips", "3",
         "--num_inference_steps", str(STEPS), "--guidance_scale", "2",
         "--output", out]
    )  # fmt: skip
    return out


def test_the_cache_holds_the_inputs_the_pipeline_gives_its_later_steps(path_cache, tiny_pipeline_dir):
    tensors = load_file(path_cache)
    assert tensors["blur"].dtype == torch.uint8 and tuple(tensors["blur"].shape) == (3, 4, 3, 32, 32)
    assert tensors["sharp"].shape == tensors["blur"].shape
    assert not torch.equal(tensors["blur"], tensors["sharp"])
    assert not torch.equal(tensors["blur"][0], tensors["blur"][1])  # different crops
    pipe = VideoDeblurPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.scheduler.set_timesteps(STEPS)
    assert torch.equal(tensors["timesteps"], pipe.scheduler.timesteps[1:].long())  # the steps after the first
    states = tensors["states"]
    assert states.shape[:2] == (3, STEPS - 1) and states.dtype == torch.float16
    # The pipeline run again on the cached crop, as a user runs it, feeds its scheduler the same latents.
    recorder = cache_sampler_path.InputRecorder(pipe)
    with recorder:
        pipe(
            tensors["blur"][1].float() / 255,
            num_inference_steps=STEPS,
            guidance_scale=2.0,
            num_frames=4,
            frame_overlap=0,
            tile_size=32,
            generator=torch.Generator().manual_seed(0),  # the script's --seed, for a model that starts from noise
            output_type="latent",
        )
    again = torch.cat([x for _, x in recorder.inputs[1:]])
    assert torch.allclose(states[1].float(), again, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(states[1, 0].float(), states[1, -1].float())  # the path moves
    assert pipe.scheduler.step.__func__ is type(pipe.scheduler).step  # the recorder put the scheduler back


def test_cached_draws_put_the_crop_and_its_sampler_input_in_the_batch(path_cache, tiny_pipeline_dir):
    pipe = VideoDeblurPipeline.from_pretrained(tiny_pipeline_dir)
    cache = common.SamplerPathCache(path_cache, resolution=32, num_frames=4)
    alphas = pipe.scheduler.alphas_cumprod
    rng = common.NoiseRNG(torch.device("cpu"), seed=0)
    rng.reseed(0)
    batch = 6
    blur = torch.rand(batch, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sharp = blur.flip(-1)
    cond, sharp_latents = pipe.encode_video(blur).float(), pipe.encode_video(sharp).float()
    x0 = sharp_latents - cond
    noise, timesteps, _ = common.diffusion_draws(rng, tuple(x0.shape), 1000, 0.1, "cpu")
    timesteps[0] = 999  # a sample at the sampler's start stays where it is
    noisy = noise.clone()
    out = deblur_training.cached_path_draws(
        pipe, cache, rng, alphas, 1.0, True, blur, sharp, cond, x0, noisy, noise, timesteps
    )
    new_blur, new_sharp, new_cond, new_x0, new_noisy, new_noise, new_t = out
    assert torch.equal(new_blur[0], blur[0]) and torch.equal(new_noisy[0], noisy[0]) and int(new_t[0]) == 999
    for row in range(1, batch):
        # Each picked row is one cached crop at one of its cached timesteps, with that crop's latents and target.
        clip = next(c for c in range(len(cache)) if torch.equal(new_blur[row], cache.blur[c].float() / 255))
        step = int((cache.timesteps == new_t[row]).nonzero())
        assert torch.equal(new_noisy[row], cache.states[clip, step].float())
        assert torch.equal(new_sharp[row], cache.sharp[clip].float() / 255)
        assert torch.allclose(new_cond[row], pipe.encode_video(new_blur[row : row + 1]).float()[0], atol=1e-6)
        expected_x0 = pipe.encode_video(new_sharp[row : row + 1]).float()[0] - new_cond[row]
        assert torch.allclose(new_x0[row], expected_x0, atol=1e-6)
    # The v-target made from the implied noise asks for the cached crop's target from the sampler's input.
    target = v_target(alphas, new_x0[1:], new_noise[1:], new_t[1:])
    assert torch.allclose(x0_from_v(alphas, new_noisy[1:], target, new_t[1:]), new_x0[1:], atol=1e-4)
    # The inputs were not changed in place.
    assert torch.equal(noisy, noise) and int(timesteps[0]) == 999


def test_the_training_loss_draws_from_the_cache(path_cache, tiny_pipeline_dir, tmp_path):
    import stage2_finetune
    from accelerate import Accelerator

    args = stage2_finetune.parse_args(
        ["--pretrained_model_name_or_path", str(tiny_pipeline_dir), "--train_data_dir", "d",
         "--output_dir", str(tmp_path), "--resolution", "32", "--num_frames", "4", "--residual",
         "--sampler_trajectory_fraction", "1", "--sampler_trajectory_cache", str(path_cache)]
    )  # fmt: skip
    pipe = VideoDeblurPipeline.from_pretrained(tiny_pipeline_dir)
    model = deblur_training.DeblurModel(pipe)
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    rng = common.NoiseRNG(torch.device("cpu"), 0)
    rng.reseed(0)
    compute_loss = deblur_training.make_loss_fn(args, Accelerator(cpu=True), pipe, model, rng)
    blur = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    try:
        losses = compute_loss({"blur": blur, "sharp": blur.flip(-1)})
    finally:
        hook.remove()
    assert torch.isfinite(losses["loss"])
    assert len(seen) == 1  # the training pass only: no first-estimate pass with a cache
    states = load_file(path_cache)["states"].float().flatten(0, 1)
    channels = states.shape[1]
    for sample in seen[0][:, :channels]:  # every sample was drawn on the path (fraction 1, none at the start)
        assert any(torch.equal(sample, s) for s in states)


def test_the_weight_cap_lowers_the_cached_draws_loss_only_where_it_binds(path_cache, tiny_pipeline_dir, tmp_path):
    """`--sampler_trajectory_weight_cap`: the same draws (same seed) give the plain loss when the cap never binds,
    and a lower one when it does; the model sees the same inputs either way."""
    import stage2_finetune
    from accelerate import Accelerator

    pipe = VideoDeblurPipeline.from_pretrained(tiny_pipeline_dir)
    model = deblur_training.DeblurModel(pipe)
    blur = torch.rand(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(3))

    def loss(*cap):
        args = stage2_finetune.parse_args(
            ["--pretrained_model_name_or_path", str(tiny_pipeline_dir), "--train_data_dir", "d",
             "--output_dir", str(tmp_path), "--resolution", "32", "--num_frames", "4", "--residual",
             "--sampler_trajectory_fraction", "1", "--sampler_trajectory_cache", str(path_cache), *cap]
        )  # fmt: skip
        rng = common.NoiseRNG(torch.device("cpu"), 0)
        rng.reseed(0)
        seen = []
        hook = pipe.unet.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[1].clone()))
        try:
            with torch.no_grad():
                losses = deblur_training.make_loss_fn(args, Accelerator(cpu=True), pipe, model, rng)(
                    {"blur": blur, "sharp": blur.flip(-1)}
                )
        finally:
            hook.remove()
        return losses, seen[0]

    plain, timesteps = loss()
    assert int(timesteps.min()) < 999  # on the path, where 1 / (1 - alpha_t) > 1
    loose, same = loss("--sampler_trajectory_weight_cap", "1e9")
    assert torch.equal(same, timesteps)
    torch.testing.assert_close(loose["loss_base"], plain["loss_base"])
    tight, _ = loss("--sampler_trajectory_weight_cap", "1")
    assert float(tight["loss_base"]) < float(plain["loss_base"])
    torch.testing.assert_close(tight["loss_coherence"], plain["loss_coherence"])


def test_first_clip_continues_the_seeded_sample_and_files_join(path_cache, train_data, tiny_pipeline_dir, tmp_path):
    """`--first_clip 2 --num_clips 1` caches the crop a `--num_clips 3` file holds third, and the two files given
    together are one cache of their crops in order."""
    extra = tmp_path / "extra.safetensors"
    run_script(
        [TRAIN / "cache_sampler_path.py",
         "--pretrained_model_name_or_path", tiny_pipeline_dir,
         "--train_data_dir", train_data,
         "--resolution", "32", "--num_frames", "4", "--num_clips", "1", "--first_clip", "2",
         "--num_inference_steps", str(STEPS), "--guidance_scale", "2",
         "--output", extra]
    )  # fmt: skip
    whole, more = load_file(path_cache), load_file(extra)
    assert tuple(more["blur"].shape) == (1, 4, 3, 32, 32)
    assert torch.equal(more["blur"][0], whole["blur"][2]) and torch.equal(more["sharp"][0], whole["sharp"][2])
    assert torch.allclose(more["states"][0].float(), whole["states"][2].float(), atol=2e-3, rtol=2e-3)

    cache = common.SamplerPathCache([path_cache, extra], resolution=32, num_frames=4)
    assert len(cache) == 4
    assert torch.equal(cache.blur[:3], whole["blur"]) and torch.equal(cache.blur[3], more["blur"][0])
    assert torch.equal(cache.states[3], more["states"][0]) and torch.equal(cache.timesteps, whole["timesteps"].long())
    assert f"3 of {path_cache}" in cache.describe() and f"1 of {extra}" in cache.describe()
    args = parse("--sampler_trajectory_cache", str(path_cache), str(extra), "--sampler_trajectory_fraction", "0.5")
    assert args.sampler_trajectory_cache == [str(path_cache), str(extra)]

    # A file from another sampler (other timesteps) cannot join.
    other = tmp_path / "other_steps.safetensors"
    save_file(dict(more, timesteps=more["timesteps"] + 1), other)
    with pytest.raises(ValueError, match="must come from the same model layout and sampler steps"):
        common.SamplerPathCache([path_cache, other], resolution=32, num_frames=4)


def test_a_cache_of_other_crops_is_refused(path_cache):
    with pytest.raises(ValueError, match="holds 4-frame 32x32 crops; this run trains on 8-frame 32x32 crops"):
        common.SamplerPathCache(path_cache, resolution=32, num_frames=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        common.SamplerPathCache(path_cache.with_name("missing.safetensors"), resolution=32, num_frames=4)


def test_a_file_without_the_cache_s_tensors_is_refused(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"lacks \['blur', 'sharp', 'states', 'timesteps'\]"):
        common.SamplerPathCache(other, resolution=32, num_frames=4)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sampler_trajectory_cache", "c.safetensors"], "needs --sampler_trajectory_fraction > 0"),
        (
            ["--sampler_trajectory_cache", "c.safetensors", "--sampler_trajectory_fraction", "0.5",
             "--sampler_trajectory_hops", "2"],
            "use --sampler_trajectory_hops 1, got 2",
        ),
    ],
)  # fmt: skip
def test_cache_flag_errors(flags, message):
    with pytest.raises(ValueError, match=message):
        parse(*flags)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_clips", "0"], "--num_clips must be at least 1, got 0"),
        (["--first_clip", "-1"], "--first_clip must be at least 0, got -1"),
    ],
)
def test_the_script_refuses_bad_arguments(tmp_path, flags, message):
    result = run_script(
        [TRAIN / "cache_sampler_path.py", "--pretrained_model_name_or_path", "p", "--train_data_dir", "d",
         *flags, "--output", tmp_path / "x.safetensors"],
        check=False,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr


def test_the_recipe_caches_the_path_in_files_that_resume(tiny_pipeline_dir, tmp_path):
    """The recipe's `STAGE2_TRAJECTORY_CACHE_CLIPS=3` in files of `STAGE2_TRAJECTORY_CACHE_CHUNK=2` crops, from a tiny
    pipeline (`CONTINUE_FROM`, `STOP_AFTER=cache`): crops 0-1 and crop 2 of the seed's sample, one file each; a rerun
    makes only a missing file again, and a run with `STAGE2_TRAJECTORY_WEIGHT_CAP` uses the same files; a chunk that is
    not a positive whole number is refused by name."""
    from safetensors import safe_open

    settings = {
        "CONTINUE": "1",
        "CONTINUE_FROM": str(tiny_pipeline_dir),
        "STOP_AFTER": "cache",
        "RESOLUTION": "32",
        "NUM_FRAMES": "4",
        "TRAIN_SEQUENCES": "1",
        "TRAIN_FRAMES": "6",
        "SYNTH_WORKERS": "1",
        "STAGE2_TRAJECTORY_FRACTION": "0.25",
        "STAGE2_TRAJECTORY_GUIDANCE": "2",
        "STAGE2_TRAJECTORY_CACHE_CLIPS": "3",
        "STAGE2_TRAJECTORY_CACHE_CHUNK": "2",
    }

    def recipe(**changes):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": PYTHON, "WORK": str(tmp_path), "OMP_NUM_THREADS": "1"}
        return subprocess.run(
            ["bash", str(TRAIN / "recipes" / "default_model.sh")],
            capture_output=True,
            text=True,
            env={**env, **settings, **changes},
            timeout=600,
        )

    done = recipe()
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = sorted(tmp_path.glob("continue_*_crop32_frames4_traj0.25_cfg2_path3.sampler_path_*.safetensors"))
    assert first.name.endswith(".sampler_path_0.safetensors") and second.name.endswith(".sampler_path_2.safetensors")
    assert f"(STOP_AFTER=cache): {first} {second}\n" in done.stdout
    for path, clips, skipped in ((first, 2, 0), (second, 1, 2)):
        with safe_open(str(path), framework="pt") as f:
            assert tuple(f.get_slice("blur").get_shape()) == (clips, 4, 3, 32, 32)
            assert json.loads(f.metadata()["settings"])["first_clip"] == skipped
    assert len(common.SamplerPathCache([first, second], resolution=32, num_frames=4)) == 3

    second.unlink()  # as if stopped while making it
    resumed = recipe()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training crops 2 to 2 (of 3)" in resumed.stdout and "training crops 0 to 1" not in resumed.stdout
    assert second.is_file()

    # A run with the loss weight cap draws from the same path: it takes these files and makes none.
    capped = recipe(STAGE2_TRAJECTORY_WEIGHT_CAP="5")
    assert capped.returncode == 0, capped.stderr[-3000:]
    assert f"(STOP_AFTER=cache): {first} {second}\n" in capped.stdout and "training crops" not in capped.stdout

    refused = recipe(STAGE2_TRAJECTORY_CACHE_CHUNK="0")
    assert refused.returncode == 2
    assert "STAGE2_TRAJECTORY_CACHE_CHUNK=0: expected a whole number of crops per file, at least 1" in refused.stderr
