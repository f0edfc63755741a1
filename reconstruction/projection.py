"""Pinhole projection of camera-frame points, shared by every stage (OpenCV camera: x right, y down, z ahead)."""

from __future__ import annotations

import torch


def project(points_cam: torch.Tensor, K: torch.Tensor, min_depth: float = 1e-4) -> torch.Tensor:
    """Camera-frame points (..., 3) -> pixels (..., 2).

    K is (3, 3), or (B..., 3, 3) whose batch dims are the leading dims of ``points_cam`` (..., N, 3). Depth is
    clamped at ``min_depth``: a point behind the camera would flip to the other side of the image; clamped, it
    stays finite and far off screen, which is what the losses and trackers want."""
    while K.dim() - 2 < points_cam.dim() - 1:
        K = K.unsqueeze(-3)
    z = points_cam[..., 2].clamp_min(min_depth)
    u = points_cam[..., 0] / z * K[..., 0, 0] + K[..., 0, 2]
    v = points_cam[..., 1] / z * K[..., 1, 1] + K[..., 1, 2]
    return torch.stack([u, v], dim=-1)
