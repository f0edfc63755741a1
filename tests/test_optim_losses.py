"""Each loss term on hand-computed cases: zero when perfect, a known value, a sensible gradient."""

from __future__ import annotations

import math

import pytest
import torch

from reconstruction import keypoints as kp
from reconstruction.optim import geometry, losses
from reconstruction.projection import project

K = torch.tensor([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])


def test_project_pinhole_and_batched_K():
    pts = torch.tensor([[0.0, 0.0, 2.0], [1.0, -0.5, 2.0]])
    assert torch.allclose(project(pts, K), torch.tensor([[50.0, 40.0], [100.0, 15.0]]))
    batched = project(pts.expand(3, 4, 2, 3), torch.stack([K, 2 * K.triu(), K]))
    assert batched.shape == (3, 4, 2, 2)
    assert torch.allclose(batched[0, 1], project(pts, K))


def test_keypoint_tracking_value_weights_and_gradient():
    target = torch.zeros(2, 3, 2)  # T=2, K=3
    conf = torch.ones(2, 3)
    hand = torch.tensor([False, False, True])
    assert losses.keypoint_tracking(target, target, conf, hand).item() == 0.0
    pred = target.clone()
    pred[:, 0, 0] = 3.0  # body keypoint 3 px off
    pred[:, 2, 1] = 10.0  # hand keypoint 10 px off, weight beta=0.1
    value = losses.keypoint_tracking(pred, target, conf, hand, beta=0.1)
    # per frame: (1*9 + 1*0 + 0.1*100) / (1 + 1 + 0.1)
    assert value.item() == pytest.approx(19.0 / 2.1)
    conf0 = conf.clone()
    conf0[:, 0] = 0.0  # an undetected keypoint does not count
    assert losses.keypoint_tracking(pred, target, conf0, hand, beta=0.1).item() == pytest.approx(10.0 / 1.1)
    pred.requires_grad_(True)
    losses.keypoint_tracking(pred, target, conf, hand).backward()
    assert pred.grad[0, 0, 0] > 0  # pulls x back towards 0


def test_smoothness_terms():
    t = torch.arange(5.0)
    linear = torch.stack([t, 2 * t, 0 * t], -1)[:, None, :]  # (T=5, N=1, 3) constant velocity
    assert losses.human_smoothness(linear, beta=0.0).item() == pytest.approx(0.0)
    # velocity term: |v|^2 = 1 + 4 = 5 per frame
    assert losses.human_smoothness(linear, beta=0.1).item() == pytest.approx(0.5)
    jitter = linear.clone()
    jitter[2, 0, 2] = 1.0  # one spike: accelerations 1, -2, 1 in z over the 3 interior frames
    assert losses.obj_smoothness(jitter).item() == pytest.approx((1 + 4 + 1) / 3)
    batched = torch.stack([linear, jitter])
    assert losses.obj_smoothness(batched).shape == (2,)
    jitter.requires_grad_(True)
    losses.obj_smoothness(jitter).backward()
    assert jitter.grad[2, 0, 2] > 0  # the spike is pushed down


def test_pose_and_residual_regularisers():
    res = torch.zeros(4, 2, 3)
    assert losses.human_pose_reg(res).item() == 0.0
    res[:, 0, 0] = 0.2
    assert losses.human_pose_reg(res).item() == pytest.approx(0.04 / 2)
    assert losses.residual_reg(torch.tensor([0.3, 0.4, 0.0])).item() == pytest.approx(0.25)
    assert losses.residual_reg(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).item() == pytest.approx(12.5)


def test_foot_contact_penalises_sliding_only_when_planted():
    ground_z = torch.tensor(0.0)
    feet = torch.zeros(3, 1, 3)
    feet[:, 0, 0] = torch.tensor([0.0, 0.1, 0.3])  # slides 0.1 then 0.2 in x at z = 0.01
    feet[:, 0, 2] = 0.01
    assert losses.human_foot_contact(feet, ground_z).item() == pytest.approx((0.01 + 0.04) / 2)
    lifted = feet.clone()
    lifted[:, 0, 2] = 0.3  # a swinging foot may move freely
    assert losses.human_foot_contact(lifted, ground_z).item() == 0.0
    still = feet.clone()
    still[:, 0, 0] = 0.5
    assert losses.human_foot_contact(still, ground_z).item() == 0.0
    below = feet.clone()
    below[:, 0, 2] = -0.02
    assert losses.ground(below, ground_z).item() == pytest.approx(0.0004)
    assert losses.ground(feet, ground_z).item() == 0.0


