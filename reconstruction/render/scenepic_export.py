"""Self-contained ScenePic page of a reconstruction: animated body and object, ground, camera, contacts.

The body is decimated by vertex clustering (on frame 0) so 120 frames stay a few MB: every cluster's
position per frame is the mean of its member vertices. The object is stored once and moved by a
per-frame transform. Contact and penetration points are instanced spheres per frame. The ScenePic
JavaScript library is embedded, so the page makes no external requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scenepic as sp
import torch

from reconstruction.fileio import atomic_path
from reconstruction.render.overlay import (
    BODY_COLOR,
    CONTACT_COLOR,
    OBJECT_FREE_COLOR,
    OBJECT_HELD_COLOR,
    PENETRATION_COLOR,
    camera_center_and_forward,
)

log = logging.getLogger(__name__)


@dataclass
class Decimation:
    cluster: torch.Tensor  # (V,) cluster index of each vertex
    faces: torch.Tensor  # (F',3) faces over clusters, degenerate ones dropped
    num_clusters: int

    def apply(self, vertices: torch.Tensor) -> torch.Tensor:
        """(T,V,3) -> (T,C,3) cluster means."""
        sums = torch.zeros(vertices.shape[0], self.num_clusters, 3, device=vertices.device)
        sums.index_add_(1, self.cluster, vertices)
        counts = torch.bincount(self.cluster, minlength=self.num_clusters).clamp(min=1)
        return sums / counts[None, :, None]


def cluster_decimate(vertices: torch.Tensor, faces: torch.Tensor, max_vertices: int = 3000) -> Decimation:
    """Vertex clustering on a grid whose cell grows until at most ``max_vertices`` clusters remain."""
    if vertices.shape[0] <= max_vertices:
        return Decimation(torch.arange(vertices.shape[0]), faces.clone(), int(vertices.shape[0]))
    extent = float((vertices.max(0).values - vertices.min(0).values).max())
    cell = extent / 200
    while True:
        cells = torch.floor((vertices - vertices.min(0).values) / cell).long()
        _, cluster = torch.unique(cells, dim=0, return_inverse=True)
        num_clusters = int(cluster.max()) + 1
        if num_clusters <= max_vertices:
            break
        cell *= 1.15
    new_faces = cluster[faces]
    keep = (
        (new_faces[:, 0] != new_faces[:, 1])
        & (new_faces[:, 1] != new_faces[:, 2])
        & (new_faces[:, 0] != new_faces[:, 2])
    )
    kept = new_faces[keep]
    # Drop duplicates but keep each survivor's original winding (normals stay outward).
    _, group = torch.unique(torch.sort(kept, dim=1).values, dim=0, return_inverse=True)
    first = torch.full((int(group.max()) + 1,), kept.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, group, torch.arange(kept.shape[0]), reduce="amin")
    new_faces = kept[first]
    return Decimation(cluster, new_faces, num_clusters)


def _color(rgb) -> sp.Color:
    return sp.Color(*[float(c) for c in rgb])


def export_scenepic(
    path: str | Path,
    body_vertices: torch.Tensor,
    body_faces: torch.Tensor,
    object_rest_vertices: torch.Tensor,
    object_faces: torch.Tensor,
    object_poses: np.ndarray,
    held: np.ndarray,
    contact_points: list[np.ndarray],
    penetration_points: list[np.ndarray],
    world_to_cam: np.ndarray,
    K: np.ndarray,
    image_size: tuple[int, int],
    fps: float,
    title: str = "hoiweb reconstruction",
    max_body_vertices: int = 2500,
    ground_z: float = 0.0,
) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    num_frames = body_vertices.shape[0]
    decimation = cluster_decimate(body_vertices[0].cpu(), body_faces.cpu(), max_body_vertices)
    body_low = decimation.apply(body_vertices.cpu()).numpy().astype(np.float32)
    faces_low = decimation.faces.numpy().astype(np.uint32)

    scene = sp.Scene()
    scene.framerate = float(fps)
    canvas = scene.create_canvas_3d(width=960, height=640, shading=sp.Shading(bg_color=sp.Colors.White))

    body = scene.create_mesh("body", shared_color=_color(BODY_COLOR), double_sided=True)
    body.add_mesh_without_normals(body_low[0], faces_low)

    obj_vertices = object_rest_vertices.cpu().numpy().astype(np.float32)
    obj_faces = object_faces.cpu().numpy().astype(np.uint32)
    obj_held = scene.create_mesh("object_held", shared_color=_color(OBJECT_HELD_COLOR), double_sided=True)
    obj_held.add_mesh_without_normals(obj_vertices, obj_faces)
    obj_free = scene.create_mesh("object_free", shared_color=_color(OBJECT_FREE_COLOR), double_sided=True)
    obj_free.add_mesh_without_normals(obj_vertices, obj_faces)

    # Ground: a grid of lines around the action, plus a light quad.
    center = np.concatenate([body_low[:, :, :2].reshape(-1, 2), object_poses[:, :2, 3]]).mean(0)
    cam_center, forward = camera_center_and_forward(world_to_cam)
    half = max(2.0, float(np.abs(np.r_[cam_center[:2] - center]).max()) + 0.5)
    ground = scene.create_mesh("ground", shared_color=sp.Color(0.85, 0.85, 0.82), double_sided=True)
    corners = np.array(
        [[center[0] - half, center[1] - half, ground_z], [center[0] + half, center[1] - half, ground_z],
         [center[0] + half, center[1] + half, ground_z], [center[0] - half, center[1] + half, ground_z]],
        np.float32,
    )  # fmt: skip
    ground.add_quad(p0=corners[0], p1=corners[1], p2=corners[2], p3=corners[3])
    grid = scene.create_mesh("grid", shared_color=sp.Color(0.45, 0.45, 0.45))
    ticks = np.arange(-half, half + 1e-6, 0.5)
    starts, ends = [], []
    for tick in ticks:
        starts += [
            [center[0] + tick, center[1] - half, ground_z + 0.002],
            [center[0] - half, center[1] + tick, ground_z + 0.002],
        ]
        ends += [
            [center[0] + tick, center[1] + half, ground_z + 0.002],
            [center[0] + half, center[1] + tick, ground_z + 0.002],
        ]
    grid.add_lines(np.array(starts, np.float32), np.array(ends, np.float32))

    # Input camera frustum from its intrinsics and pose.
    h, w = image_size
    # Frustum drawn as lines from the intrinsics (ScenePic's own helper adds unit-size axes).
    depth = 0.35
    pixel_corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64)
    corners_cam = (np.linalg.inv(K) @ pixel_corners.T).T * depth
    cam_to_world = np.linalg.inv(world_to_cam)
    corners_world = corners_cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    frustum = scene.create_mesh("camera", shared_color=sp.Color(0.9, 0.1, 0.8))
    starts = np.concatenate([np.repeat(cam_center[None], 4, 0), corners_world])
    ends = np.concatenate([corners_world, np.roll(corners_world, -1, axis=0)])
    frustum.add_lines(starts.astype(np.float32), ends.astype(np.float32))
    frustum.add_sphere(transform=sp.Transforms.translate(cam_center) @ sp.Transforms.scale(0.03))

    # Trajectory of the object centre (static line strip).
    trail = scene.create_mesh("object_trail", shared_color=_color(OBJECT_HELD_COLOR))
    centers = object_poses[:, :3, 3].astype(np.float32)
    if num_frames > 1:
        trail.add_lines(centers[:-1], centers[1:])

    # Initial viewpoint: the input camera's direction turned 40 degrees about the vertical, higher up,
    # so depth errors are visible at once and the frustum does not block the view.
    target = np.r_[center, ground_z + 0.9]
    offset = cam_center - target
    angle = np.radians(40.0)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    view_eye = target + turn @ offset * 1.6 + np.array([0.0, 0.0, 1.5])
    view_camera = sp.Camera(center=view_eye, look_at=target, up_dir=[0, 0, 1], fov_y_degrees=45)

    for index in range(num_frames):
        frame = canvas.create_frame(camera=view_camera if index == 0 else None)
        update = scene.update_mesh_positions("body", body_low[index])
        frame.add_mesh(update)
        frame.add_mesh(obj_held if held[index] else obj_free, transform=object_poses[index].astype(np.float64))
        for static in (ground, grid, frustum, trail):
            frame.add_mesh(static)
        for points, color, name in ((contact_points[index], CONTACT_COLOR, "contact"),
                                    (penetration_points[index], PENETRATION_COLOR, "penetration")):  # fmt: skip
            if len(points) == 0:
                continue
            marker = scene.create_mesh(f"{name}_{index}", shared_color=_color(color))
            marker.add_sphere(transform=sp.Transforms.scale(0.012))
            marker.enable_instancing(np.asarray(points, np.float32))
            frame.add_mesh(marker)
    scene.quantize_updates(relative_error_threshold=2e-4)
    with atomic_path(path) as tmp:
        scene.save_as_html(str(tmp), title=title)
    log.info("scenepic page %s: %d frames, body %d vertices, %.1f MB", path, num_frames, decimation.num_clusters,
             path.stat().st_size / 1e6)  # fmt: skip
    return path
