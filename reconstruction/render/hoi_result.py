"""Read a stage-4 ``hoi_data.pkl`` (contract section 5) into world-space body and object geometry.

This is the one place stage 6 interprets that schema, so later schema changes stay here:
``human_data`` {poses (T, J*3) axis-angle, trans (T,3), betas|shape, optional left/right_hand_pose,
optional body_model}, ``obj_data`` {obj_R (T,3,3), obj_t (T,3), obj_scale}, ``meta`` {obj_path,
contact_frames (T,2) bool (left, right), optional body_model}; a top-level ``body_model`` is accepted too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruction.render_config import load_pickle
from reconstruction.stages.scene_inputs import load_object_mesh

log = logging.getLogger(__name__)


class HoiResultError(ValueError):
    """The stage-4 result cannot be interpreted; the message names the file and key."""


@dataclass
class HoiSequence:
    """A reconstructed interaction, everything in the render world (metres, Z up)."""

    body_model: str
    body_vertices: torch.Tensor  # (T,V,3)
    body_faces: torch.Tensor  # (F,3) long
    body_root: torch.Tensor  # (T,3) root joint position (the trajectory drawn in the top view)
    hand_vertex_ids: dict[str, torch.Tensor]  # "left_hand" / "right_hand" -> vertex indices
    object_rest_vertices: torch.Tensor  # (Vo,3) object mesh in its model frame, already scaled
    object_faces: torch.Tensor  # (Fo,3) long
    object_poses: torch.Tensor  # (T,4,4) scaled object mesh -> world
    contact_labels: np.ndarray | None  # (T,2) bool per hand (left, right) from the result, if recorded
    object_path: Path
    source: Path

    @property
    def num_frames(self) -> int:
        return int(self.body_vertices.shape[0])

    @property
    def object_vertices(self) -> torch.Tensor:
        """(T,Vo,3) object vertices in the world."""
        R, t = self.object_poses[:, :3, :3], self.object_poses[:, :3, 3]
        return self.object_rest_vertices[None] @ R.transpose(1, 2) + t[:, None]

    @property
    def object_center(self) -> torch.Tensor:
        """(T,3) world position of the object's vertex centroid."""
        centroid = self.object_rest_vertices.mean(0)
        return (self.object_poses[:, :3, :3] @ centroid) + self.object_poses[:, :3, 3]


def _array(container: dict, key: str, source: str, where: str) -> np.ndarray:
    if key not in container:
        raise HoiResultError(f"{source}: missing {where}[{key!r}]")
    try:
        value = np.asarray(
            container[key].detach().cpu() if isinstance(container[key], torch.Tensor) else container[key],
            dtype=np.float64,
        )
    except (TypeError, ValueError) as exc:
        raise HoiResultError(f"{source}: {where}[{key!r}] is not numeric ({exc})") from exc
    if not np.all(np.isfinite(value)):
        raise HoiResultError(f"{source}: {where}[{key!r}] has non-finite values")
    return value


def _body_model_name(raw: dict, default: str | None, source: str) -> str:
    for container in (raw.get("human_data", {}), raw, raw.get("meta", {})):
        if isinstance(container, dict) and container.get("body_model"):
            return str(container["body_model"])
    if default:
        return default
    raise HoiResultError(f"{source}: no body_model recorded (human_data, top level or meta) and none configured")