def test_verts_tracking_with_valid_frames():
    target = torch.zeros(2, 4, 2)
    pred = target.clone()
    pred[1, :, 0] = 2.0
    assert losses.verts_tracking(pred, target).item() == pytest.approx(2.0)
    assert losses.verts_tracking(pred, target, torch.tensor([True, False])).item() == 0.0
    assert losses.verts_tracking(pred, target, torch.tensor([False, True])).item() == pytest.approx(4.0)


def test_obj_precontact_reg():
    pts = torch.zeros(4, 2, 3)
    pts[1:, :, 1] = 0.1  # moves between frames 0 and 1, then still
    pre = torch.tensor([True, True, True, False])
    assert losses.obj_precontact_reg(pts, pre).item() == pytest.approx(0.01 / 2)
    assert losses.obj_precontact_reg(pts, torch.tensor([False, False, True, True])).item() == 0.0


def test_obj_still_reg_holds_the_still_start_at_rest_and_the_put_down_in_place():
    rest = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    lifted = (torch.arange(6.0) >= 2)[:, None, None]  # frames 2-5: 3 cm up
    pts = rest.repeat(6, 1, 1) + torch.tensor([0.0, 0.0, 0.03]) * lifted
    still = torch.tensor([True, True, True, False, True, True])  # 0-2 still start (touched at 2), 4-5 put down
    at_rest = torch.tensor([True, True, True, False, False, False])
    # motion: only 1->2 of the consecutive still pairs (0-1, 1-2, 4-5) moves, by 3 cm; offset: frame 2 of 0-2
    expected = 0.03**2 / 3 + 0.03**2 / 3
    assert losses.obj_still_reg(pts, still, at_rest, rest, torch.tensor(True)).item() == pytest.approx(expected)
    assert losses.obj_still_reg(pts, still, at_rest).item() == pytest.approx(0.03**2 / 3)  # no known rest pose
    assert losses.obj_still_reg(pts, still, at_rest, rest, torch.tensor(False)).item() == pytest.approx(0.03**2 / 3)
    # a carried object (no still frame) is free: zero value, zero gradient
    moving = pts.clone().requires_grad_(True)
    none = torch.zeros(6, dtype=torch.bool)
    value = losses.obj_still_reg(moving, none, none, rest, torch.tensor(True))
    value.backward()
    assert value.item() == 0.0 and moving.grad.abs().sum().item() == 0.0


def test_obj_still_reg_gradient_pulls_a_touched_still_object_back_and_leaves_moving_frames_alone():
    rest = torch.zeros(1, 2, 3)  # (B=1, N=2, 3)
    dragged = torch.zeros(1, 5, 2, 3)
    dragged[:, 2:4, :, 2] = 0.02  # frames 2-3: the contact term dragged it 2 cm deeper
    dragged[:, 4, :, 0] = 0.3  # frame 4: it moves (carried)
    dragged.requires_grad_(True)
    still = torch.tensor([[True, True, True, True, False]])
    value = losses.obj_still_reg(dragged, still, still, rest, torch.tensor([True]))
    assert value.shape == (1,)
    value.sum().backward()
    assert (dragged.grad[0, 2:4, :, 2] > 0).all()  # descent moves the dragged frames back to rest
    assert dragged.grad[0, 4].abs().sum().item() == 0.0  # the moving frame is free
    assert torch.equal(
        losses.obj_precontact_reg(dragged, still, rest, torch.tensor([True])),
        losses.obj_still_reg(dragged, still, still, rest, torch.tensor([True])),
    )  # obj_precontact_reg is the same term over the pre-contact frames


