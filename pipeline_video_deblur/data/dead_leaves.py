"""Dead-leaves stills: procedural content for ``video-deblur synth --photos`` when few photos are at hand.

The dead-leaves model (Matheron, 1968; used to train restoration networks by Achddou et al., 2021) drops opaque
shapes on top of each other until the canvas is covered. With shape sizes drawn from a power law p(r) ~ r^-3 the
result has no preferred scale, like natural images: edges of every length, orientation and contrast, occlusions
and flat regions. Here 60 % of the shapes are disks and 40 % rotated rectangles (aspect 1-4, for straight edges);
each has a colour of random saturation, a faint linear shading, and 40 % of them a 1/f noise texture. Shapes are
drawn at twice the size and averaged down (anti-aliased edges), then a little grain is added.

    video-deblur leaves --out stills/ --count 120 --seed 1 --workers 2
    video-deblur synth --photos stills/ --split train --sequences 2048 --frames 12 --out data/ --seed 1

Still ``k`` depends only on ``(seed, k)`` and the settings, so a larger ``--count`` keeps the stills already
written; ``leaves.json`` in the folder records the settings, and a folder written with other settings is refused.
``--reuse OTHER`` takes the stills another folder already holds (same settings) as hard links, or copies where
links are not possible, instead of drawing them again:

    video-deblur leaves --out stills_240/ --count 240 --seed 1 --reuse stills/
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .workers import remove_stale_tmp, tmp_tag, worker_pool

SETTINGS_FILE = "leaves.json"
MIN_SIZE = 32


def dead_leaves_image(
    rng: np.random.Generator,
    size: int = 448,
    supersample: int = 2,
    min_radius: float = 8.0,
    max_radius: float = 300.0,
    textured: float = 0.4,
    coverage: float = 0.999,
    max_shapes: int = 20000,
) -> np.ndarray:
    """One dead-leaves still, uint8 (size, size, 3). Radii are in output pixels."""
    if size < MIN_SIZE:
        raise ValueError(f"dead-leaves size {size} is too small; expected at least {MIN_SIZE} px")
    if not 0 < min_radius < max_radius:
        raise ValueError(f"dead-leaves radii must satisfy 0 < min < max, got min {min_radius}, max {max_radius}")
    big = size * supersample
    rows, cols = np.mgrid[0:big, 0:big].astype(np.float32)
    canvas = np.zeros((big, big, 3), np.float32)
    covered = np.zeros((big, big), bool)
    # A 1/f noise field for the textured shapes (unit variance).
    freq = np.fft.fftfreq(big)[:, None] ** 2 + np.fft.fftfreq(big)[None, :] ** 2
    freq[0, 0] = 1.0
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(big, big))) / np.sqrt(freq))).astype(np.float32)
    field = (field - field.mean()) / field.std()
    # Inverse-CDF draws of p(r) ~ r^-3 on [min_radius, max_radius].
    lo, hi = min_radius**-2.0, max_radius**-2.0
    shapes = painted = 0
    # Front to back: a shape paints only what no earlier (nearer) shape covers. The painted pixels are counted as
    # they are added (covered.mean() over the whole canvas at every shape took half the time of a still).
    while painted / covered.size < coverage and shapes < max_shapes:
        radius = (lo - rng.random() * (lo - hi)) ** -0.5 * supersample
        cx, cy = rng.uniform(-radius, big + radius, 2)
        x0, x1 = int(max(cx - 1.5 * radius, 0)), int(min(cx + 1.5 * radius + 1, big))
        y0, y1 = int(max(cy - 1.5 * radius, 0)), int(min(cy + 1.5 * radius + 1, big))
        if x1 <= x0 or y1 <= y0:
            continue
        dx, dy = cols[y0:y1, x0:x1] - cx, rows[y0:y1, x0:x1] - cy
        if rng.random() < 0.6:
            mask = dx * dx + dy * dy <= radius * radius
        else:
            angle = rng.uniform(0, np.pi)
            aspect = rng.uniform(1, 4)
            along = np.cos(angle) * dx + np.sin(angle) * dy
            across = -np.sin(angle) * dx + np.cos(angle) * dy
            mask = (np.abs(along) <= radius) & (np.abs(across) <= radius / aspect)
        mask &= ~covered[y0:y1, x0:x1]
        new_pixels = int(np.count_nonzero(mask))
        if not new_pixels:
            continue
        colour = rng.random(3) ** 1.5
        saturation = rng.random() ** 2 * 0.8
        colour = saturation * colour + (1 - saturation) * colour.mean()
        slope = rng.normal(0, 0.15, 2) / max(radius, 1.0)
        shade = 1 + slope[0] * dx + slope[1] * dy
        if rng.random() < textured:
            shade = shade + rng.uniform(0.05, 0.35) * field[y0:y1, x0:x1]
        # Shaded only where it paints (the same values as shading the whole box, in a fraction of the time).
        canvas[y0:y1, x0:x1][mask] = np.clip(colour[None, :] * shade[mask][:, None], 0, 1)
        covered[y0:y1, x0:x1] |= mask
        painted += new_pixels
        shapes += 1
    image = canvas.reshape(size, supersample, size, supersample, 3).mean((1, 3))
    image += rng.normal(0, 0.01, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def still_name(index: int) -> str:
    return f"leaves_{index:05d}.png"


def _put_still(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` make a temporary file beside ``path``, then move it there: a still is complete or absent."""
    tmp = path.with_name(f".{path.stem}{tmp_tag()}.tmp.png")  # a killed writer's is removed by the next run
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_still(folder: str, index: int, seed: int, size: int) -> str:
    path = Path(folder) / still_name(index)
    image = dead_leaves_image(np.random.default_rng([seed, index]), size=size)
    _put_still(path, Image.fromarray(image).save)
    return str(path)


