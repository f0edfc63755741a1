"""Turning on the spot without foot skating: a stepping schedule for the feet and leg IK that follows it.

A turn of the body by ``delta`` radians about the vertical axis through the root is done in ``m`` foot
moves that alternate feet (the foot on the turning side first). Each planted foot is a rigid copy of its
standing pose rotated about that axis by the foot's own yaw; it does not move while it is on the ground.
A moving foot lifts straight up, swings to its new yaw only while it is in the air, and comes straight
down. The pelvis yaw is the mean of the two feet's yaws, and the leg joints are solved (batched over
frames) so every foot vertex lands where the schedule puts it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Bones moved by the leg IK, per side (anny labels); the rest of the body follows the motion script.
LEG_BONES: dict[str, dict[str, tuple[str, ...]]] = {
    "anny": {
        "left": ("upperleg01.L", "upperleg02.L", "lowerleg01.L", "foot.L"),
        "right": ("upperleg01.R", "upperleg02.R", "lowerleg01.R", "foot.R"),
    }
}
SIDES = ("left", "right")
MAX_FOOT_SPREAD = math.radians(50.0)  # largest yaw between the two planted feet
LIFT_HEIGHT = 0.10  # swing-foot clearance (m): its heel and toe are well above any contact threshold
LIFT_FRACTION = 0.25  # part of a move spent lifting (and landing) straight up (down)
AIRBORNE_WEIGHT = 1.0  # IK weight of a lifted foot relative to a planted one (lower: it lags its lift)


@dataclass
class FootSchedule:
    """Per-frame (T,) yaw (radians, about the root's vertical axis) and lift (m) of each foot."""

    yaw: dict[str, np.ndarray]
    lift: dict[str, np.ndarray]

    @property
    def pelvis_yaw(self) -> np.ndarray:
        return (self.yaw["left"] + self.yaw["right"]) / 2.0

    @property
    def planted(self) -> dict[str, np.ndarray]:
        return {side: self.lift[side] <= 0.0 for side in SIDES}

    def needs_ik(self) -> np.ndarray:
        """(T,) frames where a leg is not in its standing pose relative to the pelvis."""
        yaw = self.pelvis_yaw
        off = [(np.abs(self.yaw[s] - yaw) > 1e-9) | (self.lift[s] > 0) for s in SIDES]
        return off[0] | off[1]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def moves_for(delta: float, intervals: int) -> int:
    """Foot moves for a turn of ``delta`` in ``intervals`` frame steps (each move needs two: lift, land)."""
    wanted = max(2, 1 + math.ceil(abs(delta) / MAX_FOOT_SPREAD))
    return min(wanted, intervals // 2)


def schedule_turns(num_frames: int, turns: list[tuple[int, int, float]]) -> FootSchedule:
    """Feet schedule for turns ``(first_frame, last_frame, delta_yaw)`` that do not overlap, in order.

    Raises ValueError when a turn has fewer than 4 frame steps (two moves of lift-swing-land)."""
    yaw = {side: np.zeros(num_frames) for side in SIDES}
    lift = {side: np.zeros(num_frames) for side in SIDES}
    frames = np.arange(num_frames, dtype=np.float64)
    current = 0.0
    for first, last, delta in turns:
        if abs(delta) < 1e-12:
            continue
        moves = moves_for(delta, last - first)
        if moves < 2:
            raise ValueError(f"a turn needs at least 4 frame steps, got frames {first}-{last}")
        lead, other = ("left", "right") if delta > 0 else ("right", "left")
        bounds = [first + round(j * (last - first) / moves) for j in range(moves + 1)]
        start = {side: current for side in SIDES}
        for j in range(1, moves + 1):
            side = lead if j % 2 else other
            target = current + delta * min(j, moves - 1) / (moves - 1)
            a, b = bounds[j - 1], bounds[j]
            u = (frames - a) / (b - a)
            inside = (frames > a) & (frames < b)
            up = _smoothstep(u / LIFT_FRACTION) * _smoothstep((1 - u) / LIFT_FRACTION)
            lift[side] = np.where(inside, LIFT_HEIGHT * up, lift[side])
            swing = _smoothstep((u - LIFT_FRACTION) / (1 - 2 * LIFT_FRACTION))
            yaw[side] = np.where(frames > a, start[side] + (target - start[side]) * swing, yaw[side])
            start[side] = target
        current += delta
        for side in SIDES:
            yaw[side] = np.where(frames >= last, current, yaw[side])
    return FootSchedule(yaw, lift)


def _rot_z(angles: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angles), torch.sin(angles)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(*angles.shape, 3, 3)


@dataclass
class LegIKResult:
    pose_aa: torch.Tensor  # (T,J,3) input pose with the leg joints solved
    max_error: float  # largest planted-foot vertex distance to its target over solved frames (m)


def solve_legs(
    body, shape: torch.Tensor, pose_aa: torch.Tensor, trans: torch.Tensor, schedule: FootSchedule, steps: int = 60
) -> LegIKResult:
    """Set the leg joints of ``pose_aa`` (T,J,3) so each foot is where ``schedule`` puts it.

    ``pose_aa`` carries the pelvis yaw (root joint) and a standing leg pose; the target of a foot is its
    vertices in that standing pose with the pelvis unturned, rotated about the root's vertical axis by
    the foot's yaw and raised by its lift. L-BFGS over the leg bones' axis-angle, all frames at once
    (the frames are independent, so the summed loss has a block-diagonal Hessian)."""
    bones = LEG_BONES.get(body.name)
    if bones is None:
        raise ValueError(f"leg IK has no leg bone table for body model {body.name!r}")
    frames = np.flatnonzero(schedule.needs_ik())
    pose_aa = pose_aa.detach().clone()
    if frames.size == 0:
        return LegIKResult(pose_aa, 0.0)
    dtype, device = pose_aa.dtype, pose_aa.device
    index = torch.as_tensor(frames, device=device)
    # Every 4th foot vertex: plenty to pin a rigid foot, a quarter of the skinning cost.
    ids = {side: body.vertex_segments[f"{side}_foot"][::4] for side in SIDES}
    all_ids = torch.cat([ids["left"], ids["right"]])
    split = len(ids["left"])
    base = pose_aa[index]
    unturned = base.clone()
    unturned[:, 0] = 0.0
    with torch.no_grad():
        standing = body.forward(unturned, shape, trans[index], vertex_ids=all_ids).vertices
    axis = trans[index, None, :].clone()
    axis[..., 2] = 0.0
    targets = []
    for k, side in enumerate(SIDES):
        part = standing[:, :split] if k == 0 else standing[:, split:]
        rot = _rot_z(torch.as_tensor(schedule.yaw[side][frames], dtype=dtype, device=device))
        moved = (part - axis) @ rot.transpose(1, 2) + axis
        moved[..., 2] += torch.as_tensor(schedule.lift[side][frames], dtype=dtype, device=device)[:, None]
        targets.append(moved)
    target = torch.cat(targets, dim=1)
    # Planted feet must not slide; an airborne foot must clear the ground (a lagging one counts as contact).
    planted = torch.as_tensor(
        np.concatenate([np.repeat(schedule.lift[s][frames, None] <= 0, len(ids[s]), 1) for s in SIDES], axis=1),
        device=device,
    )
    weight = torch.where(planted, 1.0, AIRBORNE_WEIGHT).to(dtype)
    leg_index = torch.tensor([body.joint_index(n) for side in SIDES for n in bones[side]], device=device)
    residual = torch.zeros(len(frames), len(leg_index), 3, dtype=dtype, device=device, requires_grad=True)
    optimiser = torch.optim.LBFGS([residual], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        optimiser.zero_grad()
        out = body.forward(base.index_add(1, leg_index, residual), shape, trans[index], vertex_ids=all_ids)
        loss = (weight * ((out.vertices - target) ** 2).sum(-1)).mean(-1).sum() + 1e-6 * (residual**2).sum()
        loss.backward()
        return loss

    optimiser.step(loss_fn)
    solved = base.index_add(1, leg_index, residual.detach())
    with torch.no_grad():
        distance = (body.forward(solved, shape, trans[index], vertex_ids=all_ids).vertices - target).norm(dim=-1)
    planted_error = float(distance[planted].max()) if bool(planted.any()) else 0.0
    pose_aa[index] = solved
    logger.info("leg IK: %d frames, planted foot error %.2f mm, any foot %.2f mm", len(frames),
                1000 * planted_error, 1000 * float(distance.max()))  # fmt: skip
    return LegIKResult(pose_aa, planted_error)
