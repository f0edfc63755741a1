"""Stage-6 views: contact/penetration colouring, overlay on the input, side and top views, burnt-in text.

Every function works on whole frame batches; drawing with OpenCV (text, trails, grid) is per frame
because cv2 draws on one image at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from reconstruction.render.proximity import Proximity
from reconstruction.render.scene import look_at_world_to_cam, project_points, top_view_camera

log = logging.getLogger(__name__)

BODY_COLOR = (0.55, 0.72, 0.95)  # light blue: distinct from skin and from the contact colours
CONTACT_COLOR = (0.1, 0.95, 0.25)  # hand vertices touching the object
PENETRATION_COLOR = (1.0, 0.0, 0.0)  # body vertices inside the object
OBJECT_HELD_COLOR = (1.0, 0.78, 0.15)  # yellow-orange: never mistaken for penetration red
OBJECT_FREE_COLOR = (0.62, 0.55, 0.85)
OBJECT_TRAIL_RGB = (255, 150, 20)
BODY_TRAIL_RGB = (60, 140, 255)
CAMERA_RGB = (230, 30, 200)


def body_colors(proximity: Proximity, base=BODY_COLOR) -> torch.Tensor:
    """(T,V,3): base colour, contact hand vertices green, penetrating vertices red."""
    num_frames, num_vertices = proximity.penetrating.shape
    device = proximity.penetrating.device
    colors = torch.tensor(base, device=device).expand(num_frames, num_vertices, 3).clone()
    colors[proximity.hand_contact] = torch.tensor(CONTACT_COLOR, device=device)
    colors[proximity.penetrating] = torch.tensor(PENETRATION_COLOR, device=device)
    return colors


def object_colors(held: np.ndarray, num_vertices: int, device="cpu") -> torch.Tensor:
    """(T,Vo,3) per-frame object colour: orange while held, violet otherwise."""
    held_t = torch.as_tensor(np.asarray(held, bool), device=device)
    held_c = torch.tensor(OBJECT_HELD_COLOR, device=device)
    free_c = torch.tensor(OBJECT_FREE_COLOR, device=device)
    colors = torch.where(held_t[:, None], held_c, free_c)  # (T,3)
    return colors[:, None].expand(-1, num_vertices, 3)


def blend_over(frames: np.ndarray, rgb: torch.Tensor, mask: torch.Tensor, alpha: float = 0.65) -> np.ndarray:
    """Semi-transparent composite of a render over uint8 frames (T,H,W,3) where ``mask`` is set."""
    base = torch.from_numpy(frames).to(rgb.device).float() / 255.0
    mixed = torch.where(mask[..., None], alpha * rgb + (1.0 - alpha) * base, base)
    return (mixed * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def camera_center_and_forward(world_to_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R, t = world_to_cam[:3, :3], world_to_cam[:3, 3]
    return -R.T @ t, R[2]


def side_view_camera(world_to_cam: np.ndarray, scene_center: np.ndarray, min_distance: float = 3.0) -> np.ndarray:
    """A camera 90 degrees around the vertical from the input camera, looking at the scene centre.

    From there an error along the input camera's depth axis shows as a sideways offset.
    """
    cam_center, forward = camera_center_and_forward(world_to_cam)
    horizontal = np.array([forward[0], forward[1], 0.0])
    if np.linalg.norm(horizontal) < 1e-6:  # input looks straight down: any horizontal direction
        horizontal = np.array([1.0, 0.0, 0.0])
    horizontal /= np.linalg.norm(horizontal)
    side = np.cross(horizontal, [0.0, 0.0, 1.0])
    distance = max(min_distance, float(np.linalg.norm((scene_center - cam_center)[:2])))
    eye = scene_center + side * distance + np.array([0.0, 0.0, 0.4])
    return look_at_world_to_cam(eye, scene_center)


@dataclass
class TopView:
    K: np.ndarray
    world_to_cam: np.ndarray
    extent_m: float
    center_xy: np.ndarray


def top_view_for(points_xy: np.ndarray, image_size: tuple[int, int], margin_m: float = 0.8) -> TopView:
    """Orthographic top camera framing all ``points_xy`` (trajectories and the input camera)."""
    low, high = points_xy.min(0), points_xy.max(0)
    center = (low + high) / 2
    h, w = image_size
    span = np.maximum(high - low + 2 * margin_m, 2.0)
    # The shorter side gets ``extent``; make sure the longer image side covers the other span.
    extent = float(max(span[1], span[0] * h / w) if w >= h else max(span[0], span[1] * w / h))
    K, w2c = top_view_camera(center, extent, image_size)
    return TopView(K, w2c, extent, center)


def draw_top_view_overlay(
    frames: np.ndarray,
    view: TopView,
    frame_indices: np.ndarray,
    body_xy: np.ndarray,
    object_xy: np.ndarray,
    camera_world: np.ndarray,
    camera_forward: np.ndarray,
    grid_step_m: float = 1.0,
) -> np.ndarray:
    """Grid lines, the input camera and both trajectories' trails up to each frame (in place)."""
    h, w = frames.shape[1:3]

    def px(points: np.ndarray) -> np.ndarray:
        pts = np.c_[points[:, :2], np.zeros(len(points))]
        return np.round(project_points(pts, view.K, view.world_to_cam, orthographic=True)[:, :2]).astype(np.int32)

    half = view.extent_m * max(h, w) / min(h, w) / 2 + grid_step_m
    xs = (
        np.arange(
            np.floor((view.center_xy[0] - half) / grid_step_m), np.ceil((view.center_xy[0] + half) / grid_step_m) + 1
        )
        * grid_step_m
    )
    ys = (
        np.arange(
            np.floor((view.center_xy[1] - half) / grid_step_m), np.ceil((view.center_xy[1] + half) / grid_step_m) + 1
        )
        * grid_step_m
    )
    grid = np.zeros((h, w, 3), np.uint8)
    grid_mask = np.zeros((h, w), np.uint8)
    for x in xs:
        a, b = px(np.array([[x, ys[0]], [x, ys[-1]]]))
        cv2.line(grid_mask, tuple(a), tuple(b), 255, 1)
    for y in ys:
        a, b = px(np.array([[xs[0], y], [xs[-1], y]]))
        cv2.line(grid_mask, tuple(a), tuple(b), 255, 1)
    grid[grid_mask > 0] = (15, 15, 15)
    body_px, object_px = px(body_xy), px(object_xy)
    cam_px = px(camera_world[None, :2])[0]
    fwd = np.array([camera_forward[0], -camera_forward[1]])  # image y points to world -y
    fwd = fwd / (np.linalg.norm(fwd) + 1e-9)
    left = np.array([-fwd[1], fwd[0]])
    tri = np.array([cam_px + 14 * fwd, cam_px - 8 * fwd + 8 * left, cam_px - 8 * fwd - 8 * left], np.int32)
    for k, index in enumerate(frame_indices):
        image = frames[k]
        # Grid drawn under the meshes: only where the background (checker ground) shows is fine
        # for reading metres, so blend it everywhere lightly.
        sel = grid_mask > 0
        image[sel] = (0.6 * image[sel] + 0.4 * grid[sel]).astype(np.uint8)
        upto = index + 1
        if upto > 1:
            cv2.polylines(image, [body_px[:upto].reshape(-1, 1, 2)], False, BODY_TRAIL_RGB, 2, cv2.LINE_AA)
            cv2.polylines(image, [object_px[:upto].reshape(-1, 1, 2)], False, OBJECT_TRAIL_RGB, 2, cv2.LINE_AA)
        # Rings, not dots: the meshes themselves must stay visible at the current position.
        cv2.circle(image, tuple(body_px[index]), 9, BODY_TRAIL_RGB, 1, cv2.LINE_AA)
        cv2.circle(image, tuple(object_px[index]), 9, OBJECT_TRAIL_RGB, 1, cv2.LINE_AA)
        cv2.fillPoly(image, [tri], CAMERA_RGB, cv2.LINE_AA)
        scale = float(np.clip(0.4 * h / 480, 0.28, 0.7))
        put_lines(image, [f"top view, grid {grid_step_m:g} m"], origin=(8, h - int(50 * scale) - 6), scale=scale)
        put_lines(image, ["blue=body orange=object pink=camera"], origin=(8, h - 6), scale=scale)
    return frames


