"""GoPro and DVD video deblurring datasets, in their public layouts.

- GoPro (Nah et al., 2017): ``GOPRO_Large/{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png``; the field
  evaluates on ``blur``. ``video-deblur synth`` writes the same layout.
- DVD (Su et al., 2017): ``quantitative_datasets/<sequence>/{input,GT}/*.jpg``, 71 videos; the standard split
  (DBN, STFAN, EDVR, CDVD-TSP) tests on the 10 videos in ``DVD_TEST_SEQUENCES`` and trains on the other 61.

Training items (``whole_sequences=False``) are windows of ``num_frames`` consecutive frames with one random
crop shared by blurred and sharp frames, random horizontal / vertical flips and temporal reversal (and, with
``transpose=True`` and square crops, a random swap of height and width: the eight flips and rotations). Test items
(``whole_sequences=True``, the default for ``split="test"``) are whole sequences in order with their frame
names. Frames are float tensors (F, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .video_io import list_frame_files, load_rgb

DVD_TEST_SEQUENCES = (
    "720p_240fps_2",
    "IMG_0003",
    "IMG_0021",
    "IMG_0030",
    "IMG_0031",
    "IMG_0032",
    "IMG_0033",
    "IMG_0037",
    "IMG_0039",
    "IMG_0049",
)
"""The 10 DVD test videos of the standard split (used by DBN, STFAN, EDVR, CDVD-TSP)."""


@dataclass
class PairedSequence:
    """One video: blurred and sharp frame files, paired by name, in natural order."""

    name: str
    blur: list[Path]
    sharp: list[Path]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.sharp]

    def __len__(self) -> int:
        return len(self.sharp)


def _child_dir(folder: Path, name: str) -> Path | None:
    """``folder / name`` if it is a folder, matching the name case-insensitively as a fallback."""
    if (folder / name).is_dir():
        return folder / name
    for child in folder.iterdir():
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def _pair_sequence(folder: Path, blur_dir: str, sharp_dir: str) -> PairedSequence:
    blur_path, sharp_path = _child_dir(folder, blur_dir), _child_dir(folder, sharp_dir)
    for label, path in ((blur_dir, blur_path), (sharp_dir, sharp_path)):
        if path is None:
            raise ValueError(f"Sequence {folder.name!r} has no {label!r} folder: {str(folder)!r}")
    blur, sharp = list_frame_files(blur_path), list_frame_files(sharp_path)
    if len(blur) != len(sharp):
        raise ValueError(
            f"Sequence {folder.name!r} has {len(blur)} {blur_dir!r} frames but {len(sharp)} {sharp_dir!r} frames"
        )
    if not sharp:
        raise ValueError(f"Sequence {folder.name!r} has no frames in {str(sharp_path)!r}")
    for b, s in zip(blur, sharp):
        if b.name != s.name:
            raise ValueError(
                f"Sequence {folder.name!r}: blurred and sharp frames do not pair by name ({b.name!r} vs {s.name!r})"
            )
    with Image.open(blur[0]) as b, Image.open(sharp[0]) as s:
        if b.size != s.size:
            raise ValueError(
                f"Sequence {folder.name!r}: blurred frames are {b.size[0]}x{b.size[1]} (WxH) but sharp frames are "
                f"{s.size[0]}x{s.size[1]}"
            )
    return PairedSequence(folder.name, blur, sharp)


def _crop_hw(crop_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if crop_size is None:
        return None
    if isinstance(crop_size, int):
        crop_size = (crop_size, crop_size)
    crop = tuple(int(c) for c in crop_size)
    if len(crop) != 2 or min(crop) < 1:
        raise ValueError(f"crop_size must be a positive int or (H, W), got {crop_size}")
    return crop


class PairedVideoDataset(Dataset):
    """Blurred / sharp video pairs; the base of ``GoProDataset`` and ``DVDDataset``.

    Args:
        sequences: the videos.
        num_frames: frames per training window.
        crop_size: training crop, an int (square) or (H, W); ``None`` keeps whole frames. Not applied to
            whole sequences.
        augment: random flips (horizontal, vertical) and temporal reversal of training windows.
        transpose: with ``augment``, also swap height and width of half the windows, so that with the flips every
            one of the eight flips and rotations of the square is drawn (BasicSR's ``use_rot``). Needs a square
            ``crop_size``. Off by default: the default model's versions <= 0.25 were trained with flips only.
        whole_sequences: yield whole sequences (test mode) instead of training windows.
        max_frames: keep only the first ``max_frames`` frames of each sequence.
    """

    def __init__(
        self,
        sequences: list[PairedSequence],
        num_frames: int = 16,
        crop_size: int | tuple[int, int] | None = 256,
        augment: bool = True,
        whole_sequences: bool = False,
        max_frames: int | None = None,
        transpose: bool = False,
    ):
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        if max_frames is not None:
            sequences = [PairedSequence(s.name, s.blur[:max_frames], s.sharp[:max_frames]) for s in sequences]
        self.sequences = sequences
        self.num_frames = num_frames
        self.crop_size = _crop_hw(crop_size)
        if transpose and not whole_sequences and (self.crop_size is None or self.crop_size[0] != self.crop_size[1]):
            raise ValueError(
                f"transpose=True swaps height and width, so it needs a square crop_size, got {crop_size!r}"
            )
        self.augment = augment
        self.transpose = transpose
        self.whole_sequences = whole_sequences
        self.windows: list[tuple[int, int]] = []
        if not whole_sequences:
            for index, sequence in enumerate(sequences):
                if len(sequence) < num_frames:
                    raise ValueError(
                        f"Sequence {sequence.name!r} has {len(sequence)} frames, fewer than num_frames={num_frames}"
                    )
                self.windows += [(index, start) for start in range(len(sequence) - num_frames + 1)]

    @property
    def sequence_names(self) -> list[str]:
        return [s.name for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences) if self.whole_sequences else len(self.windows)

    def load_frames(self, index: int, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``start:stop`` of sequence ``index`` as uint8 arrays ``(blur, sharp)``, each (F, H, W, 3)."""
        sequence = self.sequences[index]
        blur, sharp = [], []
        for b_path, s_path in zip(sequence.blur[start:stop], sequence.sharp[start:stop]):
            b, s = load_rgb(b_path), load_rgb(s_path)
            if b.shape != s.shape or (sharp and s.shape != sharp[0].shape):
                expected = sharp[0].shape if sharp else s.shape
                raise ValueError(
                    f"Sequence {sequence.name!r}, frame {s_path.name!r}: sizes differ (blurred {b.shape[:2]}, "
                    f"sharp {s.shape[:2]}, first frame {expected[:2]}; shapes are (H, W))"
                )
            blur.append(b)
            sharp.append(s)
        return np.stack(blur), np.stack(sharp)

    def __getitem__(self, index: int) -> dict:
        if self.whole_sequences:
            blur, sharp = self.load_frames(index)
            sequence = self.sequences[index]
            return {
                "blur": _to_tensor(blur),
                "sharp": _to_tensor(sharp),
                "sequence": sequence.name,
                "names": sequence.names,
            }
        seq_index, start = self.windows[index]
        sequence = self.sequences[seq_index]
        blur, sharp = self.load_frames(seq_index, start, start + self.num_frames)
        blur, sharp = _to_tensor(blur), _to_tensor(sharp)  # (F, 3, H, W)
        if self.crop_size is not None:
            crop_h, crop_w = self.crop_size
            height, width = blur.shape[-2:]
            if crop_h > height or crop_w > width:
                raise ValueError(
                    f"crop_size {crop_h}x{crop_w} (HxW) is larger than the frames of sequence {sequence.name!r} "
                    f"({height}x{width})"
                )
            top = int(torch.randint(0, height - crop_h + 1, ()))
            left = int(torch.randint(0, width - crop_w + 1, ()))
            blur = blur[..., top : top + crop_h, left : left + crop_w]
            sharp = sharp[..., top : top + crop_h, left : left + crop_w]
        if self.augment:
            for dims in ((-1,), (-2,), (0,)):  # horizontal flip, vertical flip, temporal reversal
                if torch.rand(()) < 0.5:
                    blur, sharp = blur.flip(dims), sharp.flip(dims)
            # Drawn after the flips, so that with transpose=False the random stream is what it always was.
            if self.transpose and torch.rand(()) < 0.5:
                blur, sharp = blur.transpose(-1, -2), sharp.transpose(-1, -2)
        return {"blur": blur.contiguous(), "sharp": sharp.contiguous(), "sequence": sequence.name}


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (F, 3, H, W) in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)


