"""Debug videos of stages 2 and 3 (``--verbose``): masks over the input, colour-mapped depth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

OBJECT_COLOUR = np.array([255, 64, 32], dtype=np.float32)
HUMAN_COLOUR = np.array([32, 160, 255], dtype=np.float32)


def overlay_masks(
    frames: np.ndarray, object_masks: np.ndarray, human_masks: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Tint object pixels red and human pixels blue: uint8 (T,H,W,3)."""
    out = frames.astype(np.float32)
    out = np.where(object_masks[..., None], (1 - alpha) * out + alpha * OBJECT_COLOUR, out)
    out = np.where(human_masks[..., None], (1 - alpha) * out + alpha * HUMAN_COLOUR, out)
    return np.clip(out, 0, 255).astype(np.uint8)


def colourise_depth(depth: np.ndarray) -> np.ndarray:
    """(T,H,W) metres -> uint8 (T,H,W,3) turbo colours, near = red; unknown (0) = black."""
    known = depth > 0
    if known.any():
        lo, hi = np.percentile(depth[known], [1, 99])
    else:
        lo, hi = 0.0, 1.0
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    grey = (255 * (1 - scaled)).astype(np.uint8)
    height, width = depth.shape[1:]
    coloured = cv2.applyColorMap(grey.reshape(-1, width), cv2.COLORMAP_TURBO).reshape(*depth.shape, 3)[..., ::-1]
    return np.where(known[..., None], coloured, 0).astype(np.uint8)


def write_masks_video(
    path: Path, frames: np.ndarray, object_masks: np.ndarray, human_masks: np.ndarray, fps: float
) -> Path:
    from reconstruction.video import write_video

    return write_video(path, overlay_masks(frames, object_masks, human_masks), fps)


def write_depth_video(path: Path, depth: np.ndarray, fps: float) -> Path:
    from reconstruction.video import write_video

    return write_video(path, colourise_depth(depth), fps)


def overlay_outline(frames: np.ndarray, silhouettes: np.ndarray, colour=(255, 40, 40)) -> np.ndarray:
    """Draw the outline of each (T,H,W) bool silhouette onto the frames: uint8 (T,H,W,3)."""
    kernel = np.ones((3, 3), np.uint8)
    out = frames.copy()
    for t, silhouette in enumerate(silhouettes):
        mask = silhouette.astype(np.uint8)
        outline = (mask > 0) & (cv2.erode(mask, kernel) == 0)
        outline = cv2.dilate(outline.astype(np.uint8), kernel) > 0
        out[t][outline] = colour
    return out


def write_pose_video(path: Path, frames: np.ndarray, silhouettes: np.ndarray, fps: float) -> Path:
    from reconstruction.video import write_video

    return write_video(path, overlay_outline(frames, silhouettes), fps)
