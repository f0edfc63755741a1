"""Contact labelling from constructed hand and object trajectories (reconstruction.optim.contact)."""

from __future__ import annotations

import numpy as np
import torch

from reconstruction.optim import contact


def _box_samples(n: int = 64) -> torch.Tensor:
    g = torch.linspace(-0.05, 0.05, 4)
    pts = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return pts[:n]


def _pick_and_place(num_frames: int = 40):
    """Left hand reaches (0-9), grasps at 10, carries the object up 30 cm (12-24), lets go at 28, leaves."""
    obj_centre = torch.zeros(num_frames, 3)
    obj_centre[:, 2] = 0.8
    lift = torch.linspace(0.0, 0.3, 13)
    obj_centre[12:25, 2] += lift
    obj_centre[25:, 2] += 0.3
    obj = obj_centre[:, None, :] + _box_samples()[None]
    left = obj_centre.clone()
    left[:, 0] -= 0.06  # 1 cm off the box's -x face while holding
    approach = torch.linspace(0.6, 0.0, 10)
    left[:10, 0] -= approach
    leave = torch.linspace(0.0, 0.5, num_frames - 28)
    left[28:, 0] -= leave
    right = torch.tensor([0.6, 0.0, 0.9]).expand(num_frames, 3)
    hands = torch.stack([left, right], 1)[:, :, None, :] + torch.randn(1, 1, 5, 3) * 0.005
    return hands, obj


def test_pick_and_place_left_hand_interval():
    hands, obj = _pick_and_place()
    labels = contact.label_contacts(hands, obj)
    assert labels.hands.shape == (40, 2)
    assert not labels.hands[:, 1].any(), "the right hand never comes near"
    left = np.flatnonzero(labels.hands[:, 0])
    assert 8 <= left[0] <= 11 and 26 <= left[-1] <= 30
    assert len(labels.intervals) == 1 and labels.intervals[0].hand == "left"
    assert labels.contact_hand == "left" and labels.contact_frame == left[0]
    assert labels.object_moving[14:23].all() and not labels.object_moving[:10].any()
    data = labels.to_json()
    assert data["intervals"][0]["hand"] == "left" and len(data["frames"]) == 40


def test_carry_detected_by_velocity_coupling_when_distance_is_noisy():
    hands, obj = _pick_and_place()
    hands = hands.clone()
    hands[12:25, 0, :, 1] += 0.15  # stage 1 puts the hand 15 cm off while it carries the object
    labels = contact.label_contacts(hands, obj)
    assert labels.hands[13:24, 0].all(), "coupled motion keeps the carry in contact"
    assert not labels.hands[:, 1].any()


def test_grip_held_through_the_carry_when_the_hand_depth_jumps():
    hands, obj = _pick_and_place()
    hands = hands.clone()
    hands[:, 1] = hands[:, 0] * torch.tensor([-1.0, 1.0, 1.0])  # the right hand mirrors the left: a two-hand carry
    # stage 1's left arm drifts away in depth mid-carry (5-25 cm beyond the box), not moving with it
    hands[14:22, 0, :, 1] += torch.linspace(0.1, 0.3, 8)[:, None]
    labels = contact.label_contacts(hands, obj)
    assert labels.hands[11:26, 1].all()
    assert labels.hands[10:27, 0].all(), "the grip taken before the jump holds while the object moves"
    held = contact.hold_while_moving(
        np.array([1, 0, 0, 0, 0], dtype=bool), np.array([1, 1, 1, 0, 1], dtype=bool), np.ones(5, dtype=bool)
    )
    assert held.tolist() == [True, True, True, False, False], "released once the object stops"
    far = contact.hold_while_moving(np.array([1, 0, 0], dtype=bool), np.ones(3, dtype=bool), np.array([1, 0, 1], bool))
    assert far.tolist() == [True, False, False], "a hand that leaves the object's reach lets go"


