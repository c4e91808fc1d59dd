import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from pipeline_tester import PipelineTesterMixin
from tiny import tiny_components, tiny_pipeline, tiny_video

from pipeline_video_deblur import VideoDeblurPipeline


class TestVideoDeblurPipeline(PipelineTesterMixin):
    pipeline_class = VideoDeblurPipeline

    def get_dummy_components(self):
        return tiny_components()

    def get_dummy_inputs(self, seed=0):
        return {
            "video": tiny_video(frames=4, height=32, width=32),
            "num_inference_steps": 2,
            "guidance_scale": 2.0,
            "generator": torch.Generator().manual_seed(seed),
            "output_type": "np",
        }


class TestVideoDeblurPipelineResidualPixelVAE(TestVideoDeblurPipeline):
    def get_dummy_components(self):
        return {**tiny_components(pixel_vae=True), "residual": True}


def run(pipe, video, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("output_type", "np")
    return pipe(video, generator=torch.Generator().manual_seed(0), **kwargs).frames[0]


def test_any_length_any_size_comes_back_the_same():
    pipe = tiny_pipeline()
    out = run(pipe, tiny_video(frames=37, height=45, width=70), num_frames=8, frame_overlap=2, tile_size=32)
    assert out.shape == (37, 45, 70, 3)


def test_tiny_frames_are_padded_and_cropped_back():
    pipe = tiny_pipeline()
    out = run(pipe, tiny_video(frames=2, height=5, width=9), guidance_scale=1.0)
    assert out.shape == (2, 5, 9, 3)


def test_one_window_covering_the_clip_equals_no_windowing():
    pipe = tiny_pipeline()
    video = tiny_video(frames=6, height=32, width=32)
    whole = run(pipe, video, num_frames=6, frame_overlap=0)
    bigger_window = run(pipe, video, num_frames=64, frame_overlap=4)
    np.testing.assert_allclose(whole, bigger_window, atol=1e-6)
    # a tile as large as the frame is no tiling either
    tiled = run(pipe, video, num_frames=6, frame_overlap=0, tile_size=32)
    np.testing.assert_allclose(whole, tiled, atol=1e-6)


def test_windows_change_the_result_but_stay_close():
    pipe = tiny_pipeline()
    video = tiny_video(frames=10, height=32, width=32)
    whole = run(pipe, video, num_frames=10, frame_overlap=0)
    windowed = run(pipe, video, num_frames=4, frame_overlap=2)
    assert whole.shape == windowed.shape
    assert np.abs(whole - windowed).max() > 0


def test_inputs_of_every_kind_agree():
    pipe = tiny_pipeline()
    video = tiny_video()
    as_uint8 = (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    from_tensor = run(pipe, torch.from_numpy(as_uint8).permute(0, 3, 1, 2).float() / 255)
    from_uint8 = run(pipe, as_uint8)
    from_uint8_tensor = run(pipe, torch.from_numpy(as_uint8).permute(0, 3, 1, 2))
    from_float = run(pipe, as_uint8.astype(np.float32) / 255)
    import PIL.Image

    from_pil = run(pipe, [PIL.Image.fromarray(f) for f in as_uint8])
    from_rgba = run(pipe, [PIL.Image.fromarray(f).convert("RGBA") for f in as_uint8])
    for other in (from_uint8, from_uint8_tensor, from_float, from_pil, from_rgba):
        np.testing.assert_allclose(from_tensor, other, atol=1e-6)
    grey = run(pipe, [PIL.Image.fromarray(f).convert("L") for f in as_uint8])
    assert grey.shape == from_tensor.shape


def test_guidance_scale_one_runs_a_single_pass_per_window():
    pipe = tiny_pipeline()
    batch_sizes = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    run(pipe, tiny_video(), guidance_scale=1.0)
    run(pipe, tiny_video(), guidance_scale=3.0)
    hook.remove()
    assert batch_sizes == [1, 1, 2, 2]


def test_strength_runs_fewer_steps_from_the_noised_input():
    pipe = tiny_pipeline()
    steps = []
    pipe(
        tiny_video(),
        num_inference_steps=10,
        strength=0.3,
        output_type="latent",
        callback_on_step_end=lambda p, i, t, kw: steps.append(int(t)) or {},
    )
    assert len(steps) == 3
    assert pipe.num_timesteps == 3
    full = []
    pipe(tiny_video(), num_inference_steps=10, callback_on_step_end=lambda p, i, t, kw: full.append(int(t)) or {})
    assert steps == full[-3:]


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, EulerDiscreteScheduler])
def test_any_diffusers_scheduler_works(scheduler_class):
    pipe = tiny_pipeline()
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    out = run(pipe, tiny_video())
    assert out.shape == (4, 32, 32, 3) and np.isfinite(out).all()


