"""Stage 1 end to end on a tiny synthetic video (the project's synth scenes, anny, MediaPipe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reconstruction.body import load_body_model
from reconstruction.keypoints import LEFT_HAND_SLICE, MPJPE_BODY_JOINTS, NUM_BODY, RIGHT_HAND_SLICE, index
from reconstruction.layout import Layout
from reconstruction.stages import human_pose
from reconstruction.stages.base import StageCancelled, StageContext
from reconstruction.synth.ground_truth import load_ground_truth
from reconstruction.video import read_video

NUM_FRAMES, HEIGHT, WIDTH = 12, 240, 320
# Bounds measured on this scene (seed 0, box, 320x240) on 2026-11-24, with margin: 2D body median 3.2 px,
# MPJPE 7.6 cm with the default pose prior (w_pose_prior 150; it was 4.4 cm at 2 on this clip, while the
# 60-frame benchmark videos improve from 9.2 to 4.8 cm mean); 5.3 cm (7.8 without) once the torso occlusion,
# root tilt and floor terms came in.
MAX_2D_MEDIAN_PX = 5.0
MAX_MPJPE_M = 0.07

pytestmark = pytest.mark.slow


def _generate(results_dir):
    from reconstruction.synth.generate import generate

    (vid,) = generate(
        str(results_dir), "Synthetic", "box", num_videos=1, num_frames=NUM_FRAMES, seed=0, width=WIDTH, height=HEIGHT,
        ik_steps=30,
    )  # fmt: skip
    return vid


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    results_dir = tmp_path_factory.mktemp("stage1")
    vid = _generate(results_dir)
    layout = Layout.create(results_dir)
    reports: list[float] = []
    ctx = StageContext(
        video=vid,
        layout=layout,
        config={"human_pose": {"backend": "mediapipe"}},
        verbose=True,
        progress=lambda fraction, message: reports.append(fraction),
    )
    result = human_pose.run(ctx)
    gt = load_ground_truth(layout.ground_truth(vid))
    return {"ctx": ctx, "result": result, "gt": gt, "reports": reports}


def _gt_cam(gt) -> np.ndarray:
    w2c = gt.world_to_cam[0]
    return gt.keypoints_3d_world @ w2c[:3, :3].T + w2c[:3, 3]


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    uv = points @ K.T
    return uv[..., :2] / uv[..., 2:3]


def test_writes_contract_files(stage1_run):
    ctx, result, gt = stage1_run["ctx"], stage1_run["result"], stage1_run["gt"]
    layout, vid = ctx.layout, ctx.video
    assert layout.hmr_result(vid) in result.files and layout.hmr_keypoints(vid) in result.files
    with np.load(layout.hmr_keypoints(vid)) as data:
        assert data["keypoints_2d"].shape == (NUM_FRAMES, 75, 3)
        assert data["image_size"].tolist() == [HEIGHT, WIDTH]
    saved = torch.load(layout.hmr_result(vid), weights_only=True)
    assert saved["body_model"] == "anny"
    for key in ("motion_incam", "motion_global"):
        assert saved[key]["pose_aa"].shape == (NUM_FRAMES, 104, 3)
        assert saved[key]["trans"].shape == (NUM_FRAMES, 3)
        assert saved[key]["shape"].shape == (6,)
        assert all(bool(torch.isfinite(v).all()) for v in saved[key].values())
    assert saved["keypoints_3d_cam"].shape == (NUM_FRAMES, 75, 3)
    assert abs(saved["predicted_body_height"] - gt.height_m) < 0.03
    assert stage1_run["reports"][-1] == 1.0 and stage1_run["reports"] == sorted(stage1_run["reports"])
    frames, _ = read_video(layout.hmr_debug_video(vid))
    assert frames.shape[0] == NUM_FRAMES


def test_mediapipe_finds_the_person_and_keypoints_land(stage1_run):
    ctx, gt = stage1_run["ctx"], stage1_run["gt"]
    assert stage1_run["result"].metrics["frames_with_body"] == 1.0
    with np.load(ctx.layout.hmr_keypoints(ctx.video)) as data:
        detected = data["keypoints_2d"]
    truth = _project(_gt_cam(gt), gt.K)
    visible = detected[:, :NUM_BODY, 2] > 0.5
    error = np.linalg.norm(detected[:, :NUM_BODY, :2] - truth[:, :NUM_BODY], axis=-1)
    assert visible.mean() > 0.5
    assert np.median(error[visible]) < MAX_2D_MEDIAN_PX


def test_left_and_right_are_not_swapped(stage1_run):
    ctx, gt = stage1_run["ctx"], stage1_run["gt"]
    with np.load(ctx.layout.hmr_keypoints(ctx.video)) as data:
        detected = data["keypoints_2d"]
    truth = _project(_gt_cam(gt), gt.K)
    for left_name in ("left_shoulder", "left_elbow", "left_wrist", "left_hip"):
        left, right = index(left_name), index(left_name.replace("left", "right"))
        to_own = np.linalg.norm(detected[:, left, :2] - truth[:, left], axis=-1)
        to_other = np.linalg.norm(detected[:, left, :2] - truth[:, right], axis=-1)
        assert (to_own < to_other).all(), left_name
    # Hand slots: a detected left hand's wrist lies nearer the true left wrist than the right one.
    for hand, own, other in (
        (LEFT_HAND_SLICE, "left_wrist", "right_wrist"),
        (RIGHT_HAND_SLICE, "right_wrist", "left_wrist"),
    ):
        seen = detected[:, hand.start, 2] > 0
        wrist = detected[seen, hand.start, :2]
        assert (
            np.linalg.norm(wrist - truth[seen, index(own)], axis=-1)
            < np.linalg.norm(wrist - truth[seen, index(other)], axis=-1)
        ).all()


def test_fitted_body_matches_ground_truth(stage1_run):
    ctx, gt = stage1_run["ctx"], stage1_run["gt"]
    saved = torch.load(ctx.layout.hmr_result(ctx.video), weights_only=True)
    joints = [index(n) for n in MPJPE_BODY_JOINTS]
    truth = _gt_cam(gt)
    mpjpe = np.linalg.norm(saved["keypoints_3d_cam"].numpy()[:, joints] - truth[:, joints], axis=-1).mean()
    assert mpjpe < MAX_MPJPE_M
    # Frame 0 is given by the render config: the fit must keep it.
    assert np.linalg.norm(saved["motion_global"]["trans"][0].numpy() - gt.trans[0]) < 0.02


def test_camera_and_world_motions_agree(stage1_run):
    ctx, gt = stage1_run["ctx"], stage1_run["gt"]
    saved = torch.load(ctx.layout.hmr_result(ctx.video), weights_only=True)
    body = load_body_model("anny")
    world = saved["motion_global"]
    with torch.no_grad():
        points = body.forward(world["pose_aa"], world["shape"], world["trans"]).keypoints.numpy()
    w2c = gt.world_to_cam[0]
    in_cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    assert np.abs(in_cam - saved["keypoints_3d_cam"].numpy()).max() < 2e-3


def test_cancel_leaves_no_output(stage1_run, tmp_path):
    ctx = stage1_run["ctx"]
    fresh = Layout.create(tmp_path)
    # Same inputs, new results dir for outputs: point its input folders at the generated ones.
    layout = Layout.create(
        tmp_path,
        {k: str(ctx.layout.dir(k)) for k in ("video_dir", "foundation_pose_dir", "mesh_dir", "depth_gt_dir")},
    )
    cancelled = StageContext(video=ctx.video, layout=layout, config={}, should_cancel=lambda: True, models=ctx.models)
    with pytest.raises(StageCancelled):
        human_pose.run(cancelled)
    assert not fresh.hmr_result(ctx.video).exists() and not fresh.hmr_keypoints(ctx.video).exists()
