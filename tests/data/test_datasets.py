"""GoPro and DVD datasets on small folders built in the test: crops, pairing, order, splits and errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pipeline_video_deblur.data.datasets import DVD_TEST_SEQUENCES, DVDDataset, GoProDataset
from pipeline_video_deblur.data.synthetic import make_synthetic_dataset

H, W = 12, 20


def _frame(index: int, offset: int) -> np.ndarray:
    """Frame `index`: R = 10 * index + offset, G = 10 * x, B = 10 * y (so crops, order and pairing are readable)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([np.full_like(x, 10 * index + offset), 10 * x, 10 * y], axis=-1).astype(np.uint8)


def _gopro(root, split="train", sequences=("seqA", "seqB"), frames=6, blur_gamma_offset=2):
    for s in sequences:
        for kind, offset in (("sharp", 0), ("blur", 1), ("blur_gamma", blur_gamma_offset)):
            folder = root / "GOPRO_Large" / split / s / kind
            folder.mkdir(parents=True)
            for i in range(frames):
                Image.fromarray(_frame(i, offset)).save(folder / f"{i:06d}.png")
    return root


@pytest.fixture
def gopro_root(tmp_path):
    return _gopro(tmp_path)


def test_training_items_crop_pair_and_order(gopro_root):
    torch.manual_seed(0)
    dataset = GoProDataset(gopro_root, "train", num_frames=4, crop_size=(8, 10), augment=True)
    assert len(dataset) == 2 * (6 - 4 + 1)  # every window of every sequence
    seen_flips = set()
    for index in range(len(dataset)):
        item = dataset[index]
        blur, sharp = item["blur"], item["sharp"]
        assert blur.shape == sharp.shape == (4, 3, 8, 10) and blur.dtype == torch.float32
        assert 0.0 <= float(sharp.min()) and float(sharp.max()) <= 1.0
        assert item["sequence"] in ("seqA", "seqB")
        levels = (sharp[:, 0, 0, 0] * 255).round()
        steps = levels.diff()
        assert (steps == 10).all() or (steps == -10).all()  # consecutive frames, maybe reversed
        torch.testing.assert_close(blur[:, 0] - sharp[:, 0], torch.full_like(sharp[:, 0], 1 / 255))  # paired frames
        torch.testing.assert_close(blur[:, 1:], sharp[:, 1:])  # the same crop in blur and sharp
        x = (sharp[0, 1, 0] * 255).round() / 10  # column index along the crop
        y = (sharp[0, 2, :, 0] * 255).round() / 10
        assert x.diff().abs().eq(1).all() and y.diff().abs().eq(1).all()  # a contiguous crop
        seen_flips.add((bool(x.diff()[0] < 0), bool(y.diff()[0] < 0), bool(steps[0] < 0)))
    assert len(seen_flips) > 2  # flips and reversal happen


def test_transpose_draws_all_eight_flips_and_rotations(gopro_root):
    torch.manual_seed(0)
    dataset = GoProDataset(gopro_root, "train", num_frames=4, crop_size=8, augment=True, transpose=True)
    seen = set()
    for _ in range(6):
        for index in range(len(dataset)):
            item = dataset[index]
            blur, sharp = item["blur"], item["sharp"]
            assert blur.shape == sharp.shape == (4, 3, 8, 8)
            torch.testing.assert_close(blur[:, 1:], sharp[:, 1:])  # blur and sharp transposed together
            column, row = (sharp[0, 1] * 255).round() / 10, (sharp[0, 2] * 255).round() / 10  # G = 10 x, B = 10 y
            transposed = bool(column[:, 0].diff().abs().eq(1).all())  # x now runs down the rows
            if transposed:
                column, row = column.T, row.T
            assert column[0].diff().abs().eq(1).all() and row[:, 0].diff().abs().eq(1).all()  # a contiguous crop
            assert column.diff(dim=0).eq(0).all() and row.diff(dim=1).eq(0).all()
            seen.add((transposed, bool(column[0, 1] < column[0, 0]), bool(row[1, 0] < row[0, 0])))
    assert len(seen) == 8  # the dihedral group of the square: every flip, with and without the transpose
    # Off (the default), the same seed gives the same windows as before the option existed: no transposes.
    torch.manual_seed(0)
    plain = GoProDataset(gopro_root, "train", num_frames=4, crop_size=8, augment=True)
    for index in range(len(plain)):
        column = (plain[index]["sharp"][0, 1] * 255).round() / 10
        assert column.diff(dim=0).eq(0).all()
    with pytest.raises(ValueError, match=r"square crop_size, got \(8, 10\)"):
        GoProDataset(gopro_root, "train", num_frames=4, crop_size=(8, 10), transpose=True)


def test_no_augment_no_crop_and_blur_gamma(gopro_root):
    dataset = GoProDataset(gopro_root, "train", num_frames=3, crop_size=None, augment=False, blur_dir="blur_gamma")
    item = dataset[1]
    assert item["blur"].shape == (3, 3, H, W)
    assert (item["sharp"][:, 0, 0, 0] * 255).round().tolist() == [10, 20, 30]  # window starting at frame 1
    assert (item["blur"][:, 0, 0, 0] * 255).round().tolist() == [12, 22, 32]  # blur_gamma frames


