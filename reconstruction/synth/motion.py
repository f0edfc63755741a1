"""Scripted manipulation motion: idle -> reach -> grasp -> lift -> carry/rotate -> place -> release.

The motion is a per-frame blend of three key ingredients, so every frame is exact rather than fitted:
``reach`` scales the IK arm/finger angles of the grasp pose (0 = idle arms, 1 = hands on the object),
``lean`` scales the forward bend of the spine (the grasp pose is solved leaning, lifting straightens
up), and ``yaw`` turns the pelvis about the vertical axis through the root (carry/rotate) while the feet
step round (``footwork``: planted feet never slide). While an object is held, the arms are frozen
relative to the chest, so both hands move rigidly together and the object is attached to the right hand's
frame: hands stay exactly where the IK put them. ``object_lost`` is the exception: while turning its back
to the camera the object moves to a second IK pose that holds it against the chest (``scene``: the hands
are solved onto it on the way, so they stay on its surface).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from reconstruction.synth import footwork

logger = logging.getLogger(__name__)

LEAN_BONES = ("spine04", "spine03", "spine02")  # the forward bend is spread over these (anny labels)


@dataclass
class Timeline:
    """Per-frame blend weights (T,) and the held interval [grasp_frame, release_frame)."""

    reach: np.ndarray
    lean: np.ndarray
    yaw: np.ndarray  # radians
    grasp_frame: int
    release_frame: int
    moves_object: bool
    feet: footwork.FootSchedule  # where each foot is: the pelvis yaw above is the mean of the feet's yaws
    hug: np.ndarray | None = None  # (T,) weight of the arms' "object against the chest" pose (object_lost)

    @property
    def held(self) -> np.ndarray:
        frames = np.arange(len(self.reach))
        return (frames >= self.grasp_frame) & (frames < self.release_frame)


def _ramp(t: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Smoothstep from 0 at ``start`` to 1 at ``stop`` (fractions of the clip)."""
    x = np.clip((t - start) / max(stop - start, 1e-9), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _frame(fraction: float, num_frames: int) -> int:
    return int(round(fraction * (num_frames - 1)))


def _turn_window(first: int, last: int, low: int, high: int, steps: int = 4) -> tuple[int, int] | None:
    """``[first, last]`` widened symmetrically inside ``[low, high]`` to at least ``steps`` frame steps;
    None when even ``[low, high]`` is too short (the turn is then left out)."""
    first, last = max(first, low), min(last, high)
    while last - first < steps and (first > low or last < high):
        if first > low:
            first -= 1
        if last - first < steps and last < high:
            last += 1
    return (first, last) if last - first >= steps else None


def make_timeline(num_frames: int, variant: str, carry_yaw: float, away_yaw: float = np.pi) -> Timeline:
    """Phase fractions of the clip for a variant. ``carry_yaw`` is the turn while carrying (radians);
    ``away_yaw`` the turn of ``object_lost`` that puts the person's back to the camera."""
    if num_frames < 4:
        raise ValueError(f"a manipulation clip needs at least 4 frames, got {num_frames}")
    t = np.linspace(0.0, 1.0, num_frames)
    grasp, release = {"static_object": (0.35, 0.75), "object_lost": (0.12, 0.95)}.get(variant, (0.3, 0.86))
    # Phase boundaries snap to frames: the reach ends exactly on the grasp frame and the placing ends
    # exactly on the last held frame, so the object is let go only once it is back on the table.
    grasp_frame = int(np.ceil(grasp * (num_frames - 1) - 1e-9))
    last_held = max(int(np.floor(release * (num_frames - 1) + 1e-9)), grasp_frame)
    tg, th = grasp_frame / (num_frames - 1), last_held / (num_frames - 1)
    reach = _ramp(t, min(0.08, tg / 2), tg) - _ramp(t, th, 1.0)
    turns: list[tuple[int, int, float]] = []
    hug = None
    if variant == "static_object":
        # Reach, rest the hands on the object, let go: the object never moves.
        lean = reach.copy()
    elif variant == "object_lost":
        # Step round with the object until the back is to the camera, hold it there (the body hides the
        # object), step back and put it down.
        lift_end, place_start = min(tg + 0.05, th), min(0.86, th)
        lean = _ramp(t, min(0.03, tg / 2), tg) - _ramp(t, tg, lift_end) + _ramp(t, place_start, th) - _ramp(t, th, 1.0)
        # The turn back may overlap the putting down: the object is above the table top until the lean
        # is back to the grasp's at the last held frame.
        away = _turn_window(_frame(lift_end, num_frames), _frame(0.38, num_frames), grasp_frame + 1, last_held)
        if away is not None:
            back = _turn_window(_frame(0.72, num_frames), last_held, away[1], last_held)
            if back is not None:
                turns = [(*away, away_yaw), (*back, -away_yaw)]
                # The object comes in against the chest while turning away and goes out again while
                # turning back: the back then hides it (at arm's length it shows beside the torso).
                frac = [f / (num_frames - 1) for f in (*away, *back)]
                hug = _ramp(t, frac[0], frac[1]) - _ramp(t, frac[2], frac[3])
    else:  # normal, camera_shake
        lift_end, place_start = min(max(0.5, tg), th), min(0.7, th)
        lean = _ramp(t, min(0.08, tg / 2), tg) - _ramp(t, tg, lift_end) + _ramp(t, place_start, th) - _ramp(t, th, 1.0)
        window = _turn_window(_frame(lift_end, num_frames), _frame(place_start, num_frames), grasp_frame + 1, last_held)
        if window is not None:
            turns = [(*window, carry_yaw)]
    feet = footwork.schedule_turns(num_frames, turns)
    release_frame = min(last_held + 1, num_frames)
    reach[grasp_frame:release_frame] = 1.0  # exact grasp pose while holding
    return Timeline(reach, lean, feet.pelvis_yaw, grasp_frame, release_frame, variant != "static_object", feet, hug)


def lean_pose(body, lean_rad: float) -> torch.Tensor:
    """(J,3) pose with the spine bent forward by ``lean_rad`` in total (the person faces -Y: +X axis)."""
    pose = torch.zeros(body.num_joints, 3, dtype=body.dtype, device=body.device)
    for name in LEAN_BONES:
        pose[body.joint_index(name), 0] = lean_rad / len(LEAN_BONES)
    return pose


def compose_motion(
    grasp_pose: torch.Tensor,
    lean: torch.Tensor,
    arm_joints: list[int],
    timeline: Timeline,
    hug_pose: torch.Tensor | None = None,
) -> torch.Tensor:
    """(T,J,3) pose sequence from the solved grasp pose (J,3), the lean pose (J,3) and the timeline.

    Arm and finger joints are zero in the idle pose, so scaling their axis-angle by ``reach`` is the
    geodesic from idle to grasp; the spine lean is scaled by ``lean``; the root yaw is about +Z. With
    ``hug_pose`` (J,3) and ``timeline.hug``, the arm angles blend linearly from the grasp to that pose."""
    dtype, device = grasp_pose.dtype, grasp_pose.device
    reach = torch.as_tensor(timeline.reach, dtype=dtype, device=device)
    lean_w = torch.as_tensor(timeline.lean, dtype=dtype, device=device)
    yaw = torch.as_tensor(timeline.yaw, dtype=dtype, device=device)
    pose = (lean[None] * lean_w[:, None, None]).clone()
    arm = torch.as_tensor(arm_joints, device=device)
    arms = grasp_pose[arm][None].expand(len(reach), -1, -1)
    if hug_pose is not None and timeline.hug is not None:
        hug = torch.as_tensor(timeline.hug, dtype=dtype, device=device)[:, None, None]
        arms = arms + hug * (hug_pose[arm] - grasp_pose[arm])[None]
    pose[:, arm] = arms * reach[:, None, None]
    pose[:, 0] = 0.0
    pose[:, 0, 2] = yaw
    return pose


def attach_object(hand_frames: torch.Tensor, object_pose_initial: torch.Tensor, timeline: Timeline) -> torch.Tensor:
    """(T,4,4) object->world poses: still until grasped, rigid with the hand frame (T,4,4) while held,
    then still where it was released."""
    num_frames = hand_frames.shape[0]
    poses = object_pose_initial[None].repeat(num_frames, 1, 1)
    if not timeline.moves_object:
        return poses
    g, r = timeline.grasp_frame, timeline.release_frame
    object_in_hand = torch.linalg.inv(hand_frames[g]) @ object_pose_initial
    poses[g:r] = hand_frames[g:r] @ object_in_hand
    # Numerical hygiene: re-orthonormalise the carried rotations (hand frames come from float32 keypoints).
    u, _, vt = torch.linalg.svd(poses[g:r, :3, :3])
    poses[g:r, :3, :3] = u @ vt
    poses[r:] = poses[r - 1]
    return poses
