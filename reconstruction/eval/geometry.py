"""Exact point-to-mesh distances for evaluation: closest point on each triangle (brute force, chunked)
and the sign from the generalised winding number (inside where it exceeds 1/2), which is robust for
meshes that are unions of closed parts, like the synthetic objects."""

from __future__ import annotations

import math

import torch


def closest_points_on_triangles(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Closest point to ``p`` (...,3) on triangles ``a, b, c`` (...,3), broadcast (Ericson's regions)."""

    def dot(x, y):
        return (x * y).sum(-1, keepdim=True)

    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp = p - b
    d3, d4 = dot(ab, bp), dot(ac, bp)
    cp = p - c
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    eps = torch.finfo(p.dtype).tiny
    denom = (va + vb + vc).clamp(min=eps)
    result = a + ab * (vb / denom) + ac * (vc / denom)  # inside the face
    # Later assignments win: apply regions from lowest to highest priority.
    w_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6)).clamp(min=eps)
    result = torch.where((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), b + (c - b) * w_bc, result)
    w_ac = d2 / (d2 - d6).clamp(min=eps)
    result = torch.where((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * w_ac, result)
    result = torch.where((d6 >= 0) & (d5 <= d6), c.expand_as(result), result)
    v_ab = d1 / (d1 - d3).clamp(min=eps)
    result = torch.where((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * v_ab, result)
    result = torch.where((d3 >= 0) & (d4 <= d3), b.expand_as(result), result)
    result = torch.where((d1 <= 0) & (d2 <= 0), a.expand_as(result), result)
    return result


def point_mesh_distance(
    points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """Unsigned distance (N,) from points (N,3) to the triangle mesh (V,3), (F,3)."""
    tri = vertices[faces]  # (F,3,3)
    a, b, c = tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]
    out = []
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk, None, :]
        closest = closest_points_on_triangles(p, a, b, c)
        out.append((closest - p).norm(dim=-1).min(dim=-1).values)
    return torch.cat(out) if out else points.new_zeros(0)


def winding_number(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Generalised winding number (N,) of a closed, outward-oriented mesh (or a union of closed parts) at points
    (N, 3): 1 inside, 0 outside (van Oosterom-Strackee solid angles). Coordinates as separate (chunk, F) arrays in
    small chunks that stay in cache: ~5x faster on a CPU than (chunk, F, 3, 3) arrays."""
    tri = vertices[faces]  # (F, 3, 3)
    corners = [tri[:, c].T.contiguous() for c in range(3)]  # 3 x (3, F)
    out = []
    for start in range(0, points.shape[0], chunk):
        q = points[start : start + chunk]
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = (
            [corner[i][None] - q[:, i : i + 1] for i in range(3)] for corner in corners
        )
        la, lb, lc = (
            (ax * ax + ay * ay + az * az).sqrt(),
            (bx * bx + by * by + bz * bz).sqrt(),
            (cx * cx + cy * cy + cz * cz).sqrt(),
        )
        numerator = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
        denominator = (
            la * lb * lc + (ax * bx + ay * by + az * bz) * lc + (bx * cx + by * cy + bz * cz) * la
            + (cx * ax + cy * ay + cz * az) * lb
        )  # fmt: skip
        out.append(torch.atan2(numerator, denominator).sum(-1) / (2 * math.pi))
    return torch.cat(out) if out else points.new_zeros(0)


def point_mesh_signed_distance(
    points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """Signed distance (N,), negative inside the closed mesh."""
    distance = point_mesh_distance(points, vertices, faces, chunk)
    inside = winding_number(points, vertices, faces) > 0.5
    return torch.where(inside, -distance, distance)


def depth_inside(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(..., 3) points in the mesh's frame -> (...) exact depth inside the closed mesh, 0 outside. The winding
    number is taken only for the points in the mesh's bounding box, the exact distance only for those inside."""
    flat = points.reshape(-1, 3)
    low, high = vertices.amin(0), vertices.amax(0)
    (candidate,) = ((flat >= low) & (flat <= high)).all(-1).nonzero(as_tuple=True)
    depth = flat.new_zeros(flat.shape[0])
    if candidate.numel():
        inside = winding_number(flat[candidate], vertices, faces) > 0.5
        if inside.any():
            depth[candidate[inside]] = point_mesh_distance(flat[candidate[inside]], vertices, faces)
    return depth.reshape(points.shape[:-1])
