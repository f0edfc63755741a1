"""Stage 5 filtering: each check on constructed data, and the valid/invalid outcome flipping cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reconstruction import fileio
from reconstruction.config import load_config
from reconstruction.optim.centering import uncenter
from reconstruction.render_config import load_pickle
from reconstruction.stages import filtering
from reconstruction.stages.base import StageContext

from .optim_scene import WORLD_TO_CAM, K, write_scene_caches


@pytest.fixture(scope="module")
def body():
    from reconstruction.body import load_body_model

    return load_body_model("anny")


def _hoi_from_ground_truth(gt, layout, vid, obj_world=None) -> dict:
    """A perfect stage 4 result built from the scene's ground truth."""
    obj_world = gt["obj_world"] if obj_world is None else obj_world
    T = obj_world.shape[0]
    return {
        "human_data": {
            "poses": gt["pose"].reshape(T, -1).numpy(),
            "trans": gt["trans"].numpy(),
            "betas": gt["shape"].numpy(),
            "shape": gt["shape"].numpy(),
            "body_model": "anny",
        },
        "obj_data": {"obj_R": obj_world[:, :3, :3].numpy(), "obj_t": obj_world[:, :3, 3].numpy(), "obj_scale": 1.0},
        "meta": {
            "obj_path": str(layout.mesh(vid)),
            "K": K.numpy(),
            "world_to_cam": WORLD_TO_CAM.numpy(),
            "contact_frames": np.zeros((T, 2), bool),
            "inter_start_idx": 0,
            "inter_end_idx": T - 1,
        },
        "eval_data": {"keypoint_tracking": 0.5, "contact": 1.0, "penetration": 0.0},
    }


def _report(layout, vid):
    report = json.loads(layout.filter_report(vid).read_text())
    return report, {c["name"]: c for c in report["checks"]}


def test_accepts_a_good_result_then_flips_to_invalid_and_back(tmp_path, body):
    layout, vid, gt, _ = write_scene_caches(tmp_path, body, num_frames=10)
    fileio.write_pickle(layout.raw_hoi_data(vid), _hoi_from_ground_truth(gt, layout, vid))
    ctx = StageContext(video=vid, layout=layout, config=load_config())
    result = filtering.run(ctx)
    report, checks = _report(layout, vid)
    assert report["verdict"] == "valid", report["reasons"]
    expected = {
        "camera_trans", "initial_human_position", "object_mask", "total_mask", "eval/keypoint_tracking",
        "eval/contact", "eval/penetration", "initial_penetration", "static_human", "object_initially_on_table",
        "filter_object_motion",
    }  # fmt: skip
    assert set(checks) == expected
    for check in checks.values():
        assert {"value", "threshold", "verdict"} <= set(check)
    assert checks["object_mask"]["value"] < 0.05  # the ground-truth pose reproduces the mask
    assert checks["filter_object_motion"]["data"]["state"] == "dynamic"
    assert layout.valid_hoi_data(vid).exists() and (layout.valid_mesh_dir(vid) / "model.obj").exists()
    exported = load_pickle(layout.valid_hoi_data(vid))
    assert exported["obj_data"]["obj_t"].shape == (10, 3)
    # post_processing.center_at_object: the export is centred on the object's frame-0 position (the raw
    # result stays in the render world) and uncentres back to it exactly
    raw = load_pickle(layout.raw_hoi_data(vid))
    assert np.allclose(exported["obj_data"]["obj_t"][0, :2], 0.0, atol=1e-5)
    assert np.allclose(exported["obj_data"]["obj_t"][:, 2], raw["obj_data"]["obj_t"][:, 2])
    assert np.allclose(uncenter(exported)["obj_data"]["obj_t"], raw["obj_data"]["obj_t"], atol=1e-5)
    assert np.allclose(uncenter(exported)["human_data"]["trans"], raw["human_data"]["trans"], atol=1e-5)
    assert result.info["verdict"] == "valid" and not layout.invalid_marker(vid).exists()

    # the same video judged with a static-object config: rejected, package removed
    static_config = load_config().merge({"filtering": {"filter_object_motion": "static_only"}})
    filtering.run(StageContext(video=vid, layout=layout, config=static_config))
    report, checks = _report(layout, vid)
    assert report["verdict"] == "invalid" and report["first_failure"] == "filter_object_motion"
    assert layout.invalid_marker(vid).exists() and not layout.valid(vid).exists()
    assert "filter_object_motion" in json.loads(layout.invalid_marker(vid).read_text())["failed_checks"]

    filtering.run(ctx)  # and back
    assert layout.valid(vid).exists() and not layout.invalid_marker(vid).exists()


