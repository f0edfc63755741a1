"""Scene physics of the generator: hands on the object while holding it, rigid carrying, feet on the
ground, the object still on the table before and after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reconstruction import keypoints as kp
from reconstruction.body import load_body_model
from reconstruction.eval import metrics
from reconstruction.eval.evaluate import FOOT_INDICES
from reconstruction.synth import ik, objects
from reconstruction.synth.scene import TABLE_HEIGHT, SceneConfig, build_scene

pytestmark = pytest.mark.slow

HANDS = ("left", "right")


@pytest.fixture(scope="module", params=[("box", "two"), ("bottle", "one")], ids=["box-two-hands", "bottle-one-hand"])
def scene(request):
    category, hands = request.param
    config = SceneConfig(category=category, num_frames=12, width=160, height=120, seed=5, hands=hands, ik_steps=100)
    return build_scene(config, load_body_model("anny"))


def _held(scene):
    report = scene.ik_report
    return np.arange(report["grasp_frame"], report["release_frame"])


def _sd(scene, points):
    return objects.signed_distance_world(scene.object_spec, scene.object_poses_world.double(), points.double())


def test_hands_touch_the_surface_without_penetrating_while_holding(scene):
    held = _held(scene)
    assert len(held) >= 3
    body = load_body_model("anny")
    for column, hand in enumerate(HANDS):
        if not scene.contact[:, column].any():
            continue
        assert scene.contact[held, column].all() and not np.delete(scene.contact[:, column], held).any()
        sd = _sd(scene, scene.body_vertices[:, body.vertex_segments[f"{hand}_hand"]])[held]
        closest = sd.min(dim=1).values
        assert float(closest.max()) < 0.01, f"{hand} hand gap {float(closest.max()):.4f} m"
        assert float(closest.min()) > -0.005, f"{hand} hand penetrates {float(-closest.min()):.4f} m"


def test_gt_hand_keypoints_within_1cm_of_the_surface_during_contact(scene):
    slices = {"left": kp.LEFT_HAND_SLICE, "right": kp.RIGHT_HAND_SLICE}
    for column, hand in enumerate(HANDS):
        frames = np.flatnonzero(scene.contact[:, column])
        if frames.size == 0:
            continue
        sd = _sd(scene, scene.keypoints_world[:, slices[hand]])[frames]
        assert float(sd.abs().min(dim=1).values.max()) < 0.01


def test_object_is_carried_rigidly_and_still_otherwise(scene):
    held = _held(scene)
    poses = scene.object_poses_world.double()
    holder = "right" if scene.contact[:, 1].any() else "left"
    frames = ik.hand_frame(scene.keypoints_world.double(), holder)
    relative = torch.linalg.inv(frames[held]) @ poses[held]
    assert torch.allclose(relative, relative[:1].expand_as(relative), atol=2e-4)
    before, after = poses[: held[0] + 1], poses[held[-1] :]
    assert torch.allclose(before, before[:1].expand_as(before), atol=1e-6)
    assert torch.allclose(after, after[:1].expand_as(after), atol=1e-6)
    travel = (poses[:, :3, 3] - poses[0, :3, 3]).norm(dim=-1).max()
    assert float(travel) > 0.05  # lifted and carried


def test_feet_stay_on_the_ground_and_object_rests_on_the_table(scene):
    body = load_body_model("anny")
    feet = torch.cat([body.vertex_segments["left_foot"], body.vertex_segments["right_foot"]])
    lowest = scene.body_vertices[:, feet, 2].min(dim=1).values
    assert float(lowest.abs().max()) < 0.01
    lowest_object = scene.object_vertices_world[:, :, 2].min(dim=1).values
    assert float(lowest_object[0]) == pytest.approx(TABLE_HEIGHT, abs=1e-4)
    assert float(lowest_object[-1]) == pytest.approx(TABLE_HEIGHT, abs=2e-3)  # placed back down
    assert float(lowest_object[_held(scene)].max()) > TABLE_HEIGHT + 0.03  # lifted in between


def test_feet_do_not_skate_while_the_person_turns(scene):
    """The carry turns the body; the feet step round instead of sliding (eval's foot skating metric on
    the ground-truth heel/toe keypoints: contact below 5 cm), and an in-contact foot never slides 5 mm."""
    assert abs(scene.ik_report["max_yaw_rad"]) > 0.3  # it did turn
    feet = scene.keypoints_world[:, FOOT_INDICES].double().numpy()
    assert metrics.foot_skating(feet) < 0.003
    contact = feet[..., 2] < 0.05
    slide = np.linalg.norm(np.diff(feet[..., :2], axis=0), axis=-1)[contact[1:] & contact[:-1]]
    assert slide.max() < 0.005
    assert scene.ik_report["leg_ik_error_m"] < 0.005
    # Each foot is planted somewhere new after the turn: it stepped (lifted > 5 cm), not slid.
    lifted = (feet[..., 2] > 0.05).any(axis=0)
    assert lifted.all()
