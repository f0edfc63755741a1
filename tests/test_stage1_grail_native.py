"""A results dir laid out as the reference writes it (GEM/WiLoR stage-1 npz, GEM cache, SAM 2-style masks
and depth caches, FoundationPose ``poses_in_cam.pkl`` as a list of 4x4) made from a synthetic SMPL-X scene's
ground truth: stage 1 and 3 import it, stage 4 optimises on it; bad native files give errors naming them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import roma
import torch

from reconstruction import fileio, pipeline
from reconstruction.backends import grail_stage1
from reconstruction.body import SMPLX_MODEL_DIR_ENV, load_body_model
from reconstruction.config import load_config
from reconstruction.keypoints import index
from reconstruction.layout import Layout, VideoId
from reconstruction.optim import geometry
from reconstruction.projection import project
from reconstruction.render import Mesh, render
from reconstruction.render.scene import ground_plane
from reconstruction.render_config import (
    BLENDER_TO_OPENCV,
    RenderConfig,
    load_pickle,
    load_render_config,
    save_cam_k,
    save_render_config,
)
from reconstruction.stages import human_pose
from reconstruction.stages.base import StageContext, StageInputError
from reconstruction.video import write_video

from .optim_scene import WORLD_TO_CAM, K, box_mesh
from .test_body_models import write_synthetic_smplx

VID = VideoId.parse("ComAsset/box/clip0")
T = 8
UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # SMPL-X Y-up -> world Z-up
COCO17 = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle")  # fmt: skip
# the reference's hand slots (SMPL-X order) as MediaPipe hand landmark names
HAND_SLOTS = ("wrist", "index_mcp", "index_pip", "index_dip", "middle_mcp", "middle_pip", "middle_dip",
              "pinky_mcp", "pinky_pip", "pinky_dip", "ring_mcp", "ring_pip", "ring_dip", "thumb_cmc",
              "thumb_mcp", "thumb_ip")  # fmt: skip


@pytest.fixture(scope="module")
def smplx_body(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smplx_model")
    data = write_synthetic_smplx(folder)
    # local triangles (a Delaunay triangulation of the front view) instead of random ones: fast to render
    from scipy.spatial import Delaunay

    data["f"] = Delaunay(data["v_template"][:, :2]).simplices.astype(np.int64)
    np.savez_compressed(folder / "SMPLX_NEUTRAL.npz", **data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SMPLX_MODEL_DIR_ENV, str(folder))
        yield load_body_model("smplx")


def _ground_truth(body) -> dict[str, torch.Tensor]:
    """World-frame SMPL-X motion (engine convention): turning a little, waving the right arm, fingers bent."""
    generator = torch.Generator().manual_seed(0)
    shape = 0.5 * torch.randn(10, generator=generator)
    phase = torch.linspace(0, math.pi, T)
    pose = torch.zeros(T, 55, 3)
    pose[:, 0, 2] = 0.2 * phase  # yaw about the world's up axis
    pose[:, 17, 0] = -0.6 * torch.sin(phase)  # right shoulder
    pose[:, 19, 0] = -0.5 * torch.sin(phase)  # right elbow
    pose[:, 25:40, 2] = 0.2
    pose[:, 40:55, 2] = -0.3
    trans = torch.zeros(T, 3)
    trans[:, 2] = body.root_height_standing(shape)
    trans[:, 0] = torch.linspace(0.0, 0.1, T)
    with torch.no_grad():
        out = body.forward(pose, shape, trans)
    return {"pose": pose, "shape": shape, "trans": trans, "out": out}


def _native_layer(body):
    import smplx

    return smplx.SMPLXLayer(model_path=str(body.model_path), gender="neutral", num_betas=10, use_pca=False)


def _native_params(body, gt) -> dict[str, torch.Tensor]:
    """The ground truth as SMPL-X's own camera-frame parameters (what GEM + WiLoR would estimate)."""
    world_to_cam = WORLD_TO_CAM
    rotation, offset = world_to_cam[:3, :3], world_to_cam[:3, 3]
    global_orient = roma.rotmat_to_rotvec(rotation @ roma.rotvec_to_rotmat(gt["pose"][:, 0]) @ UP)
    with torch.no_grad():
        pelvis = _native_layer(body)(betas=gt["shape"][None]).joints[0, 0]
    transl = gt["trans"] @ rotation.T + offset - pelvis
    return {
        "global_orient": global_orient,
        "body_pose": gt["pose"][:, 1:22],
        "left_hand_pose": gt["pose"][:, 25:40],
        "right_hand_pose": gt["pose"][:, 40:55],
        "betas": gt["shape"],
        "transl": transl,
    }


