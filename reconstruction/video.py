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


def write_video(path: str | Path, frames: np.ndarray, fps: float = DEFAULT_FPS, crf: int = 20) -> Path:
    """Encode frames uint8 (T,H,W,3) RGB (or float in [0,1]) as H.264 yuv420p MP4, atomically.

    Odd sizes are padded to even. ``+faststart`` puts the index first so browsers stream it.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{path}: frames must be (T,H,W,3) with T > 0, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        if np.issubdtype(frames.dtype, np.floating):
            frames = np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            frames = np.clip(frames, 0, 255).astype(np.uint8)
    frames = _even_pad(frames)
    _, height, width, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for image in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    log.debug("wrote %s: %d frames %dx%d @ %.3f fps", path, len(frames), width, height, fps)
    return path