def test_static_object_and_cleaning():
    hands, obj = _pick_and_place()
    obj = obj[:1].expand_as(obj).clone()  # never moves
    hands = hands.clone()
    hands[:, 0] = torch.tensor([1.0, 1.0, 1.0])  # left hand far away
    hands[20, 0] = obj[20, :5] + 0.01  # one-frame touch: too short to count
    labels = contact.label_contacts(hands, obj, is_static_obj=True)
    assert not labels.hands.any() and labels.contact_frame is None and labels.contact_hand is None
    flags = np.array([0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    cleaned = contact.clean_intervals(flags, max_gap=1, min_length=3)
    assert cleaned.tolist() == [False, True, True, True, True, True] + [False] * 6


def test_hysteresis_and_feet():
    d = np.array([0.2, 0.05, 0.1, 0.11, 0.13, 0.1])
    assert contact.hysteresis(d, near=0.06, far=0.12).tolist() == [False, True, True, True, False, False]
    hands, obj = _pick_and_place()
    feet = torch.zeros(40, 2, 3, 3)
    feet[:, 1, :, 2] = 0.3  # right foot lifted all the time
    labels = contact.label_contacts(hands, obj, foot_points=feet, ground_z=0.0)
    assert labels.feet[:, 0].all() and not labels.feet[:, 1].any()


def test_save_and_load(tmp_path):
    hands, obj = _pick_and_place()
    labels = contact.label_contacts(hands, obj)
    path = contact.save_contact_labels(tmp_path / "c.json", labels)
    data = contact.load_contact_labels(path)
    assert np.array(data["frames"]).shape == (40, 2)
    assert data["contact_hand"] == "left"


def test_reach_and_release_frames_are_trimmed_by_the_hands_speed_against_the_object():
    """The hand slows down as it reaches the box: it is within near_dist two frames before it stops on it
    (frame 10), and leaves at 1.2 cm/frame after letting go at frame 27. Those frames are reach and release:
    the hand moves against the object faster than approach_speed."""
    hands, obj = _pick_and_place()
    hands = hands.clone()
    hands[:10, 0, :, 0] = hands[10:11, 0, :, 0] - torch.tensor([0.4, 0.3, 0.2, 0.14, 0.1, 0.07, 0.05, 0.035, 0.02, 0.01])[:, None]  # fmt: skip
    hands[28:, 0, :, 0] = hands[27:28, 0, :, 0] - 0.012 * torch.arange(1, 13, dtype=torch.float32)[:, None]
    unbounded = {"still_contact_frames": 1000}
    loose = contact.label_contacts(hands, obj, params=contact.ContactParams(approach_speed=0.0, **unbounded))
    labels = contact.label_contacts(hands, obj, params=contact.ContactParams(**unbounded))
    left, left_loose = np.flatnonzero(labels.hands[:, 0]), np.flatnonzero(loose.hands[:, 0])
    assert left_loose[0] <= 9 and left_loose[-1] >= 29, "untrimmed: the reach and release count as contact"
    assert left[0] == 10 and left[-1] == 27
    leaving = np.array([0.02, 0.01, 0.002, 0.0, 0.003, 0.02, 0.001])
    arriving = np.array([0.0, 0.02, 0.01, 0.002, 0.0, 0.003, 0.02])
    trimmed = contact.trim_approach(np.ones(7, dtype=bool), leaving, arriving, 0.008)
    assert trimmed.tolist() == [False, False, True, True, True, True, False], "inner frames keep their label"
    jitter = contact.trim_approach(np.ones(4, dtype=bool), np.full(4, 0.05), np.full(4, 0.05), 0.008)
    assert jitter.all(), "fast throughout: a jittering track, not a reach"


def test_a_hand_left_over_the_set_down_object_is_not_in_contact_after_the_release():
    """Stage 1 leaves the hand over the object after the set-down (frame 25 on): nearness alone would label
    contact to the last frame. Contact is kept only ``still_contact_frames`` around the motion; a touch of an
    object that never moves keeps its proximity label."""
    hands, obj = _pick_and_place()
    hands = hands.clone()
    hands[28:, 0] = hands[27:28, 0]  # the hand never leaves
    near_only = contact.label_contacts(hands, obj, params=contact.ContactParams(still_contact_frames=1000))
    labels = contact.label_contacts(hands, obj)
    moving = np.flatnonzero(labels.object_moving)
    assert np.flatnonzero(near_only.hands[:, 0])[-1] == 39, "nearness alone: contact to the last frame"
    left = np.flatnonzero(labels.hands[:, 0])
    assert left[-1] == moving[-1] + contact.ContactParams().still_contact_frames
    assert left[0] >= moving[0] - contact.ContactParams().still_contact_frames
    assert contact.bound_to_motion(np.ones(6, bool), np.zeros(6, bool), 1).all(), "no motion: kept"
    cut = contact.bound_to_motion(np.ones(9, bool), np.array([0, 0, 0, 1, 1, 0, 0, 0, 0], bool), 1)
    assert cut.tolist() == [False, False, True, True, True, True, False, False, False]
