"""Every metric on a case computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch

from reconstruction.eval import metrics


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])


def rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[1.0, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def pose(rot: np.ndarray, t) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = t
    return out


def test_mpjpe_hand_computed():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])  # errors 5 and 1 -> mean 3
    assert metrics.mpjpe(pred, gt) == pytest.approx(3.0)
    # torch input is accepted, same number
    assert metrics.mpjpe(torch.tensor(pred), torch.tensor(gt)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="shape"):
        metrics.mpjpe(pred[:, :1], gt)


def test_pa_mpjpe_removes_similarity_but_not_shape_error():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(2, 12, 3))
    # A scaled, rotated, shifted copy aligns perfectly.
    pred = 2.5 * gt @ rot_z(40).T @ rot_x(-25).T + np.array([1.0, -2.0, 0.5])
    assert metrics.mpjpe(pred, gt) > 0.5
    assert metrics.pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    # A mirror image is not a rotation: PA must not align it (reflection guard).
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert metrics.pa_mpjpe(mirrored, gt) > 0.1


def test_pa_mpjpe_hand_computed_residual():
    # Square in the xy-plane; the prediction moves one corner 0.4 along z.
    gt = np.array([[[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]]])
    pred = gt.copy()
    pred[0, 0, 2] = 0.4
    # The alignment must be the least-squares similarity: centroids coincide and no small extra
    # rotation or scale lowers the squared error.
    aligned = metrics.procrustes_align(pred, gt)
    assert aligned.mean(axis=-2) == pytest.approx(gt.mean(axis=-2))
    residual = np.linalg.norm(aligned - gt, axis=-1).mean()
    assert metrics.pa_mpjpe(pred, gt) == pytest.approx(residual)
    # Optimality: no small perturbation of the alignment lowers the squared error.
    base = ((aligned - gt) ** 2).sum()
    for rot in (rot_x(0.5), rot_x(-0.5), rot_z(0.5)):
        centred = aligned - aligned.mean(axis=-2, keepdims=True)
        moved = centred @ rot.T + aligned.mean(axis=-2, keepdims=True)
        assert ((moved - gt) ** 2).sum() >= base - 1e-12
    for scale in (0.99, 1.01):
        centred = aligned - aligned.mean(axis=-2, keepdims=True)
        assert ((scale * centred + aligned.mean(axis=-2, keepdims=True) - gt) ** 2).sum() >= base - 1e-12


def test_hand_joint_error_wrist_relative():
    gt = np.zeros((1, 21, 3))
    pred = gt + np.array([0.0, 0.0, 0.02])  # whole hand shifted 2 cm
    assert metrics.hand_joint_error(pred, gt) == pytest.approx(0.02)
    assert metrics.hand_joint_error(pred, gt, wrist_relative=True) == pytest.approx(0.0)


def test_rotation_error_hand_computed_and_symmetric():
    a = rot_z(30) @ rot_x(10)
    b = rot_z(-15) @ rot_x(10)
    # a = Rz(30)Rx(10), b = Rz(-15)Rx(10): relative rotation Rx(-10) Rz(45) Rx(10) has angle 45 deg.
    assert metrics.rotation_error_deg(a, b) == pytest.approx(45.0)
    assert metrics.rotation_error_deg(b, a) == pytest.approx(metrics.rotation_error_deg(a, b))
    assert metrics.rotation_error_deg(a, a) == pytest.approx(0.0, abs=1e-5)
    assert metrics.rotation_error_deg(np.eye(3), rot_x(180)) == pytest.approx(180.0)
    poses_a = np.stack([pose(rot_z(0), [0, 0, 1]), pose(rot_z(90), [0, 0, 1])])
    poses_b = np.stack([pose(rot_z(10), [0, 0, 1]), pose(rot_z(60), [0, 0, 1])])
    assert metrics.object_rotation_error(poses_a, poses_b) == pytest.approx(20.0)
    assert metrics.object_rotation_error(poses_b, poses_a) == pytest.approx(20.0)
    np.testing.assert_allclose(metrics.object_rotation_errors(poses_a, poses_b), [10.0, 30.0], atol=1e-5)


def test_object_translation_error():
    a = np.stack([pose(np.eye(3), [0, 0, 0]), pose(np.eye(3), [1, 1, 1])])
    b = np.stack([pose(rot_z(50), [0.03, 0.04, 0]), pose(np.eye(3), [1, 1, 1.1])])
    assert metrics.object_translation_error(a, b) == pytest.approx((0.05 + 0.1) / 2)
    assert metrics.object_translation_error(a[:, :3, 3], b[:, :3, 3]) == pytest.approx(0.075)
    np.testing.assert_allclose(metrics.object_translation_errors(a, b), [0.05, 0.1])


def test_add_s_symmetric_object_and_add():
    # Four points of a square: a 90 deg turn about z maps the set onto itself -> ADD-S 0, ADD not.
    pts = np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]])
    gt = pose(np.eye(3), [0, 0, 2])[None]
    turned = pose(rot_z(90), [0, 0, 2])[None]
    assert metrics.add_s(turned, gt, pts) == pytest.approx(0.0, abs=1e-12)
    assert metrics.add(turned, gt, pts) == pytest.approx(math.sqrt(2))
    # A pure 0.3 shift along z: every point's closest partner is its own copy.
    shifted = pose(np.eye(3), [0, 0, 2.3])[None]
    assert metrics.add_s(shifted, gt, pts) == pytest.approx(0.3)
    # Chunking gives the same number.
    assert metrics.add_s(shifted, gt, pts, chunk=1) == pytest.approx(0.3)


def test_contact_scores_hand_computed():
    gt = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    pred = np.array([[1, 0], [0, 0], [1, 0], [1, 0], [0, 0]], dtype=bool)
    out = metrics.contact_scores(pred, gt)
    # left: tp 2 (frames 0, 2), fp 1 (frame 3), fn 1 (frame 1) -> P = R = 2/3, F1 = 2/3
    assert out["left"]["precision"] == pytest.approx(2 / 3)
    assert out["left"]["recall"] == pytest.approx(2 / 3)
    assert out["left"]["f1"] == pytest.approx(2 / 3)
    # right: nothing predicted, two true contacts -> P 1 (vacuous), R 0, F1 0
    assert out["right"] == {"precision": 1.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 2}
    with pytest.raises(ValueError):
        metrics.contact_scores(pred[:, :1], gt[:, :1])


def test_penetration_depth():
    sd = np.array([[0.01, -0.004, -0.002], [0.02, 0.03, 0.5], [-0.01, 0.0, 0.1]])
    out = metrics.penetration_depth(sd)
    assert out["max"] == pytest.approx(0.01)
    assert out["mean"] == pytest.approx((0.004 + 0.0 + 0.01) / 3)
    assert out["ratio"] == pytest.approx(2 / 3)


def test_foot_skating():
    # Foot 0 on the ground slides 1 cm/frame in x; foot 1 in the air moves fast (ignored).
    t = np.arange(4, dtype=float)
    foot0 = np.stack([0.01 * t, np.zeros(4), np.full(4, 0.02)], axis=-1)
    foot1 = np.stack([0.5 * t, np.zeros(4), np.full(4, 0.4)], axis=-1)
    feet = np.stack([foot0, foot1], axis=1)
    assert metrics.foot_skating(feet) == pytest.approx(0.01)
    # Vertical motion of a planted foot is not skating.
    feet_up = feet.copy()
    feet_up[:, 0, 0] = 0.0
    feet_up[:, 0, 2] = [0.0, 0.01, 0.02, 0.03]
    assert metrics.foot_skating(feet_up) == pytest.approx(0.0)
    # Explicit contact labels override the height test.
    contact = np.ones((4, 2), dtype=bool)
    assert metrics.foot_skating(feet, in_contact=contact) == pytest.approx((0.01 + 0.5) / 2)


def test_acceleration_jitter_and_error():
    t = np.arange(5, dtype=float)
    constant_velocity = np.stack([t, 2 * t, np.zeros(5)], axis=-1)
    assert metrics.acceleration_jitter(constant_velocity) == pytest.approx(0.0)
    parabola = np.stack([0.5 * t**2, np.zeros(5), np.zeros(5)], axis=-1)  # acceleration 1 per frame^2
    assert metrics.acceleration_jitter(parabola) == pytest.approx(1.0)
    assert metrics.acceleration_error(parabola, constant_velocity) == pytest.approx(1.0)
    assert metrics.acceleration_jitter(parabola[:2]) == 0.0


def test_project_points_hand_computed():
    K = np.array([[100.0, 0, 50], [0, 200.0, 40], [0, 0, 1]])
    pts = np.array([[[0.0, 0.0, 2.0], [1.0, -0.5, 2.0]]])
    # (0,0,2) -> principal point; (1,-0.5,2) -> (50 + 100*0.5, 40 + 200*(-0.25)) = (100, -10)
    np.testing.assert_allclose(metrics.project_points(pts, K), [[[50, 40], [100, -10]]])
    with pytest.raises(ValueError, match="behind"):
        metrics.project_points(np.array([[0.0, 0.0, -1.0]]), K)


def test_keypoint_2d_errors_only_visible():
    gt = np.zeros((1, 3, 2))
    pred = np.array([[[3.0, 4.0, 0.9], [0.0, 1.0, 0.9], [100.0, 0.0, 0.1]]])  # confidence column ignored
    visible = np.array([[True, True, False]])
    np.testing.assert_allclose(np.sort(metrics.keypoint_2d_errors(pred, gt, visible)), [1.0, 5.0])
    with pytest.raises(ValueError, match="visibility"):
        metrics.keypoint_2d_errors(pred, gt, visible[:, :2])


def test_mask_iou_hand_computed():
    gt = np.zeros((3, 2, 4), dtype=bool)
    pred = np.zeros((3, 2, 4), dtype=bool)
    gt[0, 0, :4] = True  # 4 pixels
    pred[0, 0, 2:] = True
    pred[0, 1, 0] = True  # 3 pixels, 2 shared -> IoU 2 / 5
    gt[1] = True
    pred[1] = True  # identical -> 1
    iou = metrics.mask_iou(pred, gt)  # frame 2: both empty -> NaN
    assert iou[0] == pytest.approx(0.4)
    assert iou[1] == pytest.approx(1.0)
    assert np.isnan(iou[2])


def test_rotation_error_modulo_a_continuous_symmetry_axis():
    """A turn about the symmetry axis costs nothing; a tilt of the axis costs its angle, whatever turn
    comes with it; no axis means the plain geodesic error."""

    def rot(axis, degrees):
        rotvec = torch.tensor(axis, dtype=torch.float64) / np.linalg.norm(axis) * math.radians(degrees)
        return roma.rotvec_to_rotmat(rotvec)

    z, x = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)
    base = rot((0.3, -0.2, 0.9), 40.0).numpy()
    turned = base @ rot(z, 123.0).numpy()  # model-frame turn about the symmetry axis
    tilted = base @ rot(x, 7.0).numpy() @ rot(z, -60.0).numpy()
    assert metrics.symmetric_rotation_error_deg(turned, base, z) == pytest.approx(0.0, abs=1e-6)
    assert metrics.symmetric_rotation_error_deg(tilted, base, z) == pytest.approx(7.0, abs=1e-6)
    assert metrics.symmetric_rotation_error_deg(base, tilted, (0, 0, 2)) == pytest.approx(7.0, abs=1e-6)
    poses = np.stack([np.eye(4)] * 2)
    poses[:, :3, :3] = [turned, tilted]
    gt = np.stack([np.eye(4)] * 2)
    gt[:, :3, :3] = base
    assert metrics.object_rotation_error(poses, gt, z) == pytest.approx(3.5, abs=1e-6)
    assert metrics.object_rotation_error(poses, gt) == pytest.approx(
        float(metrics.rotation_error_deg(poses[:, :3, :3], gt[:, :3, :3]).mean())
    )


def test_body_penetration_exact_depth_of_inside_vertices_only():
    import trimesh

    from reconstruction.eval.evaluate import body_penetration

    box = trimesh.creation.box(extents=(0.2, 0.1, 0.3))
    vertices, faces = torch.tensor(box.vertices, dtype=torch.float64), torch.tensor(box.faces)
    # frame 0: one vertex 3 cm inside the +x face, others outside (one within the box's x/y extent only);
    # frame 1: nothing inside; frame 2: 1 cm inside the +z face. The object moves and turns.
    local = torch.tensor(
        [
            [[0.07, 0.0, 0.0], [0.3, 0.0, 0.0], [0.05, 0.02, 0.2]],
            [[0.11, 0.0, 0.0], [0.0, 0.06, 0.0], [0.0, 0.0, -0.16]],
            [[0.0, 0.0, 0.14], [0.5, 0.5, 0.5], [-0.2, 0.0, 0.0]],
        ],
        dtype=torch.float64,
    )
    angle = torch.tensor([0.0, 0.7, -1.2], dtype=torch.float64)
    poses = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    poses[:, 0, 0], poses[:, 0, 1], poses[:, 1, 0], poses[:, 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    poses[:, :3, 3] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5], [-0.3, 0.1, 1.0]], dtype=torch.float64)
    world = local @ poses[:, :3, :3].transpose(1, 2) + poses[:, None, :3, 3]
    out = body_penetration(world, poses, vertices, faces)
    assert out["penetration_max_m"] == pytest.approx(0.03, abs=1e-9)
    assert out["penetration_mean_m"] == pytest.approx((0.03 + 0.01) / 3, abs=1e-9)
    assert out["penetration_frame_ratio"] == pytest.approx(2 / 3)


def test_held_object_errors_average_the_held_frames_only():
    from reconstruction.eval.evaluate import held_object_errors

    gt = np.tile(np.eye(4), (6, 1, 1))
    gt[:, 2, 3] = 2.5
    pred = gt.copy()
    pred[2:4, 2, 3] += 0.10  # held frames 10 cm too far
    pred[2:4, 0, 3] += 0.03
    pred[5, 2, 3] -= 0.50  # a still frame far off: not counted
    contact = np.zeros((6, 2), bool)
    contact[2:4, 1] = True
    contact[3, 0] = True
    errors = held_object_errors(pred, gt, contact)
    assert errors["object_depth_bias_held_m"] == pytest.approx(0.10)
    assert errors["object_translation_error_held_m"] == pytest.approx(math.hypot(0.10, 0.03))
    assert held_object_errors(pred, gt, np.zeros((6, 2), bool)) == {}
