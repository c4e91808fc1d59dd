#!/usr/bin/env python
"""Copy a trained pipeline folder into the package as the embedded default model, atomically.

    python train/recipes/ship_default_model.py runs/default_model/stage2 pipeline_video_deblur/default_model

Only the components are copied (loaded and saved again as safetensors, the UNet and CLIP encoders in float16: no
checkpoints, logs or optimiser state); the model card (`README.md`) and any other markdown file beside it (its
version history, `HISTORY.md`) already in the target are kept; `training.json` records where the weights came from
and the training log's step count and wall time. The model it replaces is deleted, or moved to `--keep-replaced DIR`
(the recipe keeps it in its work folder).

`--average-with RUN [RUN ...]` ships the uniform average of the source's weights and those of other pipeline folders of
the same architecture (earlier runs of the same chain: checkpoint averaging, a longer-horizon EMA), averaged in float32
before the float16 cast; `training.json` names the folders averaged. `--weights W W ...` makes it a weighted mean
instead: one positive weight for the source and one for each `--average-with` folder, in that order (normalised to sum
to 1; `--weights 2 1` counts the source twice), recorded in `training.json` beside the folders.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import sys
import time

import torch


def unet_digest(folder: str) -> str | None:
    """sha256 of a pipeline folder's UNet weights (None when there are none): which model a folder holds."""
    path = os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def average_weights(pipe, others: list[str], weights: list[float] | None = None) -> None:
    """Replace every model component's floating-point weights with their mean over ``pipe`` and the folders ``others``.

    ``weights`` (one per model, ``pipe`` first; normalised here) makes it a weighted mean; ``None`` a uniform one.

    Integer buffers (position ids) must agree; any other difference in keys, shapes or buffers stops with the folder
    and the tensor named, before anything is written.
    """
    from pipeline_video_deblur import VideoDeblurPipeline

    if weights is None:
        weights = [1.0] * (len(others) + 1)
    if len(weights) != len(others) + 1:
        raise ValueError(f"{len(weights)} weights for {len(others) + 1} models (the source and {len(others)} others)")
    total = sum(weights)  # the weighted sum is divided by it at the end (uniform: the plain mean, as before)
    modules = {n: m for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    mine = {n: m.state_dict() for n, m in modules.items()}  # the source's tensors, read once
    sums = {
        n: {k: v.detach().float() * weights[0] for k, v in s.items() if v.is_floating_point()} for n, s in mine.items()
    }
    for folder, weight in zip(others, weights[1:]):
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise SystemExit(f"--average-with {folder}: not a pipeline folder (no model_index.json)")
        other = VideoDeblurPipeline.from_pretrained(folder)
        for name in modules:
            theirs = getattr(other, name, None)
            if not isinstance(theirs, torch.nn.Module):
                raise SystemExit(f"--average-with {folder}: it has no {name} to average with the source's")
            state = theirs.state_dict()
            if state.keys() != mine[name].keys():
                missing = sorted(mine[name].keys() ^ state.keys())[:3]
                raise SystemExit(f"--average-with {folder}: its {name} differs from the source's in {missing}")
            for key, value in state.items():
                ours = mine[name][key]
                if value.shape != ours.shape:
                    raise SystemExit(
                        f"--average-with {folder}: {name}.{key} has shape {tuple(value.shape)}, the source's "
                        f"{tuple(ours.shape)}"
                    )
                if key in sums[name]:
                    sums[name][key] += value.float() * weight
                elif not torch.equal(value, ours):
                    raise SystemExit(f"--average-with {folder}: {name}.{key} (not a weight) differs from the source's")
        del other
    for name, module in modules.items():
        module.load_state_dict(
            {k: (sums[name][k] / total).to(v.dtype) if k in sums[name] else v for k, v in mine[name].items()}
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a trained VideoDeblurPipeline folder (a stage 2 output_dir)")
    parser.add_argument("target", help="where the default model lives (pipeline_video_deblur/default_model)")
    parser.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="the pipeline's default tile in pixels (stored as the UNet's sample_size in latents); default: keep "
        "the training crop",
    )
    parser.add_argument(
        "--noise-scale",
        type=float,
        default=None,
        help="the model's default `noise_scale` (stored in model_index.json; >= 0); default: that of the model being "
        "replaced, or the source's when there is none",
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="the model's default `guidance_scale` (stored in model_index.json; finite); default: that of the model "
        "being replaced, or the source's when there is none",
    )
    parser.add_argument(
        "--keep-replaced",
        metavar="DIR",
        default=None,
        help="move the model being replaced to DIR instead of deleting it (when DIR exists it is left as it is)",
    )
    parser.add_argument(
        "--average-with",
        nargs="+",
        metavar="RUN",
        default=[],
        help="ship the uniform average of the source's weights and these pipeline folders' (same architecture)",
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        type=float,
        metavar="W",
        default=None,
        help="with --average-with: a weighted mean instead, one positive weight for the source and one per folder, "
        "in that order (normalised to sum to 1)",
    )
    args = parser.parse_args()

    from pipeline_video_deblur import VideoDeblurPipeline

    source, target = os.path.abspath(args.source), os.path.abspath(args.target)
    if source == target:
        raise SystemExit(f"source and target are the same folder: {source}")
    old = target + ".old"
    if os.path.exists(old):  # an interrupted ship: the model in it may be the only copy
        raise SystemExit(
            f"{old} is left from an interrupted ship: move it back to {target} (if that is missing) or delete it"
        )
    kept = os.path.abspath(args.keep_replaced) if args.keep_replaced is not None else None
    if kept is not None and os.path.isdir(kept) and not os.listdir(kept):
        os.rmdir(kept)  # an empty folder made for it: the model goes there
    if kept is not None and os.path.exists(kept):
        same = unet_digest(kept)
        if same is None or same != unet_digest(target):
            raise SystemExit(
                f"--keep-replaced {args.keep_replaced} exists and is not a copy of the model being replaced; choose "
                "another folder"
            )
    # The measured choices the card reports stay with the model until measured again
    index = os.path.join(target, "model_index.json")
    replaced_index = json.load(open(index)) if os.path.isfile(index) else {}
    noise_scale = replaced_index.get("noise_scale") if args.noise_scale is None else args.noise_scale
    if noise_scale is not None and not (math.isfinite(noise_scale) and noise_scale >= 0):
        raise SystemExit(f"--noise-scale must be a finite number >= 0, got {noise_scale!r}")
    guidance_scale = replaced_index.get("guidance_scale") if args.guidance_scale is None else args.guidance_scale
    if guidance_scale is not None and not math.isfinite(guidance_scale):
        raise SystemExit(f"--guidance-scale must be a finite number, got {guidance_scale!r}")
    others = [os.path.abspath(folder) for folder in args.average_with]
    if source in others or len(set(others)) != len(others):
        raise SystemExit(
            "--average-with names the source or one folder twice: each folder counts once "
            "(to count one more than once, give it a larger share with --weights)"
        )
    weights = args.weights
    if weights is not None:
        if not others:
            raise SystemExit("--weights needs --average-with: it weighs the source and those folders in the mean")
        if len(weights) != len(others) + 1:
            raise SystemExit(
                f"--weights {' '.join(f'{w:g}' for w in weights)}: expected {len(others) + 1} weights, one for the "
                f"source and one per --average-with folder, got {len(weights)}"
            )
        bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
        if bad:
            raise SystemExit(f"--weights: {bad[0]:g} is not a positive finite number (each model's share of the mean)")
    pipe = VideoDeblurPipeline.from_pretrained(source)
    if others:
        average_weights(pipe, others, weights)
    if noise_scale is not None:
        pipe.register_to_config(noise_scale=float(noise_scale))
    if guidance_scale is not None:
        pipe.register_to_config(guidance_scale=float(guidance_scale))
    # The UNet and both CLIP encoders are stored in float16 to keep the package small; they load back as float32
    # (diffusers loads the UNet in float32; the pipeline brings encoders stored in a lower precision to the UNet's).
    for module in (pipe.unet, pipe.image_encoder, pipe.blur_encoder):
        module.to(torch.float16)
    if args.tile_size is not None:
        factor = pipe.vae_scale_factor
        if args.tile_size <= 0 or args.tile_size % pipe.size_multiple:
            raise SystemExit(f"--tile-size {args.tile_size} is not a positive multiple of {pipe.size_multiple}")
        pipe.unet.register_to_config(sample_size=args.tile_size // factor)
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    # A local path means nothing on the user's machine: the record of where the weights came from is training.json.
    for config in [os.path.join(tmp, "model_index.json")] + [
        os.path.join(tmp, d, "config.json")
        for d in os.listdir(tmp)
        if os.path.isfile(os.path.join(tmp, d, "config.json"))
    ]:
        data = json.load(open(config))
        if data.pop("_name_or_path", None) is not None:
            with open(config, "w") as f:
                json.dump(data, f, indent=2, sort_keys=False)
                f.write("\n")
    cards = sorted(n for n in os.listdir(target) if n.endswith(".md")) if os.path.isdir(target) else []
    for keep in ["training.json", *cards]:
        if os.path.isfile(os.path.join(target, keep)):
            shutil.copy2(os.path.join(target, keep), os.path.join(tmp, keep))

    # Training record: appended to, so continued runs keep the history.
    record_path = os.path.join(tmp, "training.json")
    record = json.load(open(record_path)) if os.path.isfile(record_path) else {"runs": []}
    run = {"source": os.path.relpath(source), "shipped": time.strftime("%Y-%m-%d %H:%M:%S")}
    if others:
        run["averaged_with"] = [os.path.relpath(folder) for folder in others]
        if weights is not None:  # the source's share first, then each folder's, as given (not normalised)
            run["weights"] = weights
    log = os.path.join(source, "loss_log.csv")
    if os.path.isfile(log):
        rows = list(csv.DictReader(open(log)))
        if rows:
            run["last_logged_step"] = int(float(rows[-1].get("step", 0)))
            run["last_loss"] = float(rows[-1].get("loss", "nan"))
    record["runs"].append(run)
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)

    replaced = os.path.exists(target)
    if replaced:
        os.replace(target, old)
    os.replace(tmp, target)
    keep = replaced and kept is not None
    if keep and not os.path.exists(kept):  # else it holds this very model already (checked above)
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        shutil.move(old, kept)  # a move, not a rename: DIR may be on another disk
    shutil.rmtree(old, ignore_errors=True)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(target) for f in files)
    print(f"shipped {source} -> {target} ({size / 1e6:.1f} MB)")
    if keep:
        print(f"the model it replaced is in {kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