def test_depth_pointcloud_zero_known_trim_and_tol():
    grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(-1, 2)
    cloud = torch.cat([grid * 0.1, torch.full((16, 1), 2.0)], -1)[None]  # (T=1, 16, 3)
    ok = torch.ones(1, 16, dtype=torch.bool)
    assert losses.depth_pointcloud(cloud, ok, cloud, ok).item() == pytest.approx(0.0)
    shifted = cloud + torch.tensor([0.0, 0.0, 0.03])  # every nearest distance is 0.03 m
    value = losses.depth_pointcloud(shifted, ok, cloud, ok, trim_pct=0.0, depth_tol=0.0)
    assert value.item() == pytest.approx(2 * 0.03**2, rel=1e-4)
    # inside the tolerance nothing is paid
    assert losses.depth_pointcloud(shifted, ok, cloud, ok, depth_tol=0.05).item() == 0.0
    # an outlier depth point is trimmed away (1 of 17 < 20 %) but counted without trimming
    outlier = torch.cat([cloud, torch.tensor([[[5.0, 5.0, 2.0]]])], 1)
    ok17 = torch.ones(1, 17, dtype=torch.bool)
    assert losses.depth_pointcloud(cloud, ok, outlier, ok17, trim_pct=0.2, depth_tol=0.0).item() == pytest.approx(0.0)
    assert losses.depth_pointcloud(cloud, ok, outlier, ok17, trim_pct=0.0, depth_tol=0.0).item() > 1.0
    # invalid points and empty frames are ignored
    none = torch.zeros(1, 16, dtype=torch.bool)
    assert losses.depth_pointcloud(shifted, ok, cloud, none).item() == 0.0
    shifted.requires_grad_(True)
    losses.depth_pointcloud(shifted, ok, cloud, ok, trim_pct=0.0, depth_tol=0.0).backward()
    assert (shifted.grad[..., 2] > 0).all()  # pushed back towards the depth points


def _hands_and_object(gap: float):
    """Object: a 5x5 grid of points at z=2; both hands: one point ``gap`` in front of the grid centre."""
    grid = torch.stack(torch.meshgrid(torch.linspace(-0.1, 0.1, 5), torch.linspace(-0.1, 0.1, 5), indexing="ij"), -1)
    obj = torch.cat([grid.reshape(-1, 2), torch.full((25, 1), 2.0)], -1)[None]  # (T=1, 25, 3)
    hands = torch.tensor([0.0, 0.0, 2.0 - gap]).expand(1, 2, 1, 3).clone()  # (T=1, 2, H=1, 3)
    return hands, obj


def test_contact_3d_and_depth_only():
    hands, obj = _hands_and_object(0.0)
    both = torch.tensor([[True, True]])
    assert losses.contact(hands, obj, both, K).item() == 0.0
    assert losses.contact(hands, obj, both, K, depth_only=True).item() == 0.0
    hands, obj = _hands_and_object(0.05)
    assert losses.contact(hands, obj, both, K).item() == pytest.approx(0.0025, rel=1e-5)
    # depth_only: Huber of the z gap (0.05 > delta 0.01 -> linear part)
    expected = 0.5 * 0.01**2 + 0.01 * (0.05 - 0.01)
    assert losses.contact(hands, obj, both, K, depth_only=True, huber_delta=0.01).item() == pytest.approx(
        expected, rel=1e-5
    )
    # no contact label -> nothing; too far -> skipped
    assert losses.contact(hands, obj, torch.tensor([[False, False]]), K).item() == 0.0
    assert losses.contact(hands, obj, both, K, max_contact_dist=0.01).item() == 0.0
    # off to the side on screen: no partner within contact_px in depth_only mode
    side = hands.clone()
    side[..., 0] = 1.0
    assert losses.contact(side, obj, both, K, depth_only=True, max_contact_dist=2.0).item() == 0.0
    hands.requires_grad_(True)
    losses.contact(hands, obj, both, K, depth_only=True).backward()
    assert (hands.grad[..., 2] < 0).all()  # descent moves the hands to larger z, onto the object


def test_contact_smoothness():
    held = torch.zeros(3, 2, 1, 3)
    mask = torch.tensor([[True, False]] * 3)
    assert losses.contact_smoothness(held, mask).item() == 0.0
    held[2, 0, 0, 0] = 0.1  # the left hand slides 10 cm on the object while holding it
    held[1, 1, 0, 0] = 5.0  # the right hand is not in contact: free
    assert losses.contact_smoothness(held, mask).item() == pytest.approx(0.01 / 2)