def test_context_tokens_come_from_each_encoder_in_order():
    """The encoders have different sizes (16 vs 24 hidden, 32 vs 24 px): a swap changes the tokens."""
    pipe = tiny_pipeline()
    frames = tiny_video(frames=2)
    tokens = pipe.encode_image(frames)
    assert tokens.shape == (2, 2, pipe.unet.config.cross_attention_dim)
    mean = torch.tensor(pipe.feature_extractor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(pipe.feature_extractor.image_std).view(1, 3, 1, 1)
    for index, encoder in enumerate((pipe.image_encoder, pipe.blur_encoder)):
        size = encoder.config.image_size
        pixels = torch.nn.functional.interpolate(frames, size=(size, size), mode="bicubic", antialias=True)
        expected = encoder(pixel_values=(pixels.clamp(0, 1) - mean) / std).image_embeds
        torch.testing.assert_close(tokens[:, index], expected)
    swapped = VideoDeblurPipeline(
        **{**tiny_components(), "image_encoder": pipe.blur_encoder, "blur_encoder": pipe.image_encoder}
    )
    assert not torch.allclose(swapped.encode_image(frames), tokens)


def test_encoders_stored_in_lower_precision_run_in_the_unets_dtype():
    """The default model ships its CLIP encoders in float16 and transformers keeps that dtype: the pipeline brings
    them up to the UNet's (float32), on every loading path, and never casts a higher-precision encoder down."""
    components = tiny_components()
    for name in ("image_encoder", "blur_encoder"):
        components[name].to(torch.float16)
    pipe = VideoDeblurPipeline(**components)
    assert pipe.image_encoder.dtype == pipe.blur_encoder.dtype == torch.float32 == pipe.unet.dtype
    assert pipe.encode_image(tiny_video(frames=2)).dtype == torch.float32

    components = tiny_components()
    components["unet"].to(torch.bfloat16)
    pipe = VideoDeblurPipeline(**components)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.image_encoder.dtype == pipe.blur_encoder.dtype == torch.float32


def test_residual_mode_adds_the_blurred_latents_back():
    """With `residual`, the generated latents are a correction to the blurred latents (DESIGN 2.8)."""
    video = tiny_video()
    plain = tiny_pipeline(pixel_vae=True, residual=False)
    residual = tiny_pipeline(pixel_vae=True, residual=True)
    kwargs = dict(num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    generated = plain(video, generator=torch.Generator().manual_seed(0), **kwargs).frames
    corrected = residual(video, generator=torch.Generator().manual_seed(0), **kwargs).frames
    torch.testing.assert_close(corrected - generated, residual.encode_video(video[None]), atol=1e-5, rtol=1e-5)


def test_noise_scale_multiplies_the_starting_noise():
    pipe = tiny_pipeline()
    shape = (1, pipe.unet.config.out_channels, 4, 8, 8)
    full = pipe.prepare_latents(shape, torch.float32, "cpu", torch.Generator().manual_seed(3))
    half = pipe.prepare_latents(shape, torch.float32, "cpu", torch.Generator().manual_seed(3), noise_scale=0.5)
    torch.testing.assert_close(half, 0.5 * full)
    # 0 with eta = 0: DDIM has no randomness left, every seed gives the same clip; 1 draws a different one per seed
    video = tiny_video()
    still = [
        pipe(
            video,
            num_inference_steps=3,
            noise_scale=0.0,
            output_type="np",
            generator=torch.Generator().manual_seed(seed),
        ).frames[0]
        for seed in (0, 1)
    ]
    np.testing.assert_array_equal(still[0], still[1])
    drawn = [run(pipe, video, num_inference_steps=3, noise_scale=1.0)]
    drawn.append(
        pipe(video, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(1)).frames[0]
    )
    assert np.abs(drawn[0] - drawn[1]).max() > 1e-3
    assert np.abs(drawn[0] - still[0]).max() > 1e-3


def test_noise_scale_defaults_to_the_models_and_survives_a_round_trip(tmp_path):
    video = tiny_video()
    standard = tiny_pipeline()
    assert standard.config.noise_scale == 1.0 and standard.default_noise_scale == 1.0
    np.testing.assert_array_equal(run(standard, video), run(standard, video, noise_scale=1.0))
    cool = VideoDeblurPipeline(**tiny_components(), noise_scale=0.25)
    np.testing.assert_array_equal(run(cool, video), run(standard, video, noise_scale=0.25))
    cool.save_pretrained(tmp_path / "pipe")
    loaded = VideoDeblurPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.config.noise_scale == 0.25 and loaded.default_noise_scale == 0.25
    np.testing.assert_allclose(run(loaded, video), run(cool, video), atol=1e-5)
    with pytest.raises(ValueError, match=r"the pipeline's `noise_scale` must be a finite number >= 0, got -1"):
        VideoDeblurPipeline(**tiny_components(), noise_scale=-1)


def test_guidance_scale_defaults_to_the_models_and_survives_a_round_trip(tmp_path):
    video = tiny_video()
    standard = tiny_pipeline()
    assert standard.config.guidance_scale == 2.0 and standard.default_guidance_scale == 2.0
    assert standard.guidance_scale == 2.0  # the model's own before any call
    np.testing.assert_array_equal(run(standard, video), run(standard, video, guidance_scale=2.0))
    assert np.abs(run(standard, video) - run(standard, video, guidance_scale=1.5)).max() > 1e-4
    mild = VideoDeblurPipeline(**tiny_components(), guidance_scale=1.5)
    np.testing.assert_array_equal(run(mild, video), run(standard, video, guidance_scale=1.5))
    assert mild.guidance_scale == 1.5
    mild.save_pretrained(tmp_path / "pipe")
    loaded = VideoDeblurPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.config.guidance_scale == 1.5 and loaded.default_guidance_scale == 1.5
    np.testing.assert_allclose(run(loaded, video), run(mild, video), atol=1e-5)
    # a model saved before the setting existed (no key in model_index.json) samples at 2, as every model did
    index = tmp_path / "pipe" / "model_index.json"
    stored = json.loads(index.read_text())
    del stored["guidance_scale"]
    index.write_text(json.dumps(stored))
    older = VideoDeblurPipeline.from_pretrained(tmp_path / "pipe")
    assert older.default_guidance_scale == 2.0
    np.testing.assert_allclose(run(older, video), run(standard, video), atol=1e-5)
    # a call's own value wins, and the next call without one goes back to the model's
    np.testing.assert_allclose(run(loaded, video, guidance_scale=2.0), run(standard, video), atol=1e-5)
    assert loaded.guidance_scale == 2.0
    np.testing.assert_allclose(run(loaded, video), run(mild, video), atol=1e-5)
    with pytest.raises(ValueError, match=r"the pipeline's `guidance_scale` must be a finite number, got nan"):
        VideoDeblurPipeline(**tiny_components(), guidance_scale=float("nan"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(strength=0.0), "strength"),
        (dict(strength=1.5), "strength"),
        (dict(num_frames=0), "num_frames"),
        (dict(frame_overlap=16), "frame_overlap"),
        (dict(tile_size=30), "tile_size"),
        (dict(tile_overlap=-8), r"`tile_overlap` must be in .*got -8"),
        (dict(tile_size=16, tile_overlap=16), r"\[0, tile_size=16\) pixels, got 16"),
        (dict(output_type="gif"), "output_type"),
        (dict(num_inference_steps=2, strength=0.1), "no denoising step"),
        (dict(guidance_scale=float("nan")), r"`guidance_scale` must be a finite number, got nan"),
        (dict(guidance_scale=float("inf")), r"`guidance_scale` must be a finite number, got inf"),
        (dict(guidance_scale="2"), r"`guidance_scale` must be a finite number, got '2'"),
        (dict(strength=float("nan")), r"`strength` must be in \(0, 1\], got nan"),
        (dict(noise_scale=-0.5), r"`noise_scale` must be a finite number >= 0, got -0.5"),
        (dict(noise_scale=float("nan")), r"`noise_scale` must be a finite number >= 0, got nan"),
        (dict(noise_scale=True), r"`noise_scale` must be a finite number >= 0, got True"),
        (dict(self_ensemble=3), r"`self_ensemble` must be one of \(1, 2, 4, 8\), got 3"),
        (dict(self_ensemble=True), r"`self_ensemble` must be one of \(1, 2, 4, 8\), got True"),
        (dict(self_ensemble=2.0), r"`self_ensemble` must be one of \(1, 2, 4, 8\), got 2.0"),
        (dict(self_ensemble=8, output_type="latent"), r"`self_ensemble`=8 averages decoded frames"),
    ],
)
def test_bad_options_are_refused_with_the_value(kwargs, match):
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=match):
        pipe(tiny_video(), **{"num_inference_steps": 2, **kwargs})