def _native_vertices_cam(body, params) -> torch.Tensor:
    rot = roma.rotvec_to_rotmat
    with torch.no_grad():
        return _native_layer(body)(
            betas=params["betas"][None].expand(T, -1),
            global_orient=rot(params["global_orient"]),
            body_pose=rot(params["body_pose"]),
            left_hand_pose=rot(params["left_hand_pose"]),
            right_hand_pose=rot(params["right_hand_pose"]),
            transl=params["transl"],
        ).vertices


def _keypoints_2d(gt) -> tuple[np.ndarray, np.ndarray]:
    """ViTPose COCO-17 (T,17,3) and the reference's hand keypoints (T,32,3) projected from the truth."""
    kp_cam = geometry.apply_homogeneous(gt["out"].keypoints, WORLD_TO_CAM)
    uv = project(kp_cam, K).numpy()
    vitpose = np.concatenate([uv[:, [index(n) for n in COCO17]], np.full((T, 17, 1), 0.9)], -1)
    hands = [uv[:, [index(f"{side}_hand_{n}") for n in HAND_SLOTS]] for side in ("left", "right")]
    hand_kp = np.concatenate([np.concatenate(hands, 1), np.ones((T, 32, 1))], -1)
    return vitpose, hand_kp


def write_native_stage1(layout: Layout, body, gt, poison: str | None = None) -> dict:
    """The reference's stage-1 npz: motion_incam / motion_global dicts of numpy arrays (poses (T,165) ...)."""
    params = {k: v.numpy().astype(np.float32) for k, v in _native_params(body, gt).items()}
    vitpose, hand_kp = _keypoints_2d(gt)
    poses = np.zeros((T, 165), np.float32)
    poses[:, :3] = params["global_orient"]
    poses[:, 3:66] = params["body_pose"].reshape(T, 63)
    poses[:, 66:111] = params["left_hand_pose"].reshape(T, 45)
    poses[:, 111:156] = params["right_hand_pose"].reshape(T, 45)
    common = {
        "poses": poses,
        "betas": params["betas"],
        "trans": params["transl"],
        "left_hand_pose": params["left_hand_pose"].reshape(T, 45),
        "right_hand_pose": params["right_hand_pose"].reshape(T, 45),
        "mocap_frame_rate": 30,
        "gender": "neutral",
        "model": "smplx",
        "predicted_body_height": 1.73,
    }
    incam = {**common, "vitpose": vitpose, "hand_keypoints_2d": hand_kp, "foot_contact_probs": np.full((T, 4), 0.5)}
    # GEM's gravity frame: any other frame; hoiweb must not use it as the render world
    glob = {**common, "trans": params["transl"] + np.array([5.0, 0.0, 5.0], np.float32)}
    if poison == "nan":
        incam["trans"] = incam["trans"].copy()
        incam["trans"][3, 1] = np.nan
    elif poison == "shape":
        incam["vitpose"] = vitpose[:, :15]
    elif poison == "frames":
        incam["hand_keypoints_2d"] = hand_kp[:-1]
    elif poison == "soma":
        incam["model"] = "soma"
    path = grail_stage1.native_output_path(layout, VID)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, motion_global=glob, motion_incam=incam)
    return params


