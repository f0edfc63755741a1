"""Stage-1 fit: an arm held in front keeps that pose when the body turns (the anchored phase's turn carry), and
lets it go when it moves after the turn (the hand lowered after releasing the object)."""

from __future__ import annotations

import math

import pytest
import torch

from reconstruction import keypoints as kp
from reconstruction.keypoints import index
from reconstruction.stages.fit_body import (
    ArmMotion,
    FitSettings,
    anchored_prior,
    arm_layout_2d,
    carry_release,
    fit_body,
    view_turn,
)
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


def test_carry_release_follows_the_elbow_back_to_its_frame0_place():
    frames = 12
    carried = torch.zeros(frames, dtype=torch.bool)
    carried[3:] = True  # carried from frame 2 to the end
    turn = torch.tensor([0, 0, 10, 20, 30, 31, 31, 31, 31, 31, 31, 31], dtype=torch.float32).deg2rad()
    layout = torch.zeros(frames, 4)  # elbow (across, down), wrist (across, down)
    layout[:, :2] = torch.tensor([0.2, 0.3])  # where the arm holds once the torso has settled (frame 4)
    layout[0, :2] = torch.tensor([0.0, 0.5])  # frame 0: the arm at rest
    layout[1:4, 0] = 0.4  # the turn moves the arm in the image: before the torso settles it does not count
    layout[5:8, 3] = 0.3  # the wrist alone moves (the held object is lowered): the carry stays
    layout[7, :2] = torch.tensor([0.25, 0.25])  # and the elbow, away from its rest: the carry stays
    layout[8, :2] = torch.tensor([0.1, 0.4])  # half way back to frame 0's place
    layout[9, :2] = torch.tensor([0.0, 0.5])  # all the way
    valid = torch.ones(frames, dtype=torch.bool)
    release = carry_release(carried, turn, layout, valid, math.radians(5), (0.25, 0.75))
    expected = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0.5, 1, 1, 1.0])  # frames 10-11: back, but the pose was left
    assert torch.allclose(release, expected, atol=1e-5)
    # Through anchored_prior: the released share of the carried centre gives way to the one it replaced.
    residual = torch.ones(frames, 1, 3)
    residual[2] = 4.0
    motion = ArmMotion(turn, torch.stack([layout, layout], 1), torch.stack([valid, valid], 1), math.radians(5),
                       (0.25, 0.75))  # fmt: skip
    centre = anchored_prior(residual, torch.zeros(frames, 4), {"right": [0]}, 0.1, turned=carried, motion=motion)
    assert torch.allclose(centre[3:, 0, 0], 4.0 * (1 - expected[3:]))
    # The same with frame 2 seen over the torso: its anchor, held past it, would keep 4; released, it goes too.
    over = torch.zeros(frames, 4)
    over[2, 3] = 1.0
    held = anchored_prior(residual, over, {"right": [0]}, 0.1)
    assert torch.allclose(held[3:, 0, 0], torch.full((9,), 4.0))
    centre = anchored_prior(residual, over, {"right": [0]}, 0.1, turned=carried, motion=motion)
    assert torch.allclose(centre[3:, 0, 0], 4.0 * (1 - expected[3:]))


def test_arm_layout_2d_is_in_torso_heights():
    points = torch.zeros(1, 75, 3)
    for name, (x, y) in {
        "left_shoulder": (120, 100), "right_shoulder": (80, 100), "left_hip": (115, 200), "right_hip": (85, 200),
        "right_elbow": (70, 150), "right_wrist": (90, 200),
    }.items():  # fmt: skip
        points[0, index(name)] = torch.tensor([x, y, 1.0])
    layout, valid = arm_layout_2d(points, points[..., 2])
    assert bool(valid[0, 1])
    # Torso 100 px high, facing the camera (its right on the image's left): elbow 10 px out and 50 px down,
    # wrist 10 px in and 100 px down.
    assert torch.allclose(layout[0, 1], torch.tensor([0.1, 0.5, -0.1, 1.0]), atol=1e-5)


@pytest.fixture(scope="module")
def turning_fits(turning_scene):
    """Fitted keypoints and view turn of the turning scene: without the turn carry, with it (default), and with
    the carry never let go."""
    s = turning_scene
    out = {}
    for name, settings in {
        "without": FitSettings(anchor_turn_deg=0.0),
        "carry": FitSettings(),
        "never_let_go": FitSettings(carry_release_share=(10.0, 20.0)),
    }.items():
        fit = fit_body(
            s["body"], s["keypoints_2d"], s["K"], s["pose0"], s["trans0"], s["scene"].shape, settings, up=s["up"]
        )
        out[name] = (fit.keypoints_3d, torch.rad2deg(view_turn(fit.keypoints_3d, s["up"])))
    return out


HAND = list(range(kp.RIGHT_HAND_SLICE.start, kp.RIGHT_HAND_SLICE.stop))


def _hand_depth_error(s: dict, points: torch.Tensor, frames: torch.Tensor) -> float:
    return float((points[frames][:, HAND, 2] - s["points"][frames][:, HAND, 2]).mean())


def test_arm_held_in_front_does_not_flip_when_the_body_turns(turning_scene, turning_fits):
    """After the turn the 2D fits the arm held forward or hanging near frame 0's pose alike; the frame-0 prior
    chose the latter (right hand ~25 cm too far), the turn carry keeps the pose from before the turn."""
    s = turning_scene
    held = torch.as_tensor(s["scene"].contact[:, 1])
    without, turn = turning_fits["without"]
    after = held & (turn > FitSettings().anchor_turn_deg)
    assert int(after.sum()) >= 8  # held frames seen after the turn
    assert _hand_depth_error(s, without, after) > 0.15  # the flip: 21.8 cm too far when written
    assert abs(_hand_depth_error(s, turning_fits["carry"][0], after)) < 0.06  # -1.8 cm when written


def test_hand_lowered_after_the_turn_is_not_held_forward(turning_scene, turning_fits):
    """The hand releases the bottle at frame 50 and the arm swings back down while the body stays turned: the
    carried pose (arm forward) reprojects about as well as the lowered arm, and held to the end it put the
    hand 12-17 cm too near in the last frames; letting the carry go as the elbow goes back to its frame-0 place
    in the image follows the lowered 2D."""
    s = turning_scene
    held = torch.as_tensor(s["scene"].contact[:, 1])
    last_held = int(torch.nonzero(held).max())
    _, turn = turning_fits["carry"]
    lowered = (torch.arange(len(held)) >= last_held + 5) & (turn > FitSettings().anchor_turn_deg)
    assert int(lowered.sum()) >= 4
    assert _hand_depth_error(s, turning_fits["never_let_go"][0], lowered) < -0.08  # -14.2 cm when written
    assert abs(_hand_depth_error(s, turning_fits["carry"][0], lowered)) < 0.04  # -0.2 cm when written