def _unit_sphere(n: int = 400):
    i = torch.arange(n, dtype=torch.float32) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    pts = torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1)
    return pts, pts.clone()


def test_signed_distance_and_penetration():
    surface, normals = _unit_sphere()
    probe = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 1.5], [0.0, 0.0, -0.9]])
    sdf = losses.signed_distance(probe, surface, normals)
    assert sdf[0].item() == pytest.approx(-0.5, abs=0.03)
    assert sdf[1].item() == pytest.approx(0.5, abs=0.03)
    assert sdf[2].item() == pytest.approx(-0.1, abs=0.03)
    outside = torch.tensor([[[2.0, 0.0, 0.0]]])
    assert losses.penetration_depth(losses.signed_distance(outside, surface[None], normals[None])).item() == 0.0
    inside = torch.tensor([[[0.0, 0.0, 0.9]]], requires_grad=True)
    value = losses.penetration_depth(losses.signed_distance(inside, surface[None], normals[None]))
    assert value.item() == pytest.approx(0.01, abs=0.005)
    value.backward()
    assert inside.grad[0, 0, 2] < 0  # descent pushes the point out through the nearest surface (+z)


def _bottle_mesh():
    """A bottle as the synthetic objects are built: a union of closed parts, the neck's cylinder starting inside
    the body's (its wall and bottom cap inside the body are faces of the mesh too)."""
    import trimesh

    body = trimesh.creation.cylinder(radius=0.04, height=0.2, sections=32)
    body.apply_translation([0.0, 0.0, 0.1])
    neck = trimesh.creation.cylinder(radius=0.015, height=0.16, sections=32)
    neck.apply_translation([0.0, 0.0, 0.22])  # z 0.14-0.30: its lowest 6 cm lie inside the body
    mesh = trimesh.util.concatenate([body, neck])
    return torch.as_tensor(mesh.vertices, dtype=torch.float32), torch.as_tensor(mesh.faces, dtype=torch.long)


def test_grid_sdf_finds_a_thumb_under_the_bottle_shoulder_that_the_sample_sdf_calls_outside():
    vertices, faces = _bottle_mesh()
    # 1 cm under the body's top, beside the neck: inside the bottle (the top cap is the nearest surface)
    thumb = torch.tensor([[0.026, 0.0, 0.19]])
    samples, normals = geometry.sample_surface(vertices, faces, 1000, seed=0)
    old = losses.signed_distance(thumb, samples[:512], geometry.outward_normals(samples, normals)[:512])
    assert old.item() > 0  # the neck's inner wall, 1 cm away, faces the point: judged outside, never pushed
    grid = geometry.mesh_sdf_grid(vertices, faces)
    assert grid.cell <= 0.0045

    def lookup(p: torch.Tensor) -> torch.Tensor:
        return losses.grid_signed_distance(p[None], grid.values[None], grid.origin[None], torch.tensor([grid.cell]))[0]

    point = thumb.clone().requires_grad_(True)
    sdf = lookup(point)
    assert sdf.item() == pytest.approx(-0.01, abs=0.002)
    losses.penetration_depth(sdf[None]).backward()
    assert point.grad[0, 2] < 0 and point.grad[0, 2].abs() > 5 * point.grad[0, :2].norm()  # out through the top
    # just outside, inside the neck, in the body's middle (4 cm from any outer face), beyond the grid (outside)
    probes = torch.tensor([[0.043, 0.0, 0.1], [0.0, 0.0, 0.25], [0.0, 0.0, 0.1], [1.0, 1.0, 1.0]])
    values = lookup(probes)
    assert values[0].item() == pytest.approx(0.003, abs=0.0015)
    assert values[1].item() == pytest.approx(-0.015, abs=0.004)  # on the medial axis: smoothed by ~a cell
    assert values[2].item() == pytest.approx(-0.04, abs=0.004)
    assert values[3].item() > 0


