"""Surface signed distance, contact and penetration labelling, decimation, and the hoi_data loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from reconstruction import fileio
from reconstruction.render.hoi_result import HoiResultError, load_hoi_result
from reconstruction.render.overlay import CONTACT_COLOR, PENETRATION_COLOR, body_colors
from reconstruction.render.proximity import SurfaceSDF, body_object_proximity
from reconstruction.render.scenepic_export import cluster_decimate


def test_signed_distance_of_a_box_matches_analytic():
    box = trimesh.creation.box(extents=[0.2, 0.1, 0.3])
    sdf = SurfaceSDF(box.vertices, box.faces)
    points = torch.tensor(
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.14], [0.0, 0.08, 0.0], [0.13, 0.0, 0.0], [0.0, 0.0, 0.25], [0.0, -0.049, 0.0]]
    )
    expected = torch.tensor([-0.05, -0.01, 0.03, 0.03, 0.1, -0.001])
    assert torch.allclose(sdf.signed_distance(points), expected, atol=3e-3)


def test_proximity_flags_contact_and_penetration():
    # Two "hands" of 3 vertices each plus a torso vertex; a unit-free box at the origin.
    box = trimesh.creation.box(extents=[0.2, 0.2, 0.2])
    sdf = SurfaceSDF(box.vertices, box.faces)
    body = torch.tensor(
        [
            [[0.105, 0.0, 0.0], [0.5, 0.0, 0.0], [0.6, 0.0, 0.0],  # left hand: one vertex touching
             [-0.05, 0.0, 0.0], [-0.5, 0, 0], [-0.6, 0, 0],  # right hand: one vertex 5 cm inside
             [0.0, 0.5, 0.0]],  # torso, far
        ]
    )  # fmt: skip
    body = torch.cat([body, body + torch.tensor([2.0, 0.0, 0.0])])  # frame 1: everything moved away
    poses = torch.eye(4).repeat(2, 1, 1)
    hands = {"left_hand": torch.tensor([0, 1, 2]), "right_hand": torch.tensor([3, 4, 5])}
    prox = body_object_proximity(body, poses, sdf, hands)
    assert prox.hand_contact[0].tolist() == [True, False, False, False, False, False, False]
    assert prox.penetrating[0].tolist() == [False, False, False, True, False, False, False]
    assert prox.hand_touching.tolist() == [[True, True], [False, False]]
    assert not prox.penetrating[1].any() and not prox.hand_contact[1].any()
    assert prox.signed_distance[0, 3] == pytest.approx(-0.05, abs=3e-3)
    colors = body_colors(prox)
    assert torch.allclose(colors[0, 0], torch.tensor(CONTACT_COLOR))
    assert torch.allclose(colors[0, 3], torch.tensor(PENETRATION_COLOR))
    # A rotated and translated object: same relations in its own frame.
    angle = 0.7
    R = torch.tensor(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]], dtype=torch.float32
    )
    t = torch.tensor([1.0, -2.0, 0.5])
    moved = body[:1] @ R.T + t
    pose = torch.eye(4)
    pose[:3, :3], pose[:3, 3] = R, t
    prox_moved = body_object_proximity(moved, pose[None], sdf, hands)
    assert torch.equal(prox_moved.penetrating, prox.penetrating[:1])
    assert torch.equal(prox_moved.hand_contact, prox.hand_contact[:1])


def test_cluster_decimation_bounds_vertices_and_keeps_winding():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)  # 2562 vertices
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
    dec = cluster_decimate(vertices, torch.tensor(sphere.faces), max_vertices=500)
    assert dec.num_clusters <= 500
    low = dec.apply(vertices[None])[0]
    tri = low[dec.faces]
    normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = (normals * tri.mean(1)).sum(-1) > 0
    assert outward.float().mean() > 0.97  # winding (outward normals) survives decimation
    assert (low.norm(dim=-1) > 0.9).all()


@pytest.fixture(scope="module")
def anny():
    from reconstruction.body import load_body_model

    return load_body_model("anny")


def _hoi(model, T=3):
    return {
        "human_data": {
            "poses": np.zeros((T, len(model.joint_names) * 3)),
            "trans": np.tile([0.0, 0.0, 0.9], (T, 1)),
            "betas": np.full(6, 0.5),
        },
        "obj_data": {
            "obj_R": np.tile(np.eye(3), (T, 1, 1)),
            "obj_t": np.tile([0.3, -0.4, 1.0], (T, 1)),
            "obj_scale": 2.0,
        },
        "meta": {"obj_path": "box.obj", "contact_frames": np.zeros((T, 2), bool)},
    }


def test_loader_poses_body_and_object(tmp_path, anny):
    box = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    box.export(tmp_path / "box.obj")
    hoi = _hoi(anny)
    hoi["human_data"]["body_model"] = "anny"
    fileio.write_pickle(tmp_path / "hoi.pkl", hoi)
    seq = load_hoi_result(tmp_path / "hoi.pkl")  # relative obj_path resolved beside the pickle
    assert seq.body_vertices.shape == (3, anny.num_vertices, 3)
    assert torch.allclose(seq.body_root, torch.tensor([0.0, 0.0, 0.9]).expand(3, 3), atol=1e-5)
    extent = seq.object_vertices.max(1).values - seq.object_vertices.min(1).values
    assert torch.allclose(extent, torch.full((3, 3), 0.2), atol=1e-5)  # obj_scale 2 applied
    assert torch.allclose(seq.object_center, torch.tensor([0.3, -0.4, 1.0]).expand(3, 3), atol=1e-5)
    # Hand poses given separately (GRAIL layout) pose the same body as the full pose.
    rng = np.random.default_rng(0)
    full = rng.normal(0, 0.2, (3, len(anny.joint_names), 3))
    full[:, 0] = 0
    left, right = anny.left_hand_joints, anny.right_hand_joints
    others = [j for j in range(len(anny.joint_names)) if j not in set(left) | set(right)]
    split = _hoi(anny)
    split["human_data"].update(
        poses=full[:, others].reshape(3, -1), left_hand_pose=full[:, left].reshape(3, -1),
        right_hand_pose=full[:, right].reshape(3, -1),
    )  # fmt: skip
    whole = _hoi(anny)
    whole["human_data"]["poses"] = full.reshape(3, -1)
    fileio.write_pickle(tmp_path / "split.pkl", split)
    fileio.write_pickle(tmp_path / "whole.pkl", whole)
    a = load_hoi_result(tmp_path / "split.pkl", body_model="anny")  # body model from the config
    b = load_hoi_result(tmp_path / "whole.pkl", body_model="anny")
    assert torch.allclose(a.body_vertices, b.body_vertices, atol=1e-5)
    assert (a.body_vertices - seq.body_vertices).abs().max() > 0.01  # the random pose did move the body
    with pytest.raises(HoiResultError, match="no body_model"):
        load_hoi_result(tmp_path / "whole.pkl")


def test_loader_errors_name_file_and_key(tmp_path, anny):
    trimesh.creation.box().export(tmp_path / "box.obj")
    hoi = _hoi(anny)
    del hoi["obj_data"]["obj_t"]
    fileio.write_pickle(tmp_path / "bad.pkl", hoi)
    with pytest.raises(HoiResultError, match=r"bad.pkl: missing obj_data\['obj_t'\]"):
        load_hoi_result(tmp_path / "bad.pkl", body_model="anny")
    hoi = _hoi(anny)
    hoi["human_data"]["poses"] = np.zeros((3, 30))
    fileio.write_pickle(tmp_path / "short.pkl", hoi)
    with pytest.raises(HoiResultError, match="10 joints"):
        load_hoi_result(tmp_path / "short.pkl", body_model="anny")
    (tmp_path / "junk.pkl").write_text("not a pickle")
    with pytest.raises(HoiResultError, match="junk.pkl"):
        load_hoi_result(tmp_path / "junk.pkl", body_model="anny")