def write_reference_results_dir(root, body, gt) -> Layout:
    """Render inputs + stage 2 caches + FoundationPose output, as the reference lays them out."""
    layout = Layout.create(root)
    out = gt["out"]
    hand = out.vertices[:, body.vertex_segments["right_hand"]]
    obj_world = torch.eye(4).repeat(T, 1, 1)
    obj_world[:, :3, 3] = hand.mean(1)
    obj_world[:, 1, 3] = hand[..., 1].min(1).values - 0.06 - 0.002
    cam_to_world = torch.linalg.inv(WORLD_TO_CAM).double().numpy()
    obj0 = obj_world[0].double().numpy()
    save_render_config(
        layout.render_config(VID),
        RenderConfig(
            obj_R=obj0[:3, :3], obj_t=obj0[:3, 3], obj_scale=1.0,
            cam_R=cam_to_world[:3, :3] @ BLENDER_TO_OPENCV, cam_t=cam_to_world[:3, 3],
            frame_height=240, frame_width=320, focal_length=300.0,
            human_R=np.eye(3), human_t=gt["trans"][0].double().numpy(),
        ),
    )  # fmt: skip
    save_cam_k(layout.cam_k(VID), K.double().numpy())
    verts, faces = box_mesh()
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts.tolist()]
    fileio.write_text(layout.mesh(VID), "\n".join(lines + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces.tolist()]))
    obj_verts = geometry.transform(verts[None], obj_world[:, :3, :3], obj_world[:, :3, 3])
    plane_vertices, plane_faces, _ = ground_plane()
    rendered = render(
        [Mesh(plane_vertices, plane_faces, instance_id=3, smooth=False), Mesh(obj_verts, faces, instance_id=2, smooth=False)],
        K, WORLD_TO_CAM, (240, 320),
    )  # fmt: skip
    # The synthetic SMPL-X's faces join random vertices (slow to rasterise): the human mask is its splatted
    # vertices instead, and the human occludes the object there.
    uv = project(geometry.apply_homogeneous(out.vertices, WORLD_TO_CAM), K).round().long().numpy()
    human = np.zeros((T, 240, 320), bool)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < 320) & (uv[..., 1] >= 0) & (uv[..., 1] < 240)
    frames = np.broadcast_to(np.arange(T)[:, None], inside.shape)
    human[frames[inside], uv[..., 1][inside], uv[..., 0][inside]] = True
    human = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in human])
    obj = rendered.mask(2).numpy() & ~human
    frames = (rendered.rgb.numpy() * 255).astype(np.uint8)
    frames[human] = (200, 120, 90)
    write_video(layout.video(VID), frames, fps=30.0)
    masks = {t: {0: obj[t], 1: human[t]} for t in range(T)}
    for path in (layout.masks_cache(VID), layout.depth_cache(VID)):
        path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(layout.masks_cache(VID), masks=masks)  # as the reference writes it (a pickled dict)
    depth = torch.where(torch.as_tensor(human | obj), 0.0, rendered.depth)  # background only, metres
    torch.save([d for d in depth], layout.depth_cache(VID))
    poses_in_cam = [m.numpy().astype(np.float64) for m in WORLD_TO_CAM @ obj_world]  # FoundationPose: list of 4x4
    fileio.write_pickle(layout.object_poses(VID), poses_in_cam)
    return layout


@pytest.fixture(scope="module")
def scene(smplx_body):
    return _ground_truth(smplx_body)


@pytest.fixture(scope="module")
def reference_dir(smplx_body, scene, tmp_path_factory) -> Path:
    """Written once; each test works on a copy."""
    root = tmp_path_factory.mktemp("reference") / "results"
    write_reference_results_dir(root, smplx_body, scene)
    return root


def _copy(reference_dir: Path, tmp_path: Path) -> Layout:
    shutil.copytree(reference_dir, tmp_path / "results")
    return Layout.create(tmp_path / "results")


def _import_stage1(layout: Layout) -> None:
    human_pose.run(StageContext(video=VID, layout=layout, config={"human_pose": {"backend": "import"}}))


def test_native_writer_matches_smplx_itself(smplx_body, scene):
    """The test's native parameters are right: SMPL-X's own layer puts the body where the truth is."""
    vertices = _native_vertices_cam(smplx_body, _native_params(smplx_body, scene))
    truth = geometry.apply_homogeneous(scene["out"].vertices, WORLD_TO_CAM)
    assert torch.allclose(vertices, truth, atol=1e-4)