def test_grid_sdf_pushes_a_point_under_a_face_out_along_its_normal_between_sparse_samples():
    import trimesh

    mesh = trimesh.creation.box(extents=[0.35, 0.25, 0.2])
    vertices, faces = torch.as_tensor(mesh.vertices, dtype=torch.float32), torch.as_tensor(mesh.faces)
    grid = geometry.mesh_sdf_grid(vertices, faces)
    palm = torch.tensor([[0.03, 0.02, 0.092]], requires_grad=True)  # 8 mm under the top face
    sdf = losses.grid_signed_distance(palm[None], grid.values[None], grid.origin[None], torch.tensor([grid.cell]))[0]
    assert sdf.item() == pytest.approx(-0.008, abs=0.0015)
    losses.penetration_depth(sdf[None]).backward()
    assert palm.grad[0, 2] < 0 and palm.grad[0, :2].norm() < 0.1 * palm.grad[0, 2].abs()
    # the sample SDF: its magnitude is the distance to the nearest of 512 samples (~2.8 cm apart on this box),
    # and its gradient points at that sample, mostly sideways
    samples, normals = geometry.sample_surface(vertices, faces, 512, seed=0)
    point = palm.detach().clone().requires_grad_(True)
    losses.penetration_depth(losses.signed_distance(point[None], samples[None], normals[None])).backward()
    assert point.grad[0, :2].norm() > 0.3 * point.grad[0, 2].abs()


def test_winding_number_of_a_union_of_closed_parts():
    """Inside one part of the bottle (body, or the neck whose lowest 6 cm lie inside the body): 1, inside both: 2
    (so "inside" is > 0.5); outside: 0."""
    from reconstruction.eval.geometry import winding_number

    vertices, faces = _bottle_mesh()
    points = torch.rand(400, 3, generator=torch.Generator().manual_seed(0))
    points = points * torch.tensor([0.1, 0.1, 0.32]) - torch.tensor([0.05, 0.05, 0.01])
    radius, z = points[:, :2].norm(dim=-1), points[:, 2]
    # the 32-sided polygons' radius lies between r cos(pi/32) and r: keep 3 mm from every boundary
    in_body = (radius < 0.04 * math.cos(math.pi / 32) - 0.003) & (z > 0.003) & (z < 0.197)
    in_neck = (radius < 0.015 * math.cos(math.pi / 32) - 0.003) & (z > 0.143) & (z < 0.297)
    outside = (radius > 0.043) | (z < -0.003) | (z > 0.303) | ((radius > 0.018) & (z > 0.203))
    number = winding_number(points, vertices, faces)
    assert (in_body | in_neck).sum() > 40 and outside.sum() > 40
    both = in_body & in_neck
    assert both.sum() > 0
    assert torch.allclose(number[in_body ^ in_neck], torch.ones(()), atol=1e-4)
    assert torch.allclose(number[both], torch.full((), 2.0), atol=1e-4)
    assert torch.allclose(number[outside], torch.zeros(()), atol=1e-4)


def test_huber():
    r = torch.tensor([0.0, 0.005, -0.02])
    assert torch.allclose(losses.huber(r, 0.01), torch.tensor([0.0, 0.5 * 0.005**2, 0.5e-4 + 0.01 * 0.01]))


def test_contact_3d_measures_to_the_tangent_plane_between_sparse_samples():
    # a face at z = 2 sampled every 5 cm; the hand point lies on the face halfway between two samples
    grid = torch.stack(torch.meshgrid(torch.linspace(-0.1, 0.1, 5), torch.linspace(-0.1, 0.1, 5), indexing="ij"), -1)
    obj = torch.cat([grid.reshape(-1, 2), torch.full((25, 1), 2.0)], -1)[None]  # (T=1, 25, 3)
    normals = torch.tensor([0.0, 0.0, -1.0]).expand(1, 25, 3)
    both = torch.tensor([[True, True]])

    def cost(point: list[float], radius: float = 0.035) -> float:
        hands = torch.tensor(point).expand(1, 2, 1, 3)
        return losses.contact(hands, obj, both, K, object_normals_cam=normals, sample_radius=radius).item()

    assert losses.contact(torch.tensor([0.025, 0.0, 2.0]).expand(1, 2, 1, 3), obj, both, K).item() == pytest.approx(
        0.025**2
    )  # to the nearest sample: a touching hand looks 2.5 cm off
    assert cost([0.025, 0.0, 2.0]) == pytest.approx(0.0, abs=1e-12)  # on the face: touching
    assert cost([0.025, 0.0, 1.99]) == pytest.approx(0.01**2, rel=1e-4)  # 1 cm in front of the face
    assert cost([0.2, 0.0, 2.0]) == pytest.approx((0.1 - 0.035) ** 2, rel=1e-4)  # beside the face, off its edge
    assert cost([0.025, 0.0, 2.0], radius=0.0) == pytest.approx(0.025**2, rel=1e-4)


