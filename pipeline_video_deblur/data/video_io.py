"""Reading and writing videos: one reader for video files and folders of frames.

Frames travel as uint8 RGB arrays of shape (F, H, W, 3). Video files go through PyAV (anything FFmpeg
decodes); a folder is read as its image files in natural order (``2.png`` before ``10.png``). Writes are
atomic: the output is written under a temporary sibling name and renamed into place when complete, so a
reader never sees half a video.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import replace_dir

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".wmv", ".flv")
"""Extensions read and written as video files (writing supports .mp4, .mov, .mkv, .avi, .webm)."""
WRITE_VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Extensions of the frame files read from a folder."""

DEFAULT_FOLDER_FPS = 30.0
# x264 constant rate factor: 12 is visually lossless (about 45-50 dB on natural frames) at a moderate size.
_X264_CRF = "12"
_VP9_CRF = "15"


@dataclass
class VideoClip:
    """A decoded clip.

    Attributes:
        frames: uint8 array (F, H, W, 3), RGB.
        names: one file name per frame: the frame files' names for a folder, ``frame_00000.png`` ... for a
            video file.
        fps: frames per second (a folder has none of its own: 30.0 unless given).
    """

    frames: np.ndarray
    names: list[str] = field(default_factory=list)
    fps: float = DEFAULT_FOLDER_FPS

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def is_video_file(path: str | os.PathLike) -> bool:
    """True when ``path`` names a video file by its extension (it need not exist)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def natural_sort_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``frame2`` < ``frame10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` (extensions in ``IMAGE_EXTENSIONS``) in natural order; others are ignored, and
    so are hidden files (macOS's ``._0001.png`` copies on exFAT or network shares, interrupted temporary files)."""
    folder = Path(folder)
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """One image file as uint8 (H, W, 3) RGB; grayscale, RGBA (alpha dropped), palette and 16-bit converted."""
    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: scale to 8 bits rather than let PIL clip it.
                array = np.asarray(image, dtype=np.float64)
                maximum = 65535.0 if array.max() > 255 else 255.0
                gray = np.round(array / maximum * 255.0).clip(0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read image file {str(path)!r}: {error}") from error


def read_video(path: str | os.PathLike, fps: float | None = None) -> VideoClip:
    """Read a video file or a folder of frames.

    Args:
        path: a video file (any container and codec PyAV decodes) or a folder of image files
            (png / jpg / jpeg / bmp / tif, read in natural order of their names).
        fps: for a folder, its frame rate (default 30.0); for a video file, ``None`` keeps the file's own
            rate and a value overrides it.

    Returns:
        A ``VideoClip`` with uint8 RGB frames (F, H, W, 3). Grayscale, RGBA and palette frames are converted
        to RGB.

    Raises:
        ValueError: a missing path, an empty folder, frames of different sizes, an unreadable or corrupt
            video, a video without frames.
    """
    path = Path(path)
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not path.exists():
        raise ValueError(f"Input video or frame folder does not exist: {str(path)!r}")
    if path.is_dir():
        return _read_folder(path, DEFAULT_FOLDER_FPS if fps is None else float(fps))
    clip = _read_video_file(path)
    if fps is not None:
        clip.fps = float(fps)
    return clip


def _read_folder(folder: Path, fps: float) -> VideoClip:
    files = list_frame_files(folder)
    if not files:
        raise ValueError(
            f"Frame folder {str(folder)!r} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    frames = []
    for file in files:
        frame = load_rgb(file)
        if frames and frame.shape != frames[0].shape:
            raise ValueError(
                f"Frames in {str(folder)!r} differ in size: {files[0].name} is {frames[0].shape[1]}x"
                f"{frames[0].shape[0]} (WxH) but {file.name} is {frame.shape[1]}x{frame.shape[0]}"
            )
        frames.append(frame)
    return VideoClip(frames=np.stack(frames), names=[f.name for f in files], fps=fps)


def _read_video_file(path: Path) -> VideoClip:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"Video file {str(path)!r} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = [_upright(frame) for frame in container.decode(stream)]
    except av.FFmpegError as error:
        raise ValueError(f"Cannot decode video file {str(path)!r} (corrupt or not a video): {error}") from error
    if not frames:
        raise ValueError(f"Video file {str(path)!r} contains no frames")
    fps = float(rate) if rate else DEFAULT_FOLDER_FPS
    names = [f"frame_{i:05d}.png" for i in range(len(frames))]
    return VideoClip(frames=np.stack(frames).astype(np.uint8, copy=False), names=names, fps=fps)


def _upright(frame) -> np.ndarray:
    """The frame as it is meant to be shown: phones store portrait clips as landscape frames plus a display
    rotation (the container's display matrix), which a player applies and the decoder does not."""
    array = frame.to_ndarray(format="rgb24")
    turns = round(getattr(frame, "rotation", 0) / 90) % 4  # PyAV's angle is counterclockwise, as np.rot90's
    return np.ascontiguousarray(np.rot90(array, k=turns)) if turns else array


def _as_uint8_frames(frames: np.ndarray | Sequence) -> np.ndarray:
    """uint8 (F, H, W, 3) from a uint8 array, a float array in [0, 1], or a list of PIL images / arrays."""
    if isinstance(frames, np.ndarray):
        array = frames
    else:
        frames = list(frames)
        if not frames:
            raise ValueError("No frames to write: got an empty list")
        array = np.stack(
            [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in frames]
        )
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"Frames must have shape (F, H, W, 3), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("No frames to write: got 0 frames")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"Float frames must lie in [0, 1], got values in [{low}, {high}]")
        return np.round(array * 255.0).astype(np.uint8)
    raise ValueError(f"Frames must be uint8 or float in [0, 1], got dtype {array.dtype}")


def _exists(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


# Files a desktop drops into any folder it shows: replacing a folder of frames may delete them.
_DESKTOP_CLUTTER = ("thumbs.db", "desktop.ini")


def _frame_or_clutter(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) or name.startswith(".") or name.lower() in _DESKTOP_CLUTTER


def check_writable_output(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise the error `write_video(..., path, overwrite=overwrite)` would raise about `path` itself, before any
    work is done: a video format that cannot be written, an existing output without `overwrite`, a folder output
    whose existing folder holds more than frames and hidden or desktop files (replacing it would delete them), a
    file where a folder is wanted or the reverse, or a parent that is not a writable folder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    video = suffix in VIDEO_EXTENSIONS
    if video and suffix not in WRITE_VIDEO_EXTENSIONS:
        raise ValueError(f"Cannot write {suffix!r} videos; use one of {', '.join(WRITE_VIDEO_EXTENSIONS)}: {path}")
    if _exists(path):
        if not overwrite:
            raise FileExistsError(f"Output already exists: {str(path)!r} (pass overwrite=True to replace it)")
        if video and path.is_dir():
            raise ValueError(f"Output {str(path)!r} is a folder; a video output replaces only a file")
        if not video and not path.is_dir():
            raise ValueError(f"Output {str(path)!r} is a file; a frame-folder output replaces only a folder")
        if not video:
            others = sorted(p.name for p in path.iterdir() if p.is_dir() or not _frame_or_clutter(p.name))
            if others:
                raise ValueError(
                    f"Output folder {str(path)!r} holds more than image frames ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); replacing it would delete them, choose another path"
                )
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.exists():
        raise ValueError(f"Cannot write {str(path)!r}: {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise ValueError(f"Cannot write {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write {str(path)!r}: the folder {str(parent)!r} is not writable")


def write_video(
    frames: np.ndarray | Sequence,
    path: str | os.PathLike,
    fps: float = DEFAULT_FOLDER_FPS,
    names: list[str] | None = None,
    overwrite: bool = False,
) -> None:
    """Write frames to a video file or a folder of PNG frames, atomically.

    Args:
        frames: uint8 (F, H, W, 3) RGB, float (F, H, W, 3) in [0, 1] (rounded to uint8), or a list of PIL
            images.
        path: a path ending in .mp4 / .mov / .mkv / .avi / .webm writes a video with PyAV (H.264, CRF 12; VP9
            for .webm); any other path is a folder that receives one image per frame.
        fps: frame rate of a video file (ignored for a folder).
        names: file names of the frames in a folder (default ``frame_00000.png`` ...); the extension picks
            the image format.
        overwrite: replace an existing output; without it an existing file or non-empty folder is an error.

    The size is kept exactly: even sizes use yuv420p (what every player reads), odd sizes yuv444p, since
    4:2:0 chroma needs even sizes and padding would change the frame size on reading back.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: bad frames, names or fps, or a ``path`` that cannot be written (see `check_writable_output`:
            an existing folder is replaced only when it holds image frames alone).
    """
    path = Path(path)
    array = _as_uint8_frames(frames)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    check_writable_output(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in WRITE_VIDEO_EXTENSIONS:
        tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
        try:
            _write_video_file(array, tmp, fps)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return
    _write_folder(array, path, names)


def _write_video_file(array: np.ndarray, path: Path, fps: float) -> None:
    import av

    height, width = array.shape[1:3]
    webm = path.suffix.lower() == ".webm"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libvpx-vp9" if webm else "libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        stream.options = {"crf": _VP9_CRF, "b:v": "0"} if webm else {"crf": _X264_CRF, "preset": "medium"}
        for frame in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_folder(array: np.ndarray, folder: Path, names: list[str] | None) -> None:
    if names is None:
        names = [f"frame_{i:05d}.png" for i in range(len(array))]
    names = [str(n) for n in names]
    if len(names) != len(array):
        raise ValueError(f"Got {len(names)} names for {len(array)} frames")
    if len(set(names)) != len(names):
        raise ValueError("Frame names must be unique")
    for name in names:
        if os.sep in name or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"Frame name must be a plain file name ending in one of {IMAGE_EXTENSIONS}, got {name!r}")
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for frame, name in zip(array, names):
            Image.fromarray(frame).save(tmp / name)
        if folder.exists() and _exists(folder):
            # overwrite: the old output is moved aside, deleted only once the new one is in place, and put back
            # if that fails (an error or a signal between the two renames)
            replace_dir(tmp, folder)
        else:
            if folder.is_dir():
                folder.rmdir()  # an empty folder stands in for nothing
            elif folder.exists():
                folder.unlink()
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
