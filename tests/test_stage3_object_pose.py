"""Stage 3 (object pose) on a rendered synthetic scene: tracking vs GT, static mode, import, bad input."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reconstruction import fileio
from reconstruction.backends import depth_align
from reconstruction.backends.grail_import import import_poses
from reconstruction.layout import Layout
from reconstruction.render_config import load_pickle, load_render_config
from reconstruction.stages import object_pose
from reconstruction.stages.base import StageContext, StageInputError
from reconstruction.stages.preprocess import masks_payload
from tests.stage23_scene import make_scene, pose_errors

NUM_FRAMES = 10


def _write_stage2_caches(layout, vid, object_masks, human_masks) -> None:
    """Stage-2 caches from given masks (GT here, so stage 3 is tested on its own)."""
    import cv2

    fileio.write_npz(layout.masks_cache(vid), masks=masks_payload(object_masks, human_masks))
    gt = cv2.imread(str(layout.depth_gt(vid)), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
    depth = depth_align.static_depth(torch.from_numpy(gt), torch.from_numpy(object_masks | human_masks))
    fileio.write_torch(layout.depth_cache(vid), list(depth))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage3")
    layout, vid, truth = make_scene(root, num_frames=NUM_FRAMES, occlude=True)
    _write_stage2_caches(layout, vid, truth.object_masks, truth.human_masks)
    return layout, vid, truth


def _copy(scene, tmp_path: Path):
    layout, vid, truth = scene
    shutil.copytree(layout.results_dir, tmp_path / "results")
    return Layout.create(tmp_path / "results"), vid, truth


def test_tracker_follows_known_motion(scene, tmp_path):
    layout, vid, truth = _copy(scene, tmp_path)
    result = object_pose.run(StageContext(video=vid, layout=layout, config={}, verbose=True))
    path = layout.object_poses(vid)
    assert path in result.files and layout.object_pose_debug_video(vid) in result.files
    poses = load_pickle(path)
    assert isinstance(poses, np.ndarray) and poses.dtype == np.float64 and poses.shape == (NUM_FRAMES, 4, 4)
    np.testing.assert_allclose(poses[0], load_render_config(layout.render_config(vid)).object_to_cam(), atol=1e-9)
    trans_err, rot_err = pose_errors(poses, truth.object_poses_cam)
    travel = np.linalg.norm(truth.object_poses_cam[-1, :3, 3] - truth.object_poses_cam[0, :3, 3])
    assert travel > 0.1  # the object really moves (so a static answer would fail below)
    assert np.median(trans_err) < 0.02, trans_err
    assert np.median(rot_err) < 8.0, rot_err
    assert trans_err.max() < 0.05 and rot_err.max() < 15.0


def test_static_mode_writes_frame0_pose_everywhere(scene, tmp_path):
    layout, vid, _ = _copy(scene, tmp_path)
    object_pose.run(StageContext(video=vid, layout=layout, config={}, is_static_obj=True))
    poses = load_pickle(layout.object_poses(vid))
    expected = load_render_config(layout.render_config(vid)).object_to_cam()
    assert poses.shape == (NUM_FRAMES, 4, 4)
    np.testing.assert_allclose(poses, np.repeat(expected[None], NUM_FRAMES, 0), atol=1e-12)
    # The config flag of the reference (pipeline.is_static_obj) does the same.
    layout.object_poses(vid).unlink()
    object_pose.run(StageContext(video=vid, layout=layout, config={"pipeline": {"is_static_obj": True}}))
    np.testing.assert_allclose(load_pickle(layout.object_poses(vid)), poses)


# ---- import of FoundationPose outputs -------------------------------------------------------------
def test_import_pickle_array_list_and_txt_folder(scene, tmp_path):
    layout, vid, truth = _copy(scene, tmp_path)
    poses = truth.object_poses_cam
    as_array, as_list = tmp_path / "a" / "poses_in_cam.pkl", tmp_path / "b" / "poses_in_cam.pkl"
    fileio.write_pickle(as_array, poses.astype(np.float32))
    fileio.write_pickle(as_list, [p for p in poses])
    txt_dir = tmp_path / "txt"
    txt_dir.mkdir()
    for t, pose in enumerate(poses):
        np.savetxt(txt_dir / f"{t}.txt", pose)  # unpadded names: order must be numeric, not lexical
    np.testing.assert_allclose(import_poses(as_array), poses, atol=1e-6)
    np.testing.assert_allclose(import_poses(as_list.parent), poses)
    np.testing.assert_allclose(import_poses(txt_dir), poses)

    config = {"object_pose": {"backend": "import", "import_dir": str(txt_dir)}}
    result = object_pose.run(StageContext(video=vid, layout=layout, config=config))
    stored = load_pickle(layout.object_poses(vid))
    assert stored.dtype == np.float64
    np.testing.assert_allclose(stored, poses)
    assert result.info["backend"] == "import"


def test_import_rejects_bad_matrices(tmp_path):
    poses = np.repeat(np.eye(4)[None], 3, 0)
    bad_rot = poses.copy()
    bad_rot[1, :3, :3] *= 2.0
    path = tmp_path / "poses_in_cam.pkl"
    fileio.write_pickle(path, bad_rot)
    with pytest.raises(StageInputError, match=r"poses_in_cam\.pkl: rotation of frame 1 is not orthonormal"):
        import_poses(path)
    nan = poses.copy()
    nan[2, 0, 3] = np.nan
    fileio.write_pickle(path, nan)
    with pytest.raises(StageInputError, match="frame 2 is not finite"):
        import_poses(path)
    fileio.write_pickle(path, np.zeros((3, 3, 3)))
    with pytest.raises(StageInputError, match=r"shape \(T,4,4\)"):
        import_poses(path)
    txt_dir = tmp_path / "txt"
    txt_dir.mkdir()
    np.savetxt(txt_dir / "000000.txt", np.eye(4))
    (txt_dir / "000001.txt").write_text("1 2 3\n")
    with pytest.raises(StageInputError, match="000001.txt: expected a 4x4 matrix"):
        import_poses(txt_dir)


def test_import_frame_count_must_match_video(scene, tmp_path):
    layout, vid, truth = _copy(scene, tmp_path)
    source = tmp_path / "short.pkl"
    fileio.write_pickle(source, truth.object_poses_cam[:4])
    config = {"object_pose": {"backend": "import", "import_dir": str(source)}}
    with pytest.raises(StageInputError, match=f"4 poses but the video has {NUM_FRAMES} frames"):
        object_pose.run(StageContext(video=vid, layout=layout, config=config))


# ---- bad input ------------------------------------------------------------------------------------
def _expect_error_keeps_cache(layout, vid, match: str, **ctx_args) -> None:
    path = layout.object_poses(vid)
    fileio.write_bytes(path, b"previous poses")
    with pytest.raises(StageInputError, match=match):
        object_pose.run(StageContext(video=vid, layout=layout, config={}, **ctx_args))
    assert path.read_bytes() == b"previous poses"


def test_mesh_without_faces(scene, tmp_path):
    layout, vid, _ = _copy(scene, tmp_path)
    layout.mesh(vid).write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    _expect_error_keeps_cache(layout, vid, r"clip0\.obj: object mesh has no faces")


def test_mesh_with_nan_vertices(scene, tmp_path):
    layout, vid, _ = _copy(scene, tmp_path)
    layout.mesh(vid).write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    _expect_error_keeps_cache(layout, vid, r"clip0\.obj: object mesh has non-finite")


def test_nan_in_depth_cache(scene, tmp_path):
    layout, vid, _ = _copy(scene, tmp_path)
    depth = torch.load(layout.depth_cache(vid), weights_only=True)
    depth[3][10, 10] = float("nan")
    fileio.write_torch(layout.depth_cache(vid), depth)
    _expect_error_keeps_cache(layout, vid, r"depth/synth/box/clip0\.pt: depth cache holds NaN")


def test_masks_cache_wrong_size_or_missing(scene, tmp_path):
    layout, vid, truth = _copy(scene, tmp_path)
    small = np.zeros((NUM_FRAMES, 120, 160), dtype=bool)
    fileio.write_npz(layout.masks_cache(vid), masks=masks_payload(small, small))
    _expect_error_keeps_cache(layout, vid, r"masks/synth/box/clip0\.npz: frame 0 masks have shape \(120, 160\)")
    layout.masks_cache(vid).unlink()
    _expect_error_keeps_cache(layout, vid, "masks cache not found")


def test_empty_object_mask_at_frame0(scene, tmp_path):
    layout, vid, truth = _copy(scene, tmp_path)
    object_masks = truth.object_masks.copy()
    object_masks[0] = False
    fileio.write_npz(layout.masks_cache(vid), masks=masks_payload(object_masks, truth.human_masks))
    _expect_error_keeps_cache(layout, vid, "object mask of frame 0 is empty")


def test_corrupt_masks_cache(scene, tmp_path):
    layout, vid, _ = _copy(scene, tmp_path)
    fileio.write_bytes(layout.masks_cache(vid), pickle.dumps("not an npz"))
    _expect_error_keeps_cache(layout, vid, "not a masks cache")


# ---- the held-frame depth prior from stage 1's hands ------------------------------------------------
def _write_stage1_hands(layout, vid, truth, value: float | None = None) -> None:
    """A stage-1 result whose right hand (18 cm, fingers down) holds the object; ``value`` fills it."""
    from reconstruction import keypoints as kp

    keypoints = np.zeros((NUM_FRAMES, kp.NUM_BODY + 2 * kp.NUM_HAND, 3))
    keypoints[..., 2] = 5.0
    hand = np.zeros((kp.NUM_HAND, 3))
    hand[:, 1] = np.linspace(0.0, 0.18, kp.NUM_HAND)
    keypoints[:, kp.RIGHT_HAND_SLICE] = truth.object_poses_cam[:, None, :3, 3] + hand
    if value is not None:
        keypoints[NUM_FRAMES // 2, kp.RIGHT_HAND_SLICE] = value
    fileio.write_torch(layout.hmr_result(vid), _stage1_result(torch.as_tensor(keypoints)))


def _stage1_result(keypoints_3d_cam: torch.Tensor) -> dict:
    """A stage-1 result in the contract's layout (``human_pose.load_hmr_result`` validates it)."""
    motion = {"pose_aa": torch.zeros(NUM_FRAMES, 1, 3), "shape": torch.zeros(10), "trans": torch.zeros(NUM_FRAMES, 3)}
    return {"body_model": "anny", "motion_incam": motion, "motion_global": dict(motion),
            "keypoints_3d_cam": keypoints_3d_cam}  # fmt: skip


