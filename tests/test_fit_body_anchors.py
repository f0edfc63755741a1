"""Stage-1 fit: an arm seen over the torso stays in front once it moves beside it (the anchored prior phase)."""

from __future__ import annotations

import pytest
import torch

from reconstruction.keypoints import index
from reconstruction.stages.fit_body import (
    FitSettings,
    anchored_prior,
    arm_joint_columns,
    fit_body,
    keypoint_weights,
    over_torso_2d,
    transform_body,
)
from tests.fit_scene import scene_keypoints

ANNY_ARM = ["clavicle.L", "shoulder01.L", "upperarm01.L", "lowerarm02.L", "wrist.L"]


def test_arm_columns_by_side_for_both_models():
    anny = ["root", "spine01", *ANNY_ARM, "finger2-1.L", "clavicle.R", "wrist.R", "neck01"]
    joints = list(range(1, len(anny)))
    assert arm_joint_columns(anny, joints) == {"left": [1, 2, 3, 4, 5], "right": [7, 8]}
    smplx = ["pelvis", "left_collar", "right_shoulder", "left_elbow", "right_wrist", "left_index1", "head"]
    assert arm_joint_columns(smplx, list(range(1, len(smplx)))) == {"left": [0, 2], "right": [1, 3]}


def test_anchored_prior_interpolates_then_holds():
    frames, columns = 10, {"left": [0, 1], "right": [2]}
    residual = torch.arange(frames, dtype=torch.float32)[:, None, None].expand(frames, 4, 3).clone()
    over = torch.zeros(frames, 4)  # columns: left elbow, right elbow, left wrist, right wrist
    over[4:7, 3] = 0.5  # the right wrist is seen over the torso in frames 4-6
    centre = anchored_prior(residual, over, columns, threshold=0.1)
    right = centre[:, 2, 0]
    # Frame 0's pose (residual 0), linearly to frame 4's fitted residual, the fit itself at 4-6, then held.
    expected = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.0, 6.0, 6.0])
    assert torch.allclose(right, expected)
    # The left arm (never over the torso) and the other joints keep frame 0's pose.
    assert (centre[:, [0, 1, 3]] == 0).all()
    # Nothing anchored anywhere: no phase to run.
    assert anchored_prior(residual, torch.zeros(frames, 4), columns, threshold=0.1) is None
    assert anchored_prior(residual, over, columns, threshold=0.6) is None


@pytest.fixture(scope="module")
def box_scene():
    """The generator's 30-frame box scene (no render): the ground-truth camera-frame keypoints and their 2D."""
    return scene_keypoints("box", 30, 0)


def test_arm_held_in_front_does_not_flip_behind(box_scene):
    """The right hand carries the box in front of the chest: over the torso in the image, then beside it as
    the body turns. 2D fits the upper arm pointing forward or back alike; without the anchors the frame-0
    prior sends it back (elbow and wrist ~15 cm off), with them it stays in front."""
    s = box_scene
    over = over_torso_2d(s["keypoints_2d"], keypoint_weights(s["keypoints_2d"], FitSettings()))
    right_seen = over[:, [1, 3]].max(1).values >= FitSettings().anchor_over_torso
    assert right_seen.any()
    last = int(torch.nonzero(right_seen).max())
    # The frames after the cue, while the hand still holds the box (the put-down moves the arm again).
    held = torch.as_tensor(s["scene"].contact[:, 1])
    after = torch.zeros_like(right_seen)
    after[last + 1 :] = True
    after &= held
    assert int(after.sum()) >= 4
    arm = [index("right_elbow"), index("right_wrist")]

    def arm_error(iterations_anchored: int) -> float:
        fit = fit_body(
            s["body"], s["keypoints_2d"], s["K"], s["pose0"], s["trans0"], s["scene"].shape,
            FitSettings(iterations_anchored=iterations_anchored), up=s["up"],
        )  # fmt: skip
        return float((fit.keypoints_3d[after][:, arm] - s["points"][after][:, arm]).norm(dim=-1).mean())

    without, with_anchors = arm_error(0), arm_error(FitSettings().iterations_anchored)
    assert without > 0.10  # the flip this phase is for
    assert with_anchors < 0.65 * without  # 14.8 -> 7.8 cm when written


def test_start_scores_a_given_motion(box_scene):
    """With no iterations, ``start`` returns that motion as it is and ``losses`` scores it (how the flip was
    found to be the objective's minimum, not a local one)."""
    s = box_scene
    scene = s["scene"]
    world_to_cam = torch.as_tensor(scene.world_to_cam[0], dtype=torch.float32)
    pose, trans = transform_body(s["body"], scene.pose_aa, scene.shape, scene.trans, world_to_cam)
    scored = fit_body(
        s["body"], s["keypoints_2d"], s["K"], s["pose0"], s["trans0"], scene.shape,
        FitSettings(iterations_global=0, iterations=0, iterations_anchored=0), up=s["up"], start=(pose, trans),
    )  # fmt: skip
    assert float((scored.keypoints_3d[:, :33] - s["points"][:, :33]).norm(dim=-1).max()) < 1e-3
    assert scored.losses["reprojection"] < 0.1  # px^2: the 2D are the truth's projections
    assert scored.losses["pose_prior"] > 0  # the truth moves away from frame 0's pose
