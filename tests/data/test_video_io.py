"""Video I/O: real video files made by PyAV, folders of frames in odd modes, and every error path."""

import os
import struct
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from pipeline_video_deblur.data.video_io import (
    FrameStream,
    FrameWriter,
    VideoClip,
    check_writable_output,
    is_video_file,
    read_video,
    write_video,
)


def _frames(count: int, height: int, width: int) -> np.ndarray:
    """Smooth, distinct frames (codecs keep them well): gradients that move with the frame index."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([(x * 3 + 20 * i) % 256, (y * 4 + 10 * i) % 256, np.full_like(x, 40 + 30 * i)], axis=-1)
        for i in range(count)
    ]
    return np.stack(frames).astype(np.uint8)


@pytest.mark.parametrize(("suffix", "height", "width"), [(".mp4", 45, 70), (".mp4", 32, 48), (".mkv", 33, 20)])
def test_video_round_trip_keeps_count_size_and_fps(tmp_path, suffix, height, width):
    frames = _frames(5, height, width)
    path = tmp_path / f"clip{suffix}"
    write_video(frames, path, fps=24.0)
    clip = read_video(path)
    assert isinstance(clip, VideoClip)
    assert clip.frames.dtype == np.uint8
    assert clip.frames.shape == (5, height, width, 3)
    assert clip.fps == pytest.approx(24.0)
    assert clip.names == [f"frame_{i:05d}.png" for i in range(5)]
    # CRF 12 is close to lossless on smooth frames; in order (each frame's blue level is distinct).
    assert np.abs(clip.frames.astype(int) - frames.astype(int)).mean() < 3.0
    assert np.argsort(clip.frames[:, 0, 0, 2]).tolist() == list(range(5))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_reads_a_video_written_directly_with_pyav(tmp_path):
    """A codec this module never writes (MPEG-4 part 2), at a fractional frame rate."""
    path = tmp_path / "direct.avi"
    frames = _frames(4, 32, 48)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = read_video(path)
    assert clip.frames.shape == (4, 32, 48, 3)
    assert clip.fps == pytest.approx(29.97, abs=0.01)
    assert read_video(path, fps=12).fps == 12.0


def test_folder_of_frames_in_mixed_modes_is_rgb_in_natural_order(tmp_path):
    base = _frames(1, 16, 24)[0]
    Image.fromarray(base).convert("RGBA").save(tmp_path / "f2.png")
    Image.fromarray(base).convert("L").save(tmp_path / "f10.png")
    Image.fromarray(base).convert("P").save(tmp_path / "f1.png")
    Image.fromarray(base).save(tmp_path / "f3.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "._f1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata on exFAT: not a frame
    clip = read_video(tmp_path)
    assert clip.names == ["f1.png", "f2.png", "f3.jpg", "f10.png"]
    assert clip.frames.shape == (4, 16, 24, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == 30.0
    np.testing.assert_array_equal(clip.frames[1], base)  # RGBA: alpha dropped
    gray = clip.frames[3]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert read_video(tmp_path, fps=25).fps == 25.0


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 this is not a video" * 50)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        read_video(corrupt)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(ValueError, match="no image files"):
        read_video(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (8, 8)).save(mixed / "a.png")
    Image.new("RGB", (9, 8)).save(mixed / "b.png")
    with pytest.raises(ValueError, match="b.png"):
        read_video(mixed)


def test_write_folder_names_overwrite_and_inputs(tmp_path):
    frames = _frames(3, 8, 10)
    out = tmp_path / "out"
    write_video(frames, out, names=["a.png", "b.png", "c.png"])
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    np.testing.assert_array_equal(read_video(out).frames, frames)
    with pytest.raises(FileExistsError, match="out"):
        write_video(frames, out)
    # overwrite with a list of PIL images and default names; the old files are gone.
    write_video([Image.fromarray(f) for f in frames[:2]], out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["frame_00000.png", "frame_00001.png"]
    # float frames in [0, 1] are rounded; outside [0, 1] is an error, not a clip.
    write_video(frames / 255.0, tmp_path / "float")
    np.testing.assert_array_equal(read_video(tmp_path / "float").frames, frames)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_video(frames.astype(np.float32), tmp_path / "bad")
    with pytest.raises(ValueError, match="names"):
        write_video(frames, tmp_path / "bad", names=["a.png"])
    video = tmp_path / "clip.mp4"
    write_video(frames, video)
    with pytest.raises(FileExistsError, match="clip.mp4"):
        write_video(frames, video)
    write_video(frames[:2], video, overwrite=True)
    assert len(read_video(video)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "float", "out"]  # nothing temporary left


def _set_display_matrix(path, matrix):
    """Write a track display matrix into an mp4's `tkhd` box, as a phone does for a portrait clip."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0  # a version 0 box: the matrix sits 40 bytes after the box type
    start = at + 4 + 40
    assert struct.unpack(">9i", data[start : start + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    data[start : start + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("matrix", "turns"),
    [
        ((0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30), -1),  # a portrait phone clip: shown turned 90 deg clockwise
        ((0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30), 1),  # shown turned 90 deg counterclockwise
        ((-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30), 2),  # upside down
    ],
)
def test_a_rotated_clip_is_read_the_way_players_show_it(tmp_path, matrix, turns):
    frames = _frames(3, 16, 32)
    frames[:, :8, :8] = 255  # a white corner: top left as stored
    path = tmp_path / "phone.mp4"
    write_video(frames, path, fps=30.0)
    _set_display_matrix(path, matrix)
    with av.open(str(path)) as container:
        assert (next(container.decode(video=0)).rotation - 90 * turns) % 360 == 0  # FFmpeg sees the rotation
    clip = read_video(path)
    upright = np.rot90(frames, k=turns, axes=(1, 2))
    assert clip.frames.shape == upright.shape
    assert np.abs(clip.frames.astype(int) - upright.astype(int)).mean() < 3.0
    assert clip.frames.flags["C_CONTIGUOUS"]


def test_an_output_that_cannot_be_written_fails_before_any_work(tmp_path):
    frames = _frames(2, 8, 10)
    with pytest.raises(ValueError, match=r"'\.gif' videos.*\.mp4"):
        check_writable_output(tmp_path / "out.gif")
    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    with pytest.raises(ValueError, match="a_file.*is a file"):
        check_writable_output(blocker / "sub" / "out.mp4")
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is a folder"):
        write_video(frames, folder, overwrite=True)
    with pytest.raises(ValueError, match="is a file"):
        write_video(frames, blocker, overwrite=True)
    assert blocker.read_text() == "keep"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="not writable"):
            check_writable_output(locked / "out.mp4")


def test_overwrite_replaces_a_folder_of_frames_only(tmp_path):
    """A folder that holds anything but image frames is not replaced: that would delete the rest."""
    frames = _frames(2, 8, 10)
    out = tmp_path / "out"
    write_video(frames, out)
    (out / "notes.txt").write_text("mine")
    (out / "inner").mkdir()
    with pytest.raises(ValueError, match=r"holds more than image frames \(inner, notes.txt\)"):
        write_video(frames[:1], out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and len(read_video(out)) == 2
    # What a desktop drops into a folder it shows does not count: Finder's .DS_Store, Explorer's Thumbs.db.
    (out / "notes.txt").unlink()
    (out / "inner").rmdir()
    (out / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (out / "Thumbs.db").write_bytes(b"\xd0\xcf")
    write_video(frames[:1], out, overwrite=True)
    assert len(read_video(out)) == 1


def test_a_failed_overwrite_of_a_folder_puts_the_old_frames_back(tmp_path, monkeypatch):
    """If putting the new frames in place fails (an error, or a signal between the renames), the previous output
    is where it was, whole, and nothing is left beside it."""
    import pipeline_video_deblur.atomic as atomic

    frames = _frames(3, 8, 10)
    out = tmp_path / "out"
    write_video(frames, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(os.fspath(src)).startswith(".out.tmp-"):
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_video(frames[:1], out, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_is_video_file():
    assert is_video_file("a/b.MP4") and is_video_file("x.webm") and is_video_file("x.mov")
    assert not is_video_file("frames") and not is_video_file("a.png")


def test_frame_stream_reads_what_read_video_reads_one_frame_at_a_time(tmp_path):
    frames = _frames(7, 24, 40)
    video = tmp_path / "clip.mp4"
    write_video(frames, video, fps=12)
    stream = FrameStream(video)
    assert stream.fps == pytest.approx(12) and stream.names is None and stream.count == 7
    first = next(iter(stream))
    assert first.shape == (24, 40, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(np.stack(list(stream)), read_video(video).frames)  # iterable again, whole
    folder = tmp_path / "frames"
    write_video(frames, folder, names=[f"f{i}.png" for i in (10, 2, 1, 3, 4, 5, 6)])
    stream = FrameStream(folder, fps=5)
    assert stream.names == ["f1.png", "f2.png", "f3.png", "f4.png", "f5.png", "f6.png", "f10.png"]
    assert stream.count == 7 and stream.fps == 5
    np.testing.assert_array_equal(np.stack(list(stream)), read_video(folder).frames)


def test_frame_stream_refuses_a_bad_input_when_opened_before_any_frame_is_decoded(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (8, 8)).save(mixed / "a.png")
    Image.new("RGB", (9, 8)).save(mixed / "b.png")
    with pytest.raises(ValueError, match=r"a.png is 8x8 \(WxH\) but b.png is 9x8"):
        FrameStream(mixed)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 this is not a video" * 50)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        FrameStream(corrupt)
    with pytest.raises(ValueError, match="fps must be positive, got 0"):
        FrameStream(mixed, fps=0)


def test_frame_stream_refuses_a_frame_that_changed_size_after_it_was_opened(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 6)).save(folder / name)
    stream = FrameStream(folder)
    Image.new("RGB", (10, 6)).save(folder / "b.png")  # replaced between the check and the read
    with pytest.raises(ValueError, match=r"differ in size: a.png is 8x6 \(WxH\) but b.png is 10x6"):
        list(stream)


@pytest.mark.parametrize("name", ["clip.mp4", "frames"])
def test_frame_writer_written_in_pieces_equals_write_video(tmp_path, name):
    frames = _frames(6, 16, 24)
    whole, pieces = tmp_path / "whole" / name, tmp_path / "pieces" / name
    write_video(frames, whole, fps=10)
    with FrameWriter(pieces, fps=10) as writer:
        writer.write(frames[:1])
        writer.write(frames[1:4] / 255.0)  # float in [0, 1] too
        writer.write(frames[4:])
        assert not pieces.exists()  # nothing at the output until the block ends
    assert writer.count == 6 and writer.frame_shape == (16, 24, 3)
    np.testing.assert_array_equal(read_video(pieces).frames, read_video(whole).frames)
    assert sorted(os.listdir(pieces.parent)) == [name]  # no temporary left


@pytest.mark.parametrize("name", ["clip.mp4", "frames"])
def test_frame_writer_that_fails_midway_leaves_the_old_output_and_no_temporary(tmp_path, name):
    frames = _frames(4, 16, 24)
    out = tmp_path / name
    write_video(frames[:2], out)
    with pytest.raises(RuntimeError, match="stopped"):
        with FrameWriter(out, overwrite=True) as writer:
            writer.write(frames)
            raise RuntimeError("stopped")
    assert len(read_video(out)) == 2 and sorted(os.listdir(tmp_path)) == [name]
    with pytest.raises(ValueError, match=r"one size: got \(8, 8, 3\) after \(16, 24, 3\)"):
        with FrameWriter(out, overwrite=True) as writer:
            writer.write(frames)
            writer.write(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="No frames to write"):
        with FrameWriter(out, overwrite=True):
            pass
    assert len(read_video(out)) == 2 and sorted(os.listdir(tmp_path)) == [name]
    with pytest.raises(FileExistsError, match=name):
        FrameWriter(out)  # refused when made, before any frame is computed


@pytest.mark.parametrize("name", ["clip.mp4", "frames"])
def test_frame_writer_that_fails_removes_the_folders_it_made_and_keeps_the_rest(tmp_path, name):
    frames = _frames(2, 16, 24)
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "new" / "deeper" / name
    with pytest.raises(RuntimeError, match="stopped"):
        with FrameWriter(out) as writer:
            writer.write(frames)
            assert out.parent.is_dir()
            raise RuntimeError("stopped")
    assert sorted(os.listdir(tmp_path)) == ["kept"] and os.listdir(tmp_path / "kept") == []
    # a folder something else wrote into while the writer ran stays, with its file and its parents
    with pytest.raises(RuntimeError, match="stopped"):
        with FrameWriter(out) as writer:
            (out.parent.parent / "notes.txt").write_text("theirs")
            raise RuntimeError("stopped")
    assert sorted(os.listdir(tmp_path / "kept" / "new")) == ["notes.txt"]
    # a run that succeeds keeps the folders it made
    with FrameWriter(out) as writer:
        writer.write(frames)
    assert len(read_video(out)) == 2
