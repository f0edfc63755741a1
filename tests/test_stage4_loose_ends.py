"""Stage 4 accuracy fixes and loose ends (project issue #5): depth-tolerant contact, the known resting pose,
contract hand poses, metrics.json ownership, inactive depth term, center_at_object, human_pose.fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reconstruction import pipeline
from reconstruction.config import ConfigError, load_config
from reconstruction.optim import centering, contact, geometry, losses
from reconstruction.render_config import load_pickle
from reconstruction.stages import optimize
from reconstruction.video import write_video

from .optim_scene import WORLD_TO_CAM, K, box_mesh, write_scene_caches


@pytest.fixture(scope="module")
def body():
    from reconstruction.body import load_body_model

    return load_body_model("anny")


def _quick_config():
    return load_config().merge(
        {
            "optimization": {
                "opt_stage_specs": {"init_opt": {"niter": 8}, "contact_opt": {"niter": 6}, "refine_opt": {"niter": 3}}
            }
        }
    )


# ---- contact: a hand right in the image but too deep (stage 1's monocular arm) -----------------------
def _deep_hand(depth_error: float):
    """An object 3 m in front of the camera, static; the right hand touches its side in the image for frames
    5-14, placed ``depth_error`` metres too deep along the view; the left hand is far away."""
    T = 20
    cam_to_world = torch.linalg.inv(WORLD_TO_CAM)
    obj_cam = torch.tensor([0.0, 0.0, 3.0])
    verts, faces = box_mesh()
    samples, _ = geometry.sample_surface(verts, faces, 600, seed=0)
    obj = (samples + obj_cam) @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    obj = obj[None].expand(T, -1, -1)
    hand_cam = torch.tensor([0.065, 0.0, 3.0]).repeat(T, 1)
    hand_cam[:5, 0] += torch.linspace(0.5, 0.1, 5)  # approaching in the image
    hand_cam[15:, 0] += torch.linspace(0.1, 0.5, 5)
    hand_cam[5:15] *= (3.0 + depth_error) / 3.0  # along the viewing ray: same pixel, deeper
    right = hand_cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    left = right + torch.tensor([-1.5, 0.0, 0.0])
    hands = (
        torch.stack([left, right], 1)[:, :, None, :]
        + torch.randn(1, 1, 6, 3, generator=torch.Generator().manual_seed(0)) * 0.004
    )
    return hands, obj


def test_contact_labels_tolerate_stage1_hand_depth_error():
    hands, obj = _deep_hand(0.25)
    plain = contact.label_contacts(hands, obj)  # 3D distance: a 25 cm deep hand never touches
    assert not plain.hands[:, 1].any()
    labels = contact.label_contacts(hands, obj, world_to_cam=WORLD_TO_CAM)
    assert labels.hands[5:15, 1].all() and not labels.hands[:3, 1].any() and not labels.hands[17:, 1].any()
    assert not labels.hands[:, 0].any()
    # a hand merely passing in front of the object, 1 m nearer the camera, is no contact
    near, _ = _deep_hand(-1.0)
    assert not contact.label_contacts(near, obj, world_to_cam=WORLD_TO_CAM).hands[:, 1].any()


def test_depth_only_contact_pulls_a_deep_hand_the_3d_gate_would_skip():
    hands_world, obj_world = _deep_hand(0.3)
    to_cam = lambda x: x @ WORLD_TO_CAM[:3, :3].T + WORLD_TO_CAM[:3, 3]  # noqa: E731
    hands = to_cam(hands_world[5:15]).clone().requires_grad_(True)
    obj = to_cam(obj_world[5:15])
    mask = torch.zeros(10, 2, dtype=torch.bool)
    mask[:, 1] = True
    assert losses.contact(hands, obj, mask, K, depth_only=False, max_contact_dist=0.15).item() == 0.0
    value = losses.contact(hands, obj, mask, K, depth_only=True, max_contact_dist=0.15)
    assert value.item() > 0
    value.backward()
    assert (hands.grad[:, 1, :, 2] >= 0).all() and hands.grad[:, 1, :, 2].sum() > 0  # descent moves the hand nearer


def test_precontact_reg_pulls_the_object_onto_its_known_resting_pose():
    samples = torch.randn(64, 3) * 0.05
    rest = samples + torch.tensor([0.5, 0.2, 0.8])
    tracked = (rest + torch.tensor([0.0, 0.06, 0.0]))[None].repeat(8, 1, 1)  # stage 3: 6 cm off, static
    precontact = torch.tensor([True] * 5 + [False] * 3)
    assert losses.obj_precontact_reg(tracked, precontact).item() == 0.0  # still: the old term is satisfied
    value = losses.obj_precontact_reg(tracked, precontact, rest, torch.tensor(True))
    assert value.item() == pytest.approx(0.06**2, rel=1e-4)
    assert losses.obj_precontact_reg(tracked, precontact, rest, torch.tensor(False)).item() == 0.0


def test_verts_tracking_weighs_frames_by_a_float_weight():
    pred = torch.zeros(4, 3, 2)
    target = torch.zeros(4, 3, 2)
    target[2:] = 2.0  # 8 px^2 off in the two untracked frames
    weight = torch.tensor([1.0, 1.0, 0.25, 0.25])
    assert losses.verts_tracking(pred, target, weight).item() == pytest.approx(2 * 0.25 * 8.0 / 2.5)


# ---- stage 4 outputs -------------------------------------------------------------------------------------
def test_hand_pose_has_the_contracts_45_values_in_mano_order(body):
    joints = optimize.contract_hand_joints(body, "right")
    names = [body.joint_names[j] for j in joints]
    assert len(joints) == 15 and names[:3] == ["finger2-1.R", "finger2-2.R", "finger2-3.R"]
    assert names[-3:] == ["finger1-1.R", "finger1-2.R", "finger1-3.R"]  # thumb last, as in MANO
    assert not any(n.startswith("metacarpal") for n in names)
    assert all(body.joint_names[j].endswith(".L") for j in optimize.contract_hand_joints(body, "left"))


def test_stage4_outputs_inactive_depth_and_metrics_json_not_an_output(tmp_path, body):
    from reconstruction.synth.ground_truth import GroundTruth, save_ground_truth

    layout, vid, gt, video = write_scene_caches(tmp_path, body, num_frames=8)
    T = 8
    with torch.no_grad():
        out = body.forward(gt["pose"], gt["shape"], gt["trans"])
    w2c = WORLD_TO_CAM.double().numpy()
    kp_world = out.keypoints.double().numpy()
    truth = GroundTruth(
        fps=30.0, K=K.double().numpy(), image_size=(240, 320), world_to_cam=np.tile(w2c, (T, 1, 1)),
        body_model="anny", pose_aa=gt["pose"].numpy(), shape=gt["shape"].numpy(), trans=gt["trans"].numpy(),
        height_m=1.7, keypoints_3d_world=kp_world, keypoints_3d_cam=kp_world @ w2c[:3, :3].T + w2c[:3, 3],
        object_poses_world=gt["obj_world"].double().numpy(), object_poses_cam=w2c @ gt["obj_world"].double().numpy(),
        contact=np.stack([np.zeros(T, bool), np.arange(T) >= gt["contact_from"]], 1), object_mesh_path=layout.mesh(vid),
        object_visibility=np.ones(T), variant="normal", category="box",
    )  # fmt: skip
    save_ground_truth(layout.ground_truth(vid), truth)
    rgb = (gt["rendered"].instance.numpy()[..., None] * 100).repeat(3, -1).astype(np.uint8)  # the input video
    write_video(layout.video(vid), rgb, fps=30.0)
    config = _quick_config()
    result = pipeline.run_stage(vid, 4, config, layout.results_dir)
    # the static depth cache has no human/object depth: the term is inactive and says so
    assert result.info["inactive_terms"] == {
        "depth_pointcloud": pytest.approx(result.info["inactive_terms"]["depth_pointcloud"])
    }
    history = json.loads(layout.loss_history(vid).read_text())
    assert "depth_pointcloud" in history["inactive_terms"]
    assert all(v == 0.0 for s in history["stages"] for v in s["terms"].get("depth_pointcloud", []))
    hoi = load_pickle(layout.raw_hoi_data(vid))
    assert hoi["human_data"]["left_hand_pose"].shape == (T, 45)
    assert hoi["human_data"]["right_hand_pose"].shape == (T, 45)
    # metrics.json: written by the evaluation, not a stage-4 output; rewriting it changes nothing upstream
    assert layout.metrics(vid).exists()
    manifest = pipeline.read_manifest(layout, vid, 4)
    assert not any(rel.endswith("metrics.json") for rel in manifest["outputs"])
    assert any(k.startswith("gt/optimize/") for k in manifest["metrics"])
    report = json.loads(layout.metrics(vid).read_text())
    report["stages"]["optimize"]["body_mpjpe_m"] += 1.0  # a re-evaluation with a changed evaluator
    layout.metrics(vid).write_text(json.dumps(report))
    up_to_date, why = pipeline.check_stage(vid, 4, config, layout.results_dir)
    assert up_to_date, why


# ---- center_at_object ----------------------------------------------------------------------------------
def _hoi(T: int = 5) -> dict:
    rng = np.random.default_rng(0)
    return {
        "human_data": {"trans": rng.normal(size=(T, 3)).astype(np.float32), "joints": rng.normal(size=(T, 75, 3))},
        "obj_data": {
            "obj_R": np.tile(np.eye(3), (T, 1, 1)),
            "obj_t": rng.normal(size=(T, 3)) + [2.0, -1.0, 0.8],
            "obj_t_cam": rng.normal(size=(T, 3)),
        },  # fmt: skip
        "meta": {"world_to_cam": WORLD_TO_CAM.numpy()},
        "scene_data": [{"path": "table.obj", "pos": [2.0, -1.0, 0.0]}],
    }


def test_center_at_object_keeps_the_camera_view_and_round_trips():
    hoi = _hoi()
    centred = centering.center_at_object(hoi)
    assert np.allclose(centred["obj_data"]["obj_t"][0, :2], 0.0, atol=1e-6)
    assert np.allclose(centred["obj_data"]["obj_t"][:, 2], hoi["obj_data"]["obj_t"][:, 2])  # ground height kept
    offset = centred["meta"]["center_offset"]
    assert np.allclose(centred["human_data"]["trans"] + offset, hoi["human_data"]["trans"], atol=1e-5)
    assert np.allclose(centred["scene_data"][0]["pos"], np.asarray([2.0, -1.0, 0.0]) - offset, atol=1e-5)

    # the camera sees every point where it saw it before
    def cam(h, p):
        w2c = np.asarray(h["meta"]["world_to_cam"], dtype=np.float64)
        return p @ w2c[:3, :3].T + w2c[:3, 3]

    assert np.allclose(cam(centred, centred["human_data"]["joints"]), cam(hoi, hoi["human_data"]["joints"]), atol=1e-4)
    assert np.array_equal(centred["obj_data"]["obj_t_cam"], hoi["obj_data"]["obj_t_cam"])
    assert centering.center_at_object(centred)["meta"]["center_offset"] is not None  # idempotent
    back = centering.uncenter(centred)
    assert "center_offset" not in back["meta"]
    assert np.allclose(back["obj_data"]["obj_t"], hoi["obj_data"]["obj_t"], atol=1e-5)
    assert np.allclose(back["meta"]["world_to_cam"], hoi["meta"]["world_to_cam"], atol=1e-5)


# ---- config: human_pose.fit ----------------------------------------------------------------------------
def test_human_pose_fit_key_loads_and_reaches_stage1(tmp_path):
    from reconstruction.stages.human_pose import fit_settings_from, stage_settings

    path = tmp_path / "with_fit.yaml"
    base = load_config().raw
    import yaml

    base = json.loads(json.dumps(base))
    base["human_pose"]["fit"] = {"iterations": 40, "w_pose_prior": 50.0}
    path.write_text(yaml.safe_dump(base))
    config = load_config(path)
    assert config.human_pose.fit == {"iterations": 40, "w_pose_prior": 50.0}
    settings = fit_settings_from(stage_settings(config))
    assert (settings.iterations, settings.w_pose_prior) == (40, 50.0)
    with pytest.raises(ConfigError, match=r"human_pose\.fit\.iteration: unknown key; did you mean 'iterations'"):
        load_config().merge({"human_pose": {"fit": {"iteration": 5}}})


def test_tracker_depth_noise_is_no_object_motion_for_the_labels():
    hands, obj = _deep_hand(0.0)
    hands = hands.clone()
    hands[:, 1] += torch.tensor([0.0, 0.0, 1.0])  # the right hand stays away: only motion could label it
    to_cam = WORLD_TO_CAM
    noise = 1.0 + 0.02 / 3.0 * torch.randn(obj.shape[0], 1, 1, generator=torch.Generator().manual_seed(1))
    obj_cam = obj @ to_cam[:3, :3].T + to_cam[:3, 3]
    noisy = (obj_cam * noise - to_cam[:3, 3]) @ to_cam[:3, :3]  # 2 cm noise along the viewing rays
    assert contact.label_contacts(hands, noisy).object_moving.any()  # 3D speed: the noise looks like motion
    labels = contact.label_contacts(hands, noisy, world_to_cam=WORLD_TO_CAM)
    assert not labels.object_moving.any() and not labels.hands.any()


def test_depth_only_contact_partners_are_on_the_visible_surface():
    # a hand on the box's back face (12 cm behind the surface the camera sees) must still be pulled forward
    # a 12 cm box 3 m in front of the camera: front face at z = 2.94, back face at z = 3.06
    grid = torch.linspace(-0.05, 0.05, 5)
    face = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    front = torch.cat([face, torch.full((25, 1), 2.94)], -1)
    back = torch.cat([face, torch.full((25, 1), 3.06)], -1)
    samples = torch.cat([front, back])[None]  # (1, 50, 3)
    facing = torch.cat([torch.ones(25, dtype=torch.bool), torch.zeros(25, dtype=torch.bool)])[None]
    hand = torch.tensor([[0.0, 0.0, 3.06]]).expand(2, 4, 3)[None].clone()  # (T=1, 2 hands, 4 points, 3)
    mask = torch.tensor([[False, True]])
    assert losses.contact(hand, samples, mask, K, depth_only=True).item() < 1e-6  # the back face "touches"
    pulled = losses.contact(hand, samples, mask, K, depth_only=True, object_facing=facing)
    assert pulled.item() == pytest.approx(0.01 * (0.12 - 0.005), rel=1e-3)  # Huber of the 12 cm gap


def test_depth_only_partner_is_the_nearest_point_of_a_side_face():
    # a hand gripping a box's side face (x = 0.15, the face spans z 2.8-3.2) shows on screen beside the box.
    # Stage 1 put it 20 cm beyond the face's far end, or 20 cm in front of its near end: the partner is the
    # face's nearest end (the least move that makes the hand touch), pulling the hand towards the box.
    depths = torch.linspace(2.8, 3.2, 9)
    ys = torch.linspace(-0.1, 0.1, 5)
    zz, yy = torch.meshgrid(depths, ys, indexing="ij")
    side = torch.stack([torch.full_like(zz, 0.15), yy, zz], -1).reshape(-1, 3)
    grid = torch.linspace(-0.15, 0.15, 7)
    gx, gy = torch.meshgrid(grid, ys, indexing="ij")
    front = torch.stack([gx, gy, torch.full_like(gx, 2.8)], -1).reshape(-1, 3)
    samples = torch.cat([front, side])[None]  # (1, N, 3)
    for stage1_depth, nearest_end in ((3.4, 3.2), (2.6, 2.8)):
        hand = torch.tensor([0.16 * stage1_depth / 3.0, 0.0, stage1_depth]).expand(1, 2, 4, 3).clone()
        hand.requires_grad_(True)
        mask = torch.tensor([[True, False]])
        cost = losses.contact(hand, samples, mask, K, depth_only=True, max_contact_dist=0.5, huber_delta=0.01)
        gap = abs(stage1_depth - nearest_end)
        assert cost.item() == pytest.approx(0.01 * (gap - 0.005), abs=0.01 * 0.05)
        cost.backward()
        descent = -hand.grad[0, 0, :, 2].sum()  # how descent moves the hand's depth
        assert descent.item() > 0 if stage1_depth < 2.8 else descent.item() < 0
