"""Object categories of the synthetic scenes: shapes built from primitives, with exact signed distances.

Each object is a union of primitives (box, capped cylinder, torus) in its model frame: metres, origin at
the centre of the resting base, +z up, +x to the right of the person who picks it up, +y away from them.
The same primitives give (a) a coloured triangle mesh written as ``.obj`` for the renderer and the
reconstruction, and (b) an analytic signed distance in torch (negative inside), used by the arm IK to
put palms on the surface and by tests and evaluation to measure gaps and interpenetration.
Grasp sites say where a hand goes: a surface point, the outward normal there (the palm faces against
it) and the direction the fingers point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh

from reconstruction import fileio

logger = logging.getLogger(__name__)

CATEGORIES = ("box", "bottle", "drill", "mug")
STRIPE_HALF_HEIGHT = 0.35  # a cylinder's label band covers this fraction of its half height around the middle


@dataclass(frozen=True)
class Primitive:
    """``kind`` box: ``size`` = half extents (x,y,z); cylinder (axis z): (radius, half height);
    torus (ring around z, in the xy-plane): (major radius, minor radius). ``pose`` maps the
    primitive's frame into the model frame."""

    kind: str
    size: tuple[float, ...]
    pose: np.ndarray  # (4,4)
    color: tuple[float, float, float]
    # Optional second colour painted where a vertex lies within a band (see _pattern_colors).
    stripe_color: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class GraspSite:
    hand: str  # "left" | "right"
    point: np.ndarray  # (3,) on the surface, model frame
    normal: np.ndarray  # (3,) outward unit normal at ``point``; the palm presses along -normal
    finger_dir: np.ndarray  # (3,) unit, tangent to the surface: where the fingers point


@dataclass
class ObjectSpec:
    category: str
    primitives: list[Primitive]
    one_hand: GraspSite  # right hand
    two_hands: tuple[GraspSite, GraspSite]  # (left, right)
    two_handed_default: bool
    extra: dict[str, float] = field(default_factory=dict)
    # Two hands across the model's y extent (left on +y, right on -y, fingers along +x), for objects wider
    # than they are deep: the object then stands a quarter turn round on the table (model +x away from
    # the person) and its narrower side is between the hands.
    across_hands: tuple[GraspSite, GraspSite] | None = None
    # Model-frame axis of a continuous rotational symmetry of shape AND appearance (a turn about it changes
    # no pixel): no image can tell such turns apart, so the evaluation measures rotation modulo it.
    symmetry_axis: tuple[float, float, float] | None = None

    @property
    def base_height(self) -> float:
        """Height of the model-frame origin above the support it rests on (0: base at z=0)."""
        return 0.0

    def grasps(self, two_handed: bool, across: bool = False) -> tuple[GraspSite, ...]:
        if across:
            if self.across_hands is None:
                raise ValueError(f"{self.category} has no grasp across its depth")
            return self.across_hands
        return self.two_hands if two_handed else (self.one_hand,)


