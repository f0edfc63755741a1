"""Hand-placement inverse kinematics on a ``BodyModel``: put palms on an object's surface.

Batched over key poses (B), a few hundred Adam steps on axis-angle residuals of the arm chain (clavicle
to wrist) and the fingers of the grasping hands. Objective: palm centre at the grasp site (offset by the
palm's half thickness), palm facing the surface, fingers along the site's finger direction, no hand
vertex inside the object (signed distance >= 0), the closest hand vertex touching it, finger tips
curled onto the surface, and a small pull towards the initial pose (keeps elbows and shoulders where a
person would have them). The chain names are anny's; ``ARM_CHAINS`` is the only model-specific table.
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
# Sign that turns cross(index_mcp - wrist, pinky_mcp - wrist) into the palm's outward normal (mirror images).
PALM_NORMAL_SIGN = {"left": -1.0, "right": 1.0}
TIP_INDICES = (4, 8, 12, 16, 20)  # thumb, index, middle, ring, pinky tips in a 21-point hand


@dataclass
class HandTarget:
    hand: str  # "left" | "right"
    point: torch.Tensor  # (B,3) grasp point on the surface, world
    normal: torch.Tensor  # (B,3) outward surface normal, world (the palm faces -normal)
    finger_dir: torch.Tensor  # (B,3) unit direction the fingers should point, world


@dataclass
class IKConfig:
    steps: int = 100
    lr: float = 0.05
    contact_lr: float = 0.01
    palm_half_thickness: float = 0.018  # palm centre (knuckle/wrist heads) to palm skin, metres
    w_position: float = 400.0
    w_normal: float = 2.0
    w_finger_dir: float = 1.0
    w_penetration: float = 4.0e4
    w_gap: float = 4.0e3
    w_tips: float = 1.0e2
    w_prior: float = 0.05
    # First this fraction of the steps places the palm (pose terms only); contact terms join afterwards,
    # so the hand first gets near the site and then settles onto the surface without tunnelling.
    placement_fraction: float = 0.5
    # During placement the palm aims this far outside the surface (approach from outside, never through).
    approach_clearance: float = 0.07


@dataclass
class IKResult:
    pose_aa: torch.Tensor  # (B,J,3) solved pose
    palm_error: dict[str, float]  # per hand: max palm-centre distance to its target (m)
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
        moved += [body.joint_index(name) for name in FINGER_BONES[body.name][target.hand]]
    moved_index = torch.tensor(sorted(set(moved)), device=init_pose.device)
    residual = torch.zeros(init_pose.shape[0], len(moved_index), 3, dtype=init_pose.dtype, device=init_pose.device)
    residual.requires_grad_(True)
    hand_vertices = {t.hand: body.vertex_segments[f"{t.hand}_hand"] for t in targets}

    def evaluate(with_grad: bool, contact_terms: bool = True):
        pose = (
            init_pose.index_add(1, moved_index, residual)
            if with_grad
            else init_pose.index_add(1, moved_index, residual.detach())
        )
        out = body.forward(pose, shape, trans)
        loss = config.w_prior * (residual**2).sum(dim=(1, 2)).mean()
        stats = {}
        for target in targets:
            centre, normal, finger = palm_geometry(out.keypoints, target.hand)
            offset = config.palm_half_thickness + (0.0 if contact_terms else config.approach_clearance)
            goal = target.point + target.normal * offset
            loss = loss + config.w_position * ((centre - goal) ** 2).sum(-1).mean()
            loss = loss + config.w_normal * (1 + (normal * target.normal).sum(-1)).mean()  # palm faces -normal
            loss = loss + config.w_finger_dir * (1 - (finger * target.finger_dir).sum(-1)).mean()
            if not contact_terms:
                continue
            sd = signed_distance(out.vertices[:, hand_vertices[target.hand]])
            loss = loss + config.w_penetration * (torch.relu(-sd) ** 2).sum(-1).mean()
            closest = sd.min(dim=-1).values
            loss = loss + config.w_gap * (torch.relu(closest) ** 2).mean()
            # Finger tips rest on the surface: keypoint tips are skin points, aim ~3 mm outside.
            tips = out.keypoints[:, HAND_SLICES[target.hand]][:, list(TIP_INDICES)]
            tip_sd = signed_distance(tips)
            loss = loss + config.w_tips * (torch.relu(tip_sd - 0.003) ** 2).sum(-1).mean()
            stats[target.hand] = (
                float((centre - goal).detach().norm(dim=-1).max()),
                float(sd.detach().min()),
                float(closest.detach().max()),
            )
        return loss, stats, pose

    # Two phases, each with its own optimiser: a fresh Adam state keeps the sudden contact gradients of
    # the second phase from being amplified by momentum gathered while placing the palm.
    placement_steps = int(config.placement_fraction * config.steps)
    phases = ((placement_steps, config.lr, False), (config.steps - placement_steps, config.contact_lr, True))
    for phase_steps, lr, contact_terms in phases:
        optimiser = torch.optim.Adam([residual], lr=lr, betas=(0.7, 0.99))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, phase_steps), eta_min=lr * 0.1)
        for step in range(phase_steps):
            optimiser.zero_grad()
            loss, _, _ = evaluate(True, contact_terms=contact_terms)
            loss.backward()
            optimiser.step()
            schedule.step()
            if step % 10 == 0:
                logger.debug("hand IK (contact %s) step %d loss %.5f", contact_terms, step, float(loss))
    with torch.no_grad():
        loss, stats, pose = evaluate(False)
    result = IKResult(
        pose_aa=pose.detach(),
        palm_error={hand: s[0] for hand, s in stats.items()},
        min_signed_distance={hand: s[1] for hand, s in stats.items()},
        closest_gap={hand: s[2] for hand, s in stats.items()},
    )
    logger.info(
        "hand IK: loss %.5f palm error %s min sd %s gap %s",
        float(loss), result.palm_error, result.min_signed_distance, result.closest_gap,
    )  # fmt: skip
    return result
