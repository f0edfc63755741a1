"""Reconstruction metrics against ground truth: small pure functions over numpy arrays.

Every function accepts numpy arrays or torch tensors (converted once at the edge) and returns plain
Python floats (or dicts of floats), so results go straight into ``metrics.json``. Units: metres,
degrees for rotation errors, frames for time (divide by fps yourself where seconds are wanted).
Leading dimensions are frames unless a docstring says otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from reconstruction.projection import project

logger = logging.getLogger(__name__)


def as_numpy(x: Any) -> np.ndarray:
    """float64 numpy view of an array-like or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_same_shape(pred: np.ndarray, gt: np.ndarray, what: str) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{what}: prediction shape {pred.shape} != ground-truth shape {gt.shape}")


# ---- body and hands -------------------------------------------------------------------------------
def mpjpe(pred_joints: Any, gt_joints: Any) -> float:
    """Mean per-joint position error (m) over (..., J, 3) joints, no alignment."""
    pred, gt = as_numpy(pred_joints), as_numpy(gt_joints)
    _check_same_shape(pred, gt, "mpjpe")
    return float(np.linalg.norm(pred - gt, axis=-1).mean())


def procrustes_align(source: Any, target: Any) -> np.ndarray:
    """Similarity-align ``source`` (..., J, 3) to ``target``: s R x + t per leading index (Umeyama)."""
    src, tgt = as_numpy(source), as_numpy(target)
    _check_same_shape(src, tgt, "procrustes_align")
    mu_src = src.mean(axis=-2, keepdims=True)
    mu_tgt = tgt.mean(axis=-2, keepdims=True)
    x, y = src - mu_src, tgt - mu_tgt
    var_src = (x**2).sum(axis=(-2, -1))
    cov = np.swapaxes(x, -1, -2) @ y  # (..., 3, 3) = sum_j x_j y_j^T
    u, sing, vt = np.linalg.svd(cov)
    # Reflection guard: flip the smallest singular direction when det(V U^T) < 0.
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    d = np.where(d == 0, 1.0, d)
    diag = np.ones(sing.shape)
    diag[..., -1] = d
    rot = np.swapaxes(vt, -1, -2) @ (diag[..., :, None] * np.swapaxes(u, -1, -2))  # (..., 3, 3)
    scale = (sing * diag).sum(axis=-1) / np.maximum(var_src, 1e-12)
    aligned = scale[..., None, None] * (x @ np.swapaxes(rot, -1, -2)) + mu_tgt
    return aligned


def pa_mpjpe(pred_joints: Any, gt_joints: Any) -> float:
    """MPJPE (m) after per-frame Procrustes alignment with scale of prediction to ground truth."""
    pred, gt = as_numpy(pred_joints), as_numpy(gt_joints)
    _check_same_shape(pred, gt, "pa_mpjpe")
    return mpjpe(procrustes_align(pred, gt), gt)


def hand_joint_error(pred_hand: Any, gt_hand: Any, wrist_relative: bool = False) -> float:
    """Mean hand-joint error (m) over (..., 21, 3) hand keypoints (MediaPipe order, wrist = 0).

    ``wrist_relative`` subtracts each hand's wrist first, measuring articulation only.
    """
    pred, gt = as_numpy(pred_hand), as_numpy(gt_hand)
    _check_same_shape(pred, gt, "hand_joint_error")
    if wrist_relative:
        pred = pred - pred[..., :1, :]
        gt = gt - gt[..., :1, :]
    return mpjpe(pred, gt)


