"""Image evidence that pins the object's pose without tracking: rest segments and the support plane.

A hand-held object is still for part of most clips: before the hand picks it up its pose is the given
frame-0 pose, and after it is put down it rests on the surface it came from. Tracking through those
frames only adds drift. This module finds them from the pixels alone:

- ``unchanged_frames``: per frame, whether the object's outline band (a few pixels either side of a
  reference mask's outline, minus the human mask of that frame) still looks like the reference frame.
  An object that moved by a pixel or two changes that band; one hidden by the hand is judged on what
  stays visible, and with too little visible there is no verdict.
- ``static_prefix`` / ``rest_suffix``: the leading frames unchanged against frame 0 and the trailing
  frames unchanged against the last frame.
- ``fit_support_plane``: the plane under the object at frame 0 (RANSAC on the first-frame depth around
  the object, kept only if the object touches it), so a resting pose later has 3 degrees of freedom
  (slide and turn on the plane) instead of 6, and its depth comes from the plane, not silhouette scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AnchorConfig:
    colour_threshold: float = 8.0  # Lab distance above which a pixel counts as changed
    changed_max: float = 0.25  # a frame whose object pixels changed more than this has moved
    visible_min: float = 0.25  # fewer visible reference pixels than this fraction: no verdict
    ring_px: int = 2  # half width of the outline band that is compared
    human_margin_px: int = 2  # human-mask edges bleed colour (video compression): skip them
    plane_band_frac: float = 1.0  # plane points come from this many object sizes around the object
    plane_inlier_m: float = 0.01
    plane_touch_m: float = 0.02  # the object's lowest point must be this close to the plane
    plane_iterations: int = 300
    seed: int = 0


def _disk(radius: int) -> np.ndarray:
    size = 2 * max(radius, 0) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def rgb_to_lab(frames: np.ndarray) -> np.ndarray:
    """uint8 (T,H,W,3) RGB -> float32 Lab, one OpenCV call for all frames."""
    shape = frames.shape
    flat = frames.reshape(-1, shape[-2], 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(shape)


def unchanged_frames(
    lab: np.ndarray, reference: int, reference_mask: np.ndarray, human_masks: np.ndarray, config: AnchorConfig
) -> np.ndarray:
    """(T,) int8 verdicts against frame ``reference``: 1 unchanged, 0 moved, -1 too little visible."""
    # The outline band, both sides: a move of a pixel or two changes it wherever the object goes, even
    # for a uniformly coloured object whose interior looks the same after the move.
    mask = reference_mask.astype(np.uint8)
    region = cv2.dilate(mask, _disk(config.ring_px)).astype(bool) & ~cv2.erode(mask, _disk(config.ring_px)).astype(bool)
    if not region.any():
        return np.full(len(lab), -1, dtype=np.int8)
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop_region = region[y0:y1, x0:x1]
    human = human_masks[:, y0:y1, x0:x1].astype(np.uint8)
    margin = _disk(config.human_margin_px)
    hidden = np.stack([cv2.dilate(h, margin) for h in human]).astype(bool)
    visible = crop_region[None] & ~hidden  # (T,h,w)
    difference = np.linalg.norm(lab[:, y0:y1, x0:x1] - lab[reference, y0:y1, x0:x1][None], axis=-1)
    changed = (difference > config.colour_threshold) & visible
    count = visible.reshape(len(lab), -1).sum(1)
    fraction = changed.reshape(len(lab), -1).sum(1) / np.maximum(count, 1)
    verdict = np.where(fraction <= config.changed_max, 1, 0).astype(np.int8)
    verdict[count < config.visible_min * crop_region.sum()] = -1
    return verdict


def _run_length(verdicts: np.ndarray) -> int:
    """Leading frames judged unchanged (>= 1): a frame with no verdict ends the run too, since a hand
    covering the object is also the hand that is about to move it."""
    ends = np.flatnonzero(verdicts != 1)
    return max(int(ends[0]) if len(ends) else len(verdicts), 1)


def static_prefix(
    lab: np.ndarray, first_mask: np.ndarray, human_masks: np.ndarray, config: AnchorConfig = AnchorConfig()
) -> int:
    """Number of leading frames in which the object is where it was at frame 0 (>= 1)."""
    return _run_length(unchanged_frames(lab, 0, first_mask, human_masks, config))


def rest_suffix(
    lab: np.ndarray, last_mask: np.ndarray, human_masks: np.ndarray, config: AnchorConfig = AnchorConfig()
) -> int:
    """Number of trailing frames in which the object is where it is at the last frame (0: not visible)."""
    if not last_mask.any():
        return 0
    verdicts = unchanged_frames(lab, len(lab) - 1, last_mask, human_masks, config)
    return _run_length(verdicts[::-1])


@dataclass(frozen=True)
class SupportPlane:
    """Plane n.x + offset = 0 in the camera frame, n pointing to the object's side (unit)."""

    normal: np.ndarray
    offset: float
    inliers: int

    def height(self, points: np.ndarray) -> np.ndarray:
        return points @ self.normal + self.offset


