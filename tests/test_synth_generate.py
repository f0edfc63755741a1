"""The generator's files: determinism, and consistency of ground truth with what was rendered."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from reconstruction.eval.evaluate import evaluate_and_save, evaluate_video
from reconstruction.layout import Layout
from reconstruction.render import Mesh, render
from reconstruction.render_config import load_cam_k, load_character_data, load_render_config
from reconstruction.synth.__main__ import main as synth_main
from reconstruction.synth.generate import generate
from reconstruction.synth.ground_truth import load_ground_truth
from reconstruction.synth.objects import load_obj_vertices_faces
from reconstruction.video import read_video

pytestmark = pytest.mark.slow

SIZE = dict(width=320, height=240)
FRAMES = 10


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seed 3 twice (one through the CLI), seed 4 once: mug, one-handed, 10 frames at 320x240."""
    root = tmp_path_factory.mktemp("synth")
    first = generate(str(root / "a"), "Synthetic", "mug", 1, FRAMES, 3, ik_steps=40, **SIZE)[0]
    argv = ["--results_dir", str(root / "b"), "--category", "mug", "--num_frames", str(FRAMES), "--seed", "3",
            "--width", "320", "--height", "240", "--ik_steps", "40"]  # fmt: skip
    assert synth_main(argv) == 0
    other = generate(str(root / "c"), "Synthetic", "mug", 1, FRAMES, 4, ik_steps=40, **SIZE)[0]
    return root, first, other


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(runs):
    root, vid, _ = runs
    a, b = _files(root / "a"), _files(root / "b")
    assert len(a) == 10  # mp4, 2 masks, cam_K, depth, render config, character data, mesh, table, ground truth
    assert a.keys() == b.keys()
    for rel in a:
        if rel.suffix == ".mp4" and a[rel] != b[rel]:
            # Known issue: in full-suite CI runs (never in isolation) the same scene's shading came out a few
            # grey levels apart (up to 5) while every other file, ground truth included, was byte-identical;
            # cause not found. The frames must still be visually identical: PSNR >= 40 dB.
            frames_a, fps_a = read_video(root / "a" / rel)
            frames_b, fps_b = read_video(root / "b" / rel)
            assert fps_a == fps_b and frames_a.shape == frames_b.shape, rel
            mse = float(np.mean((frames_a.astype(np.float64) - frames_b.astype(np.float64)) ** 2))
            psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
            assert psnr >= 40.0, f"{rel}: same-seed runs differ (PSNR {psnr:.1f} dB)"
            continue
        assert a[rel] == b[rel], f"{rel} differs between two runs with the same seed"


def test_different_seeds_give_different_scenes(runs):
    root, vid_a, vid_c = runs
    gt_a = load_ground_truth(Layout.create(root / "a").ground_truth(vid_a))
    gt_c = load_ground_truth(Layout.create(root / "c").ground_truth(vid_c))
    assert not np.allclose(gt_a.shape, gt_c.shape)
    assert not np.allclose(gt_a.object_poses_world[0], gt_c.object_poses_world[0])
    assert not np.allclose(gt_a.world_to_cam[0], gt_c.world_to_cam[0])
    frames_a, _ = read_video(Layout.create(root / "a").video(vid_a))
    frames_c, _ = read_video(Layout.create(root / "c").video(vid_c))
    assert np.abs(frames_a.astype(int) - frames_c.astype(int)).mean() > 5


