"""Hand-placement inverse kinematics on a ``BodyModel``: put palms on an object's surface.

Batched over key poses (B): Adam on axis-angle residuals of the arm chains (clavicle to wrist) of the
grasping hands. Objective: palm centre at the grasp site offset along the surface normal, palm facing
the surface, fingers along the site's finger direction, and a small pull towards the initial pose (keeps
elbows and shoulders where a person would have them). Contact is then closed by measurement, not by a
penalty: the offset is corrected from the hand's exact signed distance to the object until its closest
vertex sits ``target_gap`` off the surface (so no vertex is inside). The chain names are anny's;
``ARM_CHAINS`` is the only model-specific table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from reconstruction import keypoints as kp

logger = logging.getLogger(__name__)

# Bones moved by the IK, per hand (anny labels). Spine and legs stay as the motion script sets them.
ARM_CHAINS: dict[str, dict[str, tuple[str, ...]]] = {
    "anny": {
        "left": ("clavicle.L", "shoulder01.L", "upperarm01.L", "upperarm02.L", "lowerarm01.L", "lowerarm02.L", "wrist.L"),
        "right": ("clavicle.R", "shoulder01.R", "upperarm01.R", "upperarm02.R", "lowerarm01.R", "lowerarm02.R", "wrist.R"),
    }
}  # fmt: skip
FINGER_BONES: dict[str, dict[str, tuple[str, ...]]] = {
    "anny": {
        side: tuple(f"finger{f}-{k}.{suffix}" for f in range(2, 6) for k in (1, 2, 3)) + (f"finger1-2.{suffix}", f"finger1-3.{suffix}")
        for side, suffix in (("left", "L"), ("right", "R"))
    }
}  # fmt: skip

HAND_SLICES = {"left": kp.LEFT_HAND_SLICE, "right": kp.RIGHT_HAND_SLICE}
TIP_INDICES = (4, 8, 12, 16, 20)  # thumb, index, middle, ring, pinky tips in a 21-point hand
# Sign that turns cross(index_mcp - wrist, pinky_mcp - wrist) into the palm's outward normal (mirror images).
PALM_NORMAL_SIGN = {"left": -1.0, "right": 1.0}


@dataclass
class HandTarget:
    hand: str  # "left" | "right"
    point: torch.Tensor  # (B,3) grasp point on the surface, world
    normal: torch.Tensor  # (B,3) outward surface normal, world (the palm faces -normal)
    finger_dir: torch.Tensor  # (B,3) unit direction the fingers should point, world


@dataclass
class IKConfig:
    steps: int = 60  # first solve: palm placed ``approach_clearance`` outside the site
    lr: float = 0.05
    settle_steps: int = 25  # each contact round re-solves with a corrected palm offset
    settle_lr: float = 0.01
    max_refinements: int = 6
    palm_half_thickness: float = 0.018  # palm centre (knuckle/wrist heads) to palm skin, metres
    approach_clearance: float = 0.05
    target_gap: float = 0.002  # wanted distance of the hand's closest vertex to the surface
    gap_tolerance: float = 0.002  # accept closest vertex within target_gap +- this
    w_position: float = 400.0
    w_normal: float = 2.0
    w_finger_dir: float = 1.0
    w_prior: float = 0.05
    # Finger curl after contact: finger tips pulled onto the surface, no hand vertex inside it.
    curl_steps: int = 30
    curl_lr: float = 0.03
    w_tips: float = 1.0e3
    w_penetration: float = 1.0e4
    w_finger_prior: float = 0.01
    penetration_tolerance: float = 0.003


@dataclass
class IKResult:
    pose_aa: torch.Tensor  # (B,J,3) solved pose
    palm_error: dict[str, float]  # per hand: max distance of the palm centre to the grasp site (m)
    min_signed_distance: dict[str, float]  # per hand: min hand-vertex signed distance over the batch (m)
    closest_gap: dict[str, float]  # per hand: max over the batch of the closest hand vertex's distance (m)


def hand_frame(keypoints: torch.Tensor, hand: str) -> torch.Tensor:
    """(B,4,4) rigid frame of a hand from its wrist, index- and pinky-knuckle keypoints (B,75,3).

    These three points ride on the wrist bone, so the frame moves rigidly with the palm: the motion
    script uses it to carry the object exactly with the hand."""
    h = keypoints[:, HAND_SLICES[hand]]
    wrist, index_mcp, pinky_mcp = h[:, 0], h[:, 5], h[:, 17]
    x = torch.nn.functional.normalize(index_mcp - pinky_mcp, dim=-1)
    forward = (index_mcp + pinky_mcp) / 2 - wrist
    z = torch.nn.functional.normalize(torch.cross(x, forward, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    frame = torch.zeros(keypoints.shape[0], 4, 4, dtype=keypoints.dtype, device=keypoints.device)
    frame[:, :3, :3] = torch.stack([x, y, z], dim=-1)
    frame[:, :3, 3] = wrist
    frame[:, 3, 3] = 1
    return frame


def palm_geometry(keypoints: torch.Tensor, hand: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Palm centre (B,3), outward palm normal (B,3) and finger direction (B,3) from keypoints (B,75,3)."""
    h = keypoints[:, HAND_SLICES[hand]]
    wrist, index_mcp, middle_mcp, pinky_mcp = h[:, 0], h[:, 5], h[:, 9], h[:, 17]
    centre = (wrist + index_mcp + middle_mcp + pinky_mcp) / 4
    normal = PALM_NORMAL_SIGN[hand] * torch.cross(index_mcp - wrist, pinky_mcp - wrist, dim=-1)
    normal = torch.nn.functional.normalize(normal, dim=-1)
    finger = torch.nn.functional.normalize(middle_mcp - wrist, dim=-1)
    return centre, normal, finger


