"""A small local version of diffusers' PipelineTesterMixin: the checks every pipeline must pass."""

from __future__ import annotations

import inspect

import numpy as np
import PIL.Image
import torch


class PipelineTesterMixin:
    """Subclasses set `pipeline_class` and implement `get_dummy_components()` and `get_dummy_inputs(seed)`."""

    pipeline_class = None
    required_call_parameters = (
        "video",
        "num_inference_steps",
        "guidance_scale",
        "strength",
        "num_frames",
        "frame_overlap",
        "tile_size",
        "tile_overlap",
        "generator",
        "output_type",
        "callback_on_step_end",
        "return_dict",
    )

    def get_pipe(self):
        pipe = self.pipeline_class(**self.get_dummy_components())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def test_call_signature(self):
        parameters = inspect.signature(self.pipeline_class.__call__).parameters
        missing = [name for name in self.required_call_parameters if name not in parameters]
        assert not missing, f"__call__ lacks {missing}"
        assert parameters["num_inference_steps"].default == 50
        assert parameters["strength"].default == 1.0
        assert parameters["num_frames"].default == 16
        assert parameters["frame_overlap"].default == 4

    def test_output_shapes_for_each_output_type(self):
        pipe = self.get_pipe()
        inputs = self.get_dummy_inputs()
        frames, _, height, width = inputs["video"].shape
        out = pipe(**{**inputs, "output_type": "np"}).frames
        assert isinstance(out, np.ndarray) and out.shape == (1, frames, height, width, 3)
        assert out.min() >= 0 and out.max() <= 1
        out = pipe(**{**inputs, "output_type": "pt"}).frames
        assert isinstance(out, torch.Tensor) and out.shape == (1, frames, 3, height, width)
        out = pipe(**{**inputs, "output_type": "pil"}).frames
        assert len(out) == 1 and len(out[0]) == frames
        assert all(isinstance(f, PIL.Image.Image) and f.size == (width, height) for f in out[0])
        out = pipe(**{**inputs, "output_type": "latent"}).frames
        factor = pipe.vae_scale_factor
        assert out.shape == (1, pipe.unet.config.out_channels, frames, height // factor, width // factor)

    def test_deterministic_with_generator(self):
        pipe = self.get_pipe()
        first = pipe(**self.get_dummy_inputs(seed=0)).frames
        second = pipe(**self.get_dummy_inputs(seed=0)).frames
        other = pipe(**self.get_dummy_inputs(seed=1)).frames
        np.testing.assert_array_equal(first, second)
        assert np.abs(first - other).max() > 1e-4

    def test_dict_and_tuple_outputs_agree(self):
        pipe = self.get_pipe()
        as_dict = pipe(**self.get_dummy_inputs()).frames
        as_tuple = pipe(**self.get_dummy_inputs(), return_dict=False)[0]
        np.testing.assert_array_equal(as_dict, as_tuple)

    def test_save_load_round_trip(self, tmp_path):
        pipe = self.get_pipe()
        before = pipe(**self.get_dummy_inputs()).frames
        pipe.save_pretrained(tmp_path)
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        for name in ("vae", "unet", "image_encoder", "blur_encoder", "scheduler", "feature_extractor"):
            assert type(getattr(loaded, name)) is type(getattr(pipe, name)), name
        after = loaded(**self.get_dummy_inputs()).frames
        np.testing.assert_allclose(before, after, atol=1e-5)

    def test_callback_on_step_end_stops_early(self):
        pipe = self.get_pipe()
        seen = []

        def stop_after_first(pipeline, step, timestep, kwargs):
            seen.append((step, int(timestep), tuple(kwargs["latents"].shape)))
            pipeline._interrupt = True
            return kwargs

        inputs = {**self.get_dummy_inputs(), "num_inference_steps": 4}
        pipe(**inputs, callback_on_step_end=stop_after_first, callback_on_step_end_tensor_inputs=["latents"])
        assert [s for s, _, _ in seen] == [0]

    def test_batch_consistency_of_windows(self):
        """Windows are independent per step: the same clip twice in a row gives each half the same result."""
        pipe = self.get_pipe()
        inputs = self.get_dummy_inputs()
        single = pipe(**{**inputs, "num_frames": inputs["video"].shape[0], "frame_overlap": 0}).frames
        doubled_video = torch.cat([inputs["video"], inputs["video"]])
        assert single.shape[1] == inputs["video"].shape[0]
        doubled = pipe(
            **{**inputs, "video": doubled_video, "num_frames": inputs["video"].shape[0], "frame_overlap": 0}
        ).frames
        assert doubled.shape[1] == 2 * single.shape[1]
