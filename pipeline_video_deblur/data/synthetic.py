"""Synthetic blurred / sharp video pairs by the GoPro recipe, written in the GoPro layout.

The GoPro dataset (Nah et al., 2017) averages 7-13 consecutive frames of a 240 fps video into one blurred
frame and keeps the middle one as ground truth. Here the high-frame-rate video is rendered: a virtual
camera moves smoothly over a still photo (translation, rotation, zoom) and one to three objects cut from
other photos move across the frame on their own paths. Each blurred frame averages ``N`` consecutive
sub-frames (``N`` odd, drawn per sequence from 7, 9, 11, 13); the sharp frame is the middle sub-frame.
Like GoPro, ``blur`` averages the gamma-encoded sub-frames and ``blur_gamma`` averages them in linear light
(gamma 2.2). Output::

    OUT/{train,test}/<sequence>/{blur,blur_gamma,sharp}/000000.png ...
    OUT/{train,test}/<sequence>/meta.json

``GoProDataset(OUT, split)`` reads it. Blur is sized like GoPro's: at 128 px the camera moves 6-20 px
during one exposure (scaled with the frame size). When the camera reaches the border of the photo its
velocity is reflected, so a clip never comes to rest (a camera that stops there yields static clips).

By default stills come only from the images bundled inside scikit-image (read from its package folder; nothing
is downloaded), with a fixed split: a test sequence is built only from ``TEST_PHOTOS`` and a train sequence
only from ``TRAIN_PHOTOS``, backgrounds and objects alike. ``photos_dir`` (``video-deblur synth --photos DIR``)
renders one split from a folder of your own stills instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..atomic import replace_dir
from .workers import remove_stale_tmp, tmp_tag, worker_pool

# Photo name -> file in scikit-image's bundled data folder (these ship with the wheel; none is fetched).
PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "camera": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "brick": "brick.png",
    "gravel": "gravel.png",
    "chelsea": "chelsea.png",
    "motorcycle_left": "motorcycle_left.png",
    "immunohistochemistry": "ihc.png",
    "grass": "grass.png",
}
# The fixed split. Left out on purpose: clock_motion (already motion-blurred), motorcycle_right (the same
# scene as motorcycle_left, a test photo), drawings, text pages and tiny or binary images.
TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "camera", "coins", "moon", "brick", "gravel")
TEST_PHOTOS = ("chelsea", "motorcycle_left", "immunohistochemistry", "coffee")
SPLIT_PHOTOS = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS}
SPLIT_IDS = {"train": 0, "test": 1}
# Stills a user may render from instead (``photos_dir``): the formats PIL reads that hold photos.
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_PHOTO_SIDE = 16

EXPOSURE_CHOICES = (7, 9, 11, 13)  # sub-frames per blurred frame; odd so that a middle sub-frame exists
GAMMA = 2.2
# Motion per exposure (first to last sub-frame) at 128 px; scaled by min(H, W) / 128.
CAMERA_MOTION_PX = (6.0, 20.0)
OBJECT_MOTION_PX = (4.0, 16.0)
CAMERA_ROTATION_DEG = 1.5  # at most, per exposure
OBJECT_ROTATION_DEG = 3.0
CAMERA_ZOOM = 0.03  # at most, relative change of scale per exposure
ZOOM_RANGE = (0.87, 1.15)
NATIVE_SCALE = (1.0, 1.5)  # photo scale range when the photo is large enough for the view


def photo_path(name: str) -> Path:
    """Path of a bundled scikit-image photo by its name in ``PHOTO_FILES``."""
    import skimage.data

    if name not in PHOTO_FILES:
        raise ValueError(f"Unknown photo {name!r}: not an image file, nor one of the bundled {sorted(PHOTO_FILES)}")
    path = Path(os.path.dirname(skimage.data.__file__)) / PHOTO_FILES[name]
    if not path.is_file():
        raise ValueError(f"scikit-image's bundled photo {name!r} is missing at {str(path)!r}")
    return path


def photos_in_folder(folder: str | os.PathLike) -> tuple[str, ...]:
    """The stills directly inside ``folder`` (not its subfolders), sorted by name, as absolute paths.

    Each must be an image PIL can read, at least ``MIN_PHOTO_SIDE`` pixels on each side; else ``ValueError`` names
    the file. Use them as ``photos`` of ``render_sequence`` or as ``photos_dir`` of ``make_synthetic_dataset``.
    """
    path = Path(folder)
    expected = f"a folder of stills ({', '.join(PHOTO_EXTENSIONS)})"
    if not path.is_dir():
        raise ValueError(f"photos folder {str(folder)!r} is not a directory; expected {expected}")
    files = sorted(  # hidden files are not stills: macOS ._ copies, a `leaves` run's interrupted temporary files
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"photos folder {str(folder)!r} holds no stills; expected {expected}")
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                width, height = image.size
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise ValueError(f"photo {str(file)!r} cannot be read as an image ({error})") from None
        if min(width, height) < MIN_PHOTO_SIDE:
            raise ValueError(
                f"photo {str(file)!r} is {width}x{height}; stills must be at least {MIN_PHOTO_SIDE} px on each side"
            )
    return tuple(str(file.resolve()) for file in files)


def load_photo(name: str) -> np.ndarray:
    """A photo as float32 (H, W, 3) in [0, 1], gamma-encoded as stored (grayscale repeated to RGB).

    ``name`` is a bundled photo's name in ``PHOTO_FILES`` or the path of an image file (``photos_in_folder``).
    """
    path = Path(name) if name not in PHOTO_FILES and Path(name).is_file() else photo_path(name)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return np.asarray(pil, dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, length: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise of unit standard deviation, (length,)."""
    radius = int(math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= math.sqrt((taps**2).sum())  # unit variance of the filtered noise
    return np.convolve(rng.standard_normal(length + 2 * radius), taps, mode="valid")[:length]


def _reflect(value: float, velocity: float, low: float, high: float) -> tuple[float, float]:
    """Move ``value`` by ``velocity`` inside [low, high], reflecting position and velocity at the bounds."""
    value += velocity
    for _ in range(4):
        if value < low:
            value, velocity = 2 * low - value, -velocity
        elif value > high:
            value, velocity = 2 * high - value, -velocity
        else:
            break
    return min(max(value, low), high), velocity


def _path_2d(rng, steps, exposure, motion_px, start, low, high) -> np.ndarray:
    """Smooth random positions (steps, 2) that move about ``motion_px`` per exposure, reflected at the bounds."""
    speed = motion_px / (exposure - 1)
    sigma = 1.5 * exposure
    direction = rng.uniform(0, 2 * math.pi) + 0.5 * _smooth_noise(rng, steps, sigma)
    speeds = speed * np.clip(1.0 + 0.3 * _smooth_noise(rng, steps, sigma), 0.4, 1.6)
    velocity = np.stack([speeds * np.cos(direction), speeds * np.sin(direction)], axis=1)
    position = np.array(start, dtype=np.float64)
    sign = np.ones(2)
    path = np.empty((steps, 2))
    for t in range(steps):
        path[t] = position
        for axis in range(2):
            position[axis], moved = _reflect(position[axis], sign[axis] * velocity[t, axis], low[axis], high[axis])
            if moved != sign[axis] * velocity[t, axis]:
                sign[axis] = -sign[axis]
    return path


def _rate_path(rng, steps, exposure, per_exposure, start, low=-math.inf, high=math.inf) -> np.ndarray:
    """A smooth scalar path (steps,) changing by up to ``per_exposure`` per exposure, reflected at the bounds."""
    rate = rng.uniform(-1, 1) * per_exposure / (exposure - 1)
    rates = rate + 0.5 * abs(per_exposure) / (exposure - 1) * _smooth_noise(rng, steps, 1.5 * exposure)
    value, sign, out = float(start), 1.0, np.empty(steps)
    for t in range(steps):
        out[t] = value
        value, moved = _reflect(value, sign * rates[t], low, high)
        if moved != sign * rates[t]:
            sign = -sign
    return out


def _object_rgba(rng: np.random.Generator, photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """A blob-shaped RGBA patch (h, w, 4), cut from ``photo``, alpha anti-aliased at its edge."""
    top = rng.integers(0, photo.shape[0] - height + 1)
    left = rng.integers(0, photo.shape[1] - width + 1)
    rgb = photo[top : top + height, left : left + width]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    dy, dx = (yy - (height - 1) / 2) / (height / 2), (xx - (width - 1) / 2) / (width / 2)
    radius, angle = np.hypot(dx, dy), np.arctan2(dy, dx)
    outline = np.full_like(angle, 0.85)
    for harmonic in (2, 3, 5):  # a wobbly outline so that objects are not all ellipses
        outline += rng.uniform(-0.06, 0.06) * np.cos(harmonic * angle + rng.uniform(0, 2 * math.pi))
    edge = 2.0 / min(height, width)  # about one pixel of soft edge
    alpha = np.clip((outline - radius) / edge + 0.5, 0.0, 1.0)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def _grid(x, y, width, height) -> torch.Tensor:
    """Pixel coordinates (pixel centres at integers) -> grid_sample coordinates, align_corners=False."""
    return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)


def render_sequence(
    rng: np.random.Generator,
    photos: tuple[str, ...],
    frames: int,
    size: tuple[int, int],
    background_index: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Render one sequence.

    Args:
        rng: the sequence's random generator.
        photos: the photos this split may use: bundled names (``SPLIT_PHOTOS``) or image paths.
        frames: number of blurred / sharp frame pairs.
        size: (H, W) of the frames.
        background_index: which of ``photos`` is the background (objects come from the others).

    Returns:
        ``(blur, blur_gamma, sharp, meta)``: three uint8 arrays (F, H, W, 3) and a JSON-able dict of the
        parameters.
    """
    height, width = size
    scale_px = min(height, width) / 128.0
    exposure = int(rng.choice(EXPOSURE_CHOICES))
    steps = frames * exposure

    # 1. Background canvas, large enough that the rotated, zoomed view fits with room to move.
    background_name = photos[background_index % len(photos)]
    photo = load_photo(background_name)
    flip = bool(rng.integers(0, 2))
    if flip:
        photo = photo[:, ::-1]
    view_radius = ZOOM_RANGE[1] * 0.5 * math.hypot(height, width) + 3.0
    needed = 2 * view_radius + 0.5 * max(height, width)
    # Photos keep roughly their native resolution (like a crop of a larger frame), enlarged when the view
    # needs more room; downscaling them much would pack more detail per pixel than GoPro frames have.
    canvas_scale = max(needed / min(photo.shape[:2]), rng.uniform(*NATIVE_SCALE))
    canvas = _resize(photo, canvas_scale)
    canvas_h, canvas_w = canvas.shape[:2]

    # 2. Camera path: centre (x, y) on the canvas, angle (radians) and zoom, one value per sub-frame.
    camera_motion = rng.uniform(*CAMERA_MOTION_PX) * scale_px
    low, high = (view_radius, view_radius), (canvas_w - view_radius, canvas_h - view_radius)
    start = (rng.uniform(low[0], high[0]), rng.uniform(low[1], high[1]))
    centre = _path_2d(rng, steps, exposure, camera_motion, start, low, high)
    angle = _rate_path(rng, steps, exposure, math.radians(CAMERA_ROTATION_DEG), rng.uniform(-0.2, 0.2))
    log_zoom = _rate_path(rng, steps, exposure, math.log1p(CAMERA_ZOOM), rng.uniform(-0.08, 0.08), *np.log(ZOOM_RANGE))

    # 3. Moving objects, cut from the other photos of the split, on their own screen-space paths.
    others = [p for p in photos if p != background_name] or [background_name]
    objects = []
    order = rng.permutation(len(others))
    for k in range(int(rng.integers(1, 4))):
        name = others[int(order[k % len(others)])]
        source = load_photo(name)
        source = _resize(source, max(0.5 * max(height, width) / min(source.shape[:2]), rng.uniform(*NATIVE_SCALE)))
        side = rng.uniform(0.25, 0.45) * min(height, width)
        aspect = rng.uniform(0.7, 1.4)
        obj_h = int(np.clip(round(side * math.sqrt(aspect)), 4, source.shape[0]))
        obj_w = int(np.clip(round(side / math.sqrt(aspect)), 4, source.shape[1]))
        motion = rng.uniform(*OBJECT_MOTION_PX) * scale_px
        start = (rng.uniform(0, width - 1), rng.uniform(0, height - 1))
        objects.append(
            {
                "photo": name,
                "size": [obj_h, obj_w],
                "exposure_motion_px": round(motion, 3),
                "rgba": _object_rgba(rng, source, obj_h, obj_w),
                "centre": _path_2d(rng, steps, exposure, motion, start, (0, 0), (width - 1, height - 1)),
                "angle": _rate_path(rng, steps, exposure, math.radians(OBJECT_ROTATION_DEG), rng.uniform(-0.5, 0.5)),
            }
        )

    # 4. Render: per blurred frame, its `exposure` sub-frames in one grid_sample call (sub-frames stacked
    # along the grid's height), then average.
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    u, v = xs - (width - 1) / 2, ys - (height - 1) / 2  # (H, W) offsets from the frame centre
    canvas_t = torch.from_numpy(np.ascontiguousarray(canvas)).permute(2, 0, 1)[None]  # (1, 3, Hc, Wc)
    blur, blur_gamma, sharp = [], [], []
    for frame in range(frames):
        t = slice(frame * exposure, (frame + 1) * exposure)
        cx, cy = (torch.from_numpy(centre[t, i])[:, None, None] for i in range(2))  # (N, 1, 1)
        zoom = torch.from_numpy(np.exp(log_zoom[t]))[:, None, None]
        cos, sin = (torch.from_numpy(f(angle[t]))[:, None, None] for f in (np.cos, np.sin))
        x = cx + zoom * (cos * u - sin * v)  # (N, H, W) canvas coordinates of every output pixel
        y = cy + zoom * (sin * u + cos * v)
        grid = _grid(x, y, canvas_w, canvas_h).reshape(1, exposure * height, width, 2).float()
        sub = F.grid_sample(canvas_t, grid, mode="bicubic", padding_mode="border", align_corners=False)
        sub = sub.clamp(0, 1).reshape(3, exposure, height, width).permute(1, 0, 2, 3)  # (N, 3, H, W)
        for obj in objects:
            obj_h, obj_w = obj["size"]
            rgba = torch.from_numpy(obj["rgba"]).permute(2, 0, 1)[None]  # (1, 4, h, w)
            rgba = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], dim=1)  # premultiplied alpha
            ox, oy = (torch.from_numpy(obj["centre"][t, i])[:, None, None] for i in range(2))
            cos, sin = (torch.from_numpy(f(obj["angle"][t]))[:, None, None] for f in (np.cos, np.sin))
            dx, dy = xs - ox, ys - oy
            x = cos * dx + sin * dy + (obj_w - 1) / 2  # inverse rotation into the patch's frame
            y = -sin * dx + cos * dy + (obj_h - 1) / 2
            grid = _grid(x, y, obj_w, obj_h).reshape(1, exposure * height, width, 2).float()
            layer = F.grid_sample(rgba, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
            layer = layer.reshape(4, exposure, height, width).permute(1, 0, 2, 3)  # (N, 4, H, W)
            alpha = layer[:, 3:].clamp(0, 1)
            sub = (sub * (1 - alpha) + layer[:, :3].clamp(min=0)).clamp(0, 1)
        blur.append(sub.mean(0))
        blur_gamma.append(sub.pow(GAMMA).mean(0).pow(1 / GAMMA))
        sharp.append(sub[exposure // 2])

    def to_uint8(frames_list):
        stacked = torch.stack(frames_list).permute(0, 2, 3, 1)  # (F, 3, H, W) -> (F, H, W, 3)
        return (stacked * 255).round().clamp(0, 255).to(torch.uint8).numpy()

    # Blur extent actually rendered: how far the frame centre moves on the canvas during one exposure.
    per_exposure = np.linalg.norm(centre[exposure - 1 :: exposure] - centre[::exposure], axis=1)
    meta = {
        "exposure_subframes": exposure,
        "sharp_subframe": exposure // 2,
        "gamma": GAMMA,
        "background": {"photo": background_name, "flipped": flip, "canvas_size": [canvas_h, canvas_w]},
        "camera": {
            "exposure_motion_px": round(camera_motion, 3),
            "measured_exposure_motion_px_mean": round(float(per_exposure.mean() / np.exp(log_zoom).mean()), 3),
            "rotation_deg_max_per_exposure": CAMERA_ROTATION_DEG,
            "zoom_max_per_exposure": CAMERA_ZOOM,
        },
        "objects": [{k: obj[k] for k in ("photo", "size", "exposure_motion_px")} for obj in objects],
    }
    return to_uint8(blur), to_uint8(blur_gamma), to_uint8(sharp), meta


def link_photo_mix(leaves: str | os.PathLike, folder: str | os.PathLike, copies: int) -> int:
    """Fill `folder` with links to the `leaves_*.png` stills in `leaves` and to each bundled train photo `copies` times
    (the recipes' mix of procedural and photographic backgrounds for `synth --photos`). Links already there are kept,
    so a rerun changes nothing. Returns the number of stills."""
    leaves, folder = Path(leaves), Path(folder)
    stills = sorted(leaves.glob("leaves_*.png"))
    links = {still.name: still.resolve() for still in stills}
    for name in TRAIN_PHOTOS:
        path = photo_path(name)
        links.update({f"photo_{name}_{k:02d}{path.suffix}": path for k in range(copies)})
    folder.mkdir(parents=True, exist_ok=True)
    for link, target in links.items():
        if not (folder / link).is_symlink():
            (folder / link).symlink_to(target)
    return len(stills)


def sequence_name(split: str, index: int) -> str:
    return f"synth_{split}_{index:03d}"


def _photo_settings(photos_dir: str | None, photos: tuple[str, ...] | None) -> dict:
    """What a sequence records about its stills; the bundled split photos record nothing (older data has no key)."""
    if photos_dir is None:
        return {}
    return {"photos_dir": photos_dir, "photos": [Path(p).name for p in photos]}


def _write_sequence(
    out: Path,
    split: str,
    index: int,
    seed: int,
    frames: int,
    size: tuple[int, int],
    photos: tuple[str, ...] | None = None,
    photo_settings: dict | None = None,
) -> Path:
    """Render sequence ``index`` of ``split`` and write it atomically (a temporary folder renamed when complete).

    ``photos`` (image paths from a photos folder) replace the split's bundled photos when given;
    ``photo_settings`` (``_photo_settings``) is what ``meta.json`` records about them.
    """
    height, width = size
    photos = photos or SPLIT_PHOTOS[split]
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], index]))
    # Backgrounds cycle through the split's photos from a seed-dependent offset, so few sequences
    # already cover many photos.
    offset = int(np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split]])).integers(0, len(photos)))
    blur, blur_gamma, sharp, meta = render_sequence(rng, photos, frames, (height, width), offset + index)
    meta = {
        "generator": "pipeline_video_deblur.data.synthetic",
        "recipe": "GoPro (Nah et al. 2017): average of N gamma-encoded sub-frames; sharp = middle sub-frame",
        "seed": seed,
        "split": split,
        "index": index,
        "frames": frames,
        "size": [height, width],
        **(photo_settings or {}),
        **meta,
    }
    target = out / split / sequence_name(split, index)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{tmp_tag()}")  # a killed writer's is removed by the next run
    try:
        for folder, array in (("blur", blur), ("blur_gamma", blur_gamma), ("sharp", sharp)):
            (tmp / folder).mkdir(parents=True)
            for j, frame in enumerate(array):
                # Level 3, not Pillow's 6: the same size (12.4 against 12.5 KiB a 128 px frame) in 2.0 ms, not 3.7.
                Image.fromarray(frame).save(tmp / folder / f"{j:06d}.png", compress_level=3)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, target)  # an overwritten sequence is moved aside, and deleted once the new one is in place
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _worker_init() -> None:
    torch.set_num_threads(1)  # one process per core: no thread oversubscription


def _check_existing(
    target: Path, seed: int, split: str, index: int, frames: int, size: tuple[int, int], photo_settings: dict
) -> None:
    """An existing sequence may be kept only if it is the one this call would write (same seed, frames, size,
    stills)."""
    try:
        meta = json.loads((target / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"Sequence folder {str(target)!r} exists but has no readable meta.json ({error})") from None
    wanted = {"seed": seed, "split": split, "index": index, "frames": frames, "size": list(size)}
    wanted.update({"photos_dir": None, "photos": None}, **photo_settings)
    found = {key: meta.get(key) for key in wanted}
    if found != wanted:
        differ = {key: f"{found[key]!r} (wanted {wanted[key]!r})" for key in wanted if found[key] != wanted[key]}
        raise ValueError(
            f"Sequence folder {str(target)!r} was written with other settings: {differ}; "
            "use another output folder, or overwrite to replace it"
        )


def make_synthetic_dataset(
    out: str | os.PathLike,
    split: str = "both",
    sequences: int = 4,
    frames: int = 16,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    skip_existing: bool = False,
    workers: int = 1,
    photos_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Write synthetic GoPro-layout sequences under ``out/{train,test}/``.

    Args:
        out: output root (``GoProDataset(out, split)`` reads it).
        split: ``"train"``, ``"test"`` or ``"both"``.
        sequences: sequences per split.
        frames: blurred / sharp frame pairs per sequence.
        size: (H, W) of the frames, each at least 16.
        seed: the whole output is a function of (seed, split, sequence index, frames, size).
        overwrite: replace sequences that already exist; otherwise an existing one is an error.
        progress: show a progress bar.
        skip_existing: keep sequences that already exist and write only the missing ones (resumes an
            interrupted run: every sequence is complete or absent). A kept sequence must have been written with
            the same seed, frames and size, else it is an error.
        workers: processes that render in parallel (the output does not depend on it).
        photos_dir: a folder of your own stills (``PHOTO_EXTENSIONS``) to render from instead of the bundled
            scikit-image photos; one split at a time (``"train"`` or ``"test"``), so that no still is in both.
            Each sequence records the folder and its file names, which ``skip_existing`` checks.

    Returns:
        The sequence folders written (not those kept). Each is written into a temporary folder and renamed when
        complete.
    """
    from tqdm.auto import tqdm

    splits = {"both": ("train", "test"), "train": ("train",), "test": ("test",)}.get(split)
    if splits is None:
        raise ValueError(f"split must be 'train', 'test' or 'both', got {split!r}")
    if sequences < 1 or frames < 1:
        raise ValueError(f"sequences and frames must be at least 1, got sequences={sequences}, frames={frames}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if overwrite and skip_existing:
        raise ValueError("overwrite and skip_existing exclude each other: choose one")
    height, width = (int(s) for s in size)
    if height < 16 or width < 16:
        raise ValueError(f"size must be at least 16x16, got {height}x{width}")
    photos = None
    if photos_dir is not None:
        if len(splits) != 1:
            raise ValueError(
                f"photos folder {str(photos_dir)!r} (--photos) with split {split!r} would put the same stills in "
                "train and test; render one split per folder of stills: split='train' or split='test'"
            )
        photos = photos_in_folder(photos_dir)
        photos_dir = str(Path(photos_dir).resolve())
    settings = _photo_settings(photos_dir, photos)
    out = Path(out)
    for s in splits:  # sequences a killed writer left half-written
        remove_stale_tmp(out / s, f".{sequence_name(s, 0).rsplit('_', 1)[0]}_*.tmp-*")
    jobs = []
    for s in splits:
        for i in range(sequences):
            target = out / s / sequence_name(s, i)
            if target.exists() and not overwrite:
                if not skip_existing:
                    raise FileExistsError(
                        f"Sequence folder already exists: {str(target)!r} (use overwrite to replace it, or "
                        "skip_existing to keep it and write the missing ones)"
                    )
                _check_existing(target, seed, s, i, frames, (height, width), settings)
                continue
            jobs.append((out, s, i, seed, frames, (height, width), photos, settings))
    bar = tqdm(total=len(jobs), desc="synth", unit="seq", disable=not progress)
    if workers == 1 or len(jobs) <= 1:
        written = []
        for job in jobs:
            written.append(_write_sequence(*job))
            bar.update()
    else:
        with worker_pool(min(workers, len(jobs)), initializer=_worker_init) as pool:
            futures = [pool.submit(_write_sequence, *job) for job in jobs]
            written = []
            for future in futures:
                written.append(future.result())
                bar.update()
    bar.close()
    return written


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (or a single number for a square) -> (H, W)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ValueError(f"size must look like HxW (e.g. 128x128), got {text!r}")
    return values[0], values[1]


def add_synth_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``video-deblur synth``."""
    parser.add_argument("--out", required=True, help="output root; sequences go to OUT/{train,test}/<sequence>/")
    parser.add_argument("--split", default="both", choices=("train", "test", "both"), help="which split to write")
    parser.add_argument("--sequences", type=int, default=4, help="sequences per split (default 4)")
    parser.add_argument("--frames", type=int, default=16, help="blurred / sharp pairs per sequence (default 16)")
    parser.add_argument("--size", default="128x128", help="frame size HxW (default 128x128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the output is a function of it")
    parser.add_argument("--overwrite", action="store_true", help="replace sequences that already exist")
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep the sequences already written (same seed, frames, size) and write only the missing ones",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (default 1)")
    parser.add_argument(
        "--photos",
        default=None,
        metavar="DIR",
        help="render from your own stills in DIR (png, jpg, ...) instead of the bundled scikit-image photos; "
        "needs --split train or --split test",
    )


def run_synth(args: argparse.Namespace) -> int:
    """Run ``video-deblur synth``; returns the exit code. Bad arguments raise ``ValueError``."""
    try:
        written = make_synthetic_dataset(
            args.out,
            split=args.split,
            sequences=args.sequences,
            frames=args.frames,
            size=parse_size(args.size),
            seed=args.seed,
            overwrite=getattr(args, "overwrite", False),
            skip_existing=getattr(args, "skip_existing", False),
            workers=getattr(args, "workers", 1),
            photos_dir=getattr(args, "photos", None),
        )
    except FileExistsError as error:
        raise ValueError(str(error)) from error
    print(f"Wrote {len(written)} sequences under {args.out}")
    return 0