def test_tile_overlap_is_checked_against_the_default_tile():
    """Without `tile_size`, the overlap must still fit the model's default tile (no silent clamp)."""
    pipe = tiny_pipeline()
    pipe.unet.register_to_config(sample_size=8)  # a default tile of 16 pixels
    assert pipe.default_tile_size == 16
    with pytest.raises(ValueError, match=r"\[0, tile_size=16\) pixels, got 500"):
        pipe(tiny_video(), num_inference_steps=1, tile_overlap=500)


@pytest.mark.parametrize(
    "video,match",
    [
        ([], "empty"),
        (np.zeros((4, 8, 8), dtype=np.uint8), "shape"),
        (np.zeros((2, 8, 8, 3), dtype=np.int32), "dtype"),
        (torch.full((2, 3, 8, 8), 2.0), "range"),
        (torch.full((2, 3, 8, 8), float("nan")), r"range \[nan, nan\]"),
        (torch.zeros((2, 3, 8, 8), dtype=torch.int64), "uint8 or float, got dtype torch.int64"),
        ("clip.mp4", "PIL"),
    ],
)
def test_bad_videos_are_refused_with_the_value(video, match):
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=match):
        pipe(video, num_inference_steps=1)


def test_video_to_tensor_makes_one_float_copy_and_leaves_the_input_alone():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 10, 12, 3), dtype=np.uint8)
    tensor = VideoDeblurPipeline.video_to_tensor(frames)
    assert tensor.dtype == torch.float32 and tensor.is_contiguous() and tensor.shape == (3, 3, 10, 12)
    torch.testing.assert_close(tensor, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, rtol=0, atol=0)
    # A float input slightly out of range is clamped in the copy, not in the caller's tensor.
    given = torch.rand(2, 3, 8, 8)
    given[0, 0, 0, 0] = 1.0005
    kept = given.clone()
    tensor = VideoDeblurPipeline.video_to_tensor(given)
    assert tensor.data_ptr() != given.data_ptr() and torch.equal(given, kept) and tensor.max() == 1.0
    # Grayscale and RGBA arrays become RGB; float64 and float16 arrays become float32.
    gray = VideoDeblurPipeline.video_to_tensor(np.full((2, 4, 4, 1), 51, dtype=np.uint8))
    assert gray.shape == (2, 3, 4, 4) and torch.all(gray == 0.2)
    assert VideoDeblurPipeline.video_to_tensor(np.zeros((1, 4, 4, 4), dtype=np.float16)).shape == (1, 3, 4, 4)
    assert VideoDeblurPipeline.video_to_tensor(np.zeros((1, 4, 4, 3))).dtype == torch.float32


