"""Write a rendered synthetic scene in the reference pipeline's input layout, plus its ground truth.

Files per video (paths from ``reconstruction.layout.Layout``): the MP4, first-frame object and human
masks (PNG, 0/255, visible pixels), ``cam_K.txt``, first-frame full-scene depth (16-bit PNG, mm),
``first_frame_pose.pickle`` (Blender camera convention, with the table in ``scene_data``: its mesh is
``scene/table.obj`` beside the pickle, the path stored relative to the pickle's folder),
``character_data.json``, the object ``.obj`` and ``ground_truth.npz`` (the same table description in
``extra["scene_data"]``, path relative to the npz's folder). Everything goes through atomic writes; the same scene gives the same bytes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from reconstruction import fileio
from reconstruction.layout import Layout, VideoId
from reconstruction.render_config import BLENDER_TO_OPENCV, RenderConfig, save_cam_k, save_render_config
from reconstruction.synth import objects
from reconstruction.synth.ground_truth import GroundTruth, save_ground_truth
from reconstruction.synth.scene import HUMAN_ID, OBJECT_ID, TABLE_ID, RenderedScene, Scene, table_description
from reconstruction.video import write_video

logger = logging.getLogger(__name__)

MAX_DEPTH_MM = np.iinfo(np.uint16).max


def write_png(path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    fileio.write_bytes(path, data.tobytes())


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (rounded; 0 = nothing; clipped at 65.535 m)."""
    return np.clip(np.round(depth_m * 1000.0), 0, MAX_DEPTH_MM).astype(np.uint16)


def write_table_mesh(scene: Scene, path: Path) -> tuple[Path, dict]:
    """Write the rendered table (the static mesh with the table's instance id) in its own frame as OBJ
    with vertex colours; returns (path, its scene_data entry without the path)."""
    import trimesh

    table = next(mesh for mesh in scene.static_meshes if mesh.instance_id == TABLE_ID)
    entry = table_description()
    vertices = np.asarray(table.vertices, dtype=np.float64) - np.asarray(entry["pos"])
    colors = np.round(np.asarray(table.colors, dtype=np.float64) * 255).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices, np.asarray(table.faces), vertex_colors=colors, process=False)
    text = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_color=True, include_texture=False)
    return fileio.write_text(path, text), entry


def render_config_for(scene: Scene, scene_data: list[dict] | None = None) -> RenderConfig:
    """Frame-0 render config: object pose in the world, camera in Blender's convention, root pose."""
    cam_to_world = np.linalg.inv(scene.world_to_cam[0])
    obj0 = scene.object_poses_world[0].double().numpy()
    root_rot = scene.pose_aa[0, 0].double()
    human_R = torch.linalg.matrix_exp(
        torch.tensor([[0, -root_rot[2], root_rot[1]], [root_rot[2], 0, -root_rot[0]], [-root_rot[1], root_rot[0], 0]])
    ).numpy()
    config = RenderConfig(
        obj_R=obj0[:3, :3],
        obj_t=obj0[:3, 3],
        obj_scale=1.0,
        cam_R=cam_to_world[:3, :3] @ BLENDER_TO_OPENCV,
        cam_t=cam_to_world[:3, 3],
        frame_height=scene.config.height,
        frame_width=scene.config.width,
        focal_length=float(scene.K[0, 0]),
        human_R=human_R,
        human_t=scene.trans[0].double().numpy(),
        scene_data=list(scene_data or []),
    )
    # Round trip: the Blender-convention camera must give back the OpenCV extrinsics we rendered with.
    if not np.allclose(config.world_to_cam(), scene.world_to_cam[0], atol=1e-9):
        raise AssertionError("render config camera does not round-trip to the rendered world_to_cam")
    return config


def write_video_files(layout: Layout, vid: VideoId, scene: Scene, rendered: RenderedScene) -> GroundTruth:
    out = rendered.output
    frames = (out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    write_video(layout.video(vid), frames, scene.config.fps)
    instance0 = out.instance[0].cpu().numpy()
    write_png(layout.first_object_mask(vid), np.where(instance0 == OBJECT_ID, 255, 0).astype(np.uint8))
    write_png(layout.first_human_mask(vid), np.where(instance0 == HUMAN_ID, 255, 0).astype(np.uint8))
    write_png(layout.depth_gt(vid), depth_to_mm(out.depth[0].double().cpu().numpy()))
    save_cam_k(layout.cam_k(vid), scene.K)
    table_path, table = write_table_mesh(scene, layout.scene_mesh(vid, "table"))
    config_dir = layout.render_config(vid).parent
    scene_data = [{**table, "path": os.path.relpath(table_path, config_dir)}]
    save_render_config(layout.render_config(vid), render_config_for(scene, scene_data))
    fileio.write_json(
        layout.character_data(vid),
        {
            "body_model": "anny",
            "height_m": float(scene.height_m),
            "shape": scene.shape.double().tolist(),
            "pose_aa": scene.pose_aa[0].double().tolist(),
            "trans": scene.trans[0].double().tolist(),
        },
    )
    mesh_path = objects.write_obj(scene.object_spec, layout.own_mesh(vid))

    w2c = torch.as_tensor(scene.world_to_cam, dtype=torch.float64)
    kp_world = scene.keypoints_world.double()
    kp_cam = kp_world @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
    obj_world = scene.object_poses_world.double()
    gt = GroundTruth(
        fps=scene.config.fps,
        K=scene.K,
        image_size=(scene.config.height, scene.config.width),
        world_to_cam=scene.world_to_cam,
        body_model="anny",
        pose_aa=scene.pose_aa.double().numpy(),
        shape=scene.shape.double().numpy(),
        trans=scene.trans.double().numpy(),
        height_m=float(scene.height_m),
        keypoints_3d_world=kp_world.numpy(),
        keypoints_3d_cam=kp_cam.numpy(),
        object_poses_world=obj_world.numpy(),
        object_poses_cam=(w2c @ obj_world).numpy(),
        contact=scene.contact,
        object_mesh_path=mesh_path,
        object_visibility=rendered.object_visibility,
        variant=scene.config.variant,
        category=scene.config.category,
        seed=scene.config.seed,
        extra={
            "ik": scene.ik_report,
            "scene_data": [{**table, "path": os.path.relpath(table_path, layout.ground_truth(vid).parent)}],
            "object_symmetry_axis": (
                list(scene.object_spec.symmetry_axis) if scene.object_spec.symmetry_axis is not None else None
            ),
        },
    )
    save_ground_truth(layout.ground_truth(vid), gt)
    return gt
