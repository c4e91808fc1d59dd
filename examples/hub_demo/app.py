"""Video deblurring demo (a Gradio app laid out as a Hugging Face Space).

Upload a short blurred video (or pick the bundled sample), choose the number of denoising steps, the strength, the
starting noise, the seed and the self-ensemble, and get the deblurred video, a before/after comparison of the middle
frame and the time it took. It runs the model embedded in the `video-deblur` package, on the CPU, with no download.

Settings, from environment variables (the defaults suit a free CPU Space):
    VIDEO_DEBLUR_MODEL       pipeline folder or Hub id; "default" (the default) is the embedded default model
    VIDEO_DEBLUR_SAMPLE      the sample video offered under the upload box
    VIDEO_DEBLUR_STEPS       initial number of denoising steps (1: the default model's best measured setting)
    VIDEO_DEBLUR_MAX_FRAMES  longest clip accepted, in frames (32)
    VIDEO_DEBLUR_MAX_SIDE    largest frame side accepted, in pixels (256)
    VIDEO_DEBLUR_MAX_STEPS   most denoising steps a request may run, every run of the self-ensemble counted, and the
                             steps slider's top (50)
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose where it listens (Gradio's own variables).

Run it with `python examples/hub_demo/app.py`.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import torch

from pipeline_video_deblur import VideoDeblurPipeline
from pipeline_video_deblur.cli import positive_int
from pipeline_video_deblur.data import read_video, write_video
from pipeline_video_deblur.pipeline_video_deblur import SELF_ENSEMBLE_SIZES

HERE = Path(__file__).resolve().parent


def _default_sample() -> str:
    # In the Space the sample sits beside app.py; in the project it is examples/sample_blurred.mp4.
    for candidate in (HERE / "sample_blurred.mp4", HERE.parent / "sample_blurred.mp4"):
        if candidate.is_file():
            return str(candidate)
    return str(HERE / "sample_blurred.mp4")


def _count_setting(name: str, default: int) -> int:
    """The positive whole number in environment variable `name` (`default` when unset), or a clear error."""
    text = os.environ.get(name, str(default)).strip()
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise ValueError(f"{name} must be a positive whole number, got {text!r}") from None


MODEL = os.environ.get("VIDEO_DEBLUR_MODEL", "default")
SAMPLE = os.environ.get("VIDEO_DEBLUR_SAMPLE") or _default_sample()
# Three steps: on the embedded default model's benchmark (version 0.37) they score 28.77 dB at the model's own guidance
# scale (`pipe.config.guidance_scale`, 1.25), which the demo uses as it does its noise scale, against 28.62 dB for one
# step and 28.71 dB for the default 50 (its card, "Why `guidance_scale` 1.25" and version 0.37).
DEFAULT_STEPS = _count_setting("VIDEO_DEBLUR_STEPS", 3)
# The cost of a request grows with frames x pixels x steps (every temporal window x spatial tile is one UNet call per
# step, two with guidance). These limits keep a request short on a 2-vCPU Space; raise them on bigger hardware.
MAX_FRAMES = _count_setting("VIDEO_DEBLUR_MAX_FRAMES", 32)
MAX_SIDE = _count_setting("VIDEO_DEBLUR_MAX_SIDE", 256)
# The self-ensemble runs the sampler once per mirrored / transposed copy of the clip: its steps are counted that many
# times. It is also the steps slider's top, so that a single run from the page is never refused.
MAX_STEPS = _count_setting("VIDEO_DEBLUR_MAX_STEPS", 50)
if DEFAULT_STEPS > MAX_STEPS:
    raise ValueError(f"VIDEO_DEBLUR_STEPS={DEFAULT_STEPS} is above VIDEO_DEBLUR_MAX_STEPS={MAX_STEPS}")
MAX_FILE_SIZE = "50mb"
# Each request writes its video into a folder of its own under OUTPUTS. Gradio copies what it serves into its own
# cache (cleaned by `delete_cache` below), so a request's folder is removed by the first request an hour later: a
# Space that runs for weeks does not fill its disk.
OUTPUTS = Path(os.environ.get("VIDEO_DEBLUR_OUTPUTS") or Path(tempfile.gettempdir()) / "video-deblur-demo")
OUTPUT_MAX_AGE_S = 3600


def new_output_dir() -> Path:
    """A fresh folder for this request's files, after removing those of requests older than OUTPUT_MAX_AGE_S."""
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - OUTPUT_MAX_AGE_S
    for old in OUTPUTS.glob("request-*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request removed it first
            pass
    return Path(tempfile.mkdtemp(prefix="request-", dir=OUTPUTS))


@functools.lru_cache(maxsize=1)
def get_pipeline() -> VideoDeblurPipeline:
    """The pipeline, loaded once: the embedded default model unless VIDEO_DEBLUR_MODEL names another."""
    pipe = VideoDeblurPipeline.from_default() if MODEL == "default" else VideoDeblurPipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cpu")


def default_noise_scale() -> float:
    """The model's own starting noise (its `noise_scale` config; 1.0 for a model that does not set one): the
    slider's initial value. It loads the pipeline, which the app does at start anyway."""
    return get_pipeline().default_noise_scale


def probe(path: str) -> tuple[int, int, int]:
    """(frames, width, height) of a video file, decoding at most MAX_FRAMES + 1 frames; gr.Error if unreadable."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise gr.Error("This file has no video stream. Upload a video (mp4, mov, webm, mkv, avi).")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = 0
            for _ in container.decode(stream):
                frames += 1
                if frames > MAX_FRAMES:
                    break
    except av.FFmpegError as error:
        raise gr.Error(f"Cannot read this file as a video ({error}). Upload an mp4, mov, webm, mkv or avi.") from None
    if frames == 0:
        raise gr.Error("This video has no frames.")
    return frames, width, height


def check_limits(frames: int, width: int, height: int, fps: float | None = None) -> None:
    if frames > MAX_FRAMES:
        seconds = f" (about {MAX_FRAMES / fps:.1f} s at {fps:.0f} fps)" if fps else ""
        raise gr.Error(
            f"This clip is too long for the demo: it takes at most {MAX_FRAMES} frames{seconds}. Trim it, or run "
            "`video-deblur run` locally, which takes any length."
        )
    if max(width, height) > MAX_SIDE:
        raise gr.Error(
            f"The frames are {width}x{height}; the demo takes at most {MAX_SIDE} pixels on the longer side. Downscale "
            "the clip, or run `video-deblur run` locally, which takes any size."
        )


def check_steps(steps: int, strength: float, self_ensemble: int) -> None:
    total = round(steps * strength) * self_ensemble  # the steps each run makes (after `strength`), in every run
    if total > MAX_STEPS:
        ensemble = f" x self-ensemble {self_ensemble}" if self_ensemble > 1 else ""
        raise gr.Error(
            f"{steps} steps at strength {strength:g}{ensemble} run {total} denoising steps; the demo runs at most "
            f"{MAX_STEPS}. Lower the steps or the self-ensemble, or run `video-deblur run` locally, which has no "
            "such limit."
        )


def comparison(before: np.ndarray, after: np.ndarray) -> PIL.Image.Image:
    """Before (left) and after (right), side by side with a white gap: uint8 frames (H, W, 3)."""
    height, width = before.shape[:2]
    gap = max(2, width // 64)
    canvas = np.full((height, 2 * width + gap, 3), 255, dtype=np.uint8)
    canvas[:, :width] = before
    canvas[:, width + gap :] = after
    return PIL.Image.fromarray(canvas)


def deblur(
    video_path: str | None,
    steps: int,
    strength: float,
    seed: int,
    noise_scale: float | None = None,
    self_ensemble: int = 1,
    progress=gr.Progress(),
):
    """The demo's one action: returns (deblurred video path, comparison image, timing text). `noise_scale` None is
    the model's own; `self_ensemble` (1, 2, 4 or 8) deblurs the clip that many times, mirrored / transposed, and
    averages the results."""
    started = time.perf_counter()
    if not video_path:
        raise gr.Error("Upload a video or pick the sample first.")
    for name, value in (("Steps", steps), ("Strength", strength), ("Seed", seed)):
        if value is None:  # a cleared number box
            raise gr.Error(f"{name} is empty: enter a number.")
    steps, seed = int(steps), int(seed)
    if not 0 < strength <= 1:
        raise gr.Error(f"Strength must be in (0, 1], got {strength}.")
    if round(steps * strength) < 1:
        raise gr.Error(f"{steps} steps at strength {strength} leave no denoising step: raise either.")
    if isinstance(self_ensemble, bool) or self_ensemble not in SELF_ENSEMBLE_SIZES:
        raise gr.Error(f"Self-ensemble must be 1, 2, 4 or 8, got {self_ensemble!r}.")
    self_ensemble = int(self_ensemble)
    check_steps(steps, strength, self_ensemble)

    # 1. Check the clip against the demo's limits before decoding all of it
    progress(0.0, desc="Reading the video")
    frames, width, height = probe(video_path)
    check_limits(frames, width, height)
    try:
        clip = read_video(video_path)
    except ValueError as error:
        raise gr.Error(f"Cannot read this file as a video: {error}") from None
    check_limits(len(clip.frames), clip.frames.shape[2], clip.frames.shape[1], clip.fps)

    # 2. Deblur, with the progress bar driven by the pipeline's step callback
    progress(0.02, desc="Loading the model")
    pipe = get_pipeline()
    if noise_scale is None:
        noise_scale = pipe.default_noise_scale

    done = 0  # steps over every run of the self-ensemble (`step` starts again at 0 in each)

    def on_step_end(pipe, step, timestep, callback_kwargs):
        nonlocal done
        done += 1
        progress((done, pipe.num_timesteps * self_ensemble), desc="Denoising", unit="steps")
        return {}

    try:
        output = pipe(
            clip.frames,
            num_inference_steps=steps,
            strength=float(strength),
            noise_scale=noise_scale,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            callback_on_step_end=on_step_end,
            self_ensemble=self_ensemble,
        ).frames[0]
    except ValueError as error:
        raise gr.Error(str(error)) from None
    sharp = (output * 255).round().astype(np.uint8)  # (F, H, W, 3)

    # 3. Write the video and the comparison
    progress(0.99, desc="Writing the video")
    out_dir = new_output_dir()
    out_path = out_dir / "deblurred.mp4"
    # Browsers play H.264 in 4:2:0 only, which needs even sides: an odd side gets its last row / column repeated
    # (write_video would keep the odd size in 4:4:4, which players read but browsers do not).
    height, width = sharp.shape[1:3]
    write_video(np.pad(sharp, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge"), out_path, fps=clip.fps)
    middle = len(sharp) // 2
    image = comparison(clip.frames[middle], sharp[middle])
    elapsed = time.perf_counter() - started
    ensemble = f", self-ensemble of {self_ensemble} runs" if self_ensemble > 1 else ""
    timing = (
        f"Deblurred {len(sharp)} frames of {sharp.shape[2]}x{sharp.shape[1]} in {elapsed:.1f} s "
        f"({steps} steps, CFG {pipe.guidance_scale:g}, strength {strength:g}, starting noise {noise_scale:g}, "
        f"seed {seed}{ensemble}, CPU)."
    )
    return str(out_path), image, timing


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Video deblurring", delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(
            "# Video deblurring with a video diffusion model\n"
            "Upload a short blurred clip or pick the sample below, then press **Deblur**. The model runs on the CPU: "
            f"clips up to {MAX_FRAMES} frames and {MAX_SIDE} px on the longer side, {MAX_STEPS} denoising steps in "
            "all (steps x self-ensemble)."
        )
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(label="Blurred video", sources=["upload"], elem_id="input-video")
                steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="Denoising steps", elem_id="steps")
                strength = gr.Slider(
                    0.05,
                    1.0,
                    value=1.0,
                    step=0.05,
                    label="Strength",
                    info="1 starts from noise; lower starts from the blurred clip and runs fewer steps",
                    elem_id="strength",
                )
                noise_default = default_noise_scale()
                noise_scale = gr.Slider(
                    0.0,
                    max(1.0, noise_default),
                    value=noise_default,
                    step=0.05,
                    label="Starting noise",
                    info=f"Lower trades invented texture for fidelity; the model's own is {noise_default:g}",
                    elem_id="noise_scale",
                )
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                self_ensemble = gr.Radio(
                    list(SELF_ENSEMBLE_SIZES),
                    value=1,
                    label="Self-ensemble",
                    info="Deblurs the clip this many times, mirrored / transposed, and averages the results: "
                    "steadier and more faithful, but it multiplies the time by as much",
                    elem_id="self_ensemble",
                )
                run = gr.Button("Deblur", variant="primary", elem_id="deblur-button")
            with gr.Column():
                video_out = gr.Video(label="Deblurred video", interactive=False, elem_id="output-video")
                compare = gr.Image(
                    label="Middle frame: before (left), after (right)",
                    interactive=False,
                    height=320,
                    elem_id="comparison",
                )
                timing = gr.Markdown(elem_id="timing")
        if os.path.isfile(SAMPLE):
            gr.Examples(examples=[[SAMPLE]], inputs=[video_in], label="Sample")
        run.click(
            deblur,
            inputs=[video_in, steps, strength, seed, noise_scale, self_ensemble],
            outputs=[video_out, compare, timing],
        )
    return demo


if __name__ == "__main__":
    get_pipeline()  # fail at start, not at the first request, if the model does not load
    sample_dir = [str(Path(SAMPLE).resolve().parent)] if os.path.isfile(SAMPLE) else []
    # gradio serves files from the working and temporary folders only, unless told: the sample's and the outputs'.
    allowed = [*sample_dir, str(OUTPUTS)]
    build_demo().queue(default_concurrency_limit=1).launch(allowed_paths=allowed, max_file_size=MAX_FILE_SIZE)