def test_from_default_without_the_embedded_model_names_the_folder(monkeypatch, tmp_path):
    import pipeline_video_deblur.pipeline_video_deblur as module

    monkeypatch.setattr(module, "DEFAULT_MODEL_PATH", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="absent"):
        VideoDeblurPipeline.from_default()


def test_gradient_checkpointing_gives_the_same_gradients():
    from tiny import tiny_unet

    unet = tiny_unet()
    unet.train()
    torch.manual_seed(0)
    sample = torch.randn(1, 8, 3, 16, 16)
    context = torch.randn(1, 2, 16)

    def grads():
        unet.zero_grad()
        torch.manual_seed(1)  # the temporal convs use dropout
        unet(sample, 10, encoder_hidden_states=context).sample.square().mean().backward()
        return [p.grad.clone() for p in unet.parameters() if p.grad is not None]

    plain = grads()
    unet.enable_gradient_checkpointing()
    assert unet.is_gradient_checkpointing
    checkpointed = grads()
    assert len(plain) == len(checkpointed)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    unet.disable_gradient_checkpointing()
    assert not unet.is_gradient_checkpointing


def test_lora_weights_load_onto_the_pipeline_and_fuse(tmp_path):
    from tiny import tiny_unet

    from pipeline_video_deblur.lora import add_lora, save_lora

    trained = tiny_unet()
    for parameter in add_lora(trained, rank=2):
        torch.nn.init.normal_(parameter, std=0.5)  # a non-trivial adapter (B is zero at initialisation)
    path = save_lora(trained, tmp_path)
    pipe = tiny_pipeline()
    plain = run(pipe, tiny_video())
    pipe.load_lora_weights(path)
    with_lora = run(pipe, tiny_video())
    assert np.abs(with_lora - plain).max() > 1e-3
    pipe.fuse_lora()
    np.testing.assert_allclose(run(pipe, tiny_video()), with_lora, atol=1e-4)