def test_held_depth_prior_follows_the_holding_hand(scene, tmp_path):
    layout, vid, truth = _copy(scene, tmp_path)
    result = object_pose.run(StageContext(video=vid, layout=layout, config={}))
    assert result.info["held_depth_prior_hands"] == "no stage-1 result"
    _write_stage1_hands(layout, vid, truth)
    result = object_pose.run(StageContext(video=vid, layout=layout, config={}))
    assert result.info["held_depth_prior_hands"] == ["right"]
    trans_err, _ = pose_errors(load_pickle(layout.object_poses(vid)), truth.object_poses_cam)
    assert np.median(trans_err) < 0.02, trans_err
    # This stage-1 hand's keypoints lie on a line (no palm): no rotation prior from it.
    assert result.info["held_rotation_prior_hands"] == []
    off = {"object_pose": {"mesh_tracker": {"hand_depth_prior": False, "hand_rotation_prior": False}}}
    assert "held_depth_prior_hands" not in object_pose.run(StageContext(video=vid, layout=layout, config=off)).info


def test_nan_in_stage1_hands(scene, tmp_path):
    layout, vid, truth = _copy(scene, tmp_path)
    _write_stage1_hands(layout, vid, truth, value=float("nan"))
    _expect_error_keeps_cache(layout, vid, r"hmr_results\.pt: keypoints_3d_cam holds NaN or infinite values")
    fileio.write_torch(layout.hmr_result(vid), _stage1_result(torch.zeros(NUM_FRAMES, 33, 3)))
    _expect_error_keeps_cache(layout, vid, r"keypoints_3d_cam \(\d+, 33, 3\) is not a finite \(\d+, 75, 3\) array")
    fileio.write_bytes(layout.hmr_result(vid), b"not a torch file")
    _expect_error_keeps_cache(layout, vid, r"hmr_results\.pt: not a readable stage-1 result")
