"""A batched triangle rasteriser in pure torch (cpu or cuda), one pass for RGB, depth and instance ids.

How it works (all frames of a chunk at once, no per-frame Python loop):

1. Every mesh is moved into the OpenCV camera frame of every frame and concatenated into one triangle
   soup. For each triangle we build the 3x3 matrix ``A = adj(M) * sign(det M)`` with M's columns the
   camera-space vertices (perspective) or ``(x, y, 1)`` (orthographic). For a pixel with normalised
   ray ``d = ((u - cx) / fx, (v - cy) / fy, 1)``, ``w = A d`` are unnormalised barycentrics of the
   point where the pixel's ray meets the triangle's plane: the pixel is covered iff all ``w >= 0`` and
   ``sum(w) > 0`` (the hit lies in front of the camera). This "homogeneous rasterisation" needs no
   near-plane clipping of the triangle itself and gives perspective-correct barycentrics directly.
2. The screen bounding box of each triangle (of its part in front of the near plane) is cut to the
   image. Triangles are bucketed by box size (GRID_SIZES per axis, up to 32 px); bigger ones are
   split into 32x32 tiles. Each bucket enumerates a fixed pixel grid per triangle: the edge functions
   of all its candidate pixels come from one matrix product, so the work is a few large tensor ops
   per bucket. Optionally back faces of closed meshes are culled first.
3. Covered candidates are z-tested with one ``scatter_reduce(amin)`` on an int64 key packing the
   quantised depth above the triangle index; the minimum per pixel is the visible triangle.
4. Winners are shaded per pixel: barycentrics recomputed for the winning triangle, per-vertex colours
   and smooth vertex normals interpolated, Lambert + ambient with a two-sided normal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

TILE = 32  # largest per-triangle pixel grid; bigger boxes are split into tiles of this size
TRIANGLE_BITS = 25  # triangle index bits of the z-test key (up to 33M triangles per frame)
DEPTH_SCALE = float(2**20)  # depth quantum of the z-test: ~1e-6 m; max depth 2**17 m
EDGE_TOLERANCE_PX = 1e-3
DEFAULT_LIGHT_DIR = (0.3, -0.6, -1.0)  # towards the light, camera frame: above, right, behind camera


@dataclass
class Mesh:
    """A triangle mesh in world coordinates, static (V,3) or animated (T,V,3)."""

    vertices: torch.Tensor | np.ndarray  # (V,3) or (T,V,3) world, metres
    faces: torch.Tensor | np.ndarray  # (F,3) int
    colors: torch.Tensor | np.ndarray | None = None  # (V,3) or (T,V,3) in [0,1]; None = light grey
    instance_id: int = 1
    smooth: bool = True  # interpolate vertex normals; False = flat faces (boxes, low-poly objects)
    # Skip triangles facing away from the camera. Only for closed meshes with outward (counter-clockwise)
    # winding, e.g. anny's body; halves the rasterisation work without changing the image.
    cull_backfaces: bool = False


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # (T,H,W,3) float [0,1]
    depth: torch.Tensor  # (T,H,W) metres along the camera z axis, 0 = nothing
    instance: torch.Tensor  # (T,H,W) int64, 0 = background, else the Mesh's instance_id
    face_id: torch.Tensor  # (T,H,W) int64 index into the concatenated faces of all meshes, -1 = none
    barycentrics: torch.Tensor | None = None  # (T,H,W,3) perspective-correct, when asked for

    def mask(self, instance_id: int) -> torch.Tensor:
        return self.instance == instance_id


# ---- input normalisation ---------------------------------------------------------------------------


def _as_tensor(value, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype, device=device)


def _per_frame(value: torch.Tensor, num_frames: int, rank: int, name: str) -> torch.Tensor:
    """Broadcast a static (…) tensor to (T, …)."""
    if value.dim() == rank:
        return value.unsqueeze(0).expand(num_frames, *value.shape)
    if value.dim() == rank + 1 and value.shape[0] in (1, num_frames):
        return value.expand(num_frames, *value.shape[1:])
    raise ValueError(f"{name}: expected {rank} or {rank + 1} dims with T={num_frames}, got shape {tuple(value.shape)}")


def _num_frames(meshes: list[Mesh], K, world_to_cam) -> int:
    counts = set()
    for mesh in meshes:
        shape = np.shape(mesh.vertices)
        if len(shape) == 3:
            counts.add(shape[0])
        colors_shape = np.shape(mesh.colors) if mesh.colors is not None else ()
        if len(colors_shape) == 3:
            counts.add(colors_shape[0])
    for value in (K, world_to_cam):
        shape = np.shape(value)
        if len(shape) == 3:
            counts.add(shape[0])
    counts.discard(1)
    if len(counts) > 1:
        raise ValueError(f"inconsistent frame counts across meshes and cameras: {sorted(counts)}")
    return counts.pop() if counts else 1


@dataclass
class _Scene:
    """All meshes of one frame chunk concatenated, in camera space."""

    verts_cam: torch.Tensor  # (T,V,3)
    colors: torch.Tensor  # (T or 1,V,3)
    faces: torch.Tensor  # (F,3) long
    face_instance: torch.Tensor  # (F,) long


def _concat_meshes(meshes, num_frames, device):
    """-> vertices (T,V,3), colors (1|T,V,3), faces (F,3), per-face instance id, smooth and cull flags."""
    verts, colors, faces, instances, smooth, cull = [], [], [], [], [], []
    offset = 0
    animated_colors = any(m.colors is not None and np.ndim(m.colors) == 3 for m in meshes)
    for index, mesh in enumerate(meshes):
        v = _per_frame(_as_tensor(mesh.vertices, device), num_frames, 2, f"meshes[{index}].vertices")
        f = _as_tensor(mesh.faces, device, torch.long)
        if f.dim() != 2 or f.shape[1] != 3:
            raise ValueError(f"meshes[{index}].faces: expected (F,3), got {tuple(f.shape)}")
        if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[1]):
            raise ValueError(f"meshes[{index}].faces: index out of range for {v.shape[1]} vertices")
        if mesh.colors is None:
            c = torch.full((1, v.shape[1], 3), 0.7, device=device)
        else:
            c = _as_tensor(mesh.colors, device)
            c = c.unsqueeze(0) if c.dim() == 2 else c
            if c.shape[-2:] != (v.shape[1], 3):
                raise ValueError(f"meshes[{index}].colors: expected (V,3) or (T,V,3) with V={v.shape[1]}")
        if animated_colors:
            c = c.expand(num_frames, -1, -1)
        verts.append(v)
        colors.append(c)
        faces.append(f + offset)
        instances.append(torch.full((f.shape[0],), int(mesh.instance_id), dtype=torch.long, device=device))
        smooth.append(torch.full((f.shape[0],), bool(mesh.smooth), dtype=torch.bool, device=device))
        cull.append(torch.full((f.shape[0],), bool(mesh.cull_backfaces), dtype=torch.bool, device=device))
        offset += v.shape[1]
    return (
        torch.cat(verts, 1), torch.cat(colors, 1), torch.cat(faces, 0), torch.cat(instances), torch.cat(smooth),
        torch.cat(cull),
    )  # fmt: skip


# ---- geometry per triangle -------------------------------------------------------------------------


def _vertex_normals(verts: torch.Tensor, faces: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Area-weighted smooth normals (T,V,3) of camera-space vertices; ``tri`` = verts of each face."""
    face_normals = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    normals = torch.zeros_like(verts)
    for corner in range(3):
        normals.index_add_(1, faces[:, corner], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def _triangle_setup(tri: torch.Tensor, orthographic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tri (T,F,3 vertices,3) camera space -> (A (T,F,3,3), usable (T,F) bool, front-facing (T,F) bool).

    For both projections det(M) < 0 exactly when a counter-clockwise triangle faces the camera.
    """
    if orthographic:
        columns = torch.cat([tri[..., :2], torch.ones_like(tri[..., :1])], dim=-1)
    else:
        columns = tri
    M = columns.transpose(-1, -2)  # columns are the vertices
    c0, c1, c2 = M[..., :, 0], M[..., :, 1], M[..., :, 2]
    # adj(M) rows are cross products of the columns: adj(M) @ M = det(M) * I.
    adj = torch.stack([torch.linalg.cross(c1, c2), torch.linalg.cross(c2, c0), torch.linalg.cross(c0, c1)], dim=-2)
    det = (c0 * adj[..., 0, :]).sum(-1)
    scale = c0.norm(dim=-1) * c1.norm(dim=-1) * c2.norm(dim=-1) + 1e-30
    usable = det.abs() > 1e-7 * scale  # edge-on or through the eye: covers no pixel area
    A = adj * torch.sign(det)[..., None, None]
    return A, usable, det < 0


def _screen_bbox(tri, fx, fy, cx, cy, near, orthographic):
    """Pixel bounding box (umin, umax, vmin, vmax) of each triangle's part in front of ``near``."""
    fx, fy, cx, cy = (k[:, None, None] for k in (fx, fy, cx, cy))
    z = tri[..., 2]
    if orthographic:
        u = tri[..., 0] * fx + cx
        v = tri[..., 1] * fy + cy
        return u.amin(-1), u.amax(-1), v.amin(-1), v.amax(-1), torch.ones_like(z[..., 0], dtype=torch.bool)
    front = z > near
    inv_z = 1.0 / torch.where(front, z, torch.ones_like(z))
    u = tri[..., 0] * inv_z * fx + cx
    v = tri[..., 1] * inv_z * fy + cy
    inf = torch.tensor(float("inf"), device=tri.device)
    umin, umax = torch.where(front, u, inf).amin(-1), torch.where(front, u, -inf).amax(-1)
    vmin, vmax = torch.where(front, v, inf).amin(-1), torch.where(front, v, -inf).amax(-1)
    any_front = front.any(-1)
    # Triangles crossing the near plane (rare: ground, walls): the crossing points of their edges
    # bound the visible part too.
    crossing = any_front & ~front.all(-1)
    if bool(crossing.any()):
        idx = crossing.nonzero(as_tuple=True)
        sub, f_sub = tri[idx], front[idx]
        nxt = torch.roll(sub, shifts=-1, dims=-2)
        crosses = f_sub != torch.roll(f_sub, shifts=-1, dims=-1)
        t = (near - sub[..., 2]) / torch.where(crosses, nxt[..., 2] - sub[..., 2], torch.ones_like(sub[..., 2]))
        hit = sub + t[..., None] * (nxt - sub)
        frame = idx[0]
        hu = hit[..., 0] / near * fx[frame, 0] + cx[frame, 0]
        hv = hit[..., 1] / near * fy[frame, 0] + cy[frame, 0]
        umin[idx] = torch.minimum(umin[idx], torch.where(crosses, hu, inf).amin(-1))
        umax[idx] = torch.maximum(umax[idx], torch.where(crosses, hu, -inf).amax(-1))
        vmin[idx] = torch.minimum(vmin[idx], torch.where(crosses, hv, inf).amin(-1))
        vmax[idx] = torch.maximum(vmax[idx], torch.where(crosses, hv, -inf).amax(-1))
    return umin, umax, vmin, vmax, any_front


# ---- rasterisation ---------------------------------------------------------------------------------


# Candidate grid sizes per axis; a box gets the smallest size >= its extent (waste below 1.5x per axis).
GRID_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def _size_level(extent: torch.Tensor) -> torch.Tensor:
    """Index into GRID_SIZES of the smallest size >= extent (extent in 1..TILE)."""
    sizes = torch.tensor(GRID_SIZES, device=extent.device)
    return torch.searchsorted(sizes, extent.contiguous())


def _tiles(x0, x1, y0, y1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split boxes wider or taller than TILE -> (owner box index, tile x0, y0, extent x, extent y)."""
    device = x0.device
    ex, ey = x1 - x0 + 1, y1 - y0 + 1
    big = (ex > TILE) | (ey > TILE)
    if not bool(big.any()):
        return torch.arange(x0.numel(), device=device), x0, y0, ex, ey
    small = (~big).nonzero(as_tuple=True)[0]
    big_idx = big.nonzero(as_tuple=True)[0]
    tiles_x = (ex[big_idx] + TILE - 1) // TILE
    tiles_y = (ey[big_idx] + TILE - 1) // TILE
    counts = tiles_x * tiles_y
    slot = torch.repeat_interleave(torch.arange(big_idx.numel(), device=device), counts)
    local = torch.arange(slot.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[slot]
    owner = big_idx[slot]
    tx0 = x0[owner] + (local % tiles_x[slot]) * TILE
    ty0 = y0[owner] + (local // tiles_x[slot]) * TILE
    tex = torch.clamp(x1[owner] - tx0 + 1, max=TILE)
    tey = torch.clamp(y1[owner] - ty0 + 1, max=TILE)
    return (
        torch.cat([small, owner]), torch.cat([x0[small], tx0]), torch.cat([y0[small], ty0]),
        torch.cat([ex[small], tex]), torch.cat([ey[small], tey]),
    )  # fmt: skip


def _rasterize_chunk(verts_cam, faces, face_cull, K, image_size, near, orthographic, max_candidates):
    """Z-buffer of one frame chunk -> winning key per pixel (T*H*W,) int64 (max = empty), A, tri z.

    Per tile, the edge functions, the box limits and the depth's numerator and denominator are all
    affine in the pixel offset (ox, oy) inside the tile, so one matrix product (N*7,3) @ (3,S) gives
    them for every candidate pixel of a bucket.
    """
    device = verts_cam.device
    num_frames, num_faces = verts_cam.shape[0], faces.shape[0]
    height, width = image_size
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    # index_select is much faster than advanced indexing on cpu.
    tri = verts_cam.index_select(1, faces.reshape(-1)).view(num_frames, num_faces, 3, 3)
    A, usable, front_facing = _triangle_setup(tri, orthographic)
    usable = usable & (front_facing | ~face_cull)
    umin, umax, vmin, vmax, any_front = _screen_bbox(tri, fx, fy, cx, cy, near, orthographic)
    # Pixel i has its centre at i + 0.5.
    x0 = torch.ceil(umin - 0.5).clamp(min=0, max=width)
    x1 = torch.floor(umax - 0.5).clamp(min=-1, max=width - 1)
    y0 = torch.ceil(vmin - 0.5).clamp(min=0, max=height)
    y1 = torch.floor(vmax - 0.5).clamp(min=-1, max=height - 1)
    keep = usable & any_front & (x0 <= x1) & (y0 <= y1) & torch.isfinite(umin) & torch.isfinite(vmin)
    flat_tri = keep.view(-1).nonzero(as_tuple=True)[0]  # frame * F + triangle
    x0, x1, y0, y1 = (b.reshape(-1).index_select(0, flat_tri).long() for b in (x0, x1, y0, y1))
    owner, tx0, ty0, ex, ey = _tiles(x0, x1, y0, y1)
    tile_tri = flat_tri.index_select(0, owner)
    num_sizes = len(GRID_SIZES)
    bucket = _size_level(ex) * num_sizes + _size_level(ey)

    tile_frame = tile_tri // num_faces
    # Edge functions at the tile origin's pixel centre and their steps per pixel.
    dx0 = (tx0.float() + 0.5 - cx[tile_frame]) / fx[tile_frame]
    dy0 = (ty0.float() + 0.5 - cy[tile_frame]) / fy[tile_frame]
    a = A.reshape(-1, 9).index_select(0, tile_tri).view(-1, 3, 3)
    z = tri[..., 2].reshape(-1, 3).index_select(0, tile_tri)
    coeff = torch.empty((tile_tri.numel(), 7, 3), device=device)
    coeff[:, :3, 0] = a[:, :, 0] / fx[tile_frame, None]
    coeff[:, :3, 1] = a[:, :, 1] / fy[tile_frame, None]
    coeff[:, :3, 2] = a[:, :, 0] * dx0[:, None] + a[:, :, 1] * dy0[:, None] + a[:, :, 2]
    # Widen every edge by 1/1000 pixel: a pixel centre exactly on an edge shared by two triangles is
    # then claimed by both (the z-test picks one) instead of by neither through rounding (cracks).
    coeff[:, :3, 2] += EDGE_TOLERANCE_PX * (coeff[:, :3, 0].abs() + coeff[:, :3, 1].abs())
    coeff[:, 3] = torch.stack([-torch.ones_like(dx0), torch.zeros_like(dx0), (ex - 1).float()], -1)
    coeff[:, 4] = torch.stack([torch.zeros_like(dx0), -torch.ones_like(dx0), (ey - 1).float()], -1)
    coeff[:, 5] = (z[:, :, None] * coeff[:, :3]).sum(1)  # depth numerator: sum_i w_i z_i
    coeff[:, 6] = coeff[:, :3].sum(1)  # depth denominator: sum_i w_i
    base_pix = (tile_frame * height + ty0) * width + tx0
    key_tri = tile_tri % num_faces

    empty = torch.iinfo(torch.int64).max
    # Out-of-box candidates of the last rows address up to TILE rows past the end: pad the buffer.
    zbuf = torch.full((num_frames * height * width + (TILE + 1) * width,), empty, dtype=torch.long, device=device)
    # One sort groups the tiles by bucket; each bucket is then a contiguous slice.
    order = torch.argsort(bucket)
    counts = torch.bincount(bucket, minlength=num_sizes * num_sizes).tolist()
    offset = 0
    for code, count in enumerate(counts):
        if count:
            members = order[offset : offset + count]
            offset += count
            sx, sy = GRID_SIZES[code // num_sizes], GRID_SIZES[code % num_sizes]
            oy, ox = torch.meshgrid(torch.arange(sy, device=device), torch.arange(sx, device=device), indexing="ij")
            offsets = torch.stack(
                [ox.reshape(-1), oy.reshape(-1), torch.ones(sx * sy, dtype=torch.long, device=device)]
            )
            offsets_f = offsets.float()  # (3,S)
            pix_offset = (oy * width + ox).reshape(1, -1)
            per_chunk = max(1, max_candidates // (sx * sy))
            for start in range(0, members.numel(), per_chunk):
                sel = members[start : start + per_chunk]
                values = (coeff.index_select(0, sel).reshape(-1, 3) @ offsets_f).view(sel.numel(), 7, -1)
                inside = values[:, :5].amin(1) >= 0
                depth = values[:, 5] / values[:, 6]
                valid = inside & (depth > near)
                quantised = (depth * DEPTH_SCALE).clamp(max=2.0**62 / 2**TRIANGLE_BITS).long()
                key = (quantised << TRIANGLE_BITS) | key_tri.index_select(0, sel)[:, None]
                key = torch.where(valid, key, empty)
                pix = base_pix.index_select(0, sel)[:, None] + pix_offset
                zbuf.scatter_reduce_(0, pix.view(-1), key.view(-1), reduce="amin")
    return zbuf[: num_frames * height * width], A, tri


def render(
    meshes: list[Mesh],
    K,
    world_to_cam,
    image_size: tuple[int, int],
    ambient: float = 0.35,
    light_dir=None,
    background=None,
    orthographic: bool = False,
    near: float = 0.01,
    device: str | torch.device | None = None,
    max_candidates: int = 1 << 21,
    max_triangle_frames: int = 1 << 21,
    return_barycentrics: bool = False,
) -> RenderOutput:
    """Rasterise ``meshes`` for every frame -> RGB, depth (metres), instance ids, face ids.

    K (3,3)|(T,3,3): perspective intrinsics in pixels; with ``orthographic=True`` K[0,0], K[1,1] are
    pixels per metre and K[:2,2] the pixel of the camera axis. world_to_cam (4,4)|(T,4,4) maps world to
    the OpenCV camera (x right, y down, z forward). ``light_dir`` points towards the light in the camera
    frame. ``background``: None (black), an RGB colour (3,), or images (H,W,3)|(T,H,W,3) (uint8 or
    float). Frames are processed in chunks of at most ``max_triangle_frames`` triangle-frames.
    """
    if not meshes:
        raise ValueError("render: no meshes given")
    height, width = int(image_size[0]), int(image_size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"render: image_size must be positive, got {image_size}")
    if device is None:
        first = meshes[0].vertices
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    num_frames = _num_frames(meshes, K, world_to_cam)
    K_all = _per_frame(_as_tensor(K, device), num_frames, 2, "K")
    w2c = _per_frame(_as_tensor(world_to_cam, device), num_frames, 2, "world_to_cam")
    verts_world, colors, faces, face_instance, face_smooth, face_cull = _concat_meshes(meshes, num_frames, device)
    if faces.shape[0] >= 1 << TRIANGLE_BITS:
        raise ValueError(f"render: too many triangles ({faces.shape[0]}), limit {1 << TRIANGLE_BITS}")
    light = torch.as_tensor(DEFAULT_LIGHT_DIR if light_dir is None else light_dir, dtype=torch.float32)
    light = torch.nn.functional.normalize(light.to(device), dim=0)

    rgb = torch.zeros((num_frames, height, width, 3), device=device)
    depth = torch.zeros((num_frames, height, width), device=device)
    instance = torch.zeros((num_frames, height, width), dtype=torch.long, device=device)
    face_id = torch.full((num_frames, height, width), -1, dtype=torch.long, device=device)
    bary = torch.zeros((num_frames, height, width, 3), device=device) if return_barycentrics else None

    chunk = max(1, max_triangle_frames // max(1, faces.shape[0]))
    for start in range(0, num_frames, chunk):
        stop = min(num_frames, start + chunk)
        R, t = w2c[start:stop, :3, :3], w2c[start:stop, :3, 3]
        verts_cam = verts_world[start:stop] @ R.transpose(1, 2) + t[:, None]
        Kc = K_all[start:stop]
        zbuf, A, tri = _rasterize_chunk(
            verts_cam, faces, face_cull, Kc, (height, width), near, orthographic, max_candidates
        )
        hit = zbuf != torch.iinfo(torch.int64).max
        pix = hit.nonzero(as_tuple=True)[0]
        if pix.numel() == 0:
            continue
        tri_idx = zbuf[pix] & ((1 << TRIANGLE_BITS) - 1)
        f_local = pix // (height * width)
        shaded, z, b = _shade(
            pix, f_local, tri_idx, verts_cam, faces, face_smooth, colors, start, Kc, A, tri, (height, width),
            orthographic, light, ambient,
        )  # fmt: skip

        frame_pix = pix + start * height * width
        rgb.view(-1, 3)[frame_pix] = shaded
        depth.view(-1)[frame_pix] = z
        instance.view(-1)[frame_pix] = face_instance[tri_idx]
        face_id.view(-1)[frame_pix] = tri_idx
        if bary is not None:
            bary.view(-1, 3)[frame_pix] = b

    if background is not None:
        bg = _background(background, num_frames, height, width, device)
        rgb = torch.where((instance > 0)[..., None], rgb, bg)
    return RenderOutput(rgb=rgb, depth=depth, instance=instance, face_id=face_id, barycentrics=bary)


def _gather_corners(per_vertex: torch.Tensor, frame: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """per_vertex (T,V,C), frame (n,), corners (n,3) -> (n,3,C) with flat index_select (fast on cpu)."""
    num_vertices = per_vertex.shape[1]
    index = (frame[:, None] * num_vertices + corners).reshape(-1)
    return per_vertex.reshape(-1, per_vertex.shape[-1]).index_select(0, index).view(*corners.shape, -1)


def _shade(pix, frame, tri_idx, verts_cam, faces, face_smooth, colors, start, K, A, tri, image_size,
           orthographic, light, ambient):  # fmt: skip
    """Per covered pixel: barycentrics of the winning triangle, depth, Lambert + ambient colour."""
    height, width = image_size
    num_faces = faces.shape[0]
    py = (pix // width) % height
    px = pix % width
    dx = (px.float() + 0.5 - K[frame, 0, 2]) / K[frame, 0, 0]
    dy = (py.float() + 0.5 - K[frame, 1, 2]) / K[frame, 1, 1]
    flat_tri = frame * num_faces + tri_idx
    a = A.reshape(-1, 3, 3).index_select(0, flat_tri)
    w = a[:, :, 0] * dx[:, None] + a[:, :, 1] * dy[:, None] + a[:, :, 2]
    b = w / w.sum(-1, keepdim=True)
    z = (b * tri[..., 2].reshape(-1, 3).index_select(0, flat_tri)).sum(-1)
    corners = faces.index_select(0, tri_idx)
    smooth = face_smooth.index_select(0, tri_idx)
    n = torch.zeros((pix.numel(), 3), device=pix.device)
    if bool(smooth.any()):
        normals = _vertex_normals(verts_cam, faces, tri)
        n = (b[..., None] * _gather_corners(normals, frame, corners)).sum(1)
    if not bool(smooth.all()):
        p = _gather_corners(verts_cam, frame, corners)
        flat = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        n = torch.where(smooth[:, None], n, flat)
    color_frame = frame + start if colors.shape[0] > 1 else torch.zeros_like(frame)
    c = (b[..., None] * _gather_corners(colors, color_frame, corners)).sum(1)
    # Two-sided lighting: turn the normal towards the viewer.
    if orthographic:
        view = torch.tensor([0.0, 0.0, -1.0], device=pix.device).expand_as(n)
    else:
        view = -torch.stack([dx, dy, torch.ones_like(dx)], -1)
    n = torch.where(((n * view).sum(-1, keepdim=True) < 0), -n, n)
    n = torch.nn.functional.normalize(n, dim=-1, eps=1e-12)
    lambert = (n @ light).clamp(min=0)
    shaded = (c * (ambient + (1.0 - ambient) * lambert[:, None])).clamp(0, 1)
    return shaded, z, b


def _background(background, num_frames, height, width, device) -> torch.Tensor:
    is_uint8 = (isinstance(background, np.ndarray) and background.dtype == np.uint8) or (
        isinstance(background, torch.Tensor) and background.dtype == torch.uint8
    )
    bg = _as_tensor(background, device)
    if is_uint8:
        bg = bg / 255.0
    if bg.dim() == 1:
        return bg.view(1, 1, 1, 3).expand(num_frames, height, width, 3)
    if bg.dim() == 3:
        bg = bg.unsqueeze(0)
    if bg.shape[1:] != (height, width, 3) or bg.shape[0] not in (1, num_frames):
        raise ValueError(f"render: background must be (3,), (H,W,3) or (T,H,W,3), got {tuple(bg.shape)}")
    return bg.expand(num_frames, height, width, 3)


def composite(front: RenderOutput, back: RenderOutput) -> RenderOutput:
    """Depth-composite two renders of the same camera and size (z-test per pixel).

    ``back`` may hold one frame (a static layer such as the ground, rendered once) and is then
    broadcast over ``front``'s frames. Background pixels of ``front`` show ``back`` entirely.
    """
    num_frames = front.rgb.shape[0]
    if back.rgb.shape[1:] != front.rgb.shape[1:] or back.rgb.shape[0] not in (1, num_frames):
        raise ValueError(f"composite: layer shapes differ: {tuple(front.rgb.shape)} vs {tuple(back.rgb.shape)}")

    def grow(x: torch.Tensor) -> torch.Tensor:
        return x.expand(num_frames, *x.shape[1:])

    back_depth = grow(back.depth)
    front_wins = (front.instance > 0) & ((back.instance == 0).expand_as(front.instance) | (front.depth < back_depth))
    return RenderOutput(
        rgb=torch.where(front_wins[..., None], front.rgb, grow(back.rgb)),
        depth=torch.where(front_wins, front.depth, back_depth),
        instance=torch.where(front_wins, front.instance, grow(back.instance)),
        face_id=torch.where(front_wins, front.face_id, -1),
        barycentrics=None
        if front.barycentrics is None or back.barycentrics is None
        else torch.where(front_wins[..., None], front.barycentrics, grow(back.barycentrics)),
    )
