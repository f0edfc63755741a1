"""Renderer: analytic coverage and depth, occlusion, batching, near-plane robustness, orthographic view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from reconstruction.render import Mesh, render
from reconstruction.render.scene import ground_plane, look_at_world_to_cam, top_view_camera

H, W = 120, 160
F = 200.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])


def _box(size, center, instance_id=2, color=(0.9, 0.2, 0.2), smooth=True):
    box = trimesh.creation.box(extents=[size] * 3)
    vertices = box.vertices + np.asarray(center)
    return Mesh(vertices, box.faces, np.tile(color, (len(vertices), 1)), instance_id, smooth=smooth)


def _expected_square(size, distance):
    """Pixel-centre index range covered by a camera-facing square of side ``size`` at ``distance``."""
    half = size / 2 / distance * F
    cols = np.arange(W)[(np.arange(W) + 0.5 > W / 2 - half) & (np.arange(W) + 0.5 < W / 2 + half)]
    rows = np.arange(H)[(np.arange(H) + 0.5 > H / 2 - half) & (np.arange(H) + 0.5 < H / 2 + half)]
    return rows, cols


def test_cube_covers_analytic_area_and_depth():
    size, center_z = 0.3, 2.0
    out = render([_box(size, (0, 0, center_z))], K, np.eye(4), (H, W))
    mask = out.instance[0].numpy() == 2
    rows, cols = _expected_square(size, center_z - size / 2)
    expected = np.zeros((H, W), bool)
    expected[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    # Agreement everywhere except at most a one-pixel border.
    assert mask.sum() == pytest.approx(expected.sum(), rel=0.05)
    inner = expected.copy()
    inner[[rows[0], rows[-1]], :] = False
    inner[:, [cols[0], cols[-1]]] = False
    assert mask[inner].all()
    dilated = (
        expected
        | np.roll(expected, 1, 0)
        | np.roll(expected, -1, 0)
        | np.roll(expected, 1, 1)
        | np.roll(expected, -1, 1)
    )
    assert not mask[~dilated].any(), "coverage outside the one-pixel border"
    depth = out.depth[0].numpy()
    assert np.allclose(depth[mask], center_z - size / 2, atol=1e-5)
    assert (depth[~mask] == 0).all()
    assert out.face_id[0][torch.from_numpy(mask)].min() >= 0
    assert (out.face_id[0][~torch.from_numpy(mask)] == -1).all()


def test_occlusion_near_hides_far():
    near = _box(0.3, (0.05, 0, 1.5), instance_id=1, color=(0, 1, 0))
    far = _box(0.6, (0, 0, 3.0), instance_id=2, color=(0, 0, 1))
    for order in ([near, far], [far, near]):  # result must not depend on mesh order
        out = render(order, K, np.eye(4), (H, W))
        instance, depth = out.instance[0], out.depth[0]
        centre = instance[H // 2, W // 2 + 5]
        assert centre == 1
        assert depth[H // 2, W // 2 + 5] == pytest.approx(1.35, abs=1e-5)
        # The far box is visible around the near one, at its own depth.
        far_pixels = instance == 2
        assert far_pixels.sum() > 200
        assert torch.allclose(depth[far_pixels], torch.tensor(2.7), atol=1e-5)
        # Colour follows instance: green where near, blue where far.
        assert (out.rgb[0][instance == 1][:, 1] > 0.3).all() and (out.rgb[0][instance == 1][:, 2] == 0).all()
        assert (out.rgb[0][far_pixels][:, 2] > 0.3).all() and (out.rgb[0][far_pixels][:, 1] == 0).all()


def test_batched_frames_equal_single_frames():
    T = 5
    box = trimesh.creation.icosphere(subdivisions=2, radius=0.25)
    path = np.stack([np.linspace(-0.4, 0.4, T), np.linspace(0.2, -0.2, T), np.linspace(1.5, 2.5, T)], 1)
    vertices = box.vertices[None] + path[:, None]
    colors = np.random.default_rng(0).uniform(0.2, 1.0, (T, len(box.vertices), 3))
    gv, gf, gc = ground_plane(size=8, cells=8, height=0.0)
    w2c = np.stack([look_at_world_to_cam((0.3 * t, -0.5, -1.0), (0, 0, 2.0), up=(0, -1, 0)) for t in range(T)])
    meshes = [Mesh(vertices, box.faces, colors, 2), Mesh(gv.numpy()[:, [0, 2, 1]] + [0, 0.4, 2], gf, gc, 3)]
    batched = render(meshes, K, w2c, (H, W))
    for t in range(T):
        single = render([Mesh(vertices[t], box.faces, colors[t], 2), meshes[1]], K, w2c[t], (H, W))
        assert torch.equal(single.instance[0], batched.instance[t])
        assert torch.equal(single.face_id[0], batched.face_id[t])
        assert torch.allclose(single.depth[0], batched.depth[t], atol=1e-6)
        assert torch.allclose(single.rgb[0], batched.rgb[t], atol=1e-5)
    # Chunking over frames gives the same result as one chunk.
    chunked = render(meshes, K, w2c, (H, W), max_triangle_frames=1, max_candidates=64)
    assert torch.equal(chunked.instance, batched.instance)
    assert torch.allclose(chunked.depth, batched.depth, atol=1e-6)


def test_ground_quad_reaching_behind_camera_renders_exactly():
    """Two huge triangles extending behind the camera: ground below the horizon, nothing above it."""
    cam_height = 1.5
    size = 400.0
    vertices = np.array([[-size, -size, 0], [size, -size, 0], [size, size, 0], [-size, size, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    w2c = look_at_world_to_cam((0, 0, cam_height), (0, 10, cam_height))  # horizontal view along +Y
    out = render([Mesh(vertices, faces, None, 3)], K, w2c, (H, W))
    instance, depth = out.instance[0].numpy(), out.depth[0].numpy()
    rows = np.arange(H) + 0.5 - H / 2
    assert not instance[rows < 0].any(), "ground smeared above the horizon"
    # Below the horizon the ray hits the plane at z_cam = h * f / dy, unless beyond the plane's edge.
    expected_depth = np.where(rows > 0, cam_height * F / np.where(rows > 0, rows, 1), 0)
    visible = (rows > 0) & (expected_depth < size * 0.9)
    assert instance[visible].all()
    np.testing.assert_allclose(
        depth[visible], np.broadcast_to(expected_depth[visible, None], (visible.sum(), W)), rtol=1e-4
    )


def test_mesh_partly_behind_camera_does_not_smear():
    """A box straddling the camera plane: only its part in front shows, nothing wraps around."""
    box = _box(1.0, (0.0, 0.0, 0.2))  # spans z in [-0.3, 0.7]; camera inside its x/y extent
    out = render([box], K, np.eye(4), (H, W), near=0.05)
    # The camera is inside the box: every pixel sees the far face at z = 0.7 (or side faces closer).
    depth = out.depth[0]
    assert (out.instance[0] == 2).all()
    assert torch.isfinite(depth).all() and (depth > 0.05).all() and (depth <= 0.7 + 1e-5).all()
    centre_depth = float(depth[H // 2, W // 2])
    assert centre_depth == pytest.approx(0.7, abs=1e-5)
    # Moved to the side so it is half off-screen: no crash, coverage only on the expected side.
    side = _box(0.4, (0.25, 0.0, 0.1))  # spans z in [-0.1, 0.3] and x in [0.05, 0.45]
    out = render([side], K, np.eye(4), (H, W), near=0.05)
    cols = out.instance[0].any(0).nonzero().flatten()
    assert cols.numel() > 0 and int(cols.min()) >= W // 2


def test_orthographic_top_view_area():
    K_top, w2c_top = top_view_camera((0.0, 0.0), extent_m=4.0, image_size=(H, W))
    box = _box(1.0, (0.5, 0.0, 0.5))  # 1 m cube resting on the ground, shifted +x
    out = render([box], K_top, w2c_top, (H, W), orthographic=True)
    mask = out.instance[0].numpy() == 2
    pixels_per_m = H / 4.0
    assert mask.sum() == pytest.approx(pixels_per_m**2, rel=0.06)
    ys, xs = np.nonzero(mask)
    assert xs.mean() + 0.5 == pytest.approx(W / 2 + 0.5 * pixels_per_m, abs=0.6)  # world +x -> image right
    assert ys.mean() + 0.5 == pytest.approx(H / 2, abs=0.6)
    # Depth is distance below the camera (50 m up): the box top at z = 1 m.
    assert np.allclose(out.depth[0].numpy()[mask], 49.0, atol=1e-4)


def test_lambert_and_ambient_shading():
    color = (0.8, 0.6, 0.4)
    box = _box(0.5, (0, 0, 3.0), color=color, smooth=False)  # flat: the face normal exactly
    facing = render([box], K, np.eye(4), (H, W), ambient=0.3, light_dir=(0, 0, -1))
    lit = facing.rgb[0, H // 2, W // 2]
    assert torch.allclose(lit, torch.tensor(color), atol=1e-4)
    grazing = render([box], K, np.eye(4), (H, W), ambient=0.3, light_dir=(1, 0, 0))
    assert torch.allclose(grazing.rgb[0, H // 2, W // 2], 0.3 * torch.tensor(color), atol=1e-4)


def test_background_image_and_errors():
    background = np.full((H, W, 3), 255, np.uint8)
    out = render([_box(0.3, (0, 0, 2.0))], K, np.eye(4), (H, W), background=background)
    assert torch.allclose(out.rgb[0, 0, 0], torch.ones(3))
    with pytest.raises(ValueError, match="faces"):
        render([Mesh(np.zeros((3, 3)), np.array([[0, 1, 5]]))], K, np.eye(4), (H, W))
    with pytest.raises(ValueError, match="frame counts"):
        render([Mesh(np.zeros((2, 3, 3)), np.array([[0, 1, 2]]))], K, np.eye(4)[None].repeat(3, 0), (H, W))


def test_backface_culling_keeps_closed_mesh_image():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    box = trimesh.creation.box(extents=[0.3, 0.3, 0.3])
    T = 3
    shift = np.stack([np.linspace(-0.2, 0.2, T), np.zeros(T), np.full(T, 2.0)], 1)
    for orthographic in (False, True):
        K_view = K if not orthographic else np.array([[150.0, 0, W / 2], [0, 150.0, H / 2], [0, 0, 1]])
        images = []
        for cull in (False, True):
            meshes = [
                Mesh(sphere.vertices[None] + shift[:, None], sphere.faces, None, 1, cull_backfaces=cull),
                Mesh(box.vertices + [0.25, 0.1, 1.7], box.faces, None, 2, smooth=False, cull_backfaces=cull),
            ]
            images.append(render(meshes, K_view, np.eye(4), (H, W), orthographic=orthographic))
        assert torch.equal(images[0].instance, images[1].instance)
        assert torch.allclose(images[0].rgb, images[1].rgb, atol=1e-6)
        assert (images[0].instance > 0).sum() > 1000
    # Inverted winding + culling removes the front faces: the far (inner) side shows instead.
    flipped = Mesh(sphere.vertices + [0, 0, 2.0], sphere.faces[:, ::-1].copy(), None, 1, cull_backfaces=True)
    far_side = render([flipped], K, np.eye(4), (H, W))
    assert float(far_side.depth[0, H // 2, W // 2]) == pytest.approx(2.3, abs=0.01)


def test_barycentrics_interpolate_vertex_positions():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    vertices = sphere.vertices + [0.1, -0.05, 2.5]
    out = render([Mesh(vertices, sphere.faces, None, 1)], K, np.eye(4), (H, W), return_barycentrics=True)
    assert render([Mesh(vertices, sphere.faces, None, 1)], K, np.eye(4), (H, W)).barycentrics is None
    hit = out.face_id[0] >= 0
    corners = torch.as_tensor(vertices, dtype=torch.float32)[torch.as_tensor(sphere.faces)[out.face_id[0][hit]]]
    points = (out.barycentrics[0][hit][..., None] * corners).sum(1)  # (n,3) camera = world here
    assert torch.allclose(points[:, 2], out.depth[0][hit], atol=1e-4)
    ys, xs = hit.nonzero(as_tuple=True)
    u = points[:, 0] / points[:, 2] * F + W / 2
    v = points[:, 1] / points[:, 2] * F + H / 2
    assert torch.allclose(u, xs.float() + 0.5, atol=1e-2) and torch.allclose(v, ys.float() + 0.5, atol=1e-2)
