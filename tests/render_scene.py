"""A small real scene for stage-6 tests: an anny body waving its right arm and a moving box.

The input video is rendered by the project's renderer from the same world and camera, and the
stage-4 result (``hoi_data.pkl``) holds exactly that motion, so the overlay must match the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from reconstruction import fileio
from reconstruction.layout import Layout, VideoId
from reconstruction.render import Mesh, render
from reconstruction.render.scene import ground_plane, look_at_world_to_cam
from reconstruction.render_config import BLENDER_TO_OPENCV, RenderConfig, save_cam_k, save_render_config
from reconstruction.video import write_video

SKIN = (0.85, 0.66, 0.55)
BOX_COLOR = (0.15, 0.3, 0.85)


@dataclass
class SceneFiles:
    layout: Layout
    video: VideoId
    K: np.ndarray
    world_to_cam: np.ndarray
    silhouette: np.ndarray  # (T,H,W) bool: body or object visible in the input video
    num_frames: int
    image_size: tuple[int, int]


def build_scene(
    results_dir: Path,
    num_frames: int = 8,
    image_size: tuple[int, int] = (120, 160),
    penetrating: bool = False,
    name: str = "wave",
) -> SceneFiles:
    from reconstruction.body import load_body_model

    model = load_body_model("anny")
    shape = model.default_shape()
    T = num_frames
    pose = model.rest_pose(T)
    phase = torch.linspace(0, 2 * np.pi, T)
    pose[:, model.joint_index("upperarm01.R"), 1] = -0.9 - 0.4 * torch.sin(phase)  # raise and wave
    pose[:, model.joint_index("lowerarm01.R"), 1] = -0.5 * torch.sin(phase)
    root_height = model.root_height_standing(shape)
    trans = torch.stack([torch.linspace(0, 0.1, T), torch.zeros(T), torch.full((T,), root_height)], -1)
    with torch.no_grad():
        body = model.forward(pose, shape, trans)

    box = trimesh.creation.box(extents=[0.22, 0.22, 0.22])
    obj_R = np.tile(np.eye(3), (T, 1, 1))
    angle = np.linspace(0, 0.6, T)
    obj_R[:, 0, 0], obj_R[:, 0, 1], obj_R[:, 1, 0], obj_R[:, 1, 1] = (
        np.cos(angle),
        -np.sin(angle),
        np.sin(angle),
        np.cos(angle),
    )
    if penetrating:  # box centred in the torso
        obj_t = np.stack([np.full(T, 0.05), np.full(T, -0.02), np.full(T, root_height + 0.3)], 1)
    else:  # box on a path in front of the person, well away from the body
        obj_t = np.stack([np.linspace(0.35, 0.55, T), np.full(T, -0.6), np.linspace(0.9, 1.1, T)], 1)
    obj_vertices = np.einsum("tij,vj->tvi", obj_R, box.vertices) + obj_t[:, None]

    height, width = image_size
    focal = 1.1 * width
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    world_to_cam = look_at_world_to_cam((0.3, -4.2, 1.1), (0.1, 0.0, 0.85))
    gv, gf, gc = ground_plane(size=12, cells=24)
    meshes = [
        Mesh(body.vertices, model.faces, torch.tensor(SKIN).expand(body.vertices.shape[1], 3), 1),
        Mesh(obj_vertices, box.faces, np.tile(BOX_COLOR, (len(box.vertices), 1)), 2, smooth=False),
        Mesh(gv, gf, gc, 3, smooth=False),
    ]
    out = render(meshes, K, world_to_cam, image_size, background=(0.75, 0.82, 0.9))
    frames = (out.rgb.numpy() * 255 + 0.5).astype(np.uint8)

    layout = Layout.create(results_dir)
    vid = VideoId("Synthetic", "test", name)
    write_video(layout.video(vid), frames, fps=30)
    save_cam_k(layout.cam_k(vid), K)
    cam_to_world = np.linalg.inv(world_to_cam)
    config = RenderConfig(
        obj_R=obj_R[0], obj_t=obj_t[0], obj_scale=1.0,
        cam_R=cam_to_world[:3, :3] @ BLENDER_TO_OPENCV, cam_t=cam_to_world[:3, 3],
        frame_height=height, frame_width=width, focal_length=focal,
    )  # fmt: skip
    save_render_config(layout.render_config(vid), config)
    mesh_path = layout.mesh(vid)
    mesh_path.parent.mkdir(parents=True, exist_ok=True)
    box.export(mesh_path)
    contact = np.zeros((T, 2), bool)
    hoi = {
        "human_data": {
            "poses": pose.reshape(T, -1).numpy(),
            "trans": trans.numpy(),
            "betas": shape.numpy(),
            "body_model": "anny",
        },
        "obj_data": {"obj_R": obj_R, "obj_t": obj_t, "obj_scale": 1.0},
        "meta": {"obj_path": str(mesh_path), "contact_frames": contact, "inter_start_idx": 0, "inter_end_idx": T - 1},
    }
    fileio.write_pickle(layout.raw_hoi_data(vid), hoi)
    silhouette = ((out.instance == 1) | (out.instance == 2)).numpy()
    return SceneFiles(layout, vid, K, world_to_cam, silhouette, T, image_size)