def test_native_stage1_output_is_converted(smplx_body, scene, reference_dir, tmp_path):
    layout = _copy(reference_dir, tmp_path)
    write_native_stage1(layout, smplx_body, scene)
    native_bytes = grail_stage1.native_output_path(layout, VID).read_bytes()
    _import_stage1(layout)
    assert grail_stage1.native_output_path(layout, VID).read_bytes() == native_bytes  # read as it is
    result = human_pose.load_hmr_result(layout.hmr_result(VID))
    keypoints = human_pose.load_keypoints(layout.hmr_keypoints(VID))
    assert result["body_model"] == "smplx" and result["predicted_body_height"] == pytest.approx(1.73)
    incam, world = result["motion_incam"], result["motion_global"]
    assert incam["pose_aa"].shape == (T, 55, 3) and incam["shape"].shape == (10,)
    with torch.no_grad():
        cam_vertices = smplx_body.forward(incam["pose_aa"], incam["shape"], incam["trans"]).vertices
        world_vertices = smplx_body.forward(world["pose_aa"], world["shape"], world["trans"]).vertices
    truth_cam = geometry.apply_homogeneous(scene["out"].vertices, WORLD_TO_CAM)
    assert torch.allclose(cam_vertices, truth_cam, atol=1e-4)
    assert torch.allclose(world_vertices, scene["out"].vertices, atol=1e-4)  # the render's world, not GEM's
    assert torch.allclose(world["trans"], scene["trans"], atol=1e-4)
    kp_cam = geometry.apply_homogeneous(scene["out"].keypoints, WORLD_TO_CAM)
    assert torch.allclose(torch.as_tensor(result["keypoints_3d_cam"]), kp_cam, atol=1e-4)
    # 2D keypoints: ViTPose and WiLoR points land on the same-named keypoints; the rest have no confidence
    uv = project(kp_cam, K).numpy()
    points = keypoints["keypoints_2d"]
    assert points.shape == (T, 75, 3) and tuple(keypoints["image_size"]) == (240, 320)
    for name in ("nose", "left_wrist", "right_ankle", "left_hand_thumb_cmc", "right_hand_pinky_dip"):
        np.testing.assert_allclose(points[:, index(name), :2], uv[:, index(name)], atol=1e-3)
    assert (points[:, index("left_heel"), 2] == 0).all() and (points[:, index("right_hand_index_tip"), 2] == 0).all()
    assert int((points[0, :, 2] > 0).sum()) == 17 + 32
    assert tuple(torch.as_tensor(result["foot_contact_probs"]).shape) == (T, 4)


def test_gem_cache_alone_is_imported_body_only(smplx_body, scene, reference_dir, tmp_path):
    layout = _copy(reference_dir, tmp_path)
    params = _native_params(smplx_body, scene)
    vitpose, _ = _keypoints_2d(scene)
    gem = {
        "smpl_params_incam": {
            "body_pose": params["body_pose"].reshape(T, 63).clone(),
            "global_orient": params["global_orient"].clone(),
            "transl": params["transl"].clone(),
            "betas": params["betas"][None].expand(T, -1).clone(),
        },
        "smpl_params_global": {"body_pose": params["body_pose"].reshape(T, 63).clone()},
        "vitpose": torch.as_tensor(vitpose, dtype=torch.float32),
        "foot_contact_probs": torch.full((1, T, 4), 0.25),
    }
    fileio.write_torch(grail_stage1.gem_cache_path(layout, VID), gem)
    _import_stage1(layout)
    result = human_pose.load_hmr_result(layout.hmr_result(VID))
    pose = result["motion_incam"]["pose_aa"]
    assert torch.equal(pose[:, 25:], torch.zeros(T, 30, 3))  # no hands cached by the reference
    assert torch.allclose(pose[:, 1:22], scene["pose"][:, 1:22], atol=1e-6)
    assert torch.allclose(result["motion_global"]["trans"], scene["trans"], atol=1e-4)
    points = human_pose.load_keypoints(layout.hmr_keypoints(VID))["keypoints_2d"]
    assert int((points[0, :, 2] > 0).sum()) == 17
    assert tuple(torch.as_tensor(result["foot_contact_probs"]).shape) == (T, 4)


@pytest.mark.parametrize(
    ("poison", "message"),
    [
        ("nan", "motion_incam.trans holds NaN"),
        ("shape", r"motion_incam.vitpose must have shape \(T, 17, 3\)"),
        ("frames", "frame counts disagree"),
        ("soma", "model is 'soma'"),
    ],
)
def test_bad_native_file_is_named_and_nothing_is_written(smplx_body, scene, reference_dir, tmp_path, poison, message):
    layout = _copy(reference_dir, tmp_path)
    write_native_stage1(layout, smplx_body, scene, poison=poison)
    path = grail_stage1.native_output_path(layout, VID)
    with pytest.raises(StageInputError, match=message) as info:
        _import_stage1(layout)
    assert str(path) in str(info.value)
    assert not layout.hmr_result(VID).exists() and not layout.hmr_keypoints(VID).exists()


def test_no_stage1_file_names_every_place_looked(tmp_path):
    layout = Layout.create(tmp_path)
    with pytest.raises(StageInputError, match="hmr_results.pt.*clip0.npz.*gem_smpl_pred.pt"):
        _import_stage1(layout)