def test_test_split_whole_sequences_with_names(tmp_path):
    _gopro(tmp_path, "test", sequences=("b_seq", "a_seq"), frames=5)
    for root in (tmp_path, tmp_path / "GOPRO_Large"):  # the parent or GOPRO_Large itself
        dataset = GoProDataset(root, "test")
        assert dataset.sequence_names == ["a_seq", "b_seq"] and len(dataset) == 2
        item = dataset[0]
        assert item["sequence"] == "a_seq" and item["names"] == [f"{i:06d}.png" for i in range(5)]
        assert item["blur"].shape == (5, 3, H, W)
        assert (item["sharp"][:, 0, 0, 0] * 255).round().tolist() == [0, 10, 20, 30, 40]
    limited = GoProDataset(tmp_path, "test", max_frames=2)
    blur, sharp = limited.load_frames(1)
    assert blur.shape == sharp.shape == (2, H, W, 3) and blur.dtype == np.uint8


def test_gopro_errors(tmp_path, gopro_root):
    with pytest.raises(ValueError, match="does not exist"):
        GoProDataset(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="'test'"):
        GoProDataset(gopro_root, "test")
    with pytest.raises(ValueError, match="split"):
        GoProDataset(gopro_root, "val")
    with pytest.raises(ValueError, match="seqA.*fewer than num_frames=7"):
        GoProDataset(gopro_root, "train", num_frames=7)
    with pytest.raises(ValueError, match="crop_size 16x10.*seqA"):
        GoProDataset(gopro_root, "train", num_frames=2, crop_size=(16, 10), augment=False)[0]
    (gopro_root / "GOPRO_Large" / "train" / "seqB" / "blur" / "000005.png").unlink()
    with pytest.raises(ValueError, match="seqB.*5 'blur' frames but 6 'sharp'"):
        GoProDataset(gopro_root, "train")
    mismatch = _gopro(tmp_path / "sizes", sequences=("seqC",), frames=2)
    Image.new("RGB", (W + 2, H)).save(mismatch / "GOPRO_Large" / "train" / "seqC" / "blur" / "000000.png")
    with pytest.raises(ValueError, match="seqC"):
        GoProDataset(mismatch, "train", num_frames=2)
    empty = tmp_path / "empty" / "GOPRO_Large" / "test"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match="no sequences"):
        GoProDataset(tmp_path / "empty", "test")


def test_reads_synth_output_and_batches(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread beats two fighting over a shared CPU
    try:
        make_synthetic_dataset(tmp_path, split="train", sequences=2, frames=3, size=(24, 32), seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    dataset = GoProDataset(tmp_path, "train", num_frames=2, crop_size=16)
    batch = next(iter(DataLoader(dataset, batch_size=2, shuffle=False)))
    assert batch["blur"].shape == batch["sharp"].shape == (2, 2, 3, 16, 16)
    assert batch["sequence"] == ["synth_train_000", "synth_train_000"]


def _dvd(root, names, frames=2):
    for name in names:
        for kind, value in (("input", 100), ("GT", 50)):
            folder = root / "DeepVideoDeblurring_Dataset" / "quantitative_datasets" / name / kind
            folder.mkdir(parents=True)
            for i in range(frames):
                Image.new("RGB", (16, 12), (value + i, value, value)).save(folder / f"{i:05d}.jpg", quality=100)
    return root


def test_dvd_standard_split(tmp_path):
    assert len(DVD_TEST_SEQUENCES) == len(set(DVD_TEST_SEQUENCES)) == 10
    root = _dvd(tmp_path, [*DVD_TEST_SEQUENCES, "IMG_0001", "IMG_0002"])
    test = DVDDataset(root, "test")
    assert test.sequence_names == list(DVD_TEST_SEQUENCES) and len(test) == 10
    item = test[3]
    assert item["sequence"] == DVD_TEST_SEQUENCES[3] and item["names"] == ["00000.jpg", "00001.jpg"]
    assert item["blur"].shape == (2, 3, 12, 16)
    assert (
        abs(float(item["blur"][0, 1].mean()) * 255 - 100) < 2 and abs(float(item["sharp"][0, 1].mean()) * 255 - 50) < 2
    )
    train = DVDDataset(
        root / "DeepVideoDeblurring_Dataset" / "quantitative_datasets", "train", num_frames=2, crop_size=8
    )
    assert train.sequence_names == ["IMG_0001", "IMG_0002"] and train[0]["blur"].shape == (2, 3, 8, 8)
    partial = _dvd(tmp_path / "partial", DVD_TEST_SEQUENCES[:9])
    with pytest.raises(ValueError, match="IMG_0049"):
        DVDDataset(partial, "test")
    with pytest.raises(ValueError, match="No DVD videos"):
        DVDDataset(tmp_path / "partial" / "DeepVideoDeblurring_Dataset" / "quantitative_datasets" / "IMG_0003", "test")
