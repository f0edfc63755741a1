"""Small synthetic scenes for the stage 2/3 tests, composed from trimesh primitives.

Rendered with the project renderer and written in the contract's input layout (video, render config,
cam_K.txt, first-frame masks, first-frame depth PNG, mesh), with ground truth kept in memory: per-frame
instance masks and object->camera poses. A stand-in "human" (torso, head, an arm whose hand holds the
object from the camera side, so it occludes part of it) moves the object along a curved, rotating path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import roma
import torch
import trimesh

from reconstruction.layout import Layout, VideoId
from reconstruction.render import Mesh, render
from reconstruction.render.scene import ground_plane, look_at_world_to_cam
from reconstruction.render_config import BLENDER_TO_OPENCV, RenderConfig, save_cam_k, save_render_config
from reconstruction.video import write_video

SKY = (0.62, 0.72, 0.86)


@dataclass
class SceneTruth:
    object_masks: np.ndarray  # (T,H,W) bool
    human_masks: np.ndarray  # (T,H,W) bool
    object_poses_cam: np.ndarray  # (T,4,4)
    K: np.ndarray
    world_to_cam: np.ndarray
    mesh: trimesh.Trimesh


def _coloured(mesh: trimesh.Trimesh, base, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    colours = np.clip(np.asarray(base) + rng.uniform(-spread, spread, (len(mesh.vertices), 3)), 0, 1)
    return (
        torch.tensor(mesh.vertices, dtype=torch.float32),
        torch.tensor(mesh.faces, dtype=torch.long),
        torch.tensor(colours, dtype=torch.float32),
    )


def _segment_box(start: np.ndarray, end: np.ndarray, thickness: float) -> np.ndarray:
    """(4,4) transform taking a unit-length box along +x to the segment start -> end."""
    axis = end - start
    length = np.linalg.norm(axis)
    x = axis / length
    helper = np.array([0.0, 0.0, 1.0]) if abs(x[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    y = np.cross(helper, x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x * length, y * thickness, z * thickness], axis=1)
    pose[:3, 3] = (start + end) / 2
    return pose


def object_trajectory(num_frames: int, static: bool) -> np.ndarray:
    """(T,4,4) object->world poses: lifted and turned over the clip (or still)."""
    s = np.zeros(num_frames) if static else np.linspace(0.0, 1.0, num_frames)
    poses = np.repeat(np.eye(4)[None], num_frames, axis=0)
    rotvec = np.stack([0.25 * s, -0.2 * s, 0.15 + 0.6 * s], axis=1)
    poses[:, :3, :3] = roma.rotvec_to_rotmat(torch.tensor(rotvec)).numpy()
    poses[:, :3, 3] = np.stack([0.05 + 0.12 * s, -0.05 * s, 0.75 + 0.18 * np.sin(np.pi * s / 1.5)], axis=1)
    return poses


def make_scene(
    results_dir: Path,
    video_id: str = "synth/box/clip0",
    num_frames: int = 12,
    size: tuple[int, int] = (240, 320),
    static: bool = False,
    occlude: bool = True,
) -> tuple[Layout, VideoId, SceneTruth]:
    layout = Layout.create(results_dir)
    vid = VideoId.parse(video_id)
    height, width = size
    focal = 0.9 * width
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    world_to_cam = look_at_world_to_cam(eye=(0.1, -1.3, 1.25), target=(0.0, 0.1, 0.75))

    obj = trimesh.creation.box((0.14, 0.08, 0.10))
    obj = obj.subdivide()  # more vertices -> more colour variation over the surface
    object_world = object_trajectory(num_frames, static)
    obj_v, obj_f, obj_c = _coloured(obj, (0.85, 0.25, 0.15), 0.12, seed=1)
    obj_frames = torch.tensor(
        np.einsum("tij,vj->tvi", object_world[:, :3, :3], obj.vertices) + object_world[:, None, :3, 3],
        dtype=torch.float32,
    )

    # The human stand-in: torso + head (still) and an arm from the shoulder to a hand on the object.
    torso = trimesh.creation.box((0.34, 0.2, 0.6))
    torso.apply_translation((-0.42, 0.35, 1.05))
    head = trimesh.creation.icosphere(2, 0.11)
    head.apply_translation((-0.42, 0.35, 1.5))
    body = trimesh.util.concatenate([torso, head])
    body_v, body_f, body_c = _coloured(body, (0.25, 0.45, 0.3), 0.05, seed=2)
    shoulder = np.array([-0.25, 0.3, 1.25])
    unit = trimesh.creation.box((1.0, 1.0, 1.0))
    arm_frames, hand_frames = [], []
    hand = trimesh.creation.box((0.06, 0.05, 0.07))
    for t in range(num_frames):
        # The hand sits on the object's camera-facing side, a little left of its centre.
        hand_pos = object_world[t, :3, 3] + np.array([-0.045, -0.06, 0.02])
        arm = unit.copy()
        arm.apply_transform(_segment_box(shoulder, hand_pos + np.array([-0.03, 0.02, 0.0]), 0.07))
        arm_frames.append(arm.vertices)
        hand_frames.append(hand.vertices + hand_pos)
    arm_v = torch.tensor(np.stack(arm_frames), dtype=torch.float32)
    hand_v = torch.tensor(np.stack(hand_frames), dtype=torch.float32)
    arm_c = torch.full((len(unit.vertices), 3), 0.0) + torch.tensor([0.25, 0.45, 0.3])
    hand_c = torch.full((len(hand.vertices), 3), 0.0) + torch.tensor([0.9, 0.72, 0.6])

    table = trimesh.creation.box((0.9, 0.6, 0.68))
    table.apply_translation((0.0, 0.15, 0.34))
    table_v, table_f, table_c = _coloured(table, (0.55, 0.42, 0.3), 0.08, seed=3)
    ground_v, ground_f, ground_c = ground_plane(size=8.0, cells=16)
    meshes = [
        Mesh(ground_v, ground_f, ground_c, instance_id=3),
        Mesh(table_v, table_f, table_c, instance_id=3),
        Mesh(obj_frames, obj_f, obj_c, instance_id=2),
        Mesh(body_v, body_f, body_c, instance_id=1),
        Mesh(arm_v, torch.tensor(unit.faces), arm_c, instance_id=1),
    ]
    if occlude:
        meshes.append(Mesh(hand_v, torch.tensor(hand.faces), hand_c, instance_id=1))
    out = render(meshes, K, world_to_cam, size, background=SKY)
    frames = (out.rgb.numpy() * 255 + 0.5).astype(np.uint8)
    instance = out.instance.numpy()

    write_video(layout.video(vid), frames, fps=30.0)
    cam_to_world = np.linalg.inv(world_to_cam)
    render_config = RenderConfig(
        obj_R=object_world[0, :3, :3], obj_t=object_world[0, :3, 3], obj_scale=1.0,
        cam_R=cam_to_world[:3, :3] @ BLENDER_TO_OPENCV, cam_t=cam_to_world[:3, 3],
        frame_height=height, frame_width=width, focal_length=focal,
    )  # fmt: skip
    save_render_config(layout.render_config(vid), render_config)
    save_cam_k(layout.cam_k(vid), K)
    for path, mask in (
        (layout.first_object_mask(vid), instance[0] == 2),
        (layout.first_human_mask(vid), instance[0] == 1),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
    layout.depth_gt(vid).parent.mkdir(parents=True, exist_ok=True)
    depth_mm = np.clip(out.depth[0].numpy() * 1000.0 + 0.5, 0, 65535).astype(np.uint16)
    cv2.imwrite(str(layout.depth_gt(vid)), depth_mm)
    layout.mesh(vid).parent.mkdir(parents=True, exist_ok=True)
    obj.export(layout.mesh(vid))
    truth = SceneTruth(
        object_masks=instance == 2,
        human_masks=instance == 1,
        object_poses_cam=world_to_cam[None] @ object_world,
        K=K,
        world_to_cam=world_to_cam,
        mesh=obj,
    )
    return layout, vid, truth


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame IoU of (T,H,W) bool masks (1 where both are empty)."""
    inter = (pred & truth).reshape(len(pred), -1).sum(1)
    union = (pred | truth).reshape(len(pred), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def pose_errors(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame translation error (m) and rotation error (deg) of (T,4,4) poses."""
    trans = np.linalg.norm(pred[:, :3, 3] - truth[:, :3, 3], axis=1)
    rel = np.einsum("tji,tjk->tik", pred[:, :3, :3], truth[:, :3, :3])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return trans, np.degrees(np.arccos(cos))
