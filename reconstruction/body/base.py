"""The BodyModel seam: anny (default) and SMPL-X implement it.

Pose is local axis-angle per joint, joint 0 being the root orientation in world axes; ``trans`` is the world
position of the root joint (``joints[:, 0] == trans``). Z-up, metres; the zero pose stands upright facing -Y
with the person's left side at +X, for every model.
Everything is batched over frames (leading dimension T) and device-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class BodyOutput:
    vertices: torch.Tensor  # (T, V, 3) metres, in the frame the root translation lives in
    joints: torch.Tensor  # (T, J, 3) the model's own joints
    keypoints: torch.Tensor  # (T, 75, 3) reconstruction.keypoints.ALL_KEYPOINTS (MediaPipe order)


class BodyModel(Protocol):
    name: str  # "anny" | "smplx"
    joint_names: list[str]
    faces: torch.Tensor  # (F, 3) long
    num_shape: int  # length of the shape vector
    # vertex index tensors: "left_hand", "right_hand", "left_foot", "right_foot"
    vertex_segments: dict[str, torch.Tensor]
    # joint index lists of each hand's finger joints (the "hand pose" of hoi_data.pkl)
    left_hand_joints: list[int]
    right_hand_joints: list[int]
    parents: list[int]  # parent joint index per joint (-1 for the root, joint 0)
    num_vertices: int
    device: torch.device

    def joint_index(self, name: str) -> int:
        """Index of a joint by the model's own name (KeyError when unknown)."""
        ...

    def default_shape(self) -> torch.Tensor:
        """(S,) the model's average body."""
        ...

    def standing_height(self, shape: torch.Tensor) -> float:
        """max z - min z of the zero-pose mesh, metres."""
        ...

    def root_height_standing(self, shape: torch.Tensor) -> float:
        """Root height above the soles in the zero pose: trans.z that puts the feet on z = 0."""
        ...

    def keypoints_from(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """(T, 75, 3) MediaPipe-order keypoints from posed vertices and joints (what forward returns)."""
        ...

    def forward(
        self, pose_aa: torch.Tensor, shape: torch.Tensor, trans: torch.Tensor, vertex_ids: torch.Tensor | None = None
    ) -> BodyOutput:
        """pose_aa (T, J, 3), shape (T, S) or (S,), trans (T, 3) -> BodyOutput. With ``vertex_ids`` (N,),
        ``vertices`` holds only those vertices (T, N, 3); joints and keypoints are the same."""
        ...

    def bind(
        self, shape: torch.Tensor, vertex_ids: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor], BodyOutput]:
        """``forward`` with the shape (S,) and vertex subset fixed: checks and shape-dependent work are done
        once here, so the returned ``pose(pose_aa, trans)`` never synchronises with the device (an
        optimiser iteration built on it can be captured in a CUDA graph)."""
        ...

    def rest_pose(self, num_frames: int = 1) -> torch.Tensor:
        """(T, J, 3) zeros-equivalent pose (standing, arms as the model rests)."""
        ...

    def shape_for_height(self, height_m: float) -> torch.Tensor:
        """A shape vector whose standing height is ``height_m``."""
        ...

    def to(self, device: str | torch.device) -> BodyModel: ...


class StandingHeightMixin:
    """Height helpers derived from a model's ``standing_extent(shape) -> (min z, max z)`` in the zero pose."""

    def standing_extent(self, shape: torch.Tensor) -> tuple[float, float]:
        raise NotImplementedError

    def standing_height(self, shape: torch.Tensor) -> float:
        """Standing height (max z - min z of the zero-pose mesh), metres."""
        low, high = self.standing_extent(shape)
        return high - low

    def root_height_standing(self, shape: torch.Tensor) -> float:
        """Height of the root above the soles in the zero pose: ``trans.z`` that puts the feet on z = 0."""
        return -self.standing_extent(shape)[0]