# ---- object pose ------------------------------------------------------------------------------
def rotation_error_deg(pred_rot: Any, gt_rot: Any) -> np.ndarray:
    """Geodesic angle (deg) between rotations (..., 3, 3); symmetric: err(A, B) == err(B, A)."""
    a, b = as_numpy(pred_rot), as_numpy(gt_rot)
    _check_same_shape(a, b, "rotation_error_deg")
    # Relative rotation M = A^T B: cos from its trace, sin from its skew part; atan2 stays accurate near
    # 0 and 180 deg (arccos alone loses ~1e-2 deg to rounding). Swapping A and B transposes M: same angle.
    rel = np.swapaxes(a, -1, -2) @ b
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    skew = np.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]], -1
    )
    sin = np.linalg.norm(skew, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def symmetric_rotation_error_deg(pred_rot: Any, gt_rot: Any, symmetry_axis: Any) -> np.ndarray:
    """Rotation error (deg) of an object with a continuous rotational symmetry about ``symmetry_axis``
    (model frame): the angle between the axis as each rotation places it, i.e. the geodesic error minimised
    over all turns about the axis (turns that change no pixel do not count)."""
    a, b = as_numpy(pred_rot), as_numpy(gt_rot)
    _check_same_shape(a, b, "symmetric_rotation_error_deg")
    axis = np.asarray(symmetry_axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    pred_axis, gt_axis = a @ axis, b @ axis
    cos = (pred_axis * gt_axis).sum(-1)
    sin = np.linalg.norm(np.cross(pred_axis, gt_axis), axis=-1)
    return np.degrees(np.arctan2(sin, cos))


def object_rotation_errors(pred_poses: Any, gt_poses: Any, symmetry_axis: Any = None) -> np.ndarray:
    """Per-frame rotation error (deg) of (T,4,4) or (T,3,3) object poses; modulo the object's continuous
    rotational symmetry when ``symmetry_axis`` (model frame) is given."""
    pred, gt = as_numpy(pred_poses), as_numpy(gt_poses)
    if symmetry_axis is not None:
        return symmetric_rotation_error_deg(pred[..., :3, :3], gt[..., :3, :3], symmetry_axis)
    return rotation_error_deg(pred[..., :3, :3], gt[..., :3, :3])


def object_rotation_error(pred_poses: Any, gt_poses: Any, symmetry_axis: Any = None) -> float:
    """Mean over frames of ``object_rotation_errors`` (deg)."""
    return float(object_rotation_errors(pred_poses, gt_poses, symmetry_axis).mean())


def object_translation_errors(pred_poses: Any, gt_poses: Any) -> np.ndarray:
    """Per-frame translation error (m) of (T,4,4) poses or (T,3) translations."""
    pred, gt = as_numpy(pred_poses), as_numpy(gt_poses)
    _check_same_shape(pred, gt, "object_translation_error")
    if pred.shape[-2:] == (4, 4):
        pred, gt = pred[..., :3, 3], gt[..., :3, 3]
    return np.linalg.norm(pred - gt, axis=-1)


def object_translation_error(pred_poses: Any, gt_poses: Any) -> float:
    """Mean over frames of ``object_translation_errors`` (m)."""
    return float(object_translation_errors(pred_poses, gt_poses).mean())


def _transform_points(poses: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ np.swapaxes(poses[..., :3, :3], -1, -2) + poses[..., None, :3, 3]


def add_s(pred_poses: Any, gt_poses: Any, model_points: Any, chunk: int = 2048) -> float:
    """ADD-S (m): mean over frames and model points of the distance from each ground-truth-posed point
    to the closest prediction-posed point (symmetry-aware). ``model_points`` (N,3) in the mesh frame."""
    pred, gt, pts = as_numpy(pred_poses), as_numpy(gt_poses), as_numpy(model_points)
    _check_same_shape(pred, gt, "add_s")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    pred_pts = torch.from_numpy(_transform_points(pred, pts))  # (T, N, 3)
    gt_pts = torch.from_numpy(_transform_points(gt, pts))
    # a few frames at a time keeps the (frames, N, N) distances within memory; the direct difference, not the
    # matrix-product shortcut, so that identical poses score exactly 0
    step = max(1, chunk * chunk // max(1, pts.shape[0] ** 2))
    exact = "donot_use_mm_for_euclid_dist"
    closest = torch.cat(
        [
            torch.cdist(gt_pts[i : i + step], pred_pts[i : i + step], compute_mode=exact).amin(-1)
            for i in range(0, gt_pts.shape[0], step)
        ]
    )
    return float(closest.mean())


def add(pred_poses: Any, gt_poses: Any, model_points: Any) -> float:
    """ADD (m): mean distance between corresponding model points under the two poses."""
    pred, gt, pts = as_numpy(pred_poses), as_numpy(gt_poses), as_numpy(model_points)
    _check_same_shape(pred, gt, "add")
    return float(np.linalg.norm(_transform_points(pred, pts) - _transform_points(gt, pts), axis=-1).mean())


# ---- contact ------------------------------------------------------------------------------------
HAND_NAMES = ("left", "right")


def contact_scores(pred_contact: Any, gt_contact: Any) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 of per-frame contact labels, per hand, from boolean (T,2) arrays
    (column 0 left hand, 1 right hand).

    Conventions for empty sets: no predicted contact -> precision 1 (nothing wrong was claimed);
    no true contact -> recall 1 (nothing was missed); F1 is the harmonic mean (0 when both are 0).
    """
    pred = np.asarray(as_numpy(pred_contact) > 0.5)
    gt = np.asarray(as_numpy(gt_contact) > 0.5)
    _check_same_shape(pred, gt, "contact_scores")
    if pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"contact_scores: expected (T,2) arrays, got {pred.shape}")
    out: dict[str, dict[str, float]] = {}
    for column, hand in enumerate(HAND_NAMES):
        p, g = pred[:, column], gt[:, column]
        tp = int((p & g).sum())
        fp = int((p & ~g).sum())
        fn = int((~p & g).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[hand] = {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
    return out


# ---- physical plausibility ----------------------------------------------------------------------
def penetration_depth(signed_distances: Any) -> dict[str, float]:
    """Penetration of points (e.g. body vertices) into a mesh, from signed distances (T,N) in metres,
    negative inside.

    Returns ``max`` (deepest point over all frames), ``mean`` (mean over frames of each frame's deepest
    point, 0 for frames without penetration) and ``ratio`` (fraction of frames with any penetration).
    """
    sd = as_numpy(signed_distances)
    if sd.ndim == 1:
        sd = sd[None]
    depth = np.clip(-sd, 0.0, None)
    per_frame = depth.max(axis=-1) if depth.shape[-1] else np.zeros(depth.shape[:-1])
    return {
        "max": float(per_frame.max()) if per_frame.size else 0.0,
        "mean": float(per_frame.mean()) if per_frame.size else 0.0,
        "ratio": float((per_frame > 0).mean()) if per_frame.size else 0.0,
    }


def foot_skating(
    foot_positions: Any,
    ground_height: float = 0.0,
    contact_height: float = 0.05,
    up_axis: int = 2,
    in_contact: Any | None = None,
) -> float:
    """Mean horizontal slide (m/frame) of feet that touch the ground in two consecutive frames.

    ``foot_positions`` (T,F,3) in a world frame whose ``up_axis`` is vertical. A foot is in contact
    when its height above ``ground_height`` is below ``contact_height``, unless ``in_contact`` (T,F)
    bool is given. Returns 0 when no foot is in contact in two consecutive frames.
    """
    feet = as_numpy(foot_positions)
    if feet.ndim != 3 or feet.shape[-1] != 3:
        raise ValueError(f"foot_skating: expected (T,F,3) positions, got {feet.shape}")
    if in_contact is None:
        contact = (feet[..., up_axis] - ground_height) < contact_height
    else:
        contact = np.asarray(as_numpy(in_contact) > 0.5)
    both = contact[1:] & contact[:-1]
    horizontal = [axis for axis in range(3) if axis != up_axis]
    step = feet[1:][..., horizontal] - feet[:-1][..., horizontal]
    slide = np.linalg.norm(step, axis=-1)
    return float(slide[both].mean()) if both.any() else 0.0


def acceleration(positions: Any) -> np.ndarray:
    """Second finite difference (T-2, ...) in units per frame^2."""
    x = as_numpy(positions)
    return x[2:] - 2.0 * x[1:-1] + x[:-2]


def acceleration_jitter(positions: Any) -> float:
    """Mean acceleration magnitude (m/frame^2) of (T,J,3) or (T,3) trajectories; 0 for T < 3."""
    x = as_numpy(positions)
    if x.shape[0] < 3:
        return 0.0
    return float(np.linalg.norm(acceleration(x), axis=-1).mean())


def acceleration_error(pred_positions: Any, gt_positions: Any) -> float:
    """Mean norm (m/frame^2) of the difference between predicted and true accelerations."""
    pred, gt = as_numpy(pred_positions), as_numpy(gt_positions)
    _check_same_shape(pred, gt, "acceleration_error")
    if pred.shape[0] < 3:
        return 0.0
    return float(np.linalg.norm(acceleration(pred) - acceleration(gt), axis=-1).mean())


# ---- 2D: keypoints and masks ----------------------------------------------------------------------
def project_points(points_cam: Any, K: Any) -> np.ndarray:
    """Pinhole projection (..., 2) in pixels of OpenCV camera-frame points (..., 3) with intrinsics (3,3)."""
    pts, k = as_numpy(points_cam), as_numpy(K)
    z = pts[..., 2:3]
    if np.any(z <= 0):
        raise ValueError("project_points: points at or behind the camera (z <= 0)")
    return project(torch.as_tensor(pts, dtype=torch.float64), torch.as_tensor(k, dtype=torch.float64)).numpy()


def keypoint_2d_errors(pred_xy: Any, gt_xy: Any, visible: Any) -> np.ndarray:
    """Pixel distances of the visible keypoints: flat array over every (frame, joint) with ``visible``.

    ``pred_xy`` and ``gt_xy`` are (T,J,2) pixels (extra trailing columns such as a confidence are
    ignored), ``visible`` (T,J) bool.
    """
    pred, gt = as_numpy(pred_xy)[..., :2], as_numpy(gt_xy)[..., :2]
    _check_same_shape(pred, gt, "keypoint_2d_errors")
    mask = np.asarray(visible, dtype=bool)
    if mask.shape != pred.shape[:-1]:
        raise ValueError(f"keypoint_2d_errors: visibility {mask.shape} != keypoints {pred.shape[:-1]}")
    return np.linalg.norm(pred - gt, axis=-1)[mask]


def mask_iou(pred_masks: Any, gt_masks: Any) -> np.ndarray:
    """Per-frame intersection over union of boolean masks (T,H,W); NaN where both masks are empty."""
    pred, gt = np.asarray(pred_masks, dtype=bool), np.asarray(gt_masks, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask_iou: prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    flat_pred, flat_gt = pred.reshape(len(pred), -1), gt.reshape(len(gt), -1)
    inter = (flat_pred & flat_gt).sum(1).astype(np.float64)
    union = (flat_pred | flat_gt).sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
