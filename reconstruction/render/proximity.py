"""Body-object proximity for stage 6: signed distance of body vertices to a rigid object, in torch.

The object surface is sampled densely (area-weighted, fixed seed) with face normals; a point's signed
distance is measured against its nearest sample: the distance to that sample's tangent plane near the
surface (exact for flat faces) and the Euclidean distance, signed by the normal, farther away. Nearest
samples come from ``torch.cdist`` (a matrix product), and only body vertices inside the object's
bounding box plus a margin are tested, so a whole sequence costs a fraction of a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

CONTACT_DISTANCE_M = 0.015  # hand vertices closer than this to the surface are "in contact"
PENETRATION_TOLERANCE_M = 0.002  # body vertices deeper than this inside the object are "penetrating"


class SurfaceSDF:
    """Signed distance to a closed mesh given in its model frame (negative inside)."""

    def __init__(self, vertices, faces, num_samples: int = 4000, seed: int = 0):
        vertices = torch.as_tensor(np.asarray(vertices), dtype=torch.float32)
        faces = torch.as_tensor(np.asarray(faces), dtype=torch.long)
        tri = vertices[faces]
        cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        area = cross.norm(dim=-1) / 2
        if float(area.sum()) <= 0:
            raise ValueError("object mesh has zero surface area")
        generator = torch.Generator().manual_seed(seed)
        face = torch.multinomial(area / area.sum(), num_samples, replacement=True, generator=generator)
        r1, r2 = torch.rand(num_samples, generator=generator).sqrt(), torch.rand(num_samples, generator=generator)
        bary = torch.stack([1 - r1, r1 * (1 - r2), r1 * r2], -1)
        self.points = (bary[:, :, None] * tri[face]).sum(1)
        self.normals = torch.nn.functional.normalize(cross[face], dim=-1, eps=1e-12)
        self._sq_norms = (self.points**2).sum(-1)
        self.spacing = float((area.sum() / num_samples).sqrt())
        self.bounds = torch.stack([vertices.min(0).values, vertices.max(0).values])

    def to(self, device) -> SurfaceSDF:
        self.points, self.normals, self.bounds, self._sq_norms = (
            x.to(device) for x in (self.points, self.normals, self.bounds, self._sq_norms)
        )
        return self

    def signed_distance(self, points: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
        """(N,3) points in the model frame -> (N,) signed distance (negative inside)."""
        out = torch.empty(points.shape[0], device=points.device)
        for start in range(0, points.shape[0], chunk):
            p = points[start : start + chunk]
            # argmin |p - s|^2 = argmin (|s|^2 - 2 p.s): one matrix product per chunk.
            nearest = torch.addmm(self._sq_norms[None], p, self.points.T, alpha=-2.0).argmin(1)
            offset = p - self.points[nearest]
            normal_part = (offset * self.normals[nearest]).sum(-1)
            euclid = offset.norm(dim=-1)
            near_surface = euclid < 2 * self.spacing
            out[start : start + chunk] = torch.where(near_surface, normal_part, torch.sign(normal_part) * euclid)
        return out


@dataclass
class Proximity:
    """Per-frame body-object relations of a sequence."""

    signed_distance: torch.Tensor  # (T,V) body vertex to object surface, +inf when far away
    penetrating: torch.Tensor  # (T,V) bool
    hand_contact: torch.Tensor  # (T,V) bool, hand vertices touching the surface
    hand_touching: np.ndarray  # (T,2) bool per hand (left, right): any hand vertex in contact

    @property
    def num_penetrating(self) -> np.ndarray:
        return self.penetrating.sum(1).cpu().numpy()


def body_object_proximity(
    body_vertices: torch.Tensor,
    object_poses: torch.Tensor,
    sdf: SurfaceSDF,
    hand_vertex_ids: dict[str, torch.Tensor],
    contact_distance: float = CONTACT_DISTANCE_M,
    penetration_tolerance: float = PENETRATION_TOLERANCE_M,
) -> Proximity:
    """Signed distances of all body vertices (T,V,3 world) to the posed object (T,4,4 model->world)."""
    num_frames, num_vertices, _ = body_vertices.shape
    R, t = object_poses[:, :3, :3], object_poses[:, :3, 3]
    local = (body_vertices - t[:, None]) @ R  # world -> object model frame (R orthonormal)
    margin = contact_distance * 2
    low, high = sdf.bounds[0] - margin, sdf.bounds[1] + margin
    candidate = ((local >= low) & (local <= high)).all(-1)
    distance = torch.full((num_frames, num_vertices), float("inf"), device=body_vertices.device)
    if bool(candidate.any()):
        distance[candidate] = sdf.signed_distance(local[candidate])
    penetrating = distance < -penetration_tolerance
    hands = torch.zeros(num_vertices, dtype=torch.bool, device=body_vertices.device)
    touching = np.zeros((num_frames, 2), bool)
    hand_contact = torch.zeros_like(penetrating)
    for side, key in enumerate(("left_hand", "right_hand")):
        mask = torch.zeros_like(hands)
        mask[hand_vertex_ids[key]] = True
        side_contact = mask[None] & (distance < contact_distance)
        touching[:, side] = side_contact.any(1).cpu().numpy()
        hand_contact |= side_contact
    return Proximity(distance, penetrating, hand_contact & ~penetrating, touching)
