"""mesh_tracker: the resting pose is chosen among several fully refined hypotheses, the colour vetting
turns whose outline is right but whose surface is not (issue 4: the mug's stage 3 turned 125 deg the
wrong way on GPU-rendered videos, a mirror turn with the same outline).

A cylinder with a blue stripe on its red side stands still, is carried (lifted, moved, turned 40 deg
about its axis) and put down on the same plane. Its outline is the same at every turn (as a mug's is at
its mirror turn), so the silhouette alone cannot tell the resting turn; the stripe's colours from frame
0 can."""

from __future__ import annotations

import numpy as np
import roma
import torch

from reconstruction.backends import mesh_tracker
from tests.test_mesh_tracker_colour import _render_object, _striped_cylinder

PREFIX, HELD, REST = 3, 8, 5
SIZE = (240, 320)
REST_TURN_DEG = 40.0
# Model z (the axis) -> camera up, then the camera tilted 25 deg down onto the table.
TILT = roma.rotvec_to_rotmat(torch.tensor([np.radians(-25.0), 0.0, 0.0], dtype=torch.float64)).numpy()
UPRIGHT = TILT @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
NORMAL = TILT @ np.array([0.0, -1.0, 0.0])  # the table's "up" in the camera frame


def _scene():
    vertices, faces, colours = _striped_cylinder()
    num = PREFIX + HELD + REST
    t = np.clip((np.arange(num) - (PREFIX - 1)) / (HELD + 1), 0, 1)
    carry = np.sin(np.pi * t)
    turn = roma.rotvec_to_rotmat(torch.tensor(np.radians(REST_TURN_DEG) * t)[:, None] * torch.tensor([[0.0, 0, 1]]))
    poses = np.tile(np.eye(4), (num, 1, 1))
    poses[:, :3, :3] = UPRIGHT @ turn.numpy()
    poses[:, :3, 3] = np.stack([0.06 * t, 0.08 - 0.05 * carry, 0.8 - 0.05 * carry], axis=1)
    K, images, masks = _render_object(vertices, faces, colours, poses)
    lowest = (vertices @ poses[0, :3, :3].T + poses[0, :3, 3]) @ NORMAL
    anchors = mesh_tracker.Anchors(
        static_prefix=PREFIX, rest_suffix=REST, plane_normal=NORMAL, plane_offset=-float(lowest.min())
    )
    return vertices, faces, poses, K, images, masks, anchors


def test_rest_hypothesis_chosen_by_colour_then_silhouette():
    """Two refined hypotheses with the same outline: the true turn and a smaller wrong one."""
    vertices, faces, poses, K, images, masks, _ = _scene()
    config = mesh_tracker.TrackerConfig()
    dtype = torch.float64
    source = mesh_tracker.EvidenceSource(masks, np.zeros_like(masks), None, config, "cpu", dtype, images)
    mesh = (torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long))
    centroid = torch.as_tensor(mesh_tracker.mesh_centroid(vertices, faces), dtype=dtype)
    pose0 = torch.as_tensor(poses[0], dtype=dtype)
    source.reference = mesh_tracker.reference_appearance(pose0, mesh, source.take(0), 0, K, SIZE)
    rest = torch.as_tensor(poses[-1], dtype=dtype)
    centre = rest[:3, :3] @ centroid + rest[:3, 3]
    wrong = roma.rotvec_to_rotmat(torch.as_tensor(NORMAL * np.radians(-REST_TURN_DEG - 10.0))) @ rest[:3, :3]
    rotations = torch.stack([wrong, rest[:3, :3]])
    centres = torch.stack([centre, centre])
    window = source.take(list(range(len(poses) - REST, len(poses))))
    silhouette, colour = mesh_tracker.rest_scores(rotations, centres, centroid, mesh, window, K, SIZE, config)
    # The same outline, but the wrong turn's stripe is elsewhere.
    assert float(colour[0]) > 3 * float(colour[1]) and float(colour[0] - colour[1]) > 10 * float(silhouette.max())
    assert mesh_tracker._colour_allowed(colour, config).tolist() == [False, True]
    assert mesh_tracker._colour_allowed(colour, mesh_tracker.TrackerConfig(rest_colour_gate=0.0)).all()
    args = (rotations, centres, pose0[:3, :3], centroid, mesh, window, K, SIZE, config)
    assert mesh_tracker.choose_rest_hypothesis(*args) == 1
    # Listed the other way round, the same turn wins (not the first, nor the smaller turn).
    flipped = (rotations.flip(0), centres.flip(0), *args[2:])
    assert mesh_tracker.choose_rest_hypothesis(*flipped) == 0


