"""Scene helpers for the renderer: cameras (look-at, orthographic top view), ground plane, primitives."""

from __future__ import annotations

import math

import numpy as np
import torch


def look_at_world_to_cam(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4,4) world -> OpenCV camera (x right, y down, z towards ``target``) for a camera at ``eye``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking along ``up``: any right vector perpendicular will do
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward])
    pose[:3, 3] = -pose[:3, :3] @ eye
    return pose


def top_view_camera(
    center_xy, extent_m: float, image_size: tuple[int, int], height_m: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic camera looking straight down (-Z) at ``center_xy``; world +Y is image up.

    Returns (K, world_to_cam) for ``render(..., orthographic=True)``; ``extent_m`` metres fit the
    shorter image side.
    """
    h, w = image_size
    pixels_per_m = min(h, w) / extent_m
    K = np.array([[pixels_per_m, 0, w / 2.0], [0, pixels_per_m, h / 2.0], [0, 0, 1.0]])
    pose = np.eye(4)
    # camera x = world x, camera y (down in image) = world -y, camera z (forward) = world -z.
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    eye = np.array([center_xy[0], center_xy[1], height_m])
    pose[:3, 3] = -pose[:3, :3] @ eye
    return K, pose


def project_points(points_world, K, world_to_cam, orthographic: bool = False) -> np.ndarray:
    """(N,3) world points -> (N,3): pixel x, pixel y, camera z. Perspective points behind get z <= 0."""
    points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    if orthographic:
        uv = cam[:, :2] * np.diag(K)[:2] + K[:2, 2]
    else:
        z = np.where(np.abs(cam[:, 2]) < 1e-9, 1e-9, cam[:, 2])
        uv = cam[:, :2] / z[:, None] * np.diag(K)[:2] + K[:2, 2]
    return np.concatenate([uv, cam[:, 2:3]], axis=1)


def ground_plane(
    size: float = 10.0,
    cells: int = 10,
    center=(0.0, 0.0),
    height: float = 0.0,
    colors=((0.62, 0.62, 0.6), (0.48, 0.48, 0.47)),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checkerboard on z=height: (vertices (4*cells^2,3), faces (2*cells^2,3), colors) with crisp squares."""
    step = size / cells
    ij = torch.stack(torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij"), -1).reshape(-1, 2)
    corners = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]])
    xy = (ij[:, None, :] + corners[None]).reshape(-1, 2).float() * step - size / 2
    xy = xy + torch.tensor(center, dtype=torch.float32)
    vertices = torch.cat([xy, torch.full((xy.shape[0], 1), float(height))], 1)
    base = torch.arange(ij.shape[0])[:, None] * 4
    faces = torch.cat([base + torch.tensor([0, 1, 2]), base + torch.tensor([0, 2, 3])], 0)
    parity = ((ij[:, 0] + ij[:, 1]) % 2).repeat_interleave(4)
    palette = torch.tensor(colors, dtype=torch.float32)
    return vertices, faces.long(), palette[parity]


def uv_sphere(radius: float, rings: int = 16, segments: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed UV sphere: 2*segments*(rings-1) triangles."""
    theta = torch.linspace(0, math.pi, rings + 1)[1:-1]
    phi = torch.arange(segments) * (2 * math.pi / segments)
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    ring_vertices = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1).reshape(-1, 3)
    vertices = torch.cat([torch.tensor([[0.0, 0, 1]]), ring_vertices, torch.tensor([[0.0, 0, -1]])]) * radius
    faces = []
    top, bottom = 0, vertices.shape[0] - 1
    for s in range(segments):
        s2 = (s + 1) % segments
        faces.append([top, 1 + s2, 1 + s])
        last = 1 + (rings - 2) * segments
        faces.append([bottom, last + s, last + s2])
        for r in range(rings - 2):
            a, b = 1 + r * segments + s, 1 + r * segments + s2
            c, d = a + segments, b + segments
            faces += [[a, b, d], [a, d, c]]
    return vertices, torch.tensor(faces, dtype=torch.long)


def is_closed_outward(vertices, faces) -> bool:
    """True for a watertight, consistently wound mesh with outward normals (safe to cull back faces)."""
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces), process=False)
    return bool(mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0)