def test_contact_3d_gradient_is_finite_on_a_sample():
    # a hand point exactly on a sample: the sideways offset is 0, where sqrt's gradient is infinite
    obj = torch.tensor([[[0.0, 0.0, 2.0], [0.05, 0.0, 2.0]]])
    normals = torch.tensor([0.0, 0.0, -1.0]).expand(1, 2, 3)
    hands = torch.tensor([0.0, 0.0, 2.0]).expand(1, 2, 1, 3).clone().requires_grad_(True)
    both = torch.tensor([[True, True]])
    losses.contact(hands, obj, both, K, object_normals_cam=normals, sample_radius=0.01).backward()
    assert torch.isfinite(hands.grad).all()


def test_diverged_stage_is_an_error_naming_the_variable():
    from reconstruction.optim.optimizer import OptimizerDivergedError, _check_finite

    var = {"human_pose_res": torch.zeros(2, 3), "obj_t_res": torch.tensor([[0.0, float("nan"), 0.0]])}
    history = {"contact": torch.tensor([[0.1], [float("nan")]]), "total": torch.tensor([[0.2], [float("nan")]])}
    with pytest.raises(OptimizerDivergedError, match="refine_opt: non-finite obj_t_res .*contact"):
        _check_finite(var, history, "refine_opt")
    _check_finite({"human_pose_res": torch.zeros(2, 3)}, history, "refine_opt")  # finite variables pass


def test_palm_normals_point_out_of_the_palm():
    """Both hands flat, palms down (-z), fingers along +y: the thumb side is -x for the right hand, +x for the
    left (mirror images); the normals point out of the palm for both."""
    keypoints = torch.zeros(75, 3)
    for chosen, thumb_side in ((kp.LEFT_HAND_SLICE, 1.0), (kp.RIGHT_HAND_SLICE, -1.0)):
        keypoints[chosen.start + 5] = torch.tensor([0.03 * thumb_side, 0.08, 0.0])  # index knuckle
        keypoints[chosen.start + 17] = torch.tensor([-0.03 * thumb_side, 0.07, 0.0])  # pinky knuckle
    normals = geometry.palm_normals(keypoints[None])  # (1, 2, 3)
    torch.testing.assert_close(normals, torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]]))


def test_contact_partner_is_on_the_surface_the_palm_faces():
    """A floor (z = 0, normal +z) with a wall standing on it (x = 0, normal +x). A hand point 1 cm above the
    floor and 2 cm beside the wall touches the floor by distance; a palm facing -x grips the wall instead."""
    top = torch.stack([torch.linspace(-0.1, 0.1, 11), torch.zeros(11), torch.zeros(11)], -1)
    side = torch.stack([torch.zeros(11), torch.zeros(11), torch.linspace(0.0, 0.1, 11)], -1)
    obj = torch.cat([top, side])[None] + torch.tensor([0.0, 0.0, 2.0])  # (T=1, 22, 3), 2 m in front
    normals = torch.cat([torch.tensor([0.0, 0.0, 1.0]).expand(11, 3), torch.tensor([1.0, 0.0, 0.0]).expand(11, 3)])
    hands = torch.tensor([0.02, 0.0, 2.01]).expand(1, 2, 1, 3).clone()
    both = torch.tensor([[True, True]])
    by_distance = losses.contact(hands, obj, both, K, object_normals_cam=normals[None])
    assert by_distance.item() == pytest.approx(0.01**2, rel=1e-4)  # the top face's plane
    palms = torch.tensor([-1.0, 0.0, 0.0]).expand(1, 2, 3)
    gripped = losses.contact(hands, obj, both, K, object_normals_cam=normals[None], palm_normals_cam=palms)
    assert gripped.item() == pytest.approx(0.02**2, rel=1e-4)  # the side face's plane
    # a palm facing nothing on the object (+y) keeps the nearest surface
    away = torch.tensor([0.0, 1.0, 0.0]).expand(1, 2, 3)
    assert losses.contact(
        hands, obj, both, K, object_normals_cam=normals[None], palm_normals_cam=away
    ).item() == pytest.approx(by_distance.item())


