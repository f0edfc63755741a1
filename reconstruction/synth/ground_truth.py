"""Ground truth of one synthetic video: what the reconstruction should recover, frame by frame.

Stored as one ``.npz`` (``layout.ground_truth(vid)``), written atomically through ``reconstruction.fileio``.
Conventions: world metric and Z-up; cameras OpenCV (x right, y down, z forward); object poses map the
object mesh (metres, model frame, ``obj_scale`` 1) into the camera or world frame. Contact column 0 is
the left hand, column 1 the right hand. The object mesh path is stored relative to the npz file's folder so
a results dir can be moved; ``load_ground_truth`` resolves it to an absolute path.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from reconstruction import fileio

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
VARIANTS = ("normal", "static_object", "camera_shake", "object_lost")


@dataclass
class GroundTruth:
    fps: float
    K: np.ndarray  # (3,3) intrinsics in pixels
    image_size: tuple[int, int]  # (H, W)
    world_to_cam: np.ndarray  # (T,4,4) world -> OpenCV camera; identical rows for a static camera
    body_model: str  # "anny"
    pose_aa: np.ndarray  # (T,J,3) local axis-angle, joint 0 = root orientation in the world
    shape: np.ndarray  # (S,) shape vector of the body model (anny: 6 phenotype values in [0,1])
    trans: np.ndarray  # (T,3) root translation in the world (the body model's ``trans`` argument)
    height_m: float  # standing height of the character
    keypoints_3d_world: np.ndarray  # (T,75,3) MediaPipe-order body + hand keypoints, world
    keypoints_3d_cam: np.ndarray  # (T,75,3) the same in the camera frame
    object_poses_world: np.ndarray  # (T,4,4) object -> world
    object_poses_cam: np.ndarray  # (T,4,4) object -> camera
    contact: np.ndarray  # (T,2) bool, hand touches the object (left, right)
    object_mesh_path: Path  # the object's .obj (metres, model frame)
    object_visibility: np.ndarray  # (T,) visible fraction of the object's unoccluded in-image pixels
    variant: str  # one of VARIANTS
    category: str  # object category (box, bottle, drill, mug, ...)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable scene description

    @property
    def num_frames(self) -> int:
        return int(self.pose_aa.shape[0])

    def validate(self, source: str = "ground truth") -> None:
        """Raise ValueError naming the field whose shape or values are inconsistent."""
        t = self.num_frames
        expected = {
            "K": (3, 3),
            "world_to_cam": (t, 4, 4),
            "trans": (t, 3),
            "keypoints_3d_world": (t, 75, 3),
            "keypoints_3d_cam": (t, 75, 3),
            "object_poses_world": (t, 4, 4),
            "object_poses_cam": (t, 4, 4),
            "contact": (t, 2),
            "object_visibility": (t,),
        }
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name))
            if value.shape != shape:
                raise ValueError(f"{source}: {name} has shape {value.shape}, expected {shape}")
        if self.pose_aa.ndim != 3 or self.pose_aa.shape[-1] != 3:
            raise ValueError(f"{source}: pose_aa must be (T,J,3), got {self.pose_aa.shape}")
        if self.variant not in VARIANTS:
            raise ValueError(f"{source}: unknown variant {self.variant!r} (expected one of {VARIANTS})")
        if not self.fps > 0:
            raise ValueError(f"{source}: fps must be positive, got {self.fps}")


_ARRAY_FIELDS = (
    "K", "world_to_cam", "pose_aa", "shape", "trans", "keypoints_3d_world", "keypoints_3d_cam",
    "object_poses_world", "object_poses_cam", "contact", "object_visibility",
)  # fmt: skip


def save_ground_truth(path: str | Path, gt: GroundTruth) -> Path:
    """Write ``gt`` to ``path`` (npz). Deterministic: same content -> same bytes."""
    path = Path(path)
    gt.validate(str(path))
    mesh_path = Path(gt.object_mesh_path)
    try:
        mesh_rel = os.path.relpath(mesh_path.resolve(), path.parent.resolve())
    except ValueError:  # different drive (Windows): keep absolute
        mesh_rel = str(mesh_path.resolve())
    arrays: dict[str, Any] = {name: np.asarray(getattr(gt, name)) for name in _ARRAY_FIELDS}
    arrays["contact"] = arrays["contact"].astype(bool)
    meta = {
        "format_version": FORMAT_VERSION,
        "fps": float(gt.fps),
        "image_size": [int(v) for v in gt.image_size],
        "body_model": gt.body_model,
        "height_m": float(gt.height_m),
        "object_mesh_path": mesh_rel,
        "variant": gt.variant,
        "category": gt.category,
        "seed": int(gt.seed),
        "extra": gt.extra,
    }
    # Metadata as a JSON string in a unicode array: loads without allow_pickle.
    arrays["meta_json"] = np.array(json.dumps(meta, sort_keys=True, default=fileio._json_default))
    return fileio.write_npz(path, **arrays)


def load_ground_truth(path: str | Path) -> GroundTruth:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ground truth not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.array(data[name]) for name in data.files}
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad input file
        raise ValueError(f"{path}: not a readable ground-truth npz ({exc})") from exc
    missing = [name for name in (*_ARRAY_FIELDS, "meta_json") if name not in arrays]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    meta = json.loads(str(arrays.pop("meta_json")))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported ground-truth format_version {meta.get('format_version')}")
    mesh_path = Path(meta["object_mesh_path"])
    if not mesh_path.is_absolute():
        mesh_path = (path.parent / mesh_path).resolve()
    known = {f.name for f in fields(GroundTruth)}
    gt = GroundTruth(
        fps=meta["fps"],
        image_size=tuple(meta["image_size"]),
        body_model=meta["body_model"],
        height_m=meta["height_m"],
        object_mesh_path=mesh_path,
        variant=meta["variant"],
        category=meta["category"],
        seed=meta.get("seed", 0),
        extra=meta.get("extra", {}),
        **{k: v for k, v in arrays.items() if k in known},
    )
    gt.contact = gt.contact.astype(bool)
    gt.validate(str(path))
    return gt