def _translation(x: float, y: float, z: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = (x, y, z)
    return pose


def _rot_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    pose = np.eye(4)
    pose[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return pose


def _site(hand: str, point, normal, finger_dir) -> GraspSite:
    n = np.asarray(normal, float)
    f = np.asarray(finger_dir, float)
    return GraspSite(hand, np.asarray(point, float), n / np.linalg.norm(n), f / np.linalg.norm(f))


def _side_grasps(half_width: float, height: float) -> tuple[GraspSite, GraspSite]:
    """Palms on the left (-x) and right (+x) sides at ``height``, fingers pointing forward (+y)."""
    left = _site("left", (-half_width, 0.0, height), (-1, 0, 0), (0, 1, 0))
    right = _site("right", (half_width, 0.0, height), (1, 0, 0), (0, 1, 0))
    return left, right


def make_object(category: str, rng: np.random.Generator | None = None) -> ObjectSpec:
    """One object of ``category``; ``rng`` jitters sizes and colours (None: the nominal object)."""
    rng = rng if rng is not None else np.random.default_rng(0)

    def jitter() -> float:
        return float(rng.uniform(0.9, 1.1))

    def colour(base) -> tuple[float, float, float]:
        shift = rng.uniform(-0.08, 0.08, size=3)
        return tuple(float(c) for c in np.clip(np.asarray(base) + shift, 0.02, 0.98))

    if category == "box":
        hx, hy, hz = 0.17 * jitter(), 0.13 * jitter(), 0.11 * jitter()
        body = Primitive("box", (hx, hy, hz), _translation(0, 0, hz), colour((0.72, 0.52, 0.30)), (0.85, 0.8, 0.6))
        left, right = _side_grasps(hx, hz * 1.1)
        across = (
            _site("left", (0.0, hy, hz * 1.1), (0, 1, 0), (1, 0, 0)),
            _site("right", (0.0, -hy, hz * 1.1), (0, -1, 0), (1, 0, 0)),
        )
        return ObjectSpec("box", [body], one_hand=right, two_hands=(left, right), two_handed_default=True,
                          across_hands=across)  # fmt: skip

    if category == "bottle":
        radius, half_h = 0.036 * jitter(), 0.10 * jitter()
        neck_r, neck_h = 0.014, 0.035
        body = Primitive(
            "cylinder", (radius, half_h), _translation(0, 0, half_h), colour((0.15, 0.45, 0.85)), (0.95, 0.95, 0.95)
        )
        shoulder = Primitive(
            "cylinder", (radius * 0.7, 0.012), _translation(0, 0, 2 * half_h + 0.012), colour((0.15, 0.45, 0.85))
        )
        neck = Primitive(
            "cylinder", (neck_r, neck_h), _translation(0, 0, 2 * half_h + 0.024 + neck_h), colour((0.9, 0.15, 0.1))
        )
        left, right = _side_grasps(radius, half_h)
        return ObjectSpec("bottle", [body, shoulder, neck], one_hand=right, two_hands=(left, right),
                          two_handed_default=False, symmetry_axis=(0.0, 0.0, 1.0))  # fmt: skip

    if category == "drill":
        s = jitter()
        handle_r, handle_hh = 0.021 * s, 0.065 * s
        battery = (0.045 * s, 0.055 * s, 0.028 * s)
        handle_z = 2 * battery[2] + handle_hh
        body_z = 2 * battery[2] + 2 * handle_hh + 0.03 * s
        body_hh = 0.10 * s  # along y (forward)
        body_r = 0.033 * s
        yellow, black = colour((0.95, 0.75, 0.1)), colour((0.12, 0.12, 0.12))
        parts = [
            Primitive("box", battery, _translation(0, 0.01 * s, battery[2]), black),
            Primitive("cylinder", (handle_r, handle_hh), _translation(0, 0, handle_z), yellow, (0.15, 0.15, 0.15)),
            # Motor body: a cylinder lying along +y (rotated from z), slightly behind the handle.
            Primitive("cylinder", (body_r, body_hh), _translation(0, 0.04 * s, body_z) @ _rot_x(-90), yellow),
            # Chuck: a thinner black cylinder in front of the body.
            Primitive(
                "cylinder",
                (0.016 * s, 0.025 * s),
                _translation(0, 0.04 * s + body_hh + 0.025 * s, body_z) @ _rot_x(-90),
                black,
            ),  # fmt: skip
        ]
        left, right = _side_grasps(handle_r, handle_z)
        return ObjectSpec("drill", parts, one_hand=right, two_hands=(left, right), two_handed_default=False)

    if category == "mug":
        radius, half_h = 0.045 * jitter(), 0.05 * jitter()
        body = Primitive(
            "cylinder", (radius, half_h), _translation(0, 0, half_h), colour((0.85, 0.2, 0.25)), (0.96, 0.96, 0.9)
        )
        # Handle: a torus standing in the yz-plane on the far side (+y), half of it buried in the body.
        handle = Primitive("torus", (0.03, 0.008), _translation(0, radius, half_h) @ _rot_y90(), colour((0.85, 0.2, 0.25)))  # fmt: skip
        left, right = _side_grasps(radius, half_h)
        return ObjectSpec("mug", [body, handle], one_hand=right, two_hands=(left, right), two_handed_default=False)

    raise ValueError(f"unknown object category {category!r} (known: {', '.join(CATEGORIES)})")


def _rot_y90() -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    return pose


# ---- mesh ------------------------------------------------------------------------------------------
def _primitive_mesh(prim: Primitive) -> trimesh.Trimesh:
    if prim.kind == "box":
        mesh = trimesh.creation.box(extents=2 * np.asarray(prim.size))
        # Split faces so per-vertex colours stay crisp, then subdivide to carry a colour pattern.
        mesh = mesh.subdivide().subdivide().subdivide()
        mesh.unmerge_vertices()
    elif prim.kind == "cylinder":
        radius, half_h = prim.size
        if prim.stripe_color is not None:
            # Three stacked cylinders (below, band, above) so the band has crisp edges without
            # subdividing the whole side; each piece is closed, so the union stays watertight.
            cut = STRIPE_HALF_HEIGHT * half_h
            pieces = [(-half_h, -cut, prim.color), (-cut, cut, prim.stripe_color), (cut, half_h, prim.color)]
            parts = []
            for z0, z1, color in pieces:
                part = trimesh.creation.cylinder(radius=radius, height=z1 - z0, sections=64)
                part.apply_translation((0, 0, (z0 + z1) / 2))
                part.unmerge_vertices()
                part.apply_transform(prim.pose)
                rgb = np.round(np.asarray(color) * 255).astype(np.uint8)
                part.visual = trimesh.visual.ColorVisuals(part, vertex_colors=np.tile(rgb, (len(part.vertices), 1)))
                parts.append(part)
            return trimesh.util.concatenate(parts)
        mesh = trimesh.creation.cylinder(radius=radius, height=2 * half_h, sections=64)
        mesh.unmerge_vertices()
    elif prim.kind == "torus":
        major, minor = prim.size
        mesh = trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=48, minor_sections=16)
    else:
        raise ValueError(f"unknown primitive kind {prim.kind!r}")
    local = np.asarray(mesh.vertices).copy()
    mesh.apply_transform(prim.pose)
    colors = _pattern_colors(prim, local)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.round(colors * 255).astype(np.uint8))
    return mesh