def backproject(depth: np.ndarray, K: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N,3) camera points of the pixels of ``mask`` with known depth (pixel centres)."""
    ys, xs = np.nonzero(mask & (depth > 0))
    z = depth[ys, xs].astype(np.float64)
    x = (xs + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (ys + 0.5 - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], axis=1)


def fit_support_plane(
    depth: np.ndarray,
    K: np.ndarray,
    object_mask: np.ndarray,
    human_mask: np.ndarray,
    object_points_cam: np.ndarray,
    config: AnchorConfig = AnchorConfig(),
) -> SupportPlane | None:
    """The surface the object stands on at frame 0, from the first-frame depth around it; None if no
    plane near the object has the whole object on one side and touching it."""
    ys, xs = np.nonzero(object_mask)
    if len(ys) == 0:
        return None
    size = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    band = cv2.dilate(object_mask.astype(np.uint8), _disk(int(config.plane_band_frac * size) + 2)).astype(bool)
    near = cv2.dilate((object_mask | human_mask).astype(np.uint8), _disk(2)).astype(bool)
    points = backproject(depth, K, band & ~near)
    if len(points) < 30:
        return None
    extent = np.linalg.norm(object_points_cam.max(0) - object_points_cam.min(0))
    centre = object_points_cam.mean(0)
    points = points[np.linalg.norm(points - centre, axis=1) < 2.0 * extent]
    if len(points) < 30:
        return None
    rng = np.random.default_rng(config.seed)
    triples = rng.integers(0, len(points), size=(config.plane_iterations, 3))
    a, b, c = points[triples[:, 0]], points[triples[:, 1]], points[triples[:, 2]]
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1)
    ok = lengths > 1e-9
    normals = normals[ok] / lengths[ok, None]
    offsets = -(normals * a[ok]).sum(1)
    # Orient every candidate towards the object, then keep those the object stands on.
    side = np.sign(normals @ centre + offsets)
    normals, offsets = normals * side[:, None], offsets * side
    lowest = (object_points_cam @ normals.T + offsets).min(0)  # (P,)
    touching = np.abs(lowest) < config.plane_touch_m
    if not touching.any():
        return None
    distances = np.abs(points @ normals[touching].T + offsets[touching])  # (N,P)
    scores = (distances < config.plane_inlier_m).sum(0)
    best = int(np.argmax(scores))
    inliers = points[distances[:, best] < config.plane_inlier_m]
    if len(inliers) < 20:
        return None
    # Least-squares refinement on the inliers (smallest singular vector of the centred points).
    mean = inliers.mean(0)
    normal = np.linalg.svd(inliers - mean, full_matrices=False)[2][-1]
    normal = normal if normal @ (centre - mean) > 0 else -normal
    plane = SupportPlane(normal=normal, offset=float(-normal @ mean), inliers=len(inliers))
    if abs(plane.height(object_points_cam).min()) > config.plane_touch_m:
        return None
    return plane