def put_lines(image: np.ndarray, lines: list[str], origin=(8, 20), scale: float | None = None) -> np.ndarray:
    """Burn text lines into an RGB uint8 image (white with a dark outline, readable on any background).

    ``scale`` defaults to the image height (0.5 at 480 rows); the origin is the first baseline.
    """
    if scale is None:
        scale = float(np.clip(0.5 * image.shape[0] / 480, 0.3, 0.9))
    x, y = origin
    step = max(10, int(44 * scale))
    for line in lines:
        cv2.putText(image, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        y += step
    return image


def contact_text(index: int, num_frames: int, touching: np.ndarray, held: bool, num_penetrating: int) -> list[str]:
    left = "contact" if touching[0] else "-"
    right = "contact" if touching[1] else "-"
    lines = [
        f"frame {index + 1}/{num_frames}",
        f"L hand: {left}  R hand: {right}",
        f"object: {'held' if held else 'free'}",
    ]
    if num_penetrating:
        lines.append(f"penetration: {num_penetrating} vertices")
    return lines


def draw_points(
    frames: np.ndarray,
    points: list[np.ndarray],
    K: np.ndarray,
    world_to_cam: np.ndarray,
    color_rgb: tuple[int, int, int],
    radius: int = 1,
    orthographic: bool = False,
) -> np.ndarray:
    """Mark world points per frame (in place). Penetrating vertices are hidden inside the object, so
    they are drawn on top of the render rather than shaded on the (occluded) body surface."""
    h, w = frames.shape[1:3]
    for image, pts in zip(frames, points, strict=True):
        if len(pts) == 0:
            continue
        uvz = project_points(pts, K, world_to_cam, orthographic=orthographic)
        keep = (uvz[:, 2] > 0) & (uvz[:, 0] >= 0) & (uvz[:, 0] < w) & (uvz[:, 1] >= 0) & (uvz[:, 1] < h)
        for u, v in np.round(uvz[keep, :2]).astype(int):
            cv2.circle(image, (int(u), int(v)), radius, color_rgb, -1)
    return frames