def load_hoi_result(
    path: str | Path,
    body_model: str | None = None,
    object_mesh_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> HoiSequence:
    """Load ``hoi_data.pkl`` and pose body and object for every frame.

    ``body_model`` is used when the file records none; ``object_mesh_path`` overrides ``meta.obj_path``
    (a relative ``obj_path`` is resolved against the pickle's folder).
    """
    from reconstruction.body import load_body_model

    path = Path(path)
    source = str(path)
    if not path.exists():
        raise FileNotFoundError(f"stage-4 result not found: {path}")
    try:
        raw: Any = load_pickle(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise HoiResultError(f"{source}: not a readable pickle ({exc})") from exc
    if not isinstance(raw, dict) or "human_data" not in raw or "obj_data" not in raw:
        raise HoiResultError(f"{source}: expected a dict with 'human_data' and 'obj_data'")
    human, obj, meta = raw["human_data"], raw["obj_data"], raw.get("meta") or {}

    model = load_body_model(_body_model_name(raw, body_model, source), device=device)
    poses = _array(human, "poses", source, "human_data")
    trans = _array(human, "trans", source, "human_data")
    num_frames = trans.shape[0]
    if trans.shape != (num_frames, 3) or num_frames == 0:
        raise HoiResultError(f"{source}: human_data['trans'] must be (T,3), got {trans.shape}")
    poses = poses.reshape(num_frames, -1, 3)
    num_joints = len(model.joint_names)
    if poses.shape[1] < num_joints and "left_hand_pose" in human and "right_hand_pose" in human:
        # GRAIL layout: ``poses`` holds the non-hand joints in model order, the hands come separately.
        hand_joints = set(model.left_hand_joints) | set(model.right_hand_joints)
        other_joints = [j for j in range(num_joints) if j not in hand_joints]
        if poses.shape[1] > len(other_joints):
            raise HoiResultError(
                f"{source}: human_data['poses'] has {poses.shape[1]} joints, more than the {len(other_joints)} "
                f"non-hand joints of {model.name} (hand poses given separately)"
            )
        full = np.zeros((num_frames, num_joints, 3))
        full[:, other_joints[: poses.shape[1]]] = poses
        for side, joints in (("left_hand_pose", model.left_hand_joints), ("right_hand_pose", model.right_hand_joints)):
            hand = _array(human, side, source, "human_data").reshape(num_frames, -1, 3)
            if hand.shape[1] != len(joints):
                raise HoiResultError(
                    f"{source}: human_data[{side!r}] has {hand.shape[1]} joints, expected {len(joints)}"
                )
            full[:, joints] = hand
        poses = full
    if poses.shape[1] != num_joints:
        raise HoiResultError(
            f"{source}: human_data['poses'] has {poses.shape[1]} joints, body model {model.name} has {num_joints}"
        )
    shape_key = "betas" if "betas" in human else "shape"
    shape = _array(human, shape_key, source, "human_data")
    shape = shape.reshape(-1, shape.shape[-1])[0] if shape.ndim > 1 else shape

    def tensor(value: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.float32, device=device)

    with torch.no_grad():
        body = model.forward(tensor(poses), tensor(shape), tensor(trans))

    obj_R = _array(obj, "obj_R", source, "obj_data").reshape(-1, 3, 3)
    obj_t = _array(obj, "obj_t", source, "obj_data").reshape(-1, 3)
    if obj_R.shape[0] != num_frames or obj_t.shape[0] != num_frames:
        raise HoiResultError(
            f"{source}: obj_data has {obj_R.shape[0]} rotations / {obj_t.shape[0]} translations for {num_frames} frames"
        )
    obj_scale = float(np.asarray(obj.get("obj_scale", 1.0), dtype=np.float64).reshape(-1)[0])
    if object_mesh_path is None:
        if not meta.get("obj_path"):
            raise HoiResultError(f"{source}: meta['obj_path'] missing and no object mesh given")
        object_mesh_path = Path(meta["obj_path"])
        if not object_mesh_path.is_absolute():
            object_mesh_path = path.parent / object_mesh_path
    mesh = load_object_mesh(Path(object_mesh_path), obj_scale)
    poses_world = np.tile(np.eye(4), (num_frames, 1, 1))
    poses_world[:, :3, :3] = obj_R
    poses_world[:, :3, 3] = obj_t

    contact = meta.get("contact_frames")
    if contact is not None:
        contact = np.asarray(contact).astype(bool)
        if contact.shape != (num_frames, 2):
            raise HoiResultError(f"{source}: meta['contact_frames'] must be (T,2) bool, got {contact.shape}")

    return HoiSequence(
        body_model=model.name,
        body_vertices=body.vertices.float(),
        body_faces=model.faces.to(device),
        body_root=body.joints[:, 0].float(),
        hand_vertex_ids={k: model.vertex_segments[k].to(device) for k in ("left_hand", "right_hand")},
        object_rest_vertices=tensor(mesh.vertices),
        object_faces=torch.as_tensor(mesh.faces, dtype=torch.long, device=device),
        object_poses=tensor(poses_world),
        contact_labels=contact,
        object_path=Path(object_mesh_path),
        source=path,
    )
