"""The BodyModel seam: anny (default) and SMPL-X implement it.

Pose is local axis-angle per joint, joint 0 being the root orientation; translation is added to the root.
Everything is batched over frames (leading dimension T) and device-agnostic.
"""

from __future__ import annotations

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

    def forward(self, pose_aa: torch.Tensor, shape: torch.Tensor, trans: torch.Tensor) -> BodyOutput:
        """pose_aa (T, J, 3), shape (T, S) or (S,), trans (T, 3) -> BodyOutput."""
        ...

    def rest_pose(self, num_frames: int = 1) -> torch.Tensor:
        """(T, J, 3) zeros-equivalent pose (standing, arms as the model rests)."""
        ...

    def shape_for_height(self, height_m: float) -> torch.Tensor:
        """A shape vector whose standing height is ``height_m``."""
        ...

    def to(self, device: str | torch.device) -> BodyModel: ...
