"""Body models behind the BodyModel seam: anny (real model data) and SMPL-X (a synthetic model file with
SMPL-X's keys and shapes, since the licensed files cannot be shipped)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch

from reconstruction.body import SMPLX_MODEL_DIR_ENV, BodyModelError, load_body_model
from reconstruction.keypoints import ALL_KEYPOINTS, LEFT_HAND_SLICE, RIGHT_HAND_SLICE, index


@pytest.fixture(scope="session")
def anny_body():
    return load_body_model("anny", device="cpu")


def _random_pose(body, num_frames: int, scale: float = 0.3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(num_frames, len(body.joint_names), 3, generator=generator)


def _kp(out, name: str, frame: int = 0) -> torch.Tensor:
    return out.keypoints[frame, index(name)]


# ---------------------------------------------------------------------------------------------- anny
def test_anny_forward_shapes_and_metadata(anny_body):
    body = anny_body
    out = body.forward(body.rest_pose(3), body.default_shape(), torch.zeros(3, 3))
    assert body.name == "anny" and body.num_shape == 6
    assert len(body.joint_names) == 104 and body.joint_names[0] == "root"
    assert out.vertices.shape == (3, body.num_vertices, 3) and body.num_vertices == 13718
    assert out.joints.shape == (3, 104, 3)
    assert out.keypoints.shape == (3, len(ALL_KEYPOINTS), 3) == (3, 75, 3)
    assert body.faces.shape == (27420, 3) and body.faces.dtype == torch.long
    assert int(body.faces.max()) == body.num_vertices - 1
    assert body.parents[0] < 0 and all(0 <= p < i for i, p in enumerate(body.parents) if i > 0)
    assert body.joint_names[body.joint_index("wrist.L")] == "wrist.L"
    with pytest.raises(KeyError):
        body.joint_index("no_such_bone")
    assert load_body_model("anny", "cpu") is body  # process-wide cache
    assert body.to("cpu") is body


def test_anny_rejects_bad_shapes(anny_body):
    body = anny_body
    with pytest.raises(ValueError, match="pose_aa"):
        body.forward(torch.zeros(2, 55, 3), body.default_shape(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="trans"):
        body.forward(body.rest_pose(2), body.default_shape(), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="shape"):
        body.forward(body.rest_pose(2), torch.zeros(10), torch.zeros(2, 3))


def test_anny_zero_pose_stands_with_feet_at_bottom(anny_body):
    body = anny_body
    out = body.forward(body.rest_pose(1), body.default_shape(), torch.zeros(1, 3))
    vertices = out.vertices[0]
    extent = vertices.max(0).values - vertices.min(0).values
    assert extent[2] > 1.5 and extent[2] > 2 * extent[1]  # tall along +Z, thin along Y
    # root joint = trans = origin, at the pelvis: about halfway up
    assert torch.allclose(out.joints[0, 0], torch.zeros(3))
    low, high = float(vertices[:, 2].min()), float(vertices[:, 2].max())
    assert 0.4 < -low / (high - low) < 0.65
    for foot in ("left_foot", "right_foot"):
        assert float(vertices[body.vertex_segments[foot], 2].min()) == pytest.approx(low, abs=0.01)
    head = out.joints[0, body.joint_index("head")]
    assert float(head[2]) > high - 0.25
    # facing -Y: nose in front of the ears; person's left is +X
    assert float(_kp(out, "nose")[1]) < float(_kp(out, "left_ear")[1]) - 0.05
    assert body.root_height_standing(body.default_shape()) == pytest.approx(-low, abs=1e-4)


def test_anny_trans_is_root_joint_and_root_rotation_is_world(anny_body):
    body = anny_body
    pose = _random_pose(body, 4, seed=1)
    shape = torch.tensor([0.2, 0.7, 0.4, 0.6, 0.3, 0.8])
    trans = torch.tensor([[0.5, -1.0, 0.9], [1.0, 2.0, 0.0], [-3.0, 0.1, 1.2], [0.0, 0.0, 0.0]])
    out = body.forward(pose, shape, trans)
    assert torch.allclose(out.joints[:, 0], trans, atol=1e-6)
    # Adding a world rotation R to the root rotates the whole body about the root by R.
    turn = roma.rotvec_to_rotmat(torch.tensor([0.3, -0.2, 1.1]))
    turned_pose = pose.clone()
    turned_pose[:, 0] = roma.rotmat_to_rotvec(turn @ roma.rotvec_to_rotmat(pose[:, 0]))
    turned = body.forward(turned_pose, shape, trans)
    expected = (out.vertices - trans[:, None]) @ turn.T + trans[:, None]
    assert torch.allclose(turned.vertices, expected, atol=1e-4)
    # half a turn about Z: facing +Y
    half = body.rest_pose(1)
    half[0, 0] = torch.tensor([0.0, 0.0, math.pi])
    out_half = body.forward(half, shape, torch.zeros(1, 3))
    assert float(_kp(out_half, "nose")[1]) > 0.05
    assert float(_kp(out_half, "left_wrist")[0]) < -0.2


def test_anny_batching_equals_per_frame(anny_body):
    body = anny_body
    pose = _random_pose(body, 3, seed=2)
    trans = torch.randn(3, 3, generator=torch.Generator().manual_seed(3))
    shape = torch.tensor([0.9, 0.3, 0.5, 0.2, 0.7, 0.4])
    batched = body.forward(pose, shape, trans)
    for t in range(3):
        single = body.forward(pose[t : t + 1], shape, trans[t : t + 1])
        assert torch.allclose(batched.vertices[t], single.vertices[0], atol=1e-5)
        assert torch.allclose(batched.joints[t], single.joints[0], atol=1e-5)
        assert torch.allclose(batched.keypoints[t], single.keypoints[0], atol=1e-5)
    # one shape row per frame (different bodies) gives the same as each body alone
    shapes = torch.stack([shape, torch.full((6,), 0.5), torch.tensor([0.1, 0.9, 0.8, 0.9, 0.1, 0.2])])
    per_frame = body.forward(pose, shapes, trans)
    for t in range(3):
        single = body.forward(pose[t : t + 1], shapes[t], trans[t : t + 1])
        assert torch.allclose(per_frame.vertices[t], single.vertices[0], atol=1e-5)


def test_anny_gradients_reach_pose_trans_and_shape(anny_body):
    body = anny_body
    pose = _random_pose(body, 2, scale=0.2, seed=4).requires_grad_(True)
    trans = torch.zeros(2, 3, requires_grad=True)
    shape = torch.full((6,), 0.5, requires_grad=True)
    out = body.forward(pose, shape, trans)
    wrist_grad = torch.autograd.grad(out.keypoints[:, index("left_wrist")].sum(), pose, retain_graph=True)[0]
    assert float(wrist_grad[:, body.joint_index("upperarm01.L")].abs().sum()) > 0
    assert float(wrist_grad[:, body.joint_index("foot.R")].abs().sum()) == 0  # not on the wrist's chain
    assert float(wrist_grad[:, body.joint_index("finger2-3.L")].abs().sum()) == 0  # below the wrist
    loss = out.keypoints[:, index("left_wrist")].square().sum() + out.vertices[:, :, 2].mean()
    loss.backward()
    assert pose.grad is not None and float(pose.grad.abs().sum()) > 0
    assert trans.grad is not None and float(trans.grad.abs().sum()) > 0
    assert shape.grad is not None and float(shape.grad.abs().sum()) > 0
    # the differentiable-shape path and the cached-shape path agree
    cached = body.forward(pose.detach(), shape.detach(), trans.detach())
    assert torch.allclose(cached.vertices, out.vertices.detach(), atol=1e-5)


def test_anny_shape_for_height(anny_body):
    body = anny_body
    for target in (1.60, 1.75):
        shape = body.shape_for_height(target)
        assert shape.shape == (6,) and 0.0 <= float(shape[4]) <= 1.0
        out = body.forward(body.rest_pose(1), shape, torch.zeros(1, 3))
        measured = float(out.vertices[0, :, 2].max() - out.vertices[0, :, 2].min())
        assert measured == pytest.approx(target, abs=0.01)
    taller_base = body.shape_for_height(1.75, base_shape=torch.tensor([0.0, 0.5, 0.5, 0.5, 0.5, 0.5]))
    assert float(taller_base[0]) == 0.0 and body.standing_height(taller_base) == pytest.approx(1.75, abs=0.01)
    with pytest.raises(ValueError, match="outside"):
        body.shape_for_height(2.8)


def test_anny_keypoints_sides_and_face(anny_body):
    body = anny_body
    out = body.forward(body.rest_pose(1), body.default_shape(), torch.zeros(1, 3))
    kps = out.keypoints[0]
    for k, name in enumerate(ALL_KEYPOINTS):
        if name.startswith("left") or name == "mouth_left":
            assert float(kps[k, 0]) > 0.005, name  # person's left is +X
        if name.startswith("right") or name == "mouth_right":
            assert float(kps[k, 0]) < -0.005, name
    joints = out.joints[0]
    shoulder_z = float(_kp(out, "left_shoulder")[2])
    for name in ALL_KEYPOINTS[:11]:  # face points: above the shoulders, within a head of the head bone
        assert float(kps[index(name), 2]) > shoulder_z + 0.08, name
        assert float(torch.dist(kps[index(name)], joints[body.joint_index("head")])) < 0.15, name
    for side in ("L", "R"):
        eye = joints[body.joint_index(f"eye.{side}")]
        prefix = "left" if side == "L" else "right"
        for name in (f"{prefix}_eye", f"{prefix}_eye_inner", f"{prefix}_eye_outer"):
            assert float(torch.dist(kps[index(name)], eye)) < 0.03, name
        inner, outer = kps[index(f"{prefix}_eye_inner")], kps[index(f"{prefix}_eye_outer")]
        assert abs(float(outer[0])) > abs(float(eye[0])) > abs(float(inner[0]))
    face_y = kps[:11, 1]
    assert int(face_y.argmin()) == index("nose")  # nose tip is the front-most face point
    assert float(_kp(out, "mouth_left")[2]) < float(_kp(out, "nose")[2]) < float(_kp(out, "left_eye")[2])
    # COCO-regressed keypoints stay close to the anatomical joints they stand for
    for name, bone in (("left_shoulder", "upperarm01.L"), ("right_elbow", "lowerarm01.R"),
                       ("left_hip", "upperleg01.L"), ("right_ankle", "foot.R")):  # fmt: skip
        assert float(torch.dist(kps[index(name)], joints[body.joint_index(bone)])) < 0.05, name
    # two float32 summation orders (regressor product vs dense skin): agree to well under 0.1 mm
    assert torch.allclose(body.keypoints_from(out.vertices.contiguous(), joints[None]), out.keypoints, atol=5e-5)
    # joint keypoints sit on their bones: wrist keypoint = wrist bone head
    assert float(torch.dist(_kp(out, "left_wrist"), joints[body.joint_index("wrist.L")])) < 0.03
    assert float(torch.dist(_kp(out, "left_hand_wrist"), _kp(out, "left_wrist"))) < 1e-6


def _check_hand_and_feet(body, out, frame: int) -> None:
    vertices = out.vertices[frame]
    for prefix, hand_slice in (("left", LEFT_HAND_SLICE), ("right", RIGHT_HAND_SLICE)):
        hand = vertices[body.vertex_segments[f"{prefix}_hand"]]
        wrist = _kp(out, f"{prefix}_hand_wrist", frame)
        reach = (hand - wrist).norm(dim=1).max()
        tips = out.keypoints[frame, hand_slice][[4, 8, 12, 16, 20]]
        dips = out.keypoints[frame, hand_slice][[3, 7, 11, 15, 19]]
        # finger tips: at the far end of each finger, on the hand's surface, the longest one at the extreme
        assert bool(((tips - wrist).norm(dim=1) > (dips - wrist).norm(dim=1)).all())
        assert float((tips - wrist).norm(dim=1).max()) == pytest.approx(float(reach), abs=0.015)
        assert float(torch.cdist(tips, hand).min(dim=1).values.max()) < 0.005
        foot = vertices[body.vertex_segments[f"{prefix}_foot"]]
        heel, toe = _kp(out, f"{prefix}_heel", frame), _kp(out, f"{prefix}_foot_index", frame)
        ankle = _kp(out, f"{prefix}_ankle", frame)
        assert float(torch.cdist(toe[None], foot).min()) < 0.005  # toe tip on the surface
        assert float(torch.cdist(heel[None], foot).min()) < 0.025  # COCO heel: just inside the heel
        assert float((toe - ankle).norm()) > 0.12 and float((heel - ankle).norm()) > 0.04
        assert float(torch.dot(heel - ankle, toe - ankle)) < 0  # heel behind the ankle, toes in front
        assert float((toe - heel).norm()) > 0.2  # foot length


def test_anny_hand_and_foot_keypoints_follow_the_pose(anny_body):
    body = anny_body
    pose = body.rest_pose(2)
    pose[1, body.joint_index("upperarm01.L")] = torch.tensor([0.0, -1.0, 0.0])  # raise the left arm
    pose[1, body.joint_index("lowerarm01.R")] = torch.tensor([1.2, 0.0, 0.0])  # bend the right elbow
    pose[1, body.joint_index("upperleg01.L")] = torch.tensor([-0.6, 0.0, 0.0])  # lift the left thigh
    out = body.forward(pose, body.default_shape(), torch.zeros(2, 3))
    _check_hand_and_feet(body, out, 0)
    _check_hand_and_feet(body, out, 1)
    # heel behind the toes in the standing pose (facing -Y)
    assert float(_kp(out, "left_heel")[1]) > float(_kp(out, "left_foot_index")[1]) + 0.15
    # the raised left hand is well above the shoulder, the right one still below it
    assert float(_kp(out, "left_wrist", 1)[2]) > float(_kp(out, "left_shoulder", 1)[2])
    assert float(_kp(out, "left_wrist", 0)[2]) < float(_kp(out, "left_shoulder", 0)[2]) - 0.2


def test_anny_vertex_segments_and_hand_joints(anny_body):
    body = anny_body
    out = body.forward(body.rest_pose(1), body.default_shape(), torch.zeros(1, 3))
    vertices = out.vertices[0]
    for segment, ends in (
        ("left_hand", ("left_hand_wrist", "left_hand_middle_tip")),
        ("right_hand", ("right_hand_wrist", "right_hand_middle_tip")),
        ("left_foot", ("left_heel", "left_foot_index")),
        ("right_foot", ("right_heel", "right_foot_index")),
        ("left_forearm", ("left_elbow", "left_wrist")),
        ("right_forearm", ("right_elbow", "right_wrist")),
    ):
        ids = body.vertex_segments[segment]
        assert ids.dtype == torch.long and 200 < len(ids) < 3000, segment
        centroid = vertices[ids].mean(0)
        middle = 0.5 * (_kp(out, ends[0]) + _kp(out, ends[1]))
        assert float(torch.dist(centroid, middle)) < 0.06, segment
    assert not set(body.vertex_segments["left_hand"].tolist()) & set(body.vertex_segments["right_hand"].tolist())
    assert len(body.left_hand_joints) == len(body.right_hand_joints) == 19
    assert all(body.joint_names[i].endswith(".L") for i in body.left_hand_joints)
    assert body.joint_index("finger2-3.R") in body.right_hand_joints
    assert body.joint_index("wrist.L") not in body.left_hand_joints


# ---------------------------------------------------------------------------------------------- SMPL-X
SMPLX_PARENTS = (
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15]
    + [20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38]
    + [21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]
)


def write_synthetic_smplx(folder, num_shape_dirs: int = 20, seed: int = 0):
    """An SMPLX_NEUTRAL.npz with SMPL-X's keys, shapes and a body-like layout in SMPL-X's Y-up frame (random
    points in a 1.7 m tall box, joints regressed from vertex subsets, nearest-joint skinning)."""
    rng = np.random.default_rng(seed)
    num_vertices, num_joints, num_faces = 10475, 55, 20908
    v_template = np.stack(
        [
            rng.uniform(-0.3, 0.3, num_vertices),
            rng.uniform(-1.1, 0.6, num_vertices),
            rng.uniform(-0.1, 0.1, num_vertices),
        ],
        axis=1,
    )
    j_regressor = np.zeros((num_joints, num_vertices))
    for j in range(num_joints):
        j_regressor[j, rng.choice(num_vertices, 20, replace=False)] = 1 / 20
    joints = j_regressor @ v_template
    nearest = np.argmin(((v_template[:, None] - joints[None]) ** 2).sum(-1), axis=1)
    weights = np.zeros((num_vertices, num_joints))
    weights[np.arange(num_vertices), nearest] = 1.0
    shapedirs = 0.003 * rng.standard_normal((num_vertices, 3, num_shape_dirs))
    shapedirs[:, 1, 0] = 0.03 * v_template[:, 1]  # beta 0 scales the height, as in the real model
    faces = np.arange(num_faces * 3).reshape(num_faces, 3) % num_vertices
    bary = rng.uniform(0.1, 1.0, (51, 3))
    data = {
        "v_template": v_template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((num_vertices, 3, (num_joints - 1) * 9), np.float32),
        "J_regressor": j_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack([np.array(SMPLX_PARENTS) % 2**32, np.arange(num_joints)]).astype(np.int64),
        "f": faces.astype(np.int64),
        "hands_componentsl": np.eye(45, dtype=np.float32),
        "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": np.zeros(45, np.float32),
        "hands_meanr": np.zeros(45, np.float32),
        "lmk_faces_idx": rng.integers(0, num_faces, 51).astype(np.int64),
        "lmk_bary_coords": (bary / bary.sum(1, keepdims=True)).astype(np.float32),
    }
    np.savez_compressed(folder / "SMPLX_NEUTRAL.npz", **data)
    return data


@pytest.fixture(scope="module")
def smplx_dir(tmp_path_factory):
    pytest.importorskip("smplx")
    folder = tmp_path_factory.mktemp("smplx_model")
    write_synthetic_smplx(folder)
    return folder


def test_smplx_missing_model_dir_names_the_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(SMPLX_MODEL_DIR_ENV, raising=False)
    with pytest.raises(BodyModelError, match=SMPLX_MODEL_DIR_ENV):
        load_body_model("smplx")
    with pytest.raises(BodyModelError, match=SMPLX_MODEL_DIR_ENV):
        load_body_model("smplx", model_dir=tmp_path / "nowhere")
    monkeypatch.setenv(SMPLX_MODEL_DIR_ENV, str(tmp_path))  # exists but holds no model file
    with pytest.raises(BodyModelError, match="SMPLX_NEUTRAL.npz"):
        load_body_model("smplx")
    with pytest.raises(BodyModelError, match="unknown body model"):
        load_body_model("smpl")


def test_smplx_loads_from_env_and_runs(monkeypatch, smplx_dir):
    monkeypatch.setenv(SMPLX_MODEL_DIR_ENV, str(smplx_dir))
    body = load_body_model("smplx")
    assert body is load_body_model("smplx", model_dir=smplx_dir)  # same folder, same cached model
    assert body.name == "smplx" and len(body.joint_names) == 55 and body.num_shape == 10
    assert body.faces.shape == (20908, 3)
    assert body.left_hand_joints == list(range(25, 40)) and body.right_hand_joints == list(range(40, 55))
    assert all(
        len(body.vertex_segments[s]) > 0
        for s in ("left_hand", "right_hand", "left_foot", "right_foot", "left_forearm", "right_forearm")
    )

    pose = 0.2 * torch.randn(3, 55, 3, generator=torch.Generator().manual_seed(0))
    trans = torch.tensor([[0.0, 0.0, 1.0], [1.0, -2.0, 0.9], [0.3, 0.3, 0.3]])
    pose.requires_grad_(True)
    trans.requires_grad_(True)
    shape = torch.zeros(10)
    out = body.forward(pose, shape, trans)
    assert out.vertices.shape == (3, 10475, 3) and out.joints.shape == (3, 55, 3) and out.keypoints.shape == (3, 75, 3)
    assert torch.allclose(out.joints[:, 0], trans.detach(), atol=1e-5)  # trans = root joint position
    (out.keypoints.square().sum() + out.vertices.mean()).backward()
    assert float(pose.grad.abs().sum()) > 0 and float(trans.grad.abs().sum()) > 0
    single = body.forward(pose[1:2].detach(), shape, trans[1:2].detach())
    assert torch.allclose(single.vertices[0], out.vertices[1].detach(), atol=1e-5)
    subset = body.forward(pose.detach(), shape, trans.detach(), vertex_ids=torch.tensor([5, 9120]))
    assert torch.allclose(subset.vertices, out.vertices[:, [5, 9120]].detach(), atol=1e-5)

    # zero pose stands along +Z (SMPL-X's Y-up frame turned into the engine's Z-up world)
    rest = body.forward(body.rest_pose(1), shape, torch.zeros(1, 3)).vertices[0]
    extent = rest.max(0).values - rest.min(0).values
    assert float(extent[2]) == pytest.approx(1.7, abs=0.02) and float(extent[1]) < 0.25
    # keypoints from vertex ids: the nose keypoint is vertex 9120
    assert torch.allclose(_kp(out, "nose").detach(), out.vertices[0, 9120].detach())
    assert torch.allclose(_kp(out, "left_wrist").detach(), out.joints[0, 20].detach())

    tall = body.shape_for_height(1.75)
    assert body.standing_height(tall) == pytest.approx(1.75, abs=0.01)
    # native SMPL-X parameters reproduce the same root
    native = body.native_transl(shape, trans.detach())
    pelvis = body._layer.J_regressor[0] @ body._layer.v_template
    assert torch.allclose((native + pelvis) @ body._up.T, trans.detach(), atol=1e-5)


def test_anny_cache_built_under_inference_mode_serves_autograd(anny_body):
    body = anny_body
    shape = torch.tensor([0.31, 0.52, 0.47, 0.66, 0.58, 0.44])  # a shape no other test uses
    with torch.inference_mode():
        first = body.forward(body.rest_pose(1), shape, torch.zeros(1, 3))
    pose = body.rest_pose(1).requires_grad_(True)
    out = body.forward(pose, shape, torch.zeros(1, 3))
    out.vertices.sum().backward()
    assert pose.grad is not None
    assert torch.allclose(out.vertices.detach(), first.vertices)


def test_anny_expanded_shape_parameter_gets_gradient(anny_body):
    body = anny_body
    shape = torch.full((6,), 0.5, requires_grad=True)
    pose = body.rest_pose(4)
    out = body.forward(pose, shape[None].expand(4, -1), torch.zeros(4, 3))
    reference = body.forward(pose, shape.detach(), torch.zeros(4, 3))
    assert torch.allclose(out.vertices.detach(), reference.vertices, atol=1e-5)
    out.vertices[..., 2].max(dim=1).values.sum().backward()  # height grows with the height phenotype
    assert float(shape.grad[4]) > 0


def test_anny_kinematics_and_skinning_match_anny_itself(anny_body):
    """Our batched kinematics + sparse skinning reproduce anny's own forward (local-ref, plain LBS)."""
    body = anny_body
    pose = _random_pose(body, 3, scale=0.4, seed=5)
    trans = torch.tensor([[0.1, 0.2, 0.9], [0.0, 0.0, 0.0], [-1.0, 0.5, 1.1]])
    shape = torch.tensor([0.8, 0.4, 0.6, 0.3, 0.55, 0.65])
    ours = body.forward(pose, shape, trans)
    deltas = roma.Rigid(
        roma.rotvec_to_rotmat(pose), torch.cat([trans[:, None], torch.zeros(3, 103, 3)], dim=1)
    ).to_homogeneous()
    with torch.no_grad():
        reference = body._model(pose_parameters=deltas, phenotype_kwargs=shape[None])
    assert torch.allclose(ours.joints, reference["bone_poses"][..., :3, 3], atol=1e-5)
    assert torch.allclose(ours.vertices, reference["vertices"], atol=1e-5)