def test_static_object_in_a_manipulation_config_is_rejected(tmp_path, body):
    layout, vid, gt, _ = write_scene_caches(tmp_path, body, num_frames=8, variant="static_object")
    fileio.write_pickle(layout.raw_hoi_data(vid), _hoi_from_ground_truth(gt, layout, vid))
    filtering.run(StageContext(video=vid, layout=layout, config=load_config()))  # manip: dynamic_only
    report, checks = _report(layout, vid)
    assert report["verdict"] == "invalid"
    assert [r.split(":")[0] for r in report["reasons"]] == ["filter_object_motion"]
    assert checks["filter_object_motion"]["value"] < 0.02


def test_object_far_from_its_masks_fails_mask_checks_and_truncates_with_min_frames(tmp_path, body):
    layout, vid, gt, _ = write_scene_caches(tmp_path, body, num_frames=8)
    lost = gt["obj_world"].clone()
    lost[5:, :3, 3] += torch.tensor([0.6, 0.0, 0.0])  # the result loses the object from frame 5 on
    fileio.write_pickle(layout.raw_hoi_data(vid), _hoi_from_ground_truth(gt, layout, vid, lost))
    filtering.run(StageContext(video=vid, layout=layout, config=load_config()))
    report, checks = _report(layout, vid)
    assert report["verdict"] == "invalid" and checks["object_mask"]["verdict"] == "fail"
    assert checks["object_mask"]["data"]["first_bad"] == 5
    config = load_config().merge({"filtering": {"min_frames": 4}})
    filtering.run(StageContext(video=vid, layout=layout, config=config))
    report, checks = _report(layout, vid)
    assert checks["object_mask"]["verdict"] == "truncate" and report["truncated_to"] == 5
    assert report["verdict"] == "valid", report["reasons"]
    assert load_pickle(layout.valid_hoi_data(vid))["obj_data"]["obj_t"].shape == (5, 3)


def test_eval_thresholds_and_pure_checks():
    checks = filtering.check_eval_metrics(
        {"contact": 7.0, "keypoint_tracking": 1.0}, {"contact": 5.0, "keypoint_tracking": 2.0, "penetration": 1.0}
    )
    verdicts = {c.name: c.verdict for c in checks}
    assert verdicts == {"eval/contact": "fail", "eval/keypoint_tracking": "pass", "eval/penetration": "fail"}
    assert filtering.check_static_human(np.zeros((5, 10, 3)), 0.01).verdict == "fail"
    assert filtering.check_initial_penetration(0.005, 0.02).verdict == "fail"
    assert filtering.check_initial_human_position(np.array([1.0, 0, 0]), np.zeros(3), 0.5).verdict == "fail"
    moving = np.stack([np.linspace(0, 0.3, 10), np.zeros(10), np.zeros(10)], -1)
    assert filtering.check_object_motion(moving, "dynamic_only", 0.02).verdict == "pass"
    assert filtering.check_object_motion(moving, "static_only", 0.02).verdict == "fail"
    assert filtering.check_object_motion(moving * 0.01, "dynamic_only", 0.02).verdict == "fail"
    assert filtering.check_object_motion(moving * 0.01, "all", 0.02).verdict == "pass"
    gt_masks = np.zeros((2, 20, 20), bool)
    gt_masks[:, 5:15, 5:15] = True
    rendered = gt_masks.copy()
    rendered[1] = False
    assert np.allclose(filtering.object_mask_errors(gt_masks, rendered), [0.0, 100 / 100])


def test_camera_shake_is_measured_from_the_background():
    rng = np.random.default_rng(0)
    import cv2

    texture = cv2.GaussianBlur(rng.uniform(0, 255, (200, 260)).astype(np.float32), (0, 0), 3)
    frames = np.stack([np.roll(texture, shift, axis=1) for shift in (0, 4, 12, 2)])[..., None].repeat(3, -1)
    background = np.ones((200, 260), bool)
    positions = filtering.estimate_camera_positions(frames, background, depth=3.0, focal=300.0)
    assert np.abs(positions[:, 0]).tolist() == pytest.approx([0.0, 0.04, 0.12, 0.02], abs=0.01)
    assert filtering.check_camera_translation(positions, 0.1).verdict == "fail"
    still = filtering.estimate_camera_positions(frames[:1].repeat(3, 0), background, depth=3.0, focal=300.0)
    assert filtering.check_camera_translation(still, 0.1).verdict == "pass"
