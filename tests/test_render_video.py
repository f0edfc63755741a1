"""Video I/O: round trip, odd sizes, and clear errors for bad files."""

from __future__ import annotations

import av
import numpy as np
import pytest

from reconstruction.video import read_video, write_video


def _moving_square(num_frames: int, height: int, width: int) -> np.ndarray:
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 2] = 60
    for t in range(num_frames):
        x = 4 + 3 * t
        frames[t, 20:50, x : x + 30] = (230, 40, 40)
    return frames


def test_round_trip_keeps_count_size_and_content(tmp_path):
    frames = _moving_square(12, 120, 160)
    path = write_video(tmp_path / "clip.mp4", frames, fps=30)
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape
    assert decoded.dtype == np.uint8
    assert fps == pytest.approx(30.0)
    # Lossy codec: colours survive within a small tolerance away from edges.
    centres = [decoded[t, 35, 4 + 3 * t + 15].astype(int) for t in range(len(frames))]
    assert np.abs(np.array(centres) - np.array([230, 40, 40])).max() < 20
    assert np.abs(decoded.astype(float) - frames.astype(float)).mean() < 4.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert not list(tmp_path.glob(".*tmp-*")), "temporary file left behind"


def test_odd_size_is_padded_to_even(tmp_path):
    frames = _moving_square(3, 61, 81)
    decoded, _ = read_video(write_video(tmp_path / "odd.mp4", frames, fps=25))
    assert decoded.shape == (3, 62, 82, 3)


def test_float_frames_accepted(tmp_path):
    frames = np.full((2, 32, 32, 3), 0.5, np.float32)
    decoded, _ = read_video(write_video(tmp_path / "f.mp4", frames))
    assert abs(int(decoded[0, 16, 16, 0]) - 128) < 6


def test_text_file_named_mp4_gives_clear_error(tmp_path):
    bogus = tmp_path / "not_a_video.mp4"
    bogus.write_text("hello, I am text\n" * 20)
    with pytest.raises(ValueError, match="not_a_video.mp4"):
        read_video(bogus)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        read_video(tmp_path / "nothing.mp4")


def test_empty_frames_rejected(tmp_path):
    with pytest.raises(ValueError, match="T > 0"):
        write_video(tmp_path / "e.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    assert not (tmp_path / "e.mp4").exists()


def test_streaming_writer_in_chunks(tmp_path):
    from reconstruction.video import VideoWriter

    frames = _moving_square(10, 120, 160)
    with VideoWriter(tmp_path / "s.mp4", fps=24) as writer:
        writer.write(frames[:4])
        writer.write(frames[4:])
    decoded, fps = read_video(tmp_path / "s.mp4")
    assert decoded.shape == frames.shape and fps == pytest.approx(24.0)


def test_streaming_writer_failure_leaves_nothing(tmp_path):
    from reconstruction.video import VideoWriter

    target = tmp_path / "broken.mp4"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(target) as writer:
            writer.write(_moving_square(2, 32, 32))
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old content", "existing file must survive a failed write"
    assert not list(tmp_path.glob(".*tmp-*"))