def test_layout_files_and_render_config_round_trip(runs):
    root, vid, _ = runs
    layout = Layout.create(root / "a")
    gt = load_ground_truth(layout.ground_truth(vid))
    frames, fps = read_video(layout.video(vid))
    assert frames.shape == (FRAMES, 240, 320, 3) and fps == pytest.approx(30.0)
    assert np.allclose(load_cam_k(layout.cam_k(vid)), gt.K)
    config = load_render_config(layout.render_config(vid))
    assert config.obj_scale == 1.0 and (config.frame_height, config.frame_width) == (240, 320)
    assert np.allclose(config.world_to_cam(), gt.world_to_cam[0], atol=1e-9)
    assert np.allclose(config.object_to_cam(), gt.object_poses_cam[0], atol=1e-9)
    assert np.allclose(config.intrinsics(), gt.K)
    assert np.allclose(config.human_t, gt.trans[0])
    character = load_character_data(layout.character_data(vid))
    assert character["body_model"] == "anny" and character["height_m"] == pytest.approx(gt.height_m)
    assert np.allclose(character["pose_aa"], gt.pose_aa[0]) and np.allclose(character["shape"], gt.shape)
    assert gt.object_mesh_path == layout.own_mesh(vid).resolve() == layout.mesh(vid).resolve()
    # The GT keypoints in the camera are the world keypoints moved by world_to_cam.
    w2c = gt.world_to_cam
    moved = gt.keypoints_3d_world @ w2c[:, :3, :3].transpose(0, 2, 1) + w2c[:, None, :3, 3]
    assert np.allclose(moved, gt.keypoints_3d_cam)
    # The person is in front of the camera and inside the image in every frame.
    uv = gt.keypoints_3d_cam[..., :2] / gt.keypoints_3d_cam[..., 2:] * gt.K[0, 0] + gt.K[:2, 2]
    assert (gt.keypoints_3d_cam[..., 2] > 1.5).all()
    assert ((uv >= 0) & (uv < [320, 240])).all()


def test_table_is_in_scene_data_and_matches_the_render(runs):
    """The render config's scene_data (contract section 3) and the ground truth describe the table that was
    rendered: its mesh placed by rot/pos/scale has its top at the object's resting height, and stage 5's
    on-table check reads it."""
    from reconstruction.stages.filtering import table_top_height
    from reconstruction.synth.scene import TABLE_HEIGHT, TABLE_SIZE

    root, vid, _ = runs
    layout = Layout.create(root / "a")
    config = load_render_config(layout.render_config(vid))
    (table,) = [item for item in config.scene_data if item["name"] == "table"]
    assert {"path", "scale", "rot", "pos", "size", "top_z"} <= set(table)
    assert not Path(table["path"]).is_absolute()  # relative to the render config's folder: movable
    mesh_file = layout.render_config(vid).parent / table["path"]
    assert mesh_file == layout.scene_mesh(vid, "table")
    vertices, _, colors = load_obj_vertices_faces(mesh_file)
    world = vertices * table["scale"] @ np.asarray(table["rot"]).T + np.asarray(table["pos"])
    extent = world.max(0) - world.min(0)
    assert extent == pytest.approx([*TABLE_SIZE, TABLE_HEIGHT], abs=1e-6)
    assert world[:, 2].min() == pytest.approx(0.0, abs=1e-9) and colors is not None
    top = table_top_height(config.scene_data, layout.render_config(vid).parent)
    assert top == pytest.approx(TABLE_HEIGHT) == pytest.approx(table["top_z"])
    gt = load_ground_truth(layout.ground_truth(vid))
    assert gt.object_poses_world[0, 2, 3] == pytest.approx(top, abs=1e-6)  # the object rests on it
    (gt_table,) = gt.extra["scene_data"]
    assert (layout.ground_truth(vid).parent / gt_table["path"]).resolve() == mesh_file.resolve()
    assert {k: v for k, v in gt_table.items() if k != "path"} == {k: v for k, v in table.items() if k != "path"}


def _object_alone(layout, vid, gt):
    vertices, faces, _ = load_obj_vertices_faces(gt.object_mesh_path)
    pose = gt.object_poses_cam[0]
    cam_vertices = vertices @ pose[:3, :3].T + pose[:3, 3]
    # Render in the camera frame (identity extrinsics) with the GT K only.
    out = render(
        [Mesh(torch.tensor(cam_vertices, dtype=torch.float32), torch.tensor(faces), None, 2)],
        gt.K,
        np.eye(4),
        (240, 320),
    )
    return out, cam_vertices


