"""Stage 5 on the generator's own videos (issue 5): a perfect upstream (stage 2 = the render's instance masks
and depth, stage 4 = the ground-truth bodies and object poses), so every verdict is the filter's alone.
A normal video passes the camera and mask checks, ``camera_shake`` fails ``camera_trans`` (measured from the
video and the frame-0 depth, never from the ground truth's cameras) and ``object_lost`` fails the mask
checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconstruction import fileio
from reconstruction.body import load_body_model
from reconstruction.config import load_config
from reconstruction.layout import Layout, VideoId
from reconstruction.stages import filtering
from reconstruction.stages.base import StageContext
from reconstruction.synth.scene import HUMAN_ID, OBJECT_ID, SceneConfig, build_scene, render_scene
from reconstruction.synth.writer import write_video_files

pytestmark = pytest.mark.slow


def _camera_centres(world_to_cam: np.ndarray) -> np.ndarray:
    return -np.einsum("tji,tj->ti", world_to_cam[:, :3, :3], world_to_cam[:, :3, 3])


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


def _filtered(root, body, variant: str, num_frames: int, category: str = "box"):
    """Generate one video, write perfect stage 2 and stage 4 outputs, run stage 5 -> (report checks, scene)."""
    layout = Layout.create(root)
    vid = VideoId("Synthetic", category, f"{variant}_v0")
    config = SceneConfig(category=category, variant=variant, num_frames=num_frames, width=320, height=240, seed=11,
                         ik_steps=30)  # fmt: skip
    scene = build_scene(config, body)
    rendered = render_scene(scene)
    write_video_files(layout, vid, scene, rendered)
    instance = rendered.output.instance.numpy()
    masks = {t: {0: instance[t] == OBJECT_ID, 1: instance[t] == HUMAN_ID} for t in range(num_frames)}
    fileio.write_npz(layout.masks_cache(vid), masks=np.array(masks, dtype=object))
    fileio.write_torch(layout.depth_cache(vid), list(rendered.output.depth))
    poses = scene.object_poses_world.double().numpy()
    hoi = {
        "human_data": {
            "poses": scene.pose_aa.double().numpy().reshape(num_frames, -1),
            "trans": scene.trans.double().numpy(),
            "betas": scene.shape.double().numpy(),
            "shape": scene.shape.double().numpy(),
            "body_model": "anny",
        },
        "obj_data": {"obj_R": poses[:, :3, :3], "obj_t": poses[:, :3, 3], "obj_scale": 1.0},
        "meta": {"obj_path": str(layout.own_mesh(vid)), "K": scene.K, "world_to_cam": scene.world_to_cam[0]},
        "eval_data": {"keypoint_tracking": 0.5, "contact": 1.0, "penetration": 0.0},
    }
    fileio.write_pickle(layout.raw_hoi_data(vid), hoi)
    filtering.run(StageContext(video=vid, layout=layout, config=load_config()))
    report = json.loads(layout.filter_report(vid).read_text())
    return {c["name"]: c for c in report["checks"]}, scene


def test_normal_video_passes_the_camera_and_mask_checks(tmp_path, body):
    checks, _ = _filtered(tmp_path, body, "normal", 12)
    assert checks["camera_trans"]["verdict"] == "pass" and checks["camera_trans"]["value"] < 0.02
    assert checks["camera_trans"]["data"]["frames_solved"] == 12
    assert checks["object_mask"]["verdict"] == "pass" and checks["total_mask"]["verdict"] == "pass"
    assert checks["object_initially_on_table"]["verdict"] == "pass"  # the table is in scene_data now


def test_camera_shake_video_fails_camera_trans(tmp_path, body):
    checks, scene = _filtered(tmp_path, body, "camera_shake", 12)
    true_moved = np.linalg.norm(_camera_centres(scene.world_to_cam) - _camera_centres(scene.world_to_cam)[:1], axis=1)
    camera = checks["camera_trans"]
    assert camera["verdict"] == "fail", camera
    assert camera["value"] == pytest.approx(true_moved.max(), rel=0.25)


def test_object_lost_video_fails_the_mask_checks(tmp_path, body):
    checks, _ = _filtered(tmp_path, body, "object_lost", 30, category="mug")
    assert checks["camera_trans"]["verdict"] == "pass"
    assert checks["object_mask"]["verdict"] == "fail" and checks["total_mask"]["verdict"] == "fail"
    unsupported = np.asarray(checks["object_mask"]["data"]["unsupported"])
    assert (unsupported > 0.5).mean() > 1 / 3  # the reconstruction shows the object where no mask is
    assert max(checks["object_mask"]["data"]["missed"]) < 0.1  # the reference's one-sided error saw nothing
