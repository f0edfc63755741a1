"""Fit a body model to per-frame 2D keypoints, all frames at once (pure torch, cpu or cuda).

Variables (camera frame): a per-frame root rotation residual (composed onto the initial root rotation), a
per-frame root translation, and a per-frame local axis-angle residual on the joints that matter (spine,
neck, head, shoulders, arms, legs; fingers optionally). The shape stays fixed (known character).

Loss = confidence-weighted Geman-McClure reprojection (pixels) + pose prior (stay near the initial pose,
strongly at frame 0 whose pose the render config gives) + joint-angle limit + 1st/2nd-order temporal
smoothness on pose and translation + depth anchoring (frame 0's root is known; depth elsewhere stays near it
unless the keypoints say otherwise) + root tilt (the pelvis stays as upright as at frame 0: leaning is the
spine's) + floor (the lowest foot point stays at frame 0's floor height) + torso occlusion (an elbow or wrist
detected over the torso in the image lies on the camera's side of it: 2D alone leaves a limb's depth free and
the prior keeps arms by the sides).

Three phases: root rotation and translation alone on the torso keypoints (gets the body to where it is in
every frame), then everything, then everything again with each arm's pose prior re-centred on its fitted pose
in the frames where the torso-occlusion term placed it (carries that cue to the frames where the arm is beside
the torso, which the frame-0 prior would otherwise flip behind it; ``anchored_prior``) and, in the frames
where the torso has turned about the vertical away from frame 0's view, on its pose before the turn (there
the frame-0 prior's choice between the arm's two depth solutions is made for another view; ``view_turn``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import roma
import torch

from reconstruction.body.base import BodyModel
from reconstruction.keypoints import NUM_BODY, index
from reconstruction.projection import project

logger = logging.getLogger(__name__)

HIP_KEYPOINTS = [index("left_hip"), index("right_hip")]
# Body points whose depth MediaPipe's 3D landmarks give usefully (joint centres of the limbs and torso).
DEPTH_KEYPOINTS = [
    index(n)
    for n in (
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    )
]  # fmt: skip
TORSO_KEYPOINTS = [index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
# Limb joint centres kept on the camera's side of the torso, with the limb's radius there (m): an elbow or
# wrist detected over the torso in the image is in front of it (the torso would hide it, and it cannot be inside).
LIMB_POINTS = [index(n) for n in ("left_elbow", "right_elbow", "left_wrist", "right_wrist")]
LIMB_RADII = (0.04, 0.04, 0.03, 0.03)
# The torso's image region reaches this many hip-to-shoulder half-heights from its centre: the pelvis extends
# below the hip joint centres (anny: its front is still ~10 cm ahead of the hips at 1.2).
TORSO_HALF_HEIGHT_SCALE = 1.2
# Arm joints (anny bone labels, SMPL-X joint names) by side; LIMB_POINTS' columns of each arm (elbow, wrist).
ARM_JOINTS = re.compile(r"clavicle|shoulder|upperarm|lowerarm|wrist|collar|elbow", re.I)
ARM_SIDES = {"left": (re.compile(r"\.L$|^left_"), (0, 2)), "right": (re.compile(r"\.R$|^right_"), (1, 3))}
# The lowest of these stays on the floor.
FOOT_POINTS = [
    index(n)
    for n in ("left_heel", "right_heel", "left_foot_index", "right_foot_index", "left_ankle", "right_ankle")
]  # fmt: skip
# Joint names (anny bone labels and SMPL-X joint names) left out of the body fit: fingers, toes, face.
NON_BODY_JOINTS = re.compile(r"finger|metacarpal|thumb|index|middle|ring|pinky|toe|eye|jaw|tongue|^root$", re.I)
FINGER_JOINTS = re.compile(r"finger|metacarpal|thumb|index|middle|ring|pinky", re.I)


@dataclass(frozen=True)
class FitSettings:
    iterations_global: int = 60  # phase 1: root rotation + translation only
    iterations: int = 200  # phase 2: everything
    lr_pose: float = 0.03
    lr_trans: float = 0.01
    min_confidence: float = 0.3  # keypoints below are ignored
    gmof_sigma_px: float = 25.0  # robust scale of the reprojection error
    hand_weight: float = 0.3  # weight of the 42 hand keypoints relative to the body's
    fit_fingers: bool = True  # optimise finger joints too (only where hand keypoints were seen)
    w_reprojection: float = 1.0
    # Sum over joints of the squared residual from the frame-0 pose (rad^2), every frame. Strong on purpose:
    # monocular 2D leaves limb depth ambiguous and the render's frame-0 pose is the best prior we have
    # (synthetic 60-frame videos, mean MPJPE over 4 categories: 9.2 cm at 2, 5.3 at 50, 4.8 at 150, 5.3 at 500).
    w_pose_prior: float = 150.0
    w_first_frame: float = 200.0  # frame 0 pose and translation are given by the render config
    w_joint_limit: float = 100.0
    joint_limit_rad: float = 2.6  # local rotation magnitude beyond which a joint is implausible
    w_pose_velocity: float = 20.0
    w_pose_acceleration: float = 200.0
    w_trans_velocity: float = 200.0
    w_trans_acceleration: float = 5000.0
    w_depth: float = 20.0  # (z_t - z_0)^2 in m^2: a weak pull, the known body size fixes depth
    # ||trans_t - trans_0||^2 in m^2: the character mostly stays where the render put it (manipulation);
    # a pull only, walking still wins through the keypoints.
    w_trans_prior: float = 2000.0
    # Hip-relative depth of the limbs vs MediaPipe's metric 3D landmarks (m^2). Off by default: on the
    # synthetic scenes it made the fit worse (box, 12 frames: MPJPE 4.4 cm without, 6.7 cm at 1000,
    # 8.1 cm at 5000), MediaPipe's depths being 3-9 cm off on these renders.
    w_relative_depth: float = 0.0
    # Elbows and wrists detected over the torso in the image but behind its seen face (m^2, squared depth
    # short of that face plus the limb's radius). With only 2D keypoints and the pose prior, arms holding
    # something in front of the body came out hanging by its sides instead (the two project alike under a
    # camera above the person): elbows and wrists 17-20 cm too deep. 60-frame videos, MPJPE box / bottle /
    # drill / mug: 9.0 / 4.5 / 5.1 / 3.9 cm without, 6.2 / 3.3 / 4.3 / 3.3 at 30000 (4.0-4.4 at 10000 and
    # 3.3-4.4 at 100000 for the last three).
    w_torso_penetration: float = 30000.0
    # 1 - cos of the root's tilt away from the world's up since frame 0 (turning about the vertical is free).
    # Without it the fit leaned the whole body about the hips instead of bending the spine, sending the feet
    # 5-7 cm too deep (box). With w_floor, MPJPE box / bottle / drill / mug 6.2 / 3.3 / 4.3 / 3.3 ->
    # 5.4 / 2.9 / 3.5 / 2.7 cm (1000 and 10000; 3000 or 30000 within 0.1 cm).
    w_root_tilt: float = 1000.0
    # (height of the lowest foot point above frame 0's floor)^2 in m^2: one foot stays on the floor
    # (standing, stepping, walking; not jumping or climbing).
    w_floor: float = 10000.0
    # Last phase (iterations; 0 = off): the torso-occlusion cue carried through time. An arm's fitted pose in
    # frames where its elbow or wrist is seen over the torso (over_torso >= ``anchor_over_torso``) is known
    # to be in front; elsewhere the frame-0 pose prior pulled it back to frame 0's arms (box: the right arm
    # beside the torso after frame 33 flipped behind it, upper arm +0.10 m deep where the truth is -0.15 m;
    # the 2D fits both and the flip scored lower, its prior cost 58 less). This phase re-centres each arm's
    # prior on its fitted pose at those frames, linearly between them in time (from frame 0's pose before the
    # first) and held after the last. 60-frame videos seed 0 box / bottle / drill / mug, seed 1 box / drill:
    # MPJPE 5.42 / 2.90 / 3.55 / 2.73, 4.37 / 5.02 cm -> 4.52 / 2.90 / 3.09 / 2.38, 3.91 / 4.37 (200
    # iterations: within 0.02 cm); 200 more iterations without re-centring: 5.40 (box), 3.53 (drill).
    iterations_anchored: int = 100
    anchor_over_torso: float = 0.1
    # Frames where the torso has turned about the vertical by more than this (degrees, relative to the line of
    # sight, since frame 0; 0 = off) take, in that last phase, each arm's prior centre from the frames before
    # and after the turn (its fitted pose there, carried in; held to the end if the body does not turn back).
    # Seed-1 bottle: the right hand holds the bottle in front while the body turns ~30 degrees; after the turn
    # the 2D fitted both the arm held forward and one near frame 0's pose (hand 25-35 cm too far), and the
    # frame-0 prior chose the latter (over the video: prior 7.7 less, reprojection 1.5 and torso occlusion 1.0
    # more than with the arm kept forward). Turning, unlike leaning, leaves how an arm hangs or holds as it was
    # (counting any change of view, leaning too, carried arms into the leaning frames: seed-1 drill left hand
    # up to +7 cm). 60-frame videos seed 0 box / bottle / drill / mug, seed 1 bottle / drill: MPJPE 4.54 /
    # 2.87 / 3.09 / 2.36, 3.65 / 4.23 cm and hand error in contact 7.9 / 4.5 / 4.0 / 4.4, 15.7 / 7.8 cm ->
    # 4.54 / 2.86 / 3.02 / 2.33, 3.09 / 4.26 and 7.9 / 4.7 / 4.1 / 4.5, 4.8 / 8.0 (20 degrees: MPJPE within
    # 0.04 cm, box hand 8.3). Left: a hand lowered after the turn stays forward with the held pose (seed-1
    # bottle frame 56: 16 cm too close).
    anchor_turn_deg: float = 15.0


@dataclass
class BodyFitResult:
    pose_aa: torch.Tensor  # (T, J, 3) local axis-angle, root in the camera frame
    trans: torch.Tensor  # (T, 3) camera frame
    keypoints_3d: torch.Tensor  # (T, 75, 3) camera frame
    reprojection_px: torch.Tensor  # (T, 75) pixel error of every keypoint (NaN where not used)
    losses: dict[str, float] = field(default_factory=dict)  # final value of each term
    history: list[float] = field(default_factory=list)  # total loss per iteration


def select_joints(joint_names: list[str], fingers: bool) -> list[int]:
    """Indices of the joints given a pose residual (never the root, which has its own variable)."""
    chosen = []
    for i, name in enumerate(joint_names):
        if i == 0:
            continue
        if not NON_BODY_JOINTS.search(name) or (fingers and FINGER_JOINTS.search(name)):
            chosen.append(i)
    return chosen


def transform_body(
    model: BodyModel, pose_aa: torch.Tensor, shape: torch.Tensor, trans: torch.Tensor, transform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-express a posed body under a rigid ``transform`` (4,4) (e.g. world -> camera).

    Rotates the root and solves for the translation that puts every joint where ``transform`` sends it.
    Works whatever point the model rotates its root about: for a rigid root change the offset between the
    transformed body and the re-rotated one is the same for all joints.
    """
    rotation, offset = transform[:3, :3], transform[:3, 3]
    new_pose = pose_aa.clone()
    new_pose[:, 0] = roma.rotmat_to_rotvec(rotation @ roma.rotvec_to_rotmat(pose_aa[:, 0]))
    with torch.no_grad():
        target = model.forward(pose_aa, shape, trans).joints @ rotation.T + offset
        rotated = model.forward(new_pose, shape, torch.zeros_like(trans)).joints
    return new_pose, (target - rotated).mean(dim=1)


