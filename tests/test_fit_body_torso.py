"""Stage-1 fit: elbows and wrists seen over the torso are kept on the camera's side of it (no model, no video)."""

from __future__ import annotations

import torch

from reconstruction.keypoints import index
from reconstruction.stages.fit_body import (
    LIMB_POINTS,
    FitSettings,
    TorsoExtent,
    keypoint_weights,
    over_torso_2d,
    torso_extent,
    torso_frame,
    torso_penetration,
)

FRONT, BACK = 0.12, -0.10
EXTENT = TorsoExtent(front=FRONT, back=BACK)


def _torso(facing_camera: bool = True) -> torch.Tensor:
    """(1,75,3) camera-frame keypoints of an upright torso 3 m in front of the camera (y down)."""
    points = torch.zeros(1, 75, 3)
    points[..., 2] = 3.0
    side = 0.18 if facing_camera else -0.18  # the person's left is the camera's +x when facing it
    for name, (x, y) in {
        "left_shoulder": (side, -0.25),
        "right_shoulder": (-side, -0.25),
        "left_hip": (side * 0.6, 0.25),
        "right_hip": (-side * 0.6, 0.25),
    }.items():
        points[0, index(name)] = torch.tensor([x, y, 3.0])
    return points


def _with_limbs(points: torch.Tensor, depth_offset: float) -> torch.Tensor:
    """Elbows and wrists on the torso's centre line, ``depth_offset`` m towards the camera from its centre."""
    points = points.clone()
    for k, i in enumerate(LIMB_POINTS):
        points[0, i] = torch.tensor([0.02 * (k - 1.5), 0.0, 3.0 - depth_offset])
    return points


def _project(points: torch.Tensor) -> torch.Tensor:
    keypoints = torch.zeros(points.shape[0], 75, 3)
    keypoints[..., :2] = 500.0 * points[..., :2] / points[..., 2:3] + torch.tensor([320.0, 240.0])
    keypoints[..., 2] = 0.9
    return keypoints


def test_torso_frame_faces_the_camera():
    _, left, up, forward, half_width, half_height = torso_frame(_torso())
    assert torch.allclose(forward[0], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)
    assert torch.allclose(up[0], torch.tensor([0.0, -1.0, 0.0]), atol=1e-5)
    assert torch.allclose(left[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    assert abs(float(half_width[0]) - 0.18) < 1e-5 and abs(float(half_height[0]) - 0.25) < 1e-5


def test_limbs_drawn_over_the_torso_are_flagged():
    keypoints = _project(_with_limbs(_torso(), 0.3))
    weights = keypoint_weights(keypoints, FitSettings())
    assert (over_torso_2d(keypoints, weights) > 0.95).all()
    # Beside the torso in the image, or not detected: no constraint.
    aside = keypoints.clone()
    aside[0, LIMB_POINTS, 0] += 200.0
    assert (over_torso_2d(aside, keypoint_weights(aside, FitSettings())) < 0.01).all()
    unseen = keypoints.clone()
    unseen[0, LIMB_POINTS, 2] = 0.0
    assert (over_torso_2d(unseen, keypoint_weights(unseen, FitSettings())) == 0).all()


def test_penetration_pushes_towards_the_seen_face():
    over = torch.ones(1, len(LIMB_POINTS))
    in_front = _with_limbs(_torso(), FRONT + 0.1)
    inside = _with_limbs(_torso(), 0.0)
    assert float(torso_penetration(in_front, EXTENT, over)[0]) == 0.0
    penalty = float(torso_penetration(inside, EXTENT, over)[0])
    expected = 2 * (FRONT + 0.04) ** 2 + 2 * (FRONT + 0.03) ** 2  # elbows and wrists, each grown by its radius
    assert abs(penalty - expected) < 1e-5
    # Back to the camera: the camera sees the back, so a point between the camera and the back is fine and a
    # point at the chest (far side) is hidden.
    away = _torso(facing_camera=False)
    assert float(torso_penetration(_with_limbs(away, -BACK + 0.1), EXTENT, over)[0]) == 0.0
    assert float(torso_penetration(_with_limbs(away, -FRONT), EXTENT, over)[0]) > 0.0
    # Not seen over the torso: nothing.
    assert float(torso_penetration(inside, EXTENT, torch.zeros_like(over))[0]) == 0.0


def test_torso_extent_measures_the_central_column():
    keypoints = _torso()[0]
    grid = torch.stack(
        torch.meshgrid(torch.linspace(-0.1, 0.1, 5), torch.linspace(-0.2, 0.2, 5), indexing="ij"), -1
    ).reshape(-1, 2)
    chest = torch.cat([grid, torch.full((len(grid), 1), 3.0 - FRONT)], 1)  # towards the camera
    back = torch.cat([grid, torch.full((len(grid), 1), 3.0 - BACK)], 1)
    arm = torch.tensor([[0.3, 0.0, 2.5]])  # outside the column: ignored
    extent = torso_extent(torch.cat([chest, back, arm]), keypoints)
    assert abs(extent.front - FRONT) < 1e-5 and abs(extent.back - BACK) < 1e-5
