"""Contact labelling from stages 1-3 alone (the reference asks a paid vision-language model instead).

Signals per frame, all in the metric world:
- hand-object distance: closest distance between each hand's points and the object surface samples;
- object motion: speed of the object's surface samples (from the stage 3 poses), smoothed; an object
  does not move by itself, so motion implies a hand on it;
- hand-object velocity coupling: while the object moves, the hand that moves with it is the one holding it.

A hand is in contact when it comes within ``near_dist`` (stays until beyond ``far_dist``: hysteresis), or
when the object moves, the hand is within ``coupling_dist`` and moves with it, or when it held the object
as the motion went on and stays within ``coupling_dist`` (a grip is not let go mid-carry). Gaps up to ``max_gap``
frames are closed; then each interval's first and last frames are trimmed while the hand moves against the
object faster than ``approach_speed`` (it is still reaching for it or already leaving: a hand over the object
in the image is not yet on it), an interval over which the object moves is cut to ``still_contact_frames``
before and after that motion, and intervals shorter than ``min_interval`` frames dropped. Feet are in contact with the
ground when their lowest point is within ``foot_height`` of the ground.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruction import fileio

logger = logging.getLogger(__name__)

HANDS = ("left", "right")


@dataclass(frozen=True)
class ContactParams:
    near_dist: float = 0.03
    far_dist: float = 0.05
    motion_speed: float = 0.004
    coupling_dist: float = 0.25
    min_interval: int = 3
    max_gap: int = 2
    foot_height: float = 0.05
    # Depth gap (m, along the camera's view) between hand and object that costs nothing: stage 1 places a
    # reaching hand 10-50 cm too deep (monocular arm depth), while its image position is right. Used when
    # the camera is known (``label_contacts(..., world_to_cam=)``); 0 = plain 3D distance.
    depth_slack: float = 0.5
    # Hand speed relative to the object (m/frame, as the image shows it) above which the first and last frames
    # of a contact interval are the reach and the release, not contact: the hand passes over the object's image
    # a few frames before it grips it. 0 = no trimming.
    approach_speed: float = 0.008
    # Frames of contact kept before an interval's first and after its last frame of object motion (the grip
    # before lift-off, the release after set-down). With the object still, nearness in the image is the only
    # evidence, and stage 1 leaves a hand that let go of a set-down object over it: labels ran on to the
    # video's last frame (seed-1 bottle: 51-59 after a set-down at 50). Intervals without motion are kept.
    still_contact_frames: int = 3

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> ContactParams:
        section = dict(section or {})
        section.pop("method", None)
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})


@dataclass
class ContactInterval:
    hand: str  # "left" | "right"
    start: int  # first contact frame
    end: int  # last contact frame (inclusive)


@dataclass
class ContactLabels:
    hands: np.ndarray  # (T, 2) bool, left/right hand touches the object
    feet: np.ndarray  # (T, 2) bool, left/right foot on the ground
    intervals: list[ContactInterval]
    hand_distance: np.ndarray  # (T, 2) metres, closest hand-object distance (the evidence)
    object_speed: np.ndarray  # (T,) metres/frame
    object_moving: np.ndarray  # (T,) bool
    params: ContactParams = field(default_factory=ContactParams)

    @property
    def contact_frame(self) -> int | None:
        """First frame with any hand contact (the reference's ``contact_frame``)."""
        frames = np.flatnonzero(self.hands.any(axis=1))
        return int(frames[0]) if frames.size else None

    @property
    def contact_hand(self) -> str | None:
        """ "left", "right" or "both" (hands that ever touch), None without contact."""
        used = self.hands.any(axis=0)
        if used.all():
            return "both"
        if used.any():
            return HANDS[int(np.flatnonzero(used)[0])]
        return None

    @property
    def first_move_frame(self) -> int | None:
        frames = np.flatnonzero(self.object_moving)
        return int(frames[0]) if frames.size else None

    def to_json(self) -> dict[str, Any]:
        return {
            "frames": self.hands.astype(bool).tolist(),
            "feet": self.feet.astype(bool).tolist(),
            "intervals": [asdict(i) for i in self.intervals],
            "contact_frame": self.contact_frame,
            "contact_hand": self.contact_hand,
            "first_move_frame": self.first_move_frame,
            "hand_distance": np.round(self.hand_distance, 5).tolist(),
            "object_speed": np.round(self.object_speed, 6).tolist(),
            "object_moving": self.object_moving.astype(bool).tolist(),
            "params": asdict(self.params),
            "method": "geometric",
        }


# ---- signals -----------------------------------------------------------------------------------------
@torch.no_grad()
def hand_object_distance(
    hand_points: torch.Tensor,
    object_points: torch.Tensor,
    world_to_cam: torch.Tensor | None = None,
    depth_slack: float = 0.0,
) -> torch.Tensor:
    """(T, 2, H, 3) hand points and (T, N, 3) object surface samples -> (T, 2) closest distances.

    With the camera (``world_to_cam`` (4, 4) or (T, 4, 4)) and ``depth_slack`` > 0 the distance is
    depth-tolerant: the image-plane offset (metres at the object point's depth) combined with the part of
    the view-depth gap beyond ``depth_slack``. What the image shows (the hand over the object) counts in
    full, what a monocular fit guesses (how deep the arm reaches) only when grossly off."""
    num_frames, num_hands, num_points, _ = hand_points.shape
    flat = hand_points.reshape(num_frames, num_hands * num_points, 3)
    if world_to_cam is None or depth_slack <= 0:
        closest = torch.cdist(flat, object_points).min(-1).values
    else:
        w2c = world_to_cam.to(flat).expand(num_frames, 4, 4)
        hand_cam = flat @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        obj_cam = object_points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        hand_ray = hand_cam[..., :2] / hand_cam[..., 2:].clamp_min(1e-3)  # (T, P, 2) normalised image coords
        obj_ray = obj_cam[..., :2] / obj_cam[..., 2:].clamp_min(1e-3)
        lateral = torch.cdist(hand_ray, obj_ray) * obj_cam[:, None, :, 2]  # (T, P, N) metres at object depth
        depth_gap = (hand_cam[..., 2, None] - obj_cam[:, None, :, 2]).abs()
        excess = (depth_gap - depth_slack).clamp_min(0.0)
        closest = torch.sqrt(lateral.square() + excess.square()).min(-1).values
    return closest.reshape(num_frames, num_hands, num_points).min(-1).values


def point_speed(points: np.ndarray) -> np.ndarray:
    """(T, N, 3) -> (T,) mean speed of the points in metres/frame (central differences)."""
    if points.shape[0] < 2:
        return np.zeros(points.shape[0])
    velocity = np.gradient(points, axis=0)
    return np.linalg.norm(velocity, axis=-1).mean(-1)


def _median3(signal: np.ndarray) -> np.ndarray:
    """3-tap running median: one-frame tracking spikes do not start a motion."""
    if signal.shape[0] < 3:
        return signal.copy()
    padded = np.concatenate([signal[:1], signal, signal[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def hysteresis(distance: np.ndarray, near: float, far: float) -> np.ndarray:
    """(T,) distances -> (T,) bool: on below ``near``, stays on until above ``far``."""
    state = np.zeros(distance.shape[0], dtype=bool)
    on = False
    for t, d in enumerate(distance):
        on = d <= near if not on else d <= far
        state[t] = on
    return state


def clean_intervals(flags: np.ndarray, max_gap: int, min_length: int) -> np.ndarray:
    """Close gaps of up to ``max_gap`` frames, then drop runs shorter than ``min_length`` frames."""
    flags = flags.astype(bool).copy()
    runs = _runs(flags)
    for (_, end_a), (start_b, _) in zip(runs, runs[1:], strict=False):
        if start_b - end_a - 1 <= max_gap:
            flags[end_a + 1 : start_b] = True
    for start, end in _runs(flags):
        if end - start + 1 < min_length:
            flags[start : end + 1] = False
    return flags


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of True."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def trim_approach(flags: np.ndarray, leaving: np.ndarray, arriving: np.ndarray, max_speed: float) -> np.ndarray:
    """(T,) bool contact flags -> the same with each run's leading frames removed while the hand still moves
    against the object towards the next frame faster than ``max_speed`` (``leaving`` (T,): |r[t+1] - r[t]| of
    the hand's position relative to the object, reaching in), and its trailing frames while it has moved since
    the previous one (``arriving`` (T,): |r[t] - r[t-1]|, letting go).
    Frames inside a run are kept whatever their speed (a carried object's track is noisy), and so is a run
    that is fast throughout (the hand's track jitters: no frame tells where the reach ends)."""
    trimmed = flags.astype(bool).copy()
    if max_speed <= 0:
        return trimmed
    for start, end in _runs(trimmed):
        first, last = start, end
        while first <= last and leaving[first] > max_speed:
            first += 1
        while last >= first and arriving[last] > max_speed:
            last -= 1
        if first > last:
            continue
        trimmed[start:first] = False
        trimmed[last + 1 : end + 1] = False
    return trimmed


def bound_to_motion(flags: np.ndarray, moving: np.ndarray, margin: int) -> np.ndarray:
    """(T,) bool contact flags -> the same with each run that overlaps object motion (``moving`` (T,) bool)
    cut to at most ``margin`` frames before its first moving frame and after its last."""
    bounded = flags.astype(bool).copy()
    for start, end in _runs(bounded):
        inside = np.flatnonzero(moving[start : end + 1])
        if inside.size == 0:
            continue
        first, last = start + int(inside[0]) - margin, start + int(inside[-1]) + margin
        bounded[start : max(first, start)] = False
        bounded[min(last, end) + 1 : end + 1] = False
    return bounded


def hold_while_moving(contact: np.ndarray, moving: np.ndarray, within_reach: np.ndarray) -> np.ndarray:
    """(T,) bool -> (T,) bool: a hand in contact stays in contact through the following frames while the
    object keeps moving and the hand stays ``within_reach`` (stage 1's arm depth can jump mid-carry; an object
    does not carry on moving by itself once the hand that held it lets go)."""
    held = contact.copy()
    for t in range(1, held.shape[0]):
        if not held[t] and held[t - 1] and moving[t] and within_reach[t]:
            held[t] = True
    return held


def _image_plane(object_points: np.ndarray, hand_points: np.ndarray, world_to_cam: np.ndarray):
    """World points -> (x/z, y/z) scaled by the object's median depth: lateral positions in metres
    at the object's distance, blind to motion along the viewing rays. (T, N, 3), (T, 2, H, 3) -> (..., 2)."""
    w2c = np.broadcast_to(world_to_cam, (object_points.shape[0], 4, 4))
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    obj_cam = np.einsum("tij,tnj->tni", R, object_points) + t[:, None]
    hand_cam = np.einsum("tij,thnj->thni", R, hand_points) + t[:, None, None]
    depth = float(np.median(obj_cam[..., 2]))  # one scale for the video: image motion alone counts
    obj_2d = obj_cam[..., :2] / np.maximum(obj_cam[..., 2:], 1e-3) * depth
    hand_2d = hand_cam[..., :2] / np.maximum(hand_cam[..., 2:], 1e-3) * depth
    return obj_2d, hand_2d


# ---- labelling -------------------------------------------------------------------------------------
def label_contacts(
    hand_points: torch.Tensor,
    object_points: torch.Tensor,
    foot_points: torch.Tensor | None = None,
    ground_z: float = 0.0,
    params: ContactParams | None = None,
    is_static_obj: bool = False,
    world_to_cam: torch.Tensor | None = None,
) -> ContactLabels:
    """Per-frame hand (and foot) contact labels from the stage 1-3 estimates (world frame).

    hand_points (T, 2, H, 3) left/right hand points; object_points (T, N, 3) object surface samples
    posed per frame; foot_points (T, 2, F, 3) or None. ``is_static_obj`` ignores object motion (tracking
    noise on a static object is not a carry). ``world_to_cam`` (4, 4) or (T, 4, 4): measure hand-object
    distances depth-tolerantly (``ContactParams.depth_slack``, see ``hand_object_distance``)."""
    params = params or ContactParams()
    hand_points = hand_points.detach().float()
    object_points = object_points.detach().float().to(hand_points.device)
    camera = None if world_to_cam is None else torch.as_tensor(world_to_cam).to(hand_points)
    distance = hand_object_distance(hand_points, object_points, camera, params.depth_slack).cpu().numpy()  # (T, 2)
    obj_np = object_points.cpu().numpy()
    hands_np = hand_points.cpu().numpy()
    if camera is not None and params.depth_slack > 0:
        # motion as the image shows it (metres at the object's depth): a tracker's depth noise and stage 1's
        # arm depth do not move anything on screen
        obj_np, hands_np = _image_plane(obj_np, hands_np, camera.cpu().numpy())
    speed = _median3(point_speed(obj_np))
    moving = np.zeros_like(speed, dtype=bool) if is_static_obj else speed > params.motion_speed

    # velocity coupling: the hand moves like the object's nearest part does
    hand_velocity = (
        np.gradient(hands_np.mean(axis=2), axis=0) if hands_np.shape[0] > 1 else np.zeros_like(hands_np[:, :, 0])
    )
    object_velocity = np.gradient(obj_np.mean(axis=1), axis=0) if obj_np.shape[0] > 1 else np.zeros_like(obj_np[:, 0])
    mismatch = np.linalg.norm(hand_velocity - object_velocity[:, None, :], axis=-1)  # (T, 2)
    # reach / release: the relative speed (central difference), and also the one-sided step into the next frame
    # (reaching) or from the previous one (letting go): a hand that arrives fast and stops is in contact from the
    # frame it stops at, though the central difference there still halves the arrival
    relative = hands_np.mean(axis=2) - obj_np.mean(axis=1)[:, None, :]  # (T, 2, 3)
    step = np.linalg.norm(np.diff(relative, axis=0), axis=-1)  # (T-1, 2)
    leaving = np.minimum(mismatch, np.concatenate([step, np.zeros((1, 2))]))
    arriving = np.minimum(mismatch, np.concatenate([np.zeros((1, 2)), step]))
    coupled = mismatch <= 0.5 * np.linalg.norm(object_velocity, axis=-1)[:, None] + 0.5 * params.motion_speed

    hands = np.zeros_like(distance, dtype=bool)
    for h in range(2):
        near = hysteresis(distance[:, h], params.near_dist, params.far_dist)
        carried = moving & coupled[:, h] & (distance[:, h] <= params.coupling_dist)
        hands[:, h] = hold_while_moving(near | carried, moving, distance[:, h] <= params.coupling_dist)
    # the object moves but no hand qualifies (tracking errors): the closer hand is holding it
    orphan = moving & ~hands.any(axis=1)
    closer = distance.argmin(axis=1)
    reachable = distance.min(axis=1) <= 2 * params.coupling_dist
    hands[np.flatnonzero(orphan & reachable), closer[orphan & reachable]] = True
    for h in range(2):
        closed = clean_intervals(hands[:, h], params.max_gap, 1)
        trimmed = trim_approach(closed, leaving[:, h], arriving[:, h], params.approach_speed)
        hands[:, h] = clean_intervals(
            bound_to_motion(trimmed, moving, params.still_contact_frames), 0, params.min_interval
        )

    intervals = [
        ContactInterval(hand=HANDS[h], start=start, end=end) for h in range(2) for start, end in _runs(hands[:, h])
    ]
    intervals.sort(key=lambda i: (i.start, i.hand))
    if foot_points is not None:
        lowest = foot_points.detach()[..., 2].min(-1).values.cpu().numpy()  # (T, 2)
        feet = lowest - ground_z <= params.foot_height
    else:
        feet = np.zeros_like(hands)
    labels = ContactLabels(
        hands=hands,
        feet=feet,
        intervals=intervals,
        hand_distance=distance,
        object_speed=speed,
        object_moving=moving,
        params=params,
    )
    logger.info(
        "contact labels: %d interval(s), first contact frame %s (%s), object moving in %d/%d frames",
        len(intervals),
        labels.contact_frame,
        labels.contact_hand,
        int(moving.sum()),
        moving.shape[0],
    )
    return labels


def save_contact_labels(path: str | Path, labels: ContactLabels) -> Path:
    return fileio.write_json(path, labels.to_json())


def load_contact_labels(path: str | Path) -> dict[str, Any]:
    import json

    return json.loads(Path(path).read_text())
