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
from collections.abc import Iterator, Sequence
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
    stream = FrameStream(path, fps=fps)
    frames = list(stream)
    names = stream.names if stream.names is not None else [f"frame_{i:05d}.png" for i in range(len(frames))]
    return VideoClip(frames=np.stack(frames).astype(np.uint8, copy=False), names=names, fps=stream.fps)


class FrameStream:
    """A video file or a folder of frames, read one frame at a time: what a clip too long to hold in memory
    is read with (`read_video` reads all of it).

    Opening checks what can be checked without decoding: the path exists, a folder holds image files of one
    size (read from their headers), a video file opens and has a video stream. Iterating yields uint8
    (H, W, 3) RGB frames in order, and raises ``ValueError`` on a corrupt video or a video without frames.

    Attributes:
        fps: frames per second (a folder's is 30.0 unless given; a value given overrides a file's own).
        names: the frame files' names for a folder, ``None`` for a video file.
        count: the number of frames when known (a folder; a video file whose container records it), else None.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        self.path = Path(path)
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not self.path.exists():
            raise ValueError(f"Input video or frame folder does not exist: {str(self.path)!r}")
        self._files: list[Path] | None = None
        if self.path.is_dir():
            self._files = list_frame_files(self.path)
            if not self._files:
                raise ValueError(
                    f"Frame folder {str(self.path)!r} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})"
                )
            self._check_folder_sizes()
            self.names: list[str] | None = [f.name for f in self._files]
            self.count: int | None = len(self._files)
            self.fps = DEFAULT_FOLDER_FPS if fps is None else float(fps)
            return
        import av

        self.names = None
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise ValueError(f"Video file {str(self.path)!r} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                self.count = int(stream.frames) or None
        except av.FFmpegError as error:
            raise ValueError(
                f"Cannot decode video file {str(self.path)!r} (corrupt or not a video): {error}"
            ) from error
        self.fps = float(fps) if fps is not None else (float(rate) if rate else DEFAULT_FOLDER_FPS)

    def _check_folder_sizes(self) -> None:
        # headers only: a folder of frames that differ in size fails before anything is decoded
        first = None
        for file in self._files:
            try:
                with Image.open(file) as image:
                    size = image.size
            except (OSError, ValueError) as error:
                raise ValueError(f"Cannot read image file {str(file)!r}: {error}") from error
            if first is None:
                first = (file, size)
            elif size != first[1]:
                raise ValueError(
                    f"Frames in {str(self.path)!r} differ in size: {first[0].name} is {first[1][0]}x{first[1][1]} "
                    f"(WxH) but {file.name} is {size[0]}x{size[1]}"
                )

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._files is not None:
            first = None
            for file in self._files:
                frame = load_rgb(file)
                if first is None:
                    first = (file.name, frame.shape)
                elif frame.shape != first[1]:  # the file changed since it was opened
                    (h0, w0), (h, w) = first[1][:2], frame.shape[:2]
                    raise ValueError(
                        f"Frames in {str(self.path)!r} differ in size: {first[0]} is {w0}x{h0} (WxH) but {file.name} "
                        f"is {w}x{h}"
                    )
                yield frame
            return
        import av

        seen = 0
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(container.streams.video[0]):
                    seen += 1
                    yield _upright(frame)
        except av.FFmpegError as error:
            raise ValueError(
                f"Cannot decode video file {str(self.path)!r} (corrupt or not a video): {error}"
            ) from error
        if not seen:
            raise ValueError(f"Video file {str(self.path)!r} contains no frames")


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
    array = _as_uint8_frames(frames)
    with FrameWriter(path, fps=fps, names=names, overwrite=overwrite) as writer:
        writer.write(array)


class FrameWriter:
    """Write frames to a video file or a folder of images a few at a time, atomically: what a clip too long to
    hold in memory is written with (`write_video` writes a whole array).

    Use it as a context manager: frames go to a temporary sibling of `path`, which replaces `path` only when
    the block ends without an error; on an error (or Ctrl-C) the temporary output is deleted, so are the
    parent folders made for it (while still empty), and whatever was at `path` is left as it was. Arguments and errors are those of `write_video`; the checks on `path` run when
    the writer is made, before any frame is computed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = DEFAULT_FOLDER_FPS,
        names: list[str] | None = None,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        check_writable_output(self.path, overwrite=overwrite)
        self.fps = fps
        self.video = self.path.suffix.lower() in WRITE_VIDEO_EXTENSIONS
        if not self.video and names is not None:
            names = [str(n) for n in names]
            if len(set(names)) != len(names):
                raise ValueError("Frame names must be unique")
            for name in names:
                if os.sep in name or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    raise ValueError(
                        f"Frame name must be a plain file name ending in one of {IMAGE_EXTENSIONS}, got {name!r}"
                    )
        self.names = names
        self.count = 0
        self.frame_shape: tuple[int, ...] | None = None  # (H, W, 3) of the frames written
        self._tmp: Path | None = None
        self._container = None
        self._stream = None
        self._made_folders: list[Path] = []  # parents this writer created, deepest first: removed again on failure

    def __enter__(self) -> FrameWriter:
        missing, folder = [], self.path.parent.absolute()
        while not folder.exists() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made_folders = missing
        token = uuid.uuid4().hex[:8]
        if self.video:
            self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{token}{self.path.suffix}")
        else:
            self._tmp = self.path.with_name(f".{self.path.name}.tmp-{token}")
            self._tmp.mkdir()
        return self

    def write(self, frames: np.ndarray | Sequence) -> None:
        """Append frames: uint8 (F, H, W, 3), float in [0, 1], or a list of PIL images; all of one size."""
        if self._tmp is None:
            raise RuntimeError("FrameWriter.write called outside its `with` block")
        array = _as_uint8_frames(frames)
        if self.frame_shape is None:
            self.frame_shape = array.shape[1:]
        elif array.shape[1:] != self.frame_shape:
            raise ValueError(f"Frames must all have one size: got {array.shape[1:]} after {self.frame_shape}")
        if self.video:
            self._encode(array)
        else:
            if self.names is not None and self.count + len(array) > len(self.names):
                raise ValueError(f"Got more frames than the {len(self.names)} names given")
            for frame in array:
                name = self.names[self.count] if self.names is not None else f"frame_{self.count:05d}.png"
                Image.fromarray(frame).save(self._tmp / name)
                self.count += 1
            return
        self.count += len(array)

    def _encode(self, array: np.ndarray) -> None:
        import av

        if self._container is None:
            height, width = array.shape[1:3]
            webm = self.path.suffix.lower() == ".webm"
            self._container = av.open(str(self._tmp), mode="w")
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libvpx-vp9" if webm else "libx264", rate=rate)
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
            self._stream.options = {"crf": _VP9_CRF, "b:v": "0"} if webm else {"crf": _X264_CRF, "preset": "medium"}
        for frame in array:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self._container.mux(packet)

    def __exit__(self, kind, error, traceback) -> None:
        committed = False
        try:
            if kind is None:
                self._commit()
                committed = True
        finally:
            try:
                if self._container is not None:
                    container, self._container = self._container, None
                    container.close()
            finally:
                self._remove_tmp()
                if not committed:
                    self._remove_made_folders()

    def _remove_made_folders(self) -> None:
        # a failed run leaves the disk as it found it: the parent folders made for the output go too, if still empty
        for folder in self._made_folders:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (something else wrote there) or not ours to remove: keep it and its parents
        self._made_folders = []

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            if self._tmp.exists():
                if self._tmp.is_dir():
                    shutil.rmtree(self._tmp, ignore_errors=True)
                else:
                    self._tmp.unlink()
            self._tmp = None

    def _commit(self) -> None:
        if self.count == 0:
            raise ValueError("No frames to write: got 0 frames")
        if self.names is not None and self.count != len(self.names):
            raise ValueError(f"Got {len(self.names)} names for {self.count} frames")
        if self.video:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
            return
        if self.path.exists() and _exists(self.path):
            # overwrite: the old output is moved aside, deleted only once the new one is in place, and put back
            # if that fails (an error or a signal between the two renames)
            replace_dir(self._tmp, self.path)
        else:
            if self.path.is_dir():
                self.path.rmdir()  # an empty folder stands in for nothing
            elif self.path.exists():
                self.path.unlink()
            os.replace(self._tmp, self.path)
