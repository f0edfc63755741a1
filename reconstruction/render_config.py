"""The render's per-video inputs: ``first_frame_pose.pickle``, ``cam_K.txt``, ``character_data.json``.

The render config stores the camera in Blender's convention (camera looks along -Z, +Y up, ``cam_R`` is
camera-to-world, ``cam_t`` the camera centre in the Z-up metric world). It is converted to OpenCV
(x right, y down, z forward) here, once; everything else in the engine works in OpenCV camera frames.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reconstruction import fileio

BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


class _NumpyCompatUnpickler(pickle.Unpickler):
    """Reads pickles written by NumPy 2 (``numpy._core``) under NumPy 1 and vice versa."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = module.replace("numpy._core", "numpy.core", 1)
        elif module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def load_pickle(path: str | Path) -> Any:
    """Load a pickle the engine itself wrote or that the reference pipeline's render wrote.

    Only for files in results dirs the operator controls; the web server never calls this on uploads.
    """
    data = Path(path).read_bytes()
    return _NumpyCompatUnpickler(io.BytesIO(data)).load()


@dataclass
class RenderConfig:
    obj_R: np.ndarray  # (3,3) object rotation in the render world at frame 0
    obj_t: np.ndarray  # (3,)
    obj_scale: float
    cam_R: np.ndarray  # (3,3) Blender camera-to-world rotation
    cam_t: np.ndarray  # (3,) camera centre in the world
    frame_height: int
    frame_width: int
    focal_length: float
    human_R: np.ndarray | None = None  # (3,3) character root at frame 0
    human_t: np.ndarray | None = None  # (3,)
    scene_data: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # keys we carry but do not interpret

    KNOWN_KEYS = (
        "obj_R", "obj_t", "obj_scale", "cam_R", "cam_t", "frame_height", "frame_width", "focal_length",
        "human_R", "human_t", "scene_data",
    )  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "render config") -> RenderConfig:
        missing = [
            k
            for k in ("obj_R", "obj_t", "cam_R", "cam_t", "frame_height", "frame_width", "focal_length")
            if k not in raw
        ]
        if missing:
            raise ValueError(f"{source}: missing key(s) {', '.join(missing)}")

        def arr(key: str, shape: tuple[int, ...]) -> np.ndarray:
            value = np.asarray(raw[key], dtype=np.float64)
            if value.shape != shape:
                value = value.reshape(shape) if value.size == int(np.prod(shape)) else value
            if value.shape != shape or not np.all(np.isfinite(value)):
                raise ValueError(f"{source}: {key} must be a finite array of shape {shape}")
            return value

        human_R = arr("human_R", (3, 3)) if raw.get("human_R") is not None else None
        human_t = arr("human_t", (3,)) if raw.get("human_t") is not None else None
        return cls(
            obj_R=arr("obj_R", (3, 3)),
            obj_t=arr("obj_t", (3,)),
            obj_scale=float(np.asarray(raw.get("obj_scale", 1.0)).reshape(-1)[0]),
            cam_R=arr("cam_R", (3, 3)),
            cam_t=arr("cam_t", (3,)),
            frame_height=int(raw["frame_height"]),
            frame_width=int(raw["frame_width"]),
            focal_length=float(raw["focal_length"]),
            human_R=human_R,
            human_t=human_t,
            scene_data=list(raw.get("scene_data") or []),
            extra={k: v for k, v in raw.items() if k not in cls.KNOWN_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "obj_R": self.obj_R, "obj_t": self.obj_t, "obj_scale": self.obj_scale, "cam_R": self.cam_R,
            "cam_t": self.cam_t, "frame_height": self.frame_height, "frame_width": self.frame_width,
            "focal_length": self.focal_length,
        }  # fmt: skip
        if self.human_R is not None:
            out["human_R"] = self.human_R
        if self.human_t is not None:
            out["human_t"] = self.human_t
        if self.scene_data:
            out["scene_data"] = self.scene_data
        out.update(self.extra)
        return out

    # ---- camera ---------------------------------------------------------------------------------
    def cam_to_world(self) -> np.ndarray:
        """(4,4) OpenCV camera-to-world transform."""
        pose = np.eye(4)
        pose[:3, :3] = self.cam_R @ BLENDER_TO_OPENCV
        pose[:3, 3] = self.cam_t
        return pose

    def world_to_cam(self) -> np.ndarray:
        """(4,4) world-to-OpenCV-camera transform."""
        return np.linalg.inv(self.cam_to_world())

    def intrinsics(self) -> np.ndarray:
        """K from focal length and image centre (cam_K.txt, when present, is authoritative)."""
        return np.array(
            [
                [self.focal_length, 0.0, self.frame_width / 2.0],
                [0.0, self.focal_length, self.frame_height / 2.0],
                [0, 0, 1],
            ]
        )

    def object_to_cam(self) -> np.ndarray:
        """(4,4) frame-0 pose of the (scaled) object mesh in the OpenCV camera frame."""
        obj = np.eye(4)
        obj[:3, :3] = self.obj_R
        obj[:3, 3] = self.obj_t
        return self.world_to_cam() @ obj


def load_render_config(path: str | Path) -> RenderConfig:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"render config not found: {path}")
    try:
        raw = load_pickle(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise ValueError(f"{path}: not a readable pickle ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict, got {type(raw).__name__}")
    return RenderConfig.from_dict(raw, source=str(path))


def save_render_config(path: str | Path, config: RenderConfig) -> Path:
    return fileio.write_pickle(path, config.to_dict())


def load_cam_k(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"camera intrinsics not found: {path}")
    try:
        K = np.loadtxt(path, dtype=np.float64).reshape(3, 3)
    except ValueError as exc:
        raise ValueError(f"{path}: cam_K.txt must hold a 3x3 matrix of numbers ({exc})") from exc
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{path}: intrinsics must be finite with positive focal lengths")
    return K


def save_cam_k(path: str | Path, K: np.ndarray) -> Path:
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(K, dtype=np.float64).reshape(3, 3))
    return fileio.write_text(path, buf.getvalue())


def load_character_data(path: str | Path) -> dict[str, Any]:
    """``character_data.json``: ``height_m``, ``body_model``, ``shape`` and frame-0 ``pose_aa`` (hoiweb)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"character data not found: {path}")
    return json.loads(path.read_text())
