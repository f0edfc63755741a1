"""Stage-1 fit: an arm held in front keeps that pose when the body turns (the anchored phase's turn carry)."""

from __future__ import annotations

import math

import pytest
import torch

from reconstruction import keypoints as kp
from reconstruction.keypoints import index
from reconstruction.stages.fit_body import FitSettings, anchored_prior, fit_body, view_turn
from tests.fit_scene import scene_keypoints

UP = torch.tensor([0.0, -1.0, 0.0])  # camera y points down


def _torso(frames: int) -> torch.Tensor:
    """(T,75,3) camera-frame keypoints of an upright torso 3 m in front of the camera, facing it."""
    points = torch.zeros(frames, 75, 3)
    points[..., 2] = 3.0
    for name, (x, y) in {
        "left_shoulder": (0.18, -0.25),
        "right_shoulder": (-0.18, -0.25),
        "left_hip": (0.11, 0.25),
        "right_hip": (-0.11, 0.25),
    }.items():
        points[:, index(name)] = torch.tensor([x, y, 3.0])
    return points


def _rotate(points: torch.Tensor, axis: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate (75,3) points by ``angle`` about ``axis`` through their torso centre."""
    import roma

    centre = points[[index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]].mean(0)
    rotation = roma.rotvec_to_rotmat(axis * angle)
    return (points - centre) @ rotation.T + centre


def test_view_turn_counts_turning_not_leaning():
    points = _torso(3)
    points[1] = _rotate(points[1], UP, math.radians(30))  # turns about the vertical
    points[2] = _rotate(points[2], torch.tensor([1.0, 0.0, 0.0]), math.radians(30))  # leans towards the camera
    turn = torch.rad2deg(view_turn(points, UP))
    assert float(turn[0]) == 0.0
    assert abs(float(turn[1]) - 30.0) < 0.5
    assert float(turn[2]) < 0.5


def test_turned_frames_carry_the_pose_from_before_the_turn():
    frames, columns = 10, {"left": [0], "right": [1]}
    residual = torch.arange(frames, dtype=torch.float32)[:, None, None].expand(frames, 3, 3).clone()
    over = torch.zeros(frames, 4)  # left elbow, right elbow, left wrist, right wrist
    turned = torch.zeros(frames, dtype=torch.bool)
    turned[5:8] = True  # turned in frames 5-7, back at 8
    # Nothing seen over the torso: without the turn no arm is anchored; with it the turned frames take the
    # fitted pose carried from frame 4 towards frame 8, the others keep frame 0's pose.
    assert anchored_prior(residual, over, columns, threshold=0.1) is None
    centre = anchored_prior(residual, over, columns, threshold=0.1, turned=turned)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 0.0, 0.0])
    assert torch.allclose(centre[:, 0, 0], expected) and torch.allclose(centre[:, 1, 0], expected)
    assert (centre[:, 2] == 0).all()  # not an arm joint
    # Turned to the end: held at the last frame before the turn. A frame over the torso keeps its own anchor.
    turned[5:] = True
    over[6, 3] = 1.0  # right wrist over the torso at frame 6
    centre = anchored_prior(residual, over, columns, threshold=0.1, turned=turned)
    assert torch.allclose(centre[5:, 0, 0], torch.full((5,), 4.0))
    assert torch.allclose(centre[5:, 1, 0], torch.tensor([5.0, 6.0, 6.0, 6.0, 6.0]))


@pytest.fixture(scope="module")
def turning_scene():
    """The generator's seed-1 bottle scene (no render): the right hand holds the bottle in front of the chest
    while the body turns ~30 degrees (frames ~32-40); ground-truth camera-frame keypoints and their 2D."""
    return scene_keypoints("bottle", 60, 1)


def test_arm_held_in_front_does_not_flip_when_the_body_turns(turning_scene):
    """After the turn the 2D fits the arm held forward or hanging near frame 0's pose alike; the frame-0 prior
    chose the latter (right hand ~25 cm too far), the turn carry keeps the pose from before the turn."""
    s = turning_scene
    held = torch.as_tensor(s["scene"].contact[:, 1])
    hand = list(range(kp.RIGHT_HAND_SLICE.start, kp.RIGHT_HAND_SLICE.stop))

    def fitted(turn_deg: float) -> torch.Tensor:
        fit = fit_body(
            s["body"], s["keypoints_2d"], s["K"], s["pose0"], s["trans0"], s["scene"].shape,
            FitSettings(anchor_turn_deg=turn_deg), up=s["up"],
        )  # fmt: skip
        turn = torch.rad2deg(view_turn(fit.keypoints_3d, s["up"]))
        return fit.keypoints_3d, turn

    without, turn = fitted(0.0)
    after = held & (turn > FitSettings().anchor_turn_deg)
    assert int(after.sum()) >= 8  # held frames seen after the turn

    def depth_error(points: torch.Tensor) -> float:
        return float((points[after][:, hand, 2] - s["points"][after][:, hand, 2]).mean())

    with_carry, _ = fitted(FitSettings().anchor_turn_deg)
    assert depth_error(without) > 0.15  # the flip: 21 cm too far when written
    assert abs(depth_error(with_carry)) < 0.06  # -2 cm when written
