"""Speed figures for the core (issue 2): where `video-deblur run` spends its time, and the real-size UNet.

    python benchmarks/speed.py                 # both parts
    python benchmarks/speed.py --part run      # 16-frame 128 x 128 clip, small model, 50 steps with CFG
    python benchmarks/speed.py --part t2v      # UNet from the ModelScope T2V config, random weights

Prints a table and writes benchmarks/results/speed.json. Times are wall-clock seconds on this machine.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
from results_io import write_json  # noqa: E402

from pipeline_video_deblur.cli import positive_int  # noqa: E402

# The UNet config of damo-vilab/text-to-video-ms-1.7b (unet/config.json), with in_channels doubled for the
# blurred-latent condition (DESIGN 2.1).
MODELSCOPE_T2V_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
}


def small_model(path: str) -> None:
    """The tests' tiny model (real classes: AutoencoderKL, UNet 16/32, two CLIP encoders), random weights."""
    from tiny import tiny_pipeline

    tiny_pipeline().save_pretrained(path)


def bench_run(steps: int) -> dict:
    from tiny import tiny_video

    from pipeline_video_deblur import VideoDeblurPipeline
    from pipeline_video_deblur.data import write_video

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model")
        small_model(model)
        clip = os.path.join(tmp, "clip.mp4")
        frames = (tiny_video(16, 128, 128).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        write_video(frames, clip, fps=24)

        # Wall time of the command a user types, load and write included.
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "pipeline_video_deblur.cli", "run", clip, "-o", os.path.join(tmp, "out.mp4")]
        cmd += ["--model", model, "--steps", str(steps), "--guidance-scale", "2.0"]
        subprocess.run(cmd, check=True, capture_output=True)
        cli_seconds = time.perf_counter() - started

        # The same call in-process under cProfile: the share spent inside the UNet's forward.
        pipe = VideoDeblurPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        pipe(frames, num_inference_steps=steps, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
        profiler.disable()
        call_seconds = time.perf_counter() - started
        stats = pstats.Stats(profiler)
        unet_seconds = sum(
            entry[3]
            for func, entry in stats.stats.items()
            if func[2] == "forward" and func[0].endswith(os.path.join("unets", "unet_3d_condition.py"))
        )
        vae_seconds = sum(
            entry[3]
            for func, entry in stats.stats.items()
            if func[2] in ("encode", "decode") and func[0].endswith("autoencoder_kl.py")
        )
        params = sum(p.numel() for p in pipe.unet.parameters())
    return {
        "clip": "16 frames, 128 x 128",
        "steps": steps,
        "guidance_scale": 2.0,
        "unet_params": params,
        "cli_wall_seconds": round(cli_seconds, 2),
        "pipeline_call_seconds": round(call_seconds, 2),
        "unet_forward_seconds": round(unet_seconds, 2),
        "unet_share": round(unet_seconds / call_seconds, 3),
        "vae_seconds": round(vae_seconds, 3),
    }


def bench_t2v(repeats: int) -> dict:
    from pipeline_video_deblur import VideoDeblurUNet3DModel

    torch.manual_seed(0)
    unet = VideoDeblurUNet3DModel(**MODELSCOPE_T2V_UNET).eval()
    params = sum(p.numel() for p in unet.parameters())
    sample = torch.randn(1, 8, 16, 32, 32)  # (B, 2C, F, h, w): one 16-frame window of 256 x 256 frames
    context = torch.randn(1, 2, 1024)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            unet(sample, 500, encoder_hidden_states=context)
            times.append(time.perf_counter() - started)
    return {
        "config": "damo-vilab/text-to-video-ms-1.7b unet, in_channels 8",
        "unet_params": params,
        "latent_window": "1 x 8 x 16 x 32 x 32 (B, C, F, h, w), fp32",
        "forward_seconds": [round(t, 2) for t in times],
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["run", "t2v", "all"], default="all")
    parser.add_argument("--steps", type=positive_int, default=50)
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "speed.json"))
    args = parser.parse_args()
    results = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}"}
    if args.part in ("run", "all"):
        results["run"] = bench_run(args.steps)
        r = results["run"]
        print(f"video-deblur run, {r['clip']}, {r['steps']} steps, CFG {r['guidance_scale']}:")
        print(f"  command wall time      {r['cli_wall_seconds']:8.2f} s (load + read + deblur + write)")
        print(f"  pipeline call          {r['pipeline_call_seconds']:8.2f} s")
        print(f"  inside the UNet        {r['unet_forward_seconds']:8.2f} s ({100 * r['unet_share']:.1f} %)")
        print(f"  UNet parameters        {r['unet_params'] / 1e6:8.2f} M")
    if args.part in ("t2v", "all"):
        results["t2v"] = bench_t2v(args.repeats)
        r = results["t2v"]
        print(f"ModelScope T2V UNet ({r['unet_params'] / 1e9:.3f} B parameters), {r['latent_window']}:")
        print(f"  CPU forward            {', '.join(f'{t:.1f}' for t in r['forward_seconds'])} s")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