def test_solve_monotonic_finds_roots_both_ways_and_rejects_unreachable():
    from reconstruction.body.solve import solve_monotonic

    calls = []

    def rising(x):
        calls.append(x)
        return 1.0 + 0.8 * x + 0.05 * x**2

    x, low, high = solve_monotonic(rising, 1.5, 0.0, 1.0, tolerance=1e-7)
    assert rising(x) == pytest.approx(1.5, abs=1e-6) and (low, high) == (1.0, pytest.approx(1.85))
    assert len(calls) < 15  # regula falsi, not 30 bisection steps
    x, _, _ = solve_monotonic(lambda v: -(v**3), -0.5, -1.0, 2.0, tolerance=1e-7)
    assert x == pytest.approx(0.5 ** (1 / 3), abs=1e-5)
    with pytest.raises(ValueError, match="outside the reachable range 1.0000-1.8500"):
        solve_monotonic(rising, 2.5, 0.0, 1.0)


def test_anny_vertex_subset_matches_full_forward(anny_body):
    body = anny_body
    pose = _random_pose(body, 3, seed=7)
    trans = torch.randn(3, 3, generator=torch.Generator().manual_seed(8))
    ids = torch.cat([body.vertex_segments["right_hand"][:50], torch.tensor([13717, 0, 297])])
    full = body.forward(pose, body.default_shape(), trans)
    subset = body.forward(pose, body.default_shape(), trans, vertex_ids=ids)
    assert subset.vertices.shape == (3, len(ids), 3)
    assert torch.allclose(subset.vertices, full.vertices[:, ids], atol=1e-5)
    assert torch.allclose(subset.keypoints, full.keypoints, atol=1e-5)
    assert torch.allclose(subset.joints, full.joints)
    # differentiable shape and per-frame shapes take the other paths and agree too
    shape = torch.full((6,), 0.5, requires_grad=True)
    with_grad = body.forward(pose, shape, trans, vertex_ids=ids)
    assert torch.allclose(with_grad.vertices.detach(), full.vertices[:, ids], atol=1e-5)
    assert torch.allclose(with_grad.keypoints.detach(), full.keypoints, atol=1e-5)
    with_grad.vertices.sum().backward()
    assert float(shape.grad.abs().sum()) > 0
    per_frame = body.forward(pose, torch.full((3, 6), 0.5) + torch.tensor([[0.0], [0.1], [0.2]]), trans, vertex_ids=ids)
    assert per_frame.vertices.shape == (3, len(ids), 3)
    assert torch.allclose(per_frame.vertices[0], full.vertices[0, ids], atol=1e-5)
    with pytest.raises(ValueError, match="vertex_ids"):
        body.forward(pose, body.default_shape(), trans, vertex_ids=torch.tensor([body.num_vertices]))