def _pattern_colors(prim: Primitive, local_vertices: np.ndarray) -> np.ndarray:
    """Base colour with a band of ``stripe_color`` (a tape or label), so the object has visible texture
    for trackers: a band around the middle of a cylinder or across the top of a box."""
    colors = np.tile(np.asarray(prim.color, float), (len(local_vertices), 1))
    if prim.stripe_color is None:
        return colors
    if prim.kind == "box":
        # Packing tape: a strip across the top face and down the upper part of the sides.
        band = (np.abs(local_vertices[:, 0]) < 0.25 * prim.size[0]) & (local_vertices[:, 2] > 0.2 * prim.size[2])
        colors[band] = prim.stripe_color
    return colors


def build_mesh(spec: ObjectSpec) -> trimesh.Trimesh:
    """The object's coloured triangle mesh (model frame, metres): the primitives' meshes concatenated."""
    parts = [_primitive_mesh(prim) for prim in spec.primitives]
    mesh = trimesh.util.concatenate(parts)
    return mesh


def write_obj(spec: ObjectSpec, path: str | Path) -> Path:
    """Write the mesh as Wavefront OBJ with per-vertex colours (``v x y z r g b``), atomically."""
    mesh = build_mesh(spec)
    text = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_color=True, include_texture=False)
    return fileio.write_text(path, text)


def load_obj_vertices_faces(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices, faces, colours in [0,1] or None) of an .obj written by ``write_obj`` or any triangle OBJ."""
    mesh = trimesh.load(str(path), force="mesh", process=False)
    colors = None
    if getattr(mesh.visual, "kind", None) == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    return np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64), colors


# ---- signed distance -----------------------------------------------------------------------------
def _sd_box(p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    q = p.abs() - half
    outside = q.clamp(min=0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0)
    return outside + inside


def _sd_cylinder(p: torch.Tensor, radius: float, half_h: float) -> torch.Tensor:
    d = torch.stack([p[..., :2].norm(dim=-1) - radius, p[..., 2].abs() - half_h], dim=-1)
    return d.max(dim=-1).values.clamp(max=0) + d.clamp(min=0).norm(dim=-1)


def _sd_torus(p: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    q = torch.stack([p[..., :2].norm(dim=-1) - major, p[..., 2]], dim=-1)
    return q.norm(dim=-1) - minor


def signed_distance(spec: ObjectSpec, points: torch.Tensor) -> torch.Tensor:
    """Signed distance (m, negative inside) of ``points`` (..., 3) given in the object's model frame.

    Exact outside each primitive and for the union's outside; inside overlaps it is the deepest
    primitive's value (a lower bound on depth), which is what penetration checks need.
    """
    distances = []
    for prim in spec.primitives:
        inv = torch.as_tensor(np.linalg.inv(prim.pose), dtype=points.dtype, device=points.device)
        local = points @ inv[:3, :3].T + inv[:3, 3]
        if prim.kind == "box":
            half = torch.as_tensor(prim.size, dtype=points.dtype, device=points.device)
            distances.append(_sd_box(local, half))
        elif prim.kind == "cylinder":
            distances.append(_sd_cylinder(local, *prim.size))
        elif prim.kind == "torus":
            distances.append(_sd_torus(local, *prim.size))
        else:
            raise ValueError(f"unknown primitive kind {prim.kind!r}")
    return torch.stack(distances, dim=-1).min(dim=-1).values


def signed_distance_world(spec: ObjectSpec, object_poses: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Signed distance of world points (T,N,3) to the object posed by (T,4,4) object->world."""
    rot = object_poses[..., :3, :3]
    trans = object_poses[..., :3, 3]
    local = (points - trans[..., None, :]) @ rot  # R^T (p - t), batched
    return signed_distance(spec, local)
