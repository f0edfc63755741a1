"""Object categories, their exact signed distances, the OBJ round trip, and the ground-truth file format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reconstruction.eval.geometry import point_mesh_distance, point_mesh_signed_distance
from reconstruction.synth import objects
from reconstruction.synth.ground_truth import GroundTruth, load_ground_truth, save_ground_truth


@pytest.mark.parametrize("category", objects.CATEGORIES)
def test_mesh_lies_on_the_analytic_surface_and_grasps_are_on_it(category):
    spec = objects.make_object(category, np.random.default_rng(1))
    mesh = objects.build_mesh(spec)
    vertices = torch.tensor(np.asarray(mesh.vertices))
    sd = objects.signed_distance(spec, vertices)
    assert float(sd.max()) < 1e-9  # no vertex outside the union (vertices of buried parts are inside)
    for site in (*spec.two_hands, spec.one_hand):
        point = torch.tensor(site.point)[None]
        assert abs(float(objects.signed_distance(spec, point))) < 1e-9
        # The normal points outwards: 1 cm along it is 1 cm outside, 1 cm against it is inside.
        assert float(objects.signed_distance(spec, point + 0.01 * torch.tensor(site.normal))) == pytest.approx(
            0.01, abs=1e-6
        )
        assert float(objects.signed_distance(spec, point - 0.01 * torch.tensor(site.normal))) < 0
        assert abs(float(np.dot(site.normal, site.finger_dir))) < 1e-9  # fingers run along the surface
    assert mesh.bounds[0, 2] == pytest.approx(0.0, abs=1e-9)  # rests on z = 0


def test_categories_differ_in_shape_and_size():
    extents = {c: objects.build_mesh(objects.make_object(c)).extents for c in objects.CATEGORIES}
    volumes = {c: float(np.prod(e)) for c, e in extents.items()}
    assert len({round(v, 5) for v in volumes.values()}) == len(objects.CATEGORIES)
    assert volumes["box"] > 5 * volumes["mug"]
    assert extents["bottle"][2] > 2 * extents["bottle"][0]  # tall and thin
    assert extents["drill"][1] > 1.5 * extents["drill"][0]  # long along y
    with pytest.raises(ValueError, match="unknown object category"):
        objects.make_object("teapot")


def test_obj_round_trip_keeps_geometry_and_colours(tmp_path):
    spec = objects.make_object("drill", np.random.default_rng(2))
    path = objects.write_obj(spec, tmp_path / "drill.obj")
    vertices, faces, colors = objects.load_obj_vertices_faces(path)
    mesh = objects.build_mesh(spec)
    assert np.allclose(vertices, mesh.vertices, atol=1e-7)
    assert np.array_equal(faces, mesh.faces)
    assert colors is not None and colors.shape == vertices.shape
    assert len(np.unique(np.round(colors, 2), axis=0)) >= 3  # yellow body, black chuck/battery, stripe


@pytest.mark.parametrize("category", ["box", "bottle", "mug"])
def test_mesh_signed_distance_matches_analytic_outside(category):
    spec = objects.make_object(category)
    mesh = objects.build_mesh(spec)
    rng = np.random.default_rng(0)
    points = torch.tensor(rng.uniform(mesh.bounds[0] - 0.05, mesh.bounds[1] + 0.05, size=(300, 3)))
    analytic = objects.signed_distance(spec, points)
    exact = point_mesh_signed_distance(points, torch.tensor(mesh.vertices), torch.tensor(mesh.faces))
    outside = analytic > 0
    # Outside, the polygonal mesh and the analytic shape agree up to the polygon chord error (< 0.5 mm).
    assert torch.allclose(exact[outside], analytic[outside], atol=5e-4)
    assert bool((exact[analytic < -2e-3] < 0).all())  # the sign is right inside too
    unsigned = point_mesh_distance(points, torch.tensor(mesh.vertices), torch.tensor(mesh.faces))
    assert torch.allclose(unsigned, exact.abs())


def _tiny_gt(tmp_path) -> GroundTruth:
    rng = np.random.default_rng(0)
    t = 5
    mesh = tmp_path / "mesh" / "obj.obj"
    objects.write_obj(objects.make_object("mug"), mesh)
    return GroundTruth(
        fps=30.0, K=np.eye(3), image_size=(120, 160), world_to_cam=np.tile(np.eye(4), (t, 1, 1)), body_model="anny",
        pose_aa=rng.normal(size=(t, 104, 3)), shape=rng.uniform(size=6), trans=rng.normal(size=(t, 3)), height_m=1.7,
        keypoints_3d_world=rng.normal(size=(t, 75, 3)), keypoints_3d_cam=rng.normal(size=(t, 75, 3)),
        object_poses_world=np.tile(np.eye(4), (t, 1, 1)), object_poses_cam=np.tile(np.eye(4), (t, 1, 1)),
        contact=rng.random((t, 2)) > 0.5, object_mesh_path=mesh, object_visibility=np.ones(t),
        variant="normal", category="mug", seed=7, extra={"note": [1, 2]},
    )  # fmt: skip


def test_ground_truth_round_trip_and_relative_mesh_path(tmp_path):
    gt = _tiny_gt(tmp_path)
    path = save_ground_truth(tmp_path / "gt" / "ground_truth.npz", gt)
    loaded = load_ground_truth(path)
    for name in ("K", "world_to_cam", "pose_aa", "shape", "trans", "keypoints_3d_cam", "object_poses_cam", "contact"):
        assert np.array_equal(getattr(loaded, name), getattr(gt, name)), name
    assert loaded.contact.dtype == bool
    assert loaded.object_mesh_path == gt.object_mesh_path.resolve()
    assert (loaded.fps, loaded.image_size, loaded.variant, loaded.seed, loaded.extra) == (
        30.0,
        (120, 160),
        "normal",
        7,
        {"note": [1, 2]},
    )
    # Same content -> same bytes (deterministic npz), whenever it is written.
    again = save_ground_truth(tmp_path / "gt" / "ground_truth_again.npz", gt)
    assert again.read_bytes() == path.read_bytes()


def test_ground_truth_rejects_bad_shapes_and_files(tmp_path):
    gt = _tiny_gt(tmp_path)
    gt.contact = gt.contact[:3]
    with pytest.raises(ValueError, match="contact"):
        save_ground_truth(tmp_path / "bad.npz", gt)
    assert not (tmp_path / "bad.npz").exists()
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="junk.npz"):
        load_ground_truth(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_ground_truth(tmp_path / "missing.npz")