def solve_hand_ik(
    body,
    shape: torch.Tensor,
    init_pose: torch.Tensor,
    trans: torch.Tensor,
    targets: list[HandTarget],
    signed_distance: Callable[[torch.Tensor], torch.Tensor],
    config: IKConfig | None = None,
) -> IKResult:
    """Solve arm and finger angles so each target hand grasps the object at its site.

    ``init_pose`` (B,J,3) fixes every other joint; ``signed_distance`` maps world points (B,N,3) to the
    object's signed distance (B,N), negative inside.
    """
    config = config or IKConfig()
    chains = ARM_CHAINS.get(body.name)
    if chains is None:
        raise ValueError(f"hand IK has no arm chain table for body model {body.name!r}")
    init_pose = init_pose.detach()
    moved: list[int] = []
    for target in targets:
        moved += [body.joint_index(name) for name in chains[target.hand]]
    moved_index = torch.tensor(sorted(set(moved)), device=init_pose.device)
    batch = init_pose.shape[0]
    residual = torch.zeros(batch, len(moved_index), 3, dtype=init_pose.dtype, device=init_pose.device)
    residual.requires_grad_(True)
    # Only the grasping hands' vertices are skinned (keypoints come from the skeleton either way).
    hand_ids = torch.cat([body.vertex_segments[f"{t.hand}_hand"] for t in targets])
    hand_vertices, start = {}, 0
    for t in targets:
        count = len(body.vertex_segments[f"{t.hand}_hand"])
        hand_vertices[t.hand] = torch.arange(start, start + count, device=hand_ids.device)
        start += count
    # Palm-centre offset along each site's normal; contact rounds move it until the hand just touches.
    offsets = {
        t.hand: torch.full((batch,), config.palm_half_thickness + config.approach_clearance, dtype=init_pose.dtype)
        for t in targets
    }

    def placement_loss(residual_now: torch.Tensor) -> torch.Tensor:
        out = body.forward(init_pose.index_add(1, moved_index, residual_now), shape, trans, vertex_ids=hand_ids)
        loss = config.w_prior * (residual_now**2).sum(dim=(1, 2)).mean()
        for target in targets:
            centre, normal, finger = palm_geometry(out.keypoints, target.hand)
            goal = target.point + target.normal * offsets[target.hand][:, None]
            loss = loss + config.w_position * ((centre - goal) ** 2).sum(-1).mean()
            loss = loss + config.w_normal * (1 + (normal * target.normal).sum(-1)).mean()  # palm faces -normal
            loss = loss + config.w_finger_dir * (1 - (finger * target.finger_dir).sum(-1)).mean()
        return loss

    def optimise(steps: int, lr: float) -> None:
        # A fresh Adam per round: momentum from the previous goal must not carry over.
        optimiser = torch.optim.Adam([residual], lr=lr, betas=(0.8, 0.99))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps), eta_min=lr * 0.1)
        for _ in range(steps):
            optimiser.zero_grad()
            placement_loss(residual).backward()
            optimiser.step()
            schedule.step()

    @torch.no_grad()
    def measure():
        return measure_pose(init_pose.index_add(1, moved_index, residual.detach()))

    @torch.no_grad()
    def measure_pose(pose: torch.Tensor):
        out = body.forward(pose, shape, trans, vertex_ids=hand_ids)
        closest, palm_error = {}, {}
        for target in targets:
            closest[target.hand] = signed_distance(out.vertices[:, hand_vertices[target.hand]]).min(dim=-1).values
            centre, _, _ = palm_geometry(out.keypoints, target.hand)
            palm_error[target.hand] = float((centre - target.point).norm(dim=-1).max())
        return pose, closest, palm_error

    # Place the palm outside the site, then close the gap: the hand's closest vertex (signed distance
    # over all its vertices, so also the deepest one) is driven to ``target_gap`` by shifting the goal
    # along the normal and re-solving. The hand never has to pass through the object.
    optimise(config.steps, config.lr)
    pose, closest, palm_error = measure()
    for round_index in range(config.max_refinements):
        if all(float((gap - config.target_gap).abs().max()) <= config.gap_tolerance for gap in closest.values()):
            break
        for hand, gap in closest.items():
            offsets[hand] = offsets[hand] - (gap - config.target_gap)
        optimise(config.settle_steps, config.settle_lr)
        pose, closest, palm_error = measure()
        logger.debug("hand IK contact round %d: closest %s", round_index, {h: g.tolist() for h, g in closest.items()})
    pose = curl_fingers(body, shape, pose, trans, targets, signed_distance, config)
    _, closest, palm_error = measure_pose(pose)
    stats = {hand: (palm_error[hand], float(closest[hand].min()), float(closest[hand].max())) for hand in closest}
    result = IKResult(
        pose_aa=pose.detach(),
        palm_error={hand: s[0] for hand, s in stats.items()},
        min_signed_distance={hand: s[1] for hand, s in stats.items()},
        closest_gap={hand: s[2] for hand, s in stats.items()},
    )
    logger.info(
        "hand IK: palm error %s min sd %s gap %s", result.palm_error, result.min_signed_distance, result.closest_gap
    )
    return result