def test_bind_fixes_shape_and_subset_and_matches_forward(anny_body, monkeypatch, smplx_dir):
    """``bind`` (the optimiser's posing path, captured in CUDA graphs) gives forward's result, gradients
    reach pose and trans, and bad input is still refused (once, at bind time, or by shape checks)."""
    monkeypatch.setenv(SMPLX_MODEL_DIR_ENV, str(smplx_dir))
    for body in (anny_body, load_body_model("smplx")):
        pose = _random_pose(body, 4, seed=3).requires_grad_(True)
        trans = torch.randn(4, 3, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
        shape = body.default_shape() + 0.1
        ids = body.vertex_segments["left_hand"][:40]
        bound = body.bind(shape, ids)(pose, trans)
        reference = body.forward(pose.detach(), shape, trans.detach(), vertex_ids=ids)
        assert torch.allclose(bound.vertices, reference.vertices, atol=1e-5), body.name
        assert torch.allclose(bound.keypoints, reference.keypoints, atol=1e-5), body.name
        (bound.vertices.sum() + bound.keypoints.sum()).backward()
        assert float(pose.grad.abs().sum()) > 0 and float(trans.grad.abs().sum()) > 0, body.name
        with pytest.raises(ValueError):
            body.bind(shape, ids)(pose[:, :-1], trans)
    with pytest.raises(ValueError, match="vertex_ids"):
        anny_body.bind(anny_body.default_shape(), torch.tensor([anny_body.num_vertices]))