def test_gt_object_pose_reproduces_the_object_mask(runs):
    root, vid, _ = runs
    layout = Layout.create(root / "a")
    gt = load_ground_truth(layout.ground_truth(vid))
    assert gt.object_visibility[0] > 0.99  # the object stands unoccluded on the table in frame 0
    mask = cv2.imread(str(layout.first_object_mask(vid)), cv2.IMREAD_UNCHANGED) > 0
    assert mask.sum() > 50
    out, cam_vertices = _object_alone(layout, vid, gt)
    projected = out.instance[0].numpy() == 2
    iou = (mask & projected).sum() / (mask | projected).sum()
    assert iou > 0.98
    # Independent of the renderer: projected mesh vertices land on (a 1-pixel dilation of) the mask.
    uv = cam_vertices[:, :2] / cam_vertices[:, 2:] * gt.K[0, 0] + gt.K[:2, 2]
    dilated = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    px = np.clip(np.floor(uv).astype(int), 0, [319, 239])
    assert dilated[px[:, 1], px[:, 0]].mean() > 0.97
    human = cv2.imread(str(layout.first_human_mask(vid)), cv2.IMREAD_UNCHANGED) > 0
    assert human.sum() > 2000 and not (human & mask).any()


def test_depth_png_equals_rendered_depth_at_mask_pixels(runs):
    root, vid, _ = runs
    layout = Layout.create(root / "a")
    gt = load_ground_truth(layout.ground_truth(vid))
    depth_mm = cv2.imread(str(layout.depth_gt(vid)), cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16 and depth_mm.shape == (240, 320)
    mask = cv2.imread(str(layout.first_object_mask(vid)), cv2.IMREAD_UNCHANGED) > 0
    out, _ = _object_alone(layout, vid, gt)
    rendered_mm = out.depth[0].numpy() * 1000.0
    assert np.abs(depth_mm[mask].astype(float) - rendered_mm[mask]).max() <= 0.5 + 1e-3
    # Depth is a full-scene map: background wall/ground everywhere, metres to 65 m.
    assert (depth_mm > 0).mean() > 0.95 and depth_mm.max() < 65000


def test_evaluate_video_on_perturbed_ground_truth(runs):
    """Fake stage outputs = ground truth moved by known amounts; the evaluator must measure exactly those."""
    from reconstruction import fileio

    root, vid, _ = runs
    layout = Layout.create(root / "a")
    gt = load_ground_truth(layout.ground_truth(vid))
    assert evaluate_video(layout, vid)["stages"] == {}  # no stage outputs yet
    fileio.write_torch(layout.hmr_result(vid), {"keypoints_3d_cam": torch.tensor(gt.keypoints_3d_cam) + torch.tensor([0.03, 0.0, 0.04]),
                                                "predicted_body_height": gt.height_m + 0.02})  # fmt: skip
    shifted = gt.object_poses_cam.copy()
    shifted[:, :3, 3] += [0.0, 0.02, 0.0]
    fileio.write_pickle(layout.object_poses(vid), shifted)
    num_frames = gt.num_frames
    hoi = {
        "human_data": {"poses": gt.pose_aa.reshape(num_frames, -1), "trans": gt.trans, "betas": gt.shape[None]},
        "obj_data": {
            "obj_R": gt.object_poses_world[:, :3, :3],
            "obj_t": gt.object_poses_world[:, :3, 3],
            "obj_scale": 1.0,
        },
        "meta": {},
    }
    fileio.write_pickle(layout.raw_hoi_data(vid), hoi)
    predicted_contact = gt.contact.copy()
    predicted_contact[:, 1] = False  # right hand never predicted: recall 0
    fileio.write_json(layout.contact_labels(vid), {"frames": predicted_contact.tolist()})
    report = evaluate_and_save(layout, vid)
    s1, s3, s4 = report["stages"]["human_pose"], report["stages"]["object_pose"], report["stages"]["optimize"]
    assert s1["body_mpjpe_m"] == pytest.approx(0.05)
    assert s1["body_pa_mpjpe_m"] == pytest.approx(0.0, abs=1e-9)
    assert s1["body_height_error_m"] == pytest.approx(0.02)
    assert s3["object_translation_error_m"] == pytest.approx(0.02)
    assert s3["object_rotation_error_deg"] == pytest.approx(0.0, abs=1e-6)
    assert s4["body_mpjpe_m"] == pytest.approx(0.0, abs=2e-6)  # the GT body re-posed by the evaluator
    assert s4["object_add_s_m"] == pytest.approx(0.0, abs=1e-9)
    assert s4["penetration_max_m"] < 0.005
    assert s4["contact_right_recall"] == 0.0 and s4["contact_right_precision"] == 1.0
    assert json.loads(layout.metrics(vid).read_text()) == json.loads(json.dumps(report))