@pytest.mark.parametrize("size", [2, 4, 8])
def test_self_ensemble_averages_runs_on_mirrored_and_transposed_frames(size):
    """self_ensemble=n is the mean of n separate runs, each on the frames flipped / transposed and mapped back, the
    runs drawing their noise one after the other from the one generator; a non-square clip comes back its size."""
    pipe = tiny_pipeline()
    video = tiny_video(frames=3, height=24, width=40)
    generator = torch.Generator().manual_seed(0)
    expected = []
    transforms = [(False, False, False), (True, False, False), (False, True, False), (True, True, False)]
    transforms += [(False, False, True), (True, False, True), (False, True, True), (True, True, True)]
    for flip_w, flip_h, swap in transforms[:size]:
        frames = video.flip(-1) if flip_w else video  # (F, 3, H, W)
        frames = frames.flip(-2) if flip_h else frames
        frames = frames.transpose(-1, -2).contiguous() if swap else frames
        out = pipe(frames, num_inference_steps=2, generator=generator, output_type="np").frames[0]  # (F, H, W, 3)
        out = out.transpose(0, 2, 1, 3) if swap else out
        out = out[:, ::-1] if flip_h else out
        expected.append(out[:, :, ::-1] if flip_w else out)
    ensemble = run(pipe, video, self_ensemble=size)
    assert ensemble.shape == (3, 24, 40, 3)
    np.testing.assert_allclose(ensemble, np.mean(expected, axis=0), atol=1e-6)
    # each member differs (the tiny model is not mirror-symmetric), so the average is not one run
    assert np.abs(expected[1] - expected[0]).max() > 1e-3
    pil = pipe(video, num_inference_steps=2, generator=torch.Generator().manual_seed(0), self_ensemble=size)
    np.testing.assert_array_equal(np.asarray(pil.frames[0][1]), (ensemble[1] * 255).round().astype(np.uint8))


def test_self_ensemble_callback_runs_each_member_and_an_interrupt_keeps_the_finished_runs():
    pipe = tiny_pipeline()
    video = tiny_video(frames=2, height=16, width=16)
    steps = []

    def stop_in_second_run(pipe, step, timestep, callback_kwargs):
        steps.append(step)
        if len(steps) == 3:  # the first step of the second run
            pipe._interrupt = True
        return {}

    out = run(pipe, video, self_ensemble=4, callback_on_step_end=stop_in_second_run)
    assert steps == [0, 1, 0]
    # the second run, stopped part-way, is left out: the result is the first run alone
    np.testing.assert_allclose(out, run(pipe, video), atol=1e-6)

    def stop_in_first_run(pipe, step, timestep, callback_kwargs):
        pipe._interrupt = True
        return {}

    # stopped in the first run, that run is what there is (as without the ensemble)
    stopped = run(pipe, video, self_ensemble=4, callback_on_step_end=stop_in_first_run)
    np.testing.assert_allclose(stopped, run(pipe, video, callback_on_step_end=stop_in_first_run), atol=1e-6)
    assert np.abs(stopped - out).max() > 1e-3