def test_pick_rest_hypothesis_same_look_decided_by_colour_then_turn():
    """Costs logged on the seed-0 mug (session 7): three turns look the same (silhouette within 3%); the
    smallest (1 deg) rested 25 deg off, the one whose colours agree clearly best (26.7 deg) within 2 deg."""
    config = mesh_tracker.TrackerConfig()
    turns = torch.tensor([29.7, 1.0, 21.8, 26.7])
    silhouette = torch.tensor([8.004, 8.163, 8.29, 7.982], dtype=torch.float64)
    colour = torch.tensor([7.247, 7.726, 6.92, 7.094], dtype=torch.float64)
    assert mesh_tracker.pick_rest_hypothesis(silhouette, colour, turns, config) == 3
    # 21.8 deg has the lowest colour cost of all but not the same look (8.29 > 3% over 7.982)
    # with the tie-break off, the smallest turn of the same looks
    off = mesh_tracker.TrackerConfig(rest_colour_tiebreak=0.0)
    assert mesh_tracker.pick_rest_hypothesis(silhouette, colour, turns, off) == 1
    # colours that barely differ (a bottle's turns) leave the smallest turn
    even = torch.tensor([7.30, 7.25, 7.0, 7.20], dtype=torch.float64)
    assert mesh_tracker.pick_rest_hypothesis(silhouette, even, turns, config) == 1
    # no colour (no video frames): the smallest turn of the same looks
    assert mesh_tracker.pick_rest_hypothesis(silhouette, torch.zeros(4, dtype=torch.float64), turns, config) == 1
    # the colour gate still rules out a mirror turn with the same outline
    mirror = torch.tensor([7.25, 7.73, 6.92, 14.0], dtype=torch.float64)
    assert mesh_tracker.pick_rest_hypothesis(silhouette, mirror, turns, config) == 0


def test_pick_rest_hypothesis_clearly_better_outline_overrides_colour_gate():
    """Costs logged on the seed-2 box (session 8; truth 29.8 deg): the true turn shows box faces frame 0 never
    saw, so its colour cost is 1.64x the lowest, over the gate; its outline is clearly the best (18.1
    against 24.7 for the 17.9 deg turn the gate left). The 180 deg turn draws the same outline but is the
    larger turn and shows the wrong colours."""
    config = mesh_tracker.TrackerConfig()
    turns = torch.tensor([17.9, 21.4, 30.5, 148.7])
    silhouette = torch.tensor([24.706, 37.929, 18.084, 18.371], dtype=torch.float64)
    colour = torch.tensor([3.54, 2.953, 4.848, 12.596], dtype=torch.float64)
    assert mesh_tracker.pick_rest_hypothesis(silhouette, colour, turns, config) == 2
    off = mesh_tracker.TrackerConfig(rest_silhouette_override=0.0)
    assert mesh_tracker.pick_rest_hypothesis(silhouette, colour, turns, off) == 0
    # an outline only a little better (within the override's 15%) stays ruled out by its colours
    close = torch.tensor([24.706, 37.929, 22.0, 23.0], dtype=torch.float64)
    assert mesh_tracker.pick_rest_hypothesis(close, colour, turns, config) == 0
