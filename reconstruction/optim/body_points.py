"""Posed body points for the optimiser: only the vertices the losses look at, plus joints and keypoints.

The loss terms need ~1,000 of anny's 13,718 vertices (hand patches, a sparse body cover). The body
models skin just those when asked (``forward(..., vertex_ids=...)``), several times cheaper than the
full mesh forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PosedPoints:
    points: torch.Tensor  # (N, V', 3) the requested vertices, in the order asked for
    joints: torch.Tensor  # (N, J, 3)
    keypoints: torch.Tensor  # (N, 75, 3)


class PointBody:
    """Pose a fixed subset of a body model's vertices, batched over N poses of one shape."""

    def __init__(self, body, vertex_ids: torch.Tensor, shape: torch.Tensor):
        """``shape`` (S,) is fixed: the body model does its shape-dependent work once (``BodyModel.bind``),
        so posing never synchronises with the device."""
        self.vertex_ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=body.faces.device)
        self._pose = body.bind(shape, self.vertex_ids)

    def __call__(self, pose_aa: torch.Tensor, trans: torch.Tensor) -> PosedPoints:
        """pose_aa (N, J, 3), trans (N, 3)."""
        out = self._pose(pose_aa, trans)
        return PosedPoints(out.vertices, out.joints, out.keypoints)
