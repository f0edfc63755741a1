"""Video I/O with PyAV: decode to RGB uint8 arrays, encode H.264 yuv420p MP4 that browsers play.

Writes go through ``reconstruction.fileio.atomic_path`` so a killed writer never leaves a half file
under the final name.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from reconstruction.fileio import atomic_path

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode every frame of ``path`` -> (frames uint8 (T,H,W,3) RGB, fps).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it does
    not decode or holds no frames.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else DEFAULT_FPS
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
    except ValueError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: not a decodable video ({exc})") from exc
    if not frames:
        raise ValueError(f"{path}: video has zero frames")
    return np.stack(frames), fps


def _even_pad(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: pad the last row/column by edge replication."""
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    if frames.dtype == np.uint8:
        return frames
    if np.issubdtype(frames.dtype, np.floating):
        return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(frames, 0, 255).astype(np.uint8)


class VideoWriter:
    """Streaming H.264 yuv420p MP4 writer; frames arrive in chunks, the file appears atomically on close.

    Use as a context manager: ``with VideoWriter(path, fps) as writer: writer.write(chunk)``. The size
    is fixed by the first chunk; odd sizes are padded to even. A failure inside the block leaves no file.
    """

    def __init__(self, path: str | Path, fps: float = DEFAULT_FPS, crf: int = 20, preset: str = "veryfast"):
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.preset = preset
        self.num_frames = 0
        self._atomic = None
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append frames (N,H,W,3) uint8 RGB (or float in [0,1])."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self.path}: frames must be (T,H,W,3), got shape {frames.shape}")
        frames = _even_pad(_to_uint8(frames))
        size = frames.shape[1:3]
        if self._stream is None:
            self._size = size
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.height, stream.width = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
            self._stream = stream
        elif size != self._size:
            raise ValueError(f"{self.path}: frame size changed from {self._size} to {size}")
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.num_frames += len(frames)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._stream is None:
                    raise ValueError(f"{self.path}: no frames written")
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            if exc_type is None and self._stream is not None:
                self._atomic.__exit__(None, None, None)
            else:
                error = exc if exc is not None else ValueError(f"{self.path}: no frames written")
                try:
                    self._atomic.__exit__(type(error), error, None)
                except type(error):
                    pass
        log.debug("wrote %s: %d frames %s @ %.3f fps", self.path, self.num_frames, self._size, self.fps)


def write_video(path: str | Path, frames: np.ndarray, fps: float = DEFAULT_FPS, crf: int = 20) -> Path:
    """Encode frames uint8 (T,H,W,3) RGB (or float in [0,1]) as H.264 yuv420p MP4, atomically.

    Odd sizes are padded to even. ``+faststart`` puts the index first so browsers stream it.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{path}: frames must be (T,H,W,3) with T > 0, got shape {frames.shape}")
    with VideoWriter(path, fps, crf=crf) as writer:
        writer.write(frames)
    return path
