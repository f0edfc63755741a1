"""Loading and validating the per-video inputs of stages 2 and 3, at the edge.

Every loader raises ``StageInputError`` naming the offending file, so a bad input never reaches the
numeric code and nothing already cached is touched.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from reconstruction.layout import Layout, VideoId
from reconstruction.render_config import RenderConfig, load_cam_k, load_pickle, load_render_config
from reconstruction.stages.base import StageInputError

logger = logging.getLogger(__name__)

DEPTH_PNG_SCALE = 1000.0  # first-frame GT depth PNGs hold millimetres


def config_section(config: Any, name: str) -> dict[str, Any]:
    """The ``name`` section of a ReconConfig, a plain dict config, or {} when there is none."""
    if config is None:
        return {}
    if hasattr(config, "section"):
        try:
            section = config.section(name)
        except KeyError:
            return {}
        return dict(section or {})
    if isinstance(config, dict):
        return dict(config.get(name) or {})
    raw = getattr(config, "raw", None)
    if isinstance(raw, dict):
        return dict(raw.get(name) or {})
    return {}


def load_frames(path: Path) -> tuple[np.ndarray, float]:
    """Decode the input video -> (uint8 (T,H,W,3) RGB, fps); errors name the file."""
    from reconstruction.video import read_video

    try:
        frames, fps = read_video(path)
    except (FileNotFoundError, ValueError) as exc:
        raise StageInputError(str(exc)) from exc
    if frames.shape[0] == 0:
        raise StageInputError(f"{path}: video has zero frames")
    return frames, fps


def load_mask_png(path: Path, image_size: tuple[int, int], what: str) -> np.ndarray:
    """A binary mask PNG (any non-zero pixel is inside) -> bool (H,W); checks the size."""
    if not path.exists():
        raise StageInputError(f"{what} not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise StageInputError(f"{path}: {what} is not a readable image")
    if image.ndim == 3:
        image = image.max(axis=2)
    if image.shape != tuple(image_size):
        raise StageInputError(
            f"{path}: {what} has size {image.shape[1]}x{image.shape[0]}, the video is {image_size[1]}x{image_size[0]}"
        )
    return image > 0


def load_depth_png(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The render's first-frame depth (16-bit PNG, millimetres) -> float32 (H,W) metres, 0 = none."""
    if not path.exists():
        raise StageInputError(f"first-frame depth not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise StageInputError(f"{path}: first-frame depth is not a readable image")
    if image.ndim != 2 or image.dtype != np.uint16:
        raise StageInputError(f"{path}: first-frame depth must be a single-channel 16-bit PNG (mm)")
    if image.shape != tuple(image_size):
        raise StageInputError(
            f"{path}: depth has size {image.shape[1]}x{image.shape[0]}, the video is {image_size[1]}x{image_size[0]}"
        )
    return image.astype(np.float32) / DEPTH_PNG_SCALE


@dataclass
class ObjectMesh:
    vertices: np.ndarray  # (V,3) float64, scaled model frame (metres)
    faces: np.ndarray  # (F,3) int64
    path: Path


def load_object_mesh(path: Path, scale: float = 1.0) -> ObjectMesh:
    """Load the object mesh with trimesh; a mesh without faces or with non-finite vertices is refused."""
    import trimesh

    if not path.exists():
        raise StageInputError(f"object mesh not found: {path}")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad input file
        raise StageInputError(f"{path}: object mesh is not readable ({exc})") from exc
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if faces.ndim != 2 or faces.shape[0] == 0:
        raise StageInputError(f"{path}: object mesh has no faces")
    if vertices.shape[0] == 0 or not np.all(np.isfinite(vertices)):
        raise StageInputError(f"{path}: object mesh has non-finite or no vertices")
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise StageInputError(f"{path}: object mesh faces index missing vertices")
    if not np.isfinite(scale) or scale <= 0:
        raise StageInputError(f"{path}: obj_scale {scale} must be a positive number")
    return ObjectMesh(vertices=vertices * scale, faces=faces, path=path)


def load_render_inputs(layout: Layout, vid: VideoId) -> tuple[RenderConfig, np.ndarray]:
    """Render config and intrinsics K (cam_K.txt when present, else from the focal length)."""
    try:
        render_config = load_render_config(layout.render_config(vid))
    except (FileNotFoundError, ValueError) as exc:
        raise StageInputError(str(exc)) from exc
    cam_k_path = layout.cam_k(vid)
    if cam_k_path.exists():
        try:
            K = load_cam_k(cam_k_path)
        except ValueError as exc:
            raise StageInputError(str(exc)) from exc
    else:
        K = render_config.intrinsics()
    return render_config, K


def check_image_size(render_config: RenderConfig, image_size: tuple[int, int], video_path: Path) -> None:
    expected = (render_config.frame_height, render_config.frame_width)
    if tuple(image_size) != expected:
        raise StageInputError(
            f"{video_path}: video is {image_size[1]}x{image_size[0]}, the render config says {expected[1]}x{expected[0]}"
        )


# ---- stage-2 caches, read back by stage 3 and later ---------------------------------------------
def load_masks_cache(path: Path, image_size: tuple[int, int] | None = None) -> dict[int, dict[int, np.ndarray]]:
    """The stage-2 masks npz -> {frame: {0: object, 1: human}} bool masks, validated."""
    if not path.exists():
        raise StageInputError(f"masks cache not found (run stage 2 first): {path}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # an npz is a zip archive; refuse anything else unread
            raise StageInputError(f"{path}: not a masks cache with key 'masks' (not an npz archive)")
    try:
        with np.load(path, allow_pickle=True) as data:
            masks = data["masks"].item()
    except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise StageInputError(f"{path}: not a masks cache with key 'masks' ({exc})") from exc
    if not isinstance(masks, dict) or not masks:
        raise StageInputError(f"{path}: 'masks' must be a non-empty dict frame -> {{0: object, 1: human}}")
    frames = sorted(masks)
    if frames != list(range(len(frames))):
        raise StageInputError(f"{path}: frames must be numbered 0..T-1, got {frames[:3]}...")
    out: dict[int, dict[int, np.ndarray]] = {}
    for frame in frames:
        entry = masks[frame]
        if not isinstance(entry, dict) or 0 not in entry or 1 not in entry:
            raise StageInputError(f"{path}: frame {frame} lacks the object (0) or human (1) mask")
        obj, hum = np.asarray(entry[0]), np.asarray(entry[1])
        size = image_size or obj.shape
        if obj.shape != tuple(size) or hum.shape != tuple(size):
            raise StageInputError(f"{path}: frame {frame} masks have shape {obj.shape}/{hum.shape}, expected {size}")
        if obj.dtype != bool and not np.all(np.isfinite(obj.astype(np.float64))):
            raise StageInputError(f"{path}: frame {frame} object mask holds NaN")
        out[frame] = {0: obj > 0, 1: hum > 0}
    return out


def masks_to_tensors(masks: dict[int, dict[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """{frame: {0,1}} -> object (T,H,W) bool, human (T,H,W) bool."""
    frames = sorted(masks)
    return np.stack([masks[f][0] for f in frames]), np.stack([masks[f][1] for f in frames])


def load_depth_cache(path: Path, num_frames: int, image_size: tuple[int, int]) -> torch.Tensor:
    """The stage-2 depth list -> float32 (T,H,W) metres (0 = unknown); NaN/Inf or wrong shapes refused."""
    if not path.exists():
        raise StageInputError(f"depth cache not found (run stage 2 first): {path}")
    try:
        depth = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad cache file
        raise StageInputError(f"{path}: not a readable depth cache ({exc})") from exc
    if isinstance(depth, torch.Tensor):
        depth = list(depth)
    if not isinstance(depth, list | tuple) or len(depth) != num_frames:
        count = len(depth) if isinstance(depth, list | tuple) else type(depth).__name__
        raise StageInputError(f"{path}: expected a list of {num_frames} depth maps, got {count}")
    stacked = torch.stack([torch.as_tensor(d, dtype=torch.float32) for d in depth])
    if tuple(stacked.shape[1:]) != tuple(image_size):
        raise StageInputError(f"{path}: depth maps have shape {tuple(stacked.shape[1:])}, expected {image_size}")
    if not torch.isfinite(stacked).all():
        raise StageInputError(f"{path}: depth cache holds NaN or Inf")
    return stacked


def load_object_poses(path: Path) -> np.ndarray:
    """A stored ``poses_in_cam.pkl`` (array (T,4,4) or list of 4x4) -> float64 (T,4,4), validated."""
    if not path.exists():
        raise StageInputError(f"object poses not found: {path}")
    try:
        raw = load_pickle(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad cache file
        raise StageInputError(f"{path}: not a readable pickle ({exc})") from exc
    return validate_object_poses(raw, str(path))


def validate_object_poses(raw: Any, source: str, rotation_tol: float = 1e-3) -> np.ndarray:
    """Check per-frame object->camera poses: (T,4,4), finite, orthonormal rotations, [0,0,0,1] last row."""
    try:
        poses = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StageInputError(f"{source}: object poses are not numeric 4x4 matrices ({exc})") from exc
    if poses.ndim == 2 and poses.shape == (4, 4):
        poses = poses[None]
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or poses.shape[0] == 0:
        raise StageInputError(f"{source}: object poses must have shape (T,4,4), got {poses.shape}")
    if not np.all(np.isfinite(poses)):
        bad = int(np.flatnonzero(~np.isfinite(poses).all(axis=(1, 2)))[0])
        raise StageInputError(f"{source}: object pose of frame {bad} is not finite")
    rot = poses[:, :3, :3]
    ortho_err = np.abs(np.swapaxes(rot, 1, 2) @ rot - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(rot)
    bad_rot = np.flatnonzero((ortho_err > rotation_tol) | (det <= 0))
    if bad_rot.size:
        raise StageInputError(
            f"{source}: rotation of frame {int(bad_rot[0])} is not orthonormal "
            f"(|R^T R - I| = {ortho_err[bad_rot[0]]:.2e}, det = {det[bad_rot[0]]:.3f})"
        )
    if np.abs(poses[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > 1e-6:
        raise StageInputError(f"{source}: last row of every pose must be [0, 0, 0, 1]")
    return poses