def _existing_root(root: str | os.PathLike, label: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{label} root does not exist or is not a folder: {str(root)!r}")
    return root


class GoProDataset(PairedVideoDataset):
    """GoPro: ``GOPRO_Large/{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png``.

    Args:
        root: the folder holding ``GOPRO_Large``, or ``GOPRO_Large`` itself (also a ``video-deblur synth`` output).
        split: ``"train"`` or ``"test"``.
        num_frames: frames per training window (default 16).
        crop_size: training crop size (default 256; ``None`` for whole frames).
        blur_dir: ``"blur"`` (what the field evaluates on) or ``"blur_gamma"``.
        augment: random flips and temporal reversal of training windows.
        transpose: with ``augment``, also swap height and width of half the windows (square crops only).
        whole_sequences: whole sequences with frame names; default ``True`` for the test split.
        max_frames: keep the first ``max_frames`` frames of each sequence.
        sequences: restrict to these sequence names (default: all, sorted).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_frames: int = 16,
        crop_size: int | tuple[int, int] | None = 256,
        blur_dir: str = "blur",
        augment: bool = True,
        whole_sequences: bool | None = None,
        max_frames: int | None = None,
        sequences: list[str] | None = None,
        transpose: bool = False,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"GoPro split must be 'train' or 'test', got {split!r}")
        if blur_dir not in ("blur", "blur_gamma"):
            raise ValueError(f"blur_dir must be 'blur' or 'blur_gamma', got {blur_dir!r}")
        root = _existing_root(root, "GoPro")
        candidates = [root / "GOPRO_Large" / split, root / split]
        split_dir = next((c for c in candidates if c.is_dir()), None)
        if split_dir is None:
            raise ValueError(
                f"No GoPro {split!r} split under {str(root)!r} (looked for {', '.join(map(str, candidates))})"
            )
        folders = sorted(
            (p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
        )
        if sequences is not None:
            missing = sorted(set(sequences) - {p.name for p in folders})
            if missing:
                raise ValueError(f"GoPro {split!r} split at {str(split_dir)!r} lacks sequences {missing}")
            folders = [p for p in folders if p.name in set(sequences)]
        if not folders:
            raise ValueError(f"GoPro {split!r} split at {str(split_dir)!r} holds no sequences")
        self.root = split_dir.parent
        self.split = split
        super().__init__(
            [_pair_sequence(f, blur_dir, "sharp") for f in folders],
            num_frames=num_frames,
            crop_size=crop_size,
            augment=augment,
            whole_sequences=split == "test" if whole_sequences is None else whole_sequences,
            max_frames=max_frames,
            transpose=transpose,
        )


class DVDDataset(PairedVideoDataset):
    """DVD: ``quantitative_datasets/<sequence>/{input,GT}/*.jpg`` with the standard 61 / 10 split.

    Args:
        root: the folder holding ``quantitative_datasets`` (directly or inside ``DeepVideoDeblurring_Dataset``),
            or ``quantitative_datasets`` itself.
        split: ``"train"`` (every video not in ``DVD_TEST_SEQUENCES``) or ``"test"`` (those 10; all must be there).
        sequences: use these sequence names instead of the standard split.
        Other arguments as ``GoProDataset``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_frames: int = 16,
        crop_size: int | tuple[int, int] | None = 256,
        augment: bool = True,
        whole_sequences: bool | None = None,
        max_frames: int | None = None,
        sequences: list[str] | None = None,
        transpose: bool = False,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"DVD split must be 'train' or 'test', got {split!r}")
        root = _existing_root(root, "DVD")
        candidates = [
            root / "quantitative_datasets",
            root / "DeepVideoDeblurring_Dataset" / "quantitative_datasets",
            root,
        ]
        base = next((c for c in candidates if c.is_dir() and any(_child_dir(p, "input") for p in _subdirs(c))), None)
        if base is None:
            raise ValueError(
                f"No DVD videos under {str(root)!r} (looked for <sequence>/input folders in "
                f"{', '.join(map(str, candidates))})"
            )
        present = {p.name: p for p in _subdirs(base) if _child_dir(p, "input")}
        if sequences is not None:
            wanted = list(sequences)
        elif split == "test":
            wanted = list(DVD_TEST_SEQUENCES)
        else:
            wanted = sorted(n for n in present if n not in DVD_TEST_SEQUENCES)
        missing = [n for n in wanted if n not in present]
        if missing:
            raise ValueError(f"DVD {split!r} videos missing under {str(base)!r}: {missing}")
        if not wanted:
            raise ValueError(f"DVD {split!r} split under {str(base)!r} holds no videos")
        self.root = base
        self.split = split
        super().__init__(
            [_pair_sequence(present[n], "input", "GT") for n in wanted],
            num_frames=num_frames,
            crop_size=crop_size,
            augment=augment,
            whole_sequences=split == "test" if whole_sequences is None else whole_sequences,
            max_frames=max_frames,
            transpose=transpose,
        )


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