def keypoint_weights(keypoints_2d: torch.Tensor, settings: FitSettings) -> torch.Tensor:
    """(T, 75) weights: confidence above the threshold, hands scaled by ``hand_weight``."""
    conf = keypoints_2d[..., 2]
    weights = torch.where(conf >= settings.min_confidence, conf, torch.zeros_like(conf))
    weights = weights.clone()
    weights[:, NUM_BODY:] *= settings.hand_weight
    return weights


@dataclass(frozen=True)
class TorsoExtent:
    """Depth extent of the torso along its forward axis, measured on the body mesh (m, from the torso centre)."""

    front: float
    back: float


def torso_frame(keypoints: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(..., 75, 3) keypoints -> the torso's centre, unit left/up/forward axes (..., 3), half width and half height.

    Left runs right shoulder -> left shoulder, up mid-hip -> mid-shoulder (made orthogonal to left), forward
    is left x up (the way the chest faces).
    """
    ls, rs, lh, rh = (keypoints[..., i, :] for i in TORSO_KEYPOINTS)
    left = torch.nn.functional.normalize(ls - rs, dim=-1)
    up = (ls + rs) / 2 - (lh + rh) / 2
    half_height = up.norm(dim=-1) / 2
    up = torch.nn.functional.normalize(up - (up * left).sum(-1, keepdim=True) * left, dim=-1)
    forward = torch.linalg.cross(left, up, dim=-1)
    centre = (ls + rs + lh + rh) / 4
    return centre, left, up, forward, (ls - rs).norm(dim=-1) / 2, half_height


def torso_extent(vertices: torch.Tensor, keypoints: torch.Tensor) -> TorsoExtent:
    """Front and back of the torso of one posed body ((V,3) vertices, (75,3) keypoints): the extreme forward
    offsets of the vertices in the torso's central column (half its width, shoulder to hip height)."""
    centre, left, up, forward, half_width, half_height = torso_frame(keypoints)
    offset = vertices - centre
    column = ((offset @ left).abs() < 0.5 * half_width) & ((offset @ up).abs() < half_height)
    depth = offset[column] @ forward
    if depth.numel() == 0:
        return TorsoExtent(front=0.0, back=0.0)
    return TorsoExtent(front=float(depth.max()), back=float(depth.min()))


def over_torso_2d(keypoints_2d: torch.Tensor, weights: torch.Tensor, edge_px: float = 5.0) -> torch.Tensor:
    """(T, 4) weights in [0, 1]: each elbow/wrist detection lies over the detected torso in the image.

    The torso's image region is the quadrilateral of the detected shoulders and hips, stretched
    ``TORSO_HALF_HEIGHT_SCALE`` half-heights down and up from its centre (the pelvis reaches below the hip
    joints); soft ``edge_px`` edges. Zero where a limb point or a torso point was not detected.
    """
    ls, rs, lh, rh = (keypoints_2d[:, i, :2] for i in TORSO_KEYPOINTS)
    centre = (ls + rs + lh + rh) / 4
    across = (ls - rs + lh - rh) / 4  # centre -> left side
    up = (ls + rs - lh - rh) / 4  # centre -> shoulders
    basis = torch.stack([across, up], dim=-1)  # (T, 2, 2)
    det = torch.linalg.det(basis)
    safe = det.abs() > 1.0  # px^2: a torso seen edge-on has no area to be over
    basis = torch.where(safe[:, None, None], basis, torch.eye(2, dtype=basis.dtype, device=basis.device))
    offset = keypoints_2d[:, LIMB_POINTS, :2] - centre[:, None]
    coords = torch.linalg.solve(basis[:, None], offset.unsqueeze(-1)).squeeze(-1)  # (T, 4, 2) half-sizes
    width_px = across.norm(dim=-1, keepdim=True)
    height_px = up.norm(dim=-1, keepdim=True)
    inside = torch.sigmoid((1 - coords[..., 0].abs()) * width_px / edge_px) * torch.sigmoid(
        (TORSO_HALF_HEIGHT_SCALE - coords[..., 1].abs()) * height_px / edge_px
    )
    seen = (weights[:, LIMB_POINTS] > 0) & (weights[:, TORSO_KEYPOINTS] > 0).all(1, keepdim=True) & safe[:, None]
    return inside * seen


def torso_penetration(keypoints: torch.Tensor, extent: TorsoExtent, over_torso: torch.Tensor) -> torch.Tensor:
    """(T,) sum over the elbows and wrists of the squared depth (m^2) by which each lies behind the torso's
    face that the camera sees (grown by the limb's radius), weighted by ``over_torso`` (T,4): a point seen
    over the torso in the image is on the camera's side of it (behind it the torso would hide it, inside
    is impossible). The camera sees the front when the chest faces it (camera-frame keypoints), else the back.
    """
    centre, _, _, forward, _, _ = torso_frame(keypoints)
    depth = ((keypoints[:, LIMB_POINTS] - centre[:, None]) * forward[:, None]).sum(-1)
    radius = torch.tensor(LIMB_RADII, dtype=keypoints.dtype, device=keypoints.device)
    facing = ((forward * centre).sum(-1, keepdim=True) < 0).detach()  # chest towards the camera at the origin
    hidden = torch.where(facing, extent.front + radius - depth, depth - (extent.back - radius))
    return (over_torso * hidden.clamp(min=0) ** 2).sum(1)


def arm_joint_columns(joint_names: list[str], joints: list[int]) -> dict[str, list[int]]:
    """Positions in ``joints`` (the fitted joints) of each side's arm joints, clavicle to wrist."""
    columns: dict[str, list[int]] = {}
    for side, (pattern, _) in ARM_SIDES.items():
        columns[side] = [
            k
            for k, j in enumerate(joints)
            if ARM_JOINTS.search(joint_names[j])
            and not FINGER_JOINTS.search(joint_names[j])
            and pattern.search(joint_names[j])
        ]
    return columns


def view_turn(keypoints: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(T,) how far (rad) the torso has turned about the world's ``up`` (3,) since frame 0, relative to the
    camera's line of sight ((T, 75, 3) camera-frame keypoints, camera at the origin): the change since frame 0
    of the angle about up from the direction to the camera to the chest's forward axis."""
    centre, _, _, forward, _, _ = torso_frame(keypoints)

    def flat(v: torch.Tensor) -> torch.Tensor:
        return v - (v * up).sum(-1, keepdim=True) * up

    forward, ray = flat(forward), flat(-centre)
    angle = torch.atan2((torch.linalg.cross(ray, forward, dim=-1) * up).sum(-1), (ray * forward).sum(-1))
    change = angle - angle[:1]
    return torch.atan2(torch.sin(change), torch.cos(change)).abs()


def _interpolate(values: torch.Tensor, anchors: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(T, ...) from ``values`` (A, ...) at the sorted frames ``anchors`` (A,): linear in time between them,
    held after the last."""
    frames = torch.arange(num_frames, device=values.device)
    after = torch.searchsorted(anchors, frames, right=False).clamp(max=len(anchors) - 1)  # first anchor >= t
    before = (after - (anchors[after] > frames).long()).clamp(min=0)  # last anchor <= t
    span = (anchors[after] - anchors[before]).clamp(min=1).to(values.dtype)
    u = ((frames - anchors[before]).to(values.dtype) / span).clamp(0, 1)
    u = torch.where(frames > anchors[-1], torch.zeros_like(u), u)  # held after the last anchor
    u = u.reshape((-1,) + (1,) * (values.dim() - 1))
    return (1 - u) * values[before] + u * values[after]


def anchored_prior(
    residual: torch.Tensor,
    over_torso: torch.Tensor,
    arm_columns: dict[str, list[int]],
    threshold: float,
    turned: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """(T, n, 3) pose-prior centre (residual from frame 0's pose) that keeps each arm where the torso-occlusion
    cue put it and as it was before the body turned, or None when no arm is anchored anywhere.

    ``residual`` (T, n, 3): the fitted pose residuals; ``over_torso`` (T, 4): ``over_torso_2d``. Anchors of an
    arm: frame 0 (residual 0: its pose is given) and the frames where its elbow or wrist is seen over the
    torso at least ``threshold``, taking the fitted residual there. Between anchors the centre is
    interpolated linearly in time; after the last one it is held. ``turned`` (T,) bool: frames seen from
    another side than frame 0 (``view_turn``); there, unless over the torso, the centre is instead the
    fitted residual of the other frames carried in the same way (from the frames before the turn, towards
    those after it). Non-arm joints keep 0 (frame 0's pose).
    """
    num_frames = residual.shape[0]
    centre = torch.zeros_like(residual)
    anchored_any = False
    for side, (_, slots) in ARM_SIDES.items():
        cols = arm_columns.get(side) or []
        if not cols:
            continue
        seen = over_torso[:, list(slots)].max(dim=1).values >= threshold
        seen[0] = True
        values = residual[:, cols].clone()
        values[0] = 0.0  # frame 0: the given pose
        anchors = torch.nonzero(seen).squeeze(1)
        if len(anchors) > 1:
            anchored_any = True
            centre[:, cols] = _interpolate(values[anchors], anchors, num_frames)
        carried = torch.zeros_like(seen) if turned is None else turned & ~seen
        if bool(carried.any()):
            anchored_any = True
            sources = torch.nonzero(~carried).squeeze(1)
            held = _interpolate(values[sources], sources, num_frames)
            centre[:, cols] = torch.where(carried[:, None, None], held, centre[:, cols])
    return centre if anchored_any else None


def initial_translations(
    model: BodyModel,
    pose_aa: torch.Tensor,
    shape: torch.Tensor,
    trans0: torch.Tensor,
    keypoints_2d: torch.Tensor,
    weights: torch.Tensor,
    K: torch.Tensor,
) -> torch.Tensor:
    """(T,3): frame-0 translation shifted per frame so the torso lands on the detected torso (same depth).

    Frames without a detected torso take the nearest frame's value.
    """
    num_frames = keypoints_2d.shape[0]
    with torch.no_grad():
        body = model.forward(pose_aa[:1], shape, trans0[None]).keypoints[0]
    torso_w = weights[:, TORSO_KEYPOINTS] > 0  # (T, 4)
    seen = torso_w.any(dim=1)
    trans = trans0.expand(num_frames, 3).clone()
    if not bool(seen.any()):
        return trans
    depth = body[TORSO_KEYPOINTS, 2].mean()
    projected = project(body[TORSO_KEYPOINTS], K)  # (4, 2)
    detected = keypoints_2d[:, TORSO_KEYPOINTS, :2]  # (T, 4, 2)
    mask = torso_w.unsqueeze(-1).float()
    shift_px = ((detected - projected) * mask).sum(1) / mask.sum(1).clamp(min=1)  # (T, 2)
    shift_m = shift_px * depth / torch.stack([K[0, 0], K[1, 1]])
    trans[:, :2] = trans0[:2] + shift_m
    # Fill frames with no torso from the nearest frame that has one.
    seen_idx = torch.nonzero(seen).squeeze(1)
    nearest = seen_idx[(torch.arange(num_frames, device=seen.device)[:, None] - seen_idx[None]).abs().argmin(1)]
    return trans[nearest]


def fit_body(
    model: BodyModel,
    keypoints_2d: torch.Tensor,
    K: torch.Tensor,
    init_pose_aa: torch.Tensor,
    init_trans: torch.Tensor,
    shape: torch.Tensor,
    settings: FitSettings | None = None,
    progress: Callable[[float], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    body_3d: torch.Tensor | None = None,
    up: torch.Tensor | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> BodyFitResult:
    """Fit all frames of ``keypoints_2d`` (T,75,3) given frame 0's pose (J,3) and translation (3,), camera frame.

    ``body_3d`` (T,33,4): optional metric hip-centred 3D body landmarks + visibility (MediaPipe's), used
    for the limbs' relative depth. ``up`` (3,): the world's up direction in the camera frame (the floor's
    normal; frame 0 stands on the floor), else the body's up axis at frame 0. ``start``: a camera-frame
    pose (T,J,3) and translation (T,3) to start from instead of frame 0's (with all iterations 0, ``losses``
    then scores that motion under this objective).
    """
    settings = settings or FitSettings()
    device, dtype = keypoints_2d.device, keypoints_2d.dtype
    num_frames = keypoints_2d.shape[0]
    K = K.to(device=device, dtype=dtype)
    shape = shape.to(device=device, dtype=dtype)
    init_pose = init_pose_aa.to(device=device, dtype=dtype).expand(num_frames, -1, -1).clone()
    init_trans = init_trans.to(device=device, dtype=dtype)
    weights = keypoint_weights(keypoints_2d, settings)
    hands_seen = bool((weights[:, NUM_BODY:] > 0).any())
    joints = torch.tensor(select_joints(model.joint_names, settings.fit_fingers and hands_seen), device=device)
    root_rot0 = roma.rotvec_to_rotmat(init_pose[:, 0])

    root_residual = torch.zeros(num_frames, 3, device=device, dtype=dtype, requires_grad=True)
    pose_residual = torch.zeros(num_frames, len(joints), 3, device=device, dtype=dtype, requires_grad=True)
    trans_start = initial_translations(model, init_pose, shape, init_trans, keypoints_2d, weights, K)
    if start is not None:
        start_pose, start_trans = (v.to(device=device, dtype=dtype) for v in start)
        with torch.no_grad():
            root_residual.copy_(
                roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(start_pose[:, 0]) @ root_rot0.transpose(1, 2))
            )
            pose_residual.copy_(start_pose[:, joints] - init_pose[:, joints])
        trans_start = start_trans
    trans = trans_start.clone().requires_grad_(True)
    # Centre of the pose prior (residual from frame 0's pose); moved to the anchored poses for the last phase.
    prior_offset = torch.zeros_like(pose_residual)

    def full_pose() -> torch.Tensor:
        pose = init_pose.clone()
        pose[:, 0] = roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(root_residual) @ root_rot0)
        pose[:, joints] = init_pose[:, joints] + pose_residual
        return pose

    # The world's up in the camera frame; else the body's own up axis (Z) at frame 0.
    up = root_rot0[0, :, 2] if up is None else torch.nn.functional.normalize(up.to(device=device, dtype=dtype), dim=0)
    with torch.no_grad():
        floor = (model.forward(init_pose[:1], shape, init_trans[None]).keypoints[0, FOOT_POINTS] @ up).min()
        # The torso's depth, measured on the rest pose (whatever frame 0's arms are doing).
        rest = model.forward(model.rest_pose(1).to(init_pose), shape, torch.zeros_like(init_trans)[None])
    extent = torso_extent(rest.vertices[0], rest.keypoints[0])
    over_torso = over_torso_2d(keypoints_2d, weights)

    torso_only = torch.zeros_like(weights)
    torso_only[:, TORSO_KEYPOINTS] = weights[:, TORSO_KEYPOINTS]
    sigma2 = settings.gmof_sigma_px**2
    if body_3d is not None and settings.w_relative_depth > 0:
        body_3d = body_3d.to(device=device, dtype=dtype)
        ref_depth = body_3d[:, DEPTH_KEYPOINTS, 2] - body_3d[:, HIP_KEYPOINTS, 2].mean(1, keepdim=True)
        depth_weights = torch.where(body_3d[:, DEPTH_KEYPOINTS, 3] >= settings.min_confidence, 1.0, 0.0)
        depth_weights = depth_weights * (weights[:, HIP_KEYPOINTS] > 0).all(1, keepdim=True)
    else:
        depth_weights = None

    def losses(use_weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        pose = full_pose()
        output = model.forward(pose, shape.expand(num_frames, -1), trans)
        uv = project(output.keypoints, K)
        sq = ((uv - keypoints_2d[..., :2]) ** 2).sum(-1)
        robust = sigma2 * sq / (sigma2 + sq)
        terms = {
            "reprojection": settings.w_reprojection * (use_weights * robust).sum() / use_weights.sum().clamp(min=1e-6)
        }
        local = pose[:, joints]
        terms["pose_prior"] = settings.w_pose_prior * ((pose_residual - prior_offset) ** 2).sum((1, 2)).mean()
        first = (
            (pose_residual[0] ** 2).sum() + (root_residual[0] ** 2).sum() + ((trans[0] - init_trans) ** 2).sum() * 100
        )
        terms["first_frame"] = settings.w_first_frame * first
        excess = (local.norm(dim=-1) - settings.joint_limit_rad).clamp(min=0)
        terms["joint_limit"] = settings.w_joint_limit * (excess**2).sum(1).mean()
        if num_frames > 1:
            rot = roma.rotvec_to_rotmat(pose[:, 0])
            vel = torch.cat([(local[1:] - local[:-1]).flatten(1), (rot[1:] - rot[:-1]).flatten(1)], 1)
            terms["pose_velocity"] = settings.w_pose_velocity * (vel**2).sum(1).mean()
            terms["trans_velocity"] = settings.w_trans_velocity * ((trans[1:] - trans[:-1]) ** 2).sum(1).mean()
        if num_frames > 2:
            acc = torch.cat(
                [
                    (local[2:] - 2 * local[1:-1] + local[:-2]).flatten(1),
                    (rot[2:] - 2 * rot[1:-1] + rot[:-2]).flatten(1),
                ],
                1,
            )
            terms["pose_acceleration"] = settings.w_pose_acceleration * (acc**2).sum(1).mean()
            trans_acc = trans[2:] - 2 * trans[1:-1] + trans[:-2]
            terms["trans_acceleration"] = settings.w_trans_acceleration * (trans_acc**2).sum(1).mean()
        if depth_weights is not None:
            points = output.keypoints
            depth = points[:, DEPTH_KEYPOINTS, 2] - points[:, HIP_KEYPOINTS, 2].mean(1, keepdim=True)
            residual = (depth - ref_depth) ** 2
            # Robust (GMoF, 10 cm scale): a wrong MediaPipe depth must not drag a well-seen limb.
            robust_depth = 0.01 * residual / (0.01 + residual)
            terms["relative_depth"] = (
                settings.w_relative_depth * (depth_weights * robust_depth).sum() / (depth_weights.sum().clamp(min=1.0))
            )
        if settings.w_torso_penetration > 0:
            terms["torso_penetration"] = (
                settings.w_torso_penetration * torso_penetration(output.keypoints, extent, over_torso).mean()
            )
        if settings.w_root_tilt > 0:
            tilted = roma.rotvec_to_rotmat(root_residual) @ up
            terms["root_tilt"] = settings.w_root_tilt * (1 - tilted @ up).mean()
        if settings.w_floor > 0:
            lowest = (output.keypoints[:, FOOT_POINTS] @ up).min(1).values
            terms["floor"] = settings.w_floor * ((lowest - floor) ** 2).mean()
        terms["trans_prior"] = settings.w_trans_prior * ((trans - init_trans) ** 2).sum(1).mean()
        terms["depth"] = settings.w_depth * ((trans[:, 2] - init_trans[2]) ** 2).mean()
        return sum(terms.values()), terms, output.keypoints

    history: list[float] = []
    anchored = settings.iterations_anchored if settings.w_torso_penetration > 0 else 0
    total_iterations = settings.iterations_global + settings.iterations + anchored
    phases = [
        (settings.iterations_global, [root_residual, trans], torso_only if bool((torso_only > 0).any()) else weights),
        (settings.iterations, [root_residual, trans, pose_residual], weights),
        (anchored, [root_residual, trans, pose_residual], weights),
    ]
    done = 0
    terms: dict[str, torch.Tensor] = {}
    for phase, (iterations, variables, use_weights) in enumerate(phases):
        if iterations <= 0:
            continue
        if phase == 2:
            columns = arm_joint_columns(model.joint_names, joints.tolist())
            turned = None
            if settings.anchor_turn_deg > 0:
                with torch.no_grad():
                    fitted = model.forward(full_pose(), shape.expand(num_frames, -1), trans).keypoints
                turned = view_turn(fitted, up) > np.radians(settings.anchor_turn_deg)
            centre = anchored_prior(
                pose_residual.detach(), over_torso, columns, settings.anchor_over_torso, turned=turned
            )
            if centre is None:
                continue
            prior_offset = centre
        groups = [{"params": [v], "lr": settings.lr_trans if v is trans else settings.lr_pose} for v in variables]
        optimizer = torch.optim.Adam(groups)
        for _ in range(iterations):
            optimizer.zero_grad(set_to_none=True)
            total, terms, _ = losses(use_weights)
            total.backward()
            optimizer.step()
            history.append(float(total.detach()))
            done += 1
            if done % 20 == 0:
                if check_cancelled is not None:
                    check_cancelled()
                if progress is not None:
                    progress(done / total_iterations)

    with torch.no_grad():
        _, terms, _ = losses(weights)
        pose = full_pose()
        output = model.forward(pose, shape.expand(num_frames, -1), trans)
        error = (project(output.keypoints, K) - keypoints_2d[..., :2]).norm(dim=-1)
        error = torch.where(weights > 0, error, torch.full_like(error, float("nan")))
    logger.info(
        "fitted %d frames: median reprojection %.1f px, %s",
        num_frames,
        float(np.nanmedian(error.cpu().numpy())) if bool((weights > 0).any()) else float("nan"),
        ", ".join(f"{k} {float(v.detach()):.3g}" for k, v in terms.items()),
    )
    return BodyFitResult(
        pose_aa=pose.detach(),
        trans=trans.detach(),
        keypoints_3d=output.keypoints.detach(),
        reprojection_px=error,
        losses={k: float(v.detach()) for k, v in terms.items()},
        history=history,
    )