def _link_or_copy(source: Path, tmp: Path) -> None:
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links, or another device
        shutil.copyfile(source, tmp)


def _read_settings(folder: Path) -> dict | None:
    path = folder / SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _same_settings(recorded: dict, settings: dict) -> bool:
    return {key: recorded.get(key) for key in settings} == settings


def write_dead_leaves(
    out: str | os.PathLike,
    count: int,
    seed: int = 0,
    size: int = 448,
    workers: int = 1,
    progress: bool = True,
    reuse: str | os.PathLike | None = None,
) -> list[Path]:
    """Write ``count`` dead-leaves stills to ``out`` (created if needed); returns their paths in order.

    Stills already there (same settings) are kept, so an interrupted run continues and a larger ``count`` adds to
    the folder. A folder written with another seed or size is refused with ``ValueError``. ``reuse`` names another
    folder of stills drawn with the same settings: those of its stills that ``out`` lacks are linked (or copied)
    rather than drawn again, which gives the same files since still ``k`` depends only on the settings and ``k``.
    """
    if count < 1:
        raise ValueError(f"--count must be at least 1, got {count}")
    if size < MIN_SIZE:
        raise ValueError(f"--size must be at least {MIN_SIZE} px, got {size}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    settings = {"generator": "dead_leaves", "seed": int(seed), "size": int(size)}
    source = None if reuse is None else Path(reuse)
    if source is not None:
        theirs = _read_settings(source) if source.is_dir() else None
        if theirs is None:
            raise ValueError(
                f"--reuse {str(reuse)!r} is not a folder with {SETTINGS_FILE}; "
                "expected one written by `video-deblur leaves`"
            )
        if not _same_settings(theirs, settings):
            raise ValueError(
                f"--reuse {str(reuse)!r} records {theirs}; this run asks for {settings}: its stills would differ"
            )
        if source.resolve() == folder.resolve():
            source = None  # the folder itself: its stills are kept anyway
    settings_path = folder / SETTINGS_FILE
    old = _read_settings(folder)
    if old is not None:
        if not _same_settings(old, settings):
            raise ValueError(
                f"{str(settings_path)!r} records {old}; this run asks for {settings}: use another --out folder"
            )
    elif any(folder.glob("leaves_*.png")):
        raise ValueError(f"{str(out)!r} holds leaves_*.png stills but no {SETTINGS_FILE}; use another --out folder")
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(folder, ".leaves_*.tmp.png")  # stills a killed writer left half-written
    count_before = len(list(folder.glob("leaves_*.png")))
    record = dict(settings, count=max(int(count), count_before))
    tmp = settings_path.with_name(f".{SETTINGS_FILE}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, settings_path)

    todo = [index for index in range(count) if not (folder / still_name(index)).is_file()]
    if source is not None:
        reused = {index for index in todo if (source / still_name(index)).is_file()}
        for index in sorted(reused):
            _put_still(folder / still_name(index), functools.partial(_link_or_copy, source / still_name(index)))
        todo = [index for index in todo if index not in reused]
    bar = tqdm(total=count, initial=count - len(todo), desc="leaves", unit="still", disable=not progress)
    if workers == 1 or len(todo) <= 1:
        for index in todo:
            _write_still(str(folder), index, seed, size)
            bar.update()
    else:
        with worker_pool(min(workers, len(todo))) as pool:
            for _ in pool.map(_write_still, [str(folder)] * len(todo), todo, [seed] * len(todo), [size] * len(todo)):
                bar.update()
    bar.close()
    return [folder / still_name(index) for index in range(count)]


def add_leaves_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``video-deblur leaves``."""
    parser.add_argument("--out", required=True, help="folder for the stills (give it to `synth --photos`)")
    parser.add_argument("--count", type=int, default=120, help="how many stills (default 120)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; still k depends only on it and k")
    parser.add_argument("--size", type=int, default=448, help="side of each square still in px (default 448)")
    parser.add_argument("--workers", type=int, default=1, help="processes drawing in parallel (default 1)")
    parser.add_argument(
        "--reuse",
        metavar="FOLDER",
        help="another folder of stills drawn with the same seed and size: link its stills instead of drawing them",
    )


def run_leaves(args: argparse.Namespace) -> int:
    """Run ``video-deblur leaves``; returns the exit code. Bad arguments raise ``ValueError``."""
    paths = write_dead_leaves(
        args.out, count=args.count, seed=args.seed, size=args.size, workers=args.workers, reuse=args.reuse
    )
    print(f"Wrote {len(paths)} dead-leaves stills to {args.out}")
    return 0