def test_depth_only_partner_is_on_the_surface_the_palm_faces():
    """On one pixel: a front face at 2.4 m (facing the camera) and a side face at 2.2 m (normal +x). The hand
    point at 2.5 m is nearest the front; a palm facing -x takes the side's depth."""
    obj = torch.tensor([[0.0, 0.0, 2.4], [0.0, 0.0, 2.2]])
    normals = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    hands = torch.tensor([0.0, 0.0, 2.5]).expand(1, 2, 1, 3).clone()
    both = torch.tensor([[True, True]])
    huber = lambda gap: 0.01 * (gap - 0.005)  # noqa: E731 - the linear part of huber(gap, 0.01)
    front = losses.contact(hands, obj[None], both, K, depth_only=True, object_normals_cam=normals[None])
    assert front.item() == pytest.approx(huber(0.1), rel=1e-4)
    palms = torch.tensor([-1.0, 0.0, 0.0]).expand(1, 2, 3)
    gripped = losses.contact(
        hands, obj[None], both, K, depth_only=True, object_normals_cam=normals[None], palm_normals_cam=palms
    )
    assert gripped.item() == pytest.approx(huber(0.3), rel=1e-4)


def test_hand_grasp_pulls_fingertips_onto_the_surface_in_contact_frames_only():
    """Unit sphere: the left hand's tips 3 cm outside it, the right hand's 1 cm inside; only the left hand is in
    contact in frame 0. The cost is the Huber of each tip's plane distance minus the gap; its gradient moves
    tips along the normal onto the surface."""
    surface, normals = _unit_sphere(2000)
    directions = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1 * i, 0.0] for i in range(5)]), dim=-1)
    tips = torch.stack([directions * 1.03, directions * 0.99])[None].clone().requires_grad_(True)  # (T=1, 2, 5, 3)
    surf, nrm = surface[None], normals[None]
    only_left = torch.tensor([[True, False]])
    value = losses.hand_grasp(tips, surf, nrm, only_left, tip_gap=0.003, huber_delta=0.01)
    # 3 cm out, 3 mm wanted: linear part of the Huber (the sampled sphere's planes are within ~1 mm)
    assert value.item() == pytest.approx(0.01 * (0.027 - 0.005), rel=0.1)
    value.backward()
    radial = (tips.grad[0, 0] * directions).sum(-1)
    assert (radial > 0).all()  # descent moves the left tips inwards, onto the surface
    assert tips.grad[0, 1].abs().max() == 0  # the right hand is not in contact
    # a tip resting at the gap costs (almost) nothing; a hand beyond max_contact_dist is skipped
    resting = torch.stack([directions * 1.003, directions * 1.003])[None]
    assert losses.hand_grasp(resting, surf, nrm, only_left, tip_gap=0.003).item() < 1e-6
    far = torch.stack([directions * 1.5, directions * 1.5])[None]
    assert losses.hand_grasp(far, surf, nrm, only_left, max_contact_dist=0.15).item() == 0.0
    both = torch.tensor([[True, True]])
    inside = losses.hand_grasp(tips.detach(), surf, nrm, both, tip_gap=0.003, huber_delta=0.01)
    assert inside.item() > value.item() / 2  # tips 1 cm inside count too (1.3 cm from the gap)


def test_hand_pose_reg_size_and_smoothness():
    residual = torch.zeros(1, 4, 3, 3)
    assert losses.hand_pose_reg(residual, beta=10.0).item() == 0.0
    residual[0, 2, 1, 0] = 0.3  # one joint of one frame bends by 0.3 rad
    size = 0.09 / (4 * 3)
    assert losses.hand_pose_reg(residual).item() == pytest.approx(size)
    change = 2 * 0.09 / (3 * 3)  # into and out of that frame
    assert losses.hand_pose_reg(residual, beta=10.0).item() == pytest.approx(size + 10.0 * change)