def curl_fingers(
    body,
    shape: torch.Tensor,
    pose: torch.Tensor,
    trans: torch.Tensor,
    targets: list[HandTarget],
    signed_distance: Callable[[torch.Tensor], torch.Tensor],
    config: IKConfig,
) -> torch.Tensor:
    """Bend the fingers of hands already touching the object so their tips rest on its surface.

    Only finger angles move. Tip keypoints are pulled to ``target_gap`` outside the surface while every
    hand vertex is pushed out of the object; if the result still penetrates deeper than
    ``penetration_tolerance`` the curl is halved until it does not (never worse than the uncurled hand)."""
    finger_index = torch.tensor(
        sorted({body.joint_index(n) for t in targets for n in FINGER_BONES[body.name][t.hand]}), device=pose.device
    )
    base = pose.detach()
    curl = torch.zeros(base.shape[0], len(finger_index), 3, dtype=base.dtype, device=base.device, requires_grad=True)
    hand_ids = [body.vertex_segments[f"{t.hand}_hand"] for t in targets]
    all_ids = torch.cat(hand_ids)
    bounds = torch.tensor([0] + [len(ids) for ids in hand_ids]).cumsum(0).tolist()

    def hand_distances(curl_now: torch.Tensor):
        out = body.forward(base.index_add(1, finger_index, curl_now), shape, trans, vertex_ids=all_ids)
        for k, target in enumerate(targets):
            tips = out.keypoints[:, HAND_SLICES[target.hand]][:, list(TIP_INDICES)]
            yield signed_distance(tips), signed_distance(out.vertices[:, bounds[k] : bounds[k + 1]])

    optimiser = torch.optim.Adam([curl], lr=config.curl_lr, betas=(0.8, 0.99))
    for _ in range(config.curl_steps):
        optimiser.zero_grad()
        loss = config.w_finger_prior * (curl**2).sum(dim=(1, 2)).mean()
        for tip_sd, vertex_sd in hand_distances(curl):
            loss = loss + config.w_tips * (torch.relu(tip_sd - config.target_gap) ** 2).sum(-1).mean()
            loss = loss + config.w_penetration * (torch.relu(-vertex_sd) ** 2).sum(-1).mean()
        loss.backward()
        optimiser.step()
    scale = 1.0
    with torch.no_grad():
        for _ in range(5):
            deepest = min(float(vertex_sd.min()) for _, vertex_sd in hand_distances(curl * scale))
            if deepest >= -config.penetration_tolerance:
                return base.index_add(1, finger_index, curl.detach() * scale)
            scale *= 0.5
    logger.warning("finger curl penetrates the object; fingers left as they were")
    return base