def test_reference_results_dir_runs_through_the_cli(smplx_body, scene, reference_dir, tmp_path):
    """The reference's results dir as it is: stage 1 converts its GEM/WiLoR npz, stage 2 is skipped (its
    SAM 2/MoGe caches are used), stage 3 reads the FoundationPose list, stages 4 to 6 run."""
    import yaml

    from reconstruction.__main__ import main

    layout = _copy(reference_dir, tmp_path)
    write_native_stage1(layout, smplx_body, scene)
    config = load_config().merge(
        {
            "human_model": {"body_model": "smplx"},
            "human_pose": {"backend": "import"},
            "object_pose": {"backend": "import"},
            "optimization": {
                "opt_stage_specs": {"init_opt": {"niter": 15}, "contact_opt": {"niter": 10}, "refine_opt": {"niter": 5}}
            },
        }
    )
    config_path = tmp_path / "grail_import.yaml"
    config_path.write_text(yaml.safe_dump(config.raw))
    masks_before = layout.masks_cache(VID).read_bytes()
    args = ["--results_dir", str(layout.results_dir), "--video_id", str(VID), "--config", str(config_path)]
    assert main([*args, "--device", "cpu", "--skip_step2"]) == 0
    assert layout.masks_cache(VID).read_bytes() == masks_before  # stage 2's caches used as they are
    assert human_pose.load_hmr_result(layout.hmr_result(VID))["body_model"] == "smplx"
    # stage 1's manifest hashes the converted file, so --skip_done sees a new one
    native = grail_stage1.native_output_path(layout, VID)
    inputs = pipeline.read_manifest(layout, VID, 1)["inputs"]
    assert inputs[native.relative_to(layout.results_dir).as_posix()] == pipeline.file_sha256(native)
    hoi = load_pickle(layout.raw_hoi_data(VID))
    human, obj = hoi["human_data"], hoi["obj_data"]
    assert human["body_model"] == "smplx" and human["poses"].shape == (T, 165) and human["betas"].shape == (10,)
    assert human["left_hand_pose"].shape == (T, 45) and human["trans"].shape == (T, 3)
    assert obj["obj_R"].shape == (T, 3, 3) and obj["obj_t"].shape == (T, 3)
    # the stage 1-3 estimates were the truth: the optimised body and object stay with it
    assert np.abs(np.asarray(human["trans"]) - scene["trans"].numpy()).max() < 0.05
    first_object = load_render_config(layout.render_config(VID)).obj_t
    assert np.abs(np.asarray(obj["obj_t"])[0] - first_object).max() < 0.05
    assert hoi["eval_data"]["keypoint_tracking"] < 1.0  # the imported keypoints are the truth's projections
    # stage 5 judged it, every check recorded, and packaged the outcome
    report = json.loads(layout.filter_report(VID).read_text())
    assert report["verdict"] in ("valid", "invalid") and len(report["checks"]) >= 8
    if report["verdict"] == "valid":
        assert load_pickle(layout.valid_hoi_data(VID))["human_data"]["body_model"] == "smplx"
    else:
        assert layout.invalid_marker(VID).exists() and report["reasons"]
    # stage 6 drew it
    result_vis = layout.result_vis(VID)
    for name in ("input.mp4", "recon_result.mp4", "recon_result_top_view.mp4", "recon_comparison.mp4"):
        assert (result_vis / name).stat().st_size > 0, name


def test_nan_in_reused_depth_cache_is_named_by_stage_4(smplx_body, scene, reference_dir, tmp_path):
    from reconstruction.stages import object_pose, optimize

    layout = _copy(reference_dir, tmp_path)
    write_native_stage1(layout, smplx_body, scene)
    depth = torch.load(layout.depth_cache(VID), weights_only=True)
    depth[2][100, 100] = float("nan")
    torch.save(depth, layout.depth_cache(VID))
    config = load_config().merge(
        {
            "human_model": {"body_model": "smplx"},
            "human_pose": {"backend": "import"},
            "object_pose": {"backend": "import"},
            "optimization": {
                "opt_stage_specs": {"init_opt": {"niter": 2}, "contact_opt": {"niter": 1}, "refine_opt": {"niter": 1}}
            },
        }
    )
    for stage in (human_pose, object_pose):
        stage.run(StageContext(video=VID, layout=layout, config=config))
    with pytest.raises(StageInputError, match="NaN") as info:
        optimize.run(StageContext(video=VID, layout=layout, config=config))
    assert str(layout.depth_cache(VID)) in str(info.value)
