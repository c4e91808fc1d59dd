"""Video I/O, the GoPro and DVD datasets, and the GoPro-recipe synthetic data generator."""

from .datasets import DVD_TEST_SEQUENCES, DVDDataset, GoProDataset, PairedSequence, PairedVideoDataset
from .synthetic import TEST_PHOTOS, TRAIN_PHOTOS, make_synthetic_dataset
from .video_io import FrameStream, FrameWriter, VideoClip, is_video_file, read_video, write_video

__all__ = [
    "DVD_TEST_SEQUENCES",
    "DVDDataset",
    "FrameStream",
    "FrameWriter",
    "GoProDataset",
    "PairedSequence",
    "PairedVideoDataset",
    "TEST_PHOTOS",
    "TRAIN_PHOTOS",
    "VideoClip",
    "is_video_file",
    "make_synthetic_dataset",
    "read_video",
    "write_video",
]
