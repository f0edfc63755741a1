"""Stages 2 and 3 on a small scene of the synthetic generator (pick up, carry, put down a box).

The object stands still before the hand lifts it and after it is put down: stage 2 must reuse the
frame-0 mask while it has not moved, stage 3 must find those still segments from the pixels, the table
plane from the first-frame depth, and pin the poses there (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.backends import pose_anchors
from reconstruction.eval.metrics import rotation_error_deg
from reconstruction.layout import Layout, VideoId
from reconstruction.render_config import load_pickle
from reconstruction.stages import object_pose, preprocess, scene_inputs
from reconstruction.stages.base import StageContext
from tests.stage23_scene import mask_iou

FRAMES = 24


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from reconstruction.body import load_body_model
    from reconstruction.synth.scene import HUMAN_ID, OBJECT_ID, SceneConfig, build_scene, render_scene
    from reconstruction.synth.writer import write_video_files

    layout = Layout.create(tmp_path_factory.mktemp("still") / "results")
    vid = VideoId("Synthetic", "box", "box_still")
    # 640x480, the size: at 320x240 the box is ~40 px and, since the person steps round while turning,
    # their trousers fill its revealed table spot and the classical mask takes them (object IoU 0.80)
    config = SceneConfig(category="box", num_frames=FRAMES, width=640, height=480, seed=0, ik_steps=40)
    scene = build_scene(config, load_body_model("anny"))
    rendered = render_scene(scene)
    write_video_files(layout, vid, scene, rendered)
    instance = rendered.output.instance.cpu().numpy()
    ctx = StageContext(video=vid, layout=layout, config={})
    stage2 = preprocess.run(ctx)
    stage3 = object_pose.run(ctx)
    from reconstruction.synth.ground_truth import load_ground_truth

    truth = load_ground_truth(layout.ground_truth(vid))
    return layout, vid, scene, truth, instance == OBJECT_ID, instance == HUMAN_ID, stage2, stage3


def _moved_cm(truth) -> np.ndarray:
    poses = truth.object_poses_cam
    return np.linalg.norm(poses[:, :3, 3] - poses[:1, :3, 3], axis=1) * 100


def test_still_segments_and_support_plane_from_pixels(synth):
    layout, vid, scene, truth, gt_object, gt_human, _, stage3 = synth
    frames, _ = scene_inputs.load_frames(layout.video(vid))
    lab = pose_anchors.rgb_to_lab(frames)
    object_masks, human_masks = scene_inputs.masks_to_tensors(scene_inputs.load_masks_cache(layout.masks_cache(vid)))
    moved = _moved_cm(truth)
    first_move = int(np.flatnonzero(moved > 0.01)[0])
    prefix = pose_anchors.static_prefix(lab, object_masks[0], human_masks)
    # The first frames of the lift move the object by millimetres: they may count as still.
    assert prefix >= first_move and moved[:prefix].max() < 1.0, (prefix, np.round(moved, 2))
    suffix = pose_anchors.rest_suffix(lab, object_masks[-1] & ~human_masks[-1], human_masks)
    final = truth.object_poses_cam[-1, :3, 3]
    at_rest = np.linalg.norm(truth.object_poses_cam[:, :3, 3] - final, axis=1) < 0.005
    assert suffix >= 3 and at_rest[-suffix:].all(), (suffix, at_rest)
    assert stage3.info["static_prefix_frames"] == prefix and stage3.info["rest_suffix_frames"] == suffix

    render_config, K = scene_inputs.load_render_inputs(layout, vid)
    mesh = scene_inputs.load_object_mesh(layout.mesh(vid), render_config.obj_scale)
    pose0 = render_config.object_to_cam()
    depth = scene_inputs.load_depth_png(layout.depth_gt(vid), object_masks.shape[1:])
    plane = pose_anchors.fit_support_plane(
        depth, K, object_masks[0], human_masks[0], mesh.vertices @ pose0[:3, :3].T + pose0[:3, 3]
    )
    assert plane is not None
    up = truth.world_to_cam[0][:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert np.degrees(np.arccos(np.clip(up @ plane.normal, -1, 1))) < 2.0
    # Nothing moved in front of the object in frame 0 compared with itself; an empty mask has no verdict.
    verdicts = pose_anchors.unchanged_frames(lab, 0, np.zeros_like(object_masks[0]), human_masks,
                                             pose_anchors.AnchorConfig())  # fmt: skip
    assert (verdicts == -1).all()


def test_stage2_masks_exact_while_still_and_accurate_overall(synth):
    layout, vid, _, truth, gt_object, gt_human, _, _ = synth
    object_masks, human_masks = scene_inputs.masks_to_tensors(scene_inputs.load_masks_cache(layout.masks_cache(vid)))
    object_iou = mask_iou(object_masks, gt_object)
    human_iou = mask_iou(human_masks, gt_human)
    still = _moved_cm(truth) < 0.01
    assert object_iou[still].min() >= 0.95, object_iou
    assert np.median(object_iou[1:]) >= 0.9, object_iou
    assert np.median(human_iou[1:]) >= 0.88, human_iou
    assert not (object_masks & human_masks).any()


def test_stage3_pins_still_frames_and_tracks_between(synth):
    layout, vid, _, truth, *_ = synth
    poses = load_pickle(layout.object_poses(vid))
    assert poses.shape == (FRAMES, 4, 4)
    trans_err = np.linalg.norm(poses[:, :3, 3] - truth.object_poses_cam[:, :3, 3], axis=1)
    rot_err = rotation_error_deg(poses[:, :3, :3], truth.object_poses_cam[:, :3, :3])
    still = _moved_cm(truth) < 0.01
    assert trans_err[still].max() < 1e-3 and rot_err[still].max() < 0.1
    assert trans_err[-3:].max() < 0.04 and rot_err[-3:].max() < 5.0  # resting on the table again
    assert np.median(trans_err) < 0.03 and np.median(rot_err) < 5.0, (trans_err, rot_err)
    assert trans_err.max() < 0.35  # the held frames are tracked, not lost (the box travels ~30 cm)
