"""Stage 1 without the body model: the import backend's validation, bad input, and hand assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reconstruction import fileio
from reconstruction.backends.mediapipe_pose import LABEL_TO_SIDE, assign_hands
from reconstruction.keypoints import NUM_BODY, index
from reconstruction.layout import Layout, VideoId
from reconstruction.stages import human_pose
from reconstruction.stages.base import StageContext, StageInputError

VID = VideoId.parse("synth/manip/v0")


def _context(tmp_path, backend: str | None) -> StageContext:
    config = {"human_pose": {"backend": backend}} if backend else {}
    return StageContext(video=VID, layout=Layout.create(tmp_path), config=config)


def _write_caches(layout: Layout, num_frames: int = 5, poison: str | None = None) -> None:
    motion = {
        "pose_aa": torch.zeros(num_frames, 104, 3),
        "shape": torch.full((6,), 0.5),
        "trans": torch.zeros(num_frames, 3),
    }
    result = {
        "body_model": "anny",
        "motion_incam": {k: v.clone() for k, v in motion.items()},
        "motion_global": {k: v.clone() for k, v in motion.items()},
        "predicted_body_height": 1.7,
        "keypoints_3d_cam": torch.zeros(num_frames, 75, 3),
    }
    keypoints = np.zeros((num_frames, 75, 3), dtype=np.float32)
    if poison == "motion":
        result["motion_incam"]["trans"][2, 1] = float("nan")
    if poison == "keypoints":
        keypoints[1, 40, 0] = np.nan
    fileio.write_torch(layout.hmr_result(VID), result)
    fileio.write_npz(layout.hmr_keypoints(VID), keypoints_2d=keypoints, image_size=np.array([240, 320]))


def test_import_backend_keeps_valid_caches(tmp_path):
    ctx = _context(tmp_path, "import")
    _write_caches(ctx.layout)
    before = ctx.layout.hmr_result(VID).read_bytes()
    result = human_pose.run(ctx)
    assert result.files == [ctx.layout.hmr_result(VID), ctx.layout.hmr_keypoints(VID)]
    assert result.metrics["frames"] == 5
    assert result.info["backend"] == "import"
    assert ctx.layout.hmr_result(VID).read_bytes() == before


@pytest.mark.parametrize("poison", ["motion", "keypoints"])
def test_import_backend_rejects_nan_and_keeps_files(tmp_path, poison):
    ctx = _context(tmp_path, "import")
    _write_caches(ctx.layout, poison=poison)
    stored = {p: p.read_bytes() for p in (ctx.layout.hmr_result(VID), ctx.layout.hmr_keypoints(VID))}
    bad = ctx.layout.hmr_result(VID) if poison == "motion" else ctx.layout.hmr_keypoints(VID)
    with pytest.raises(StageInputError, match="NaN") as info:
        human_pose.run(ctx)
    assert str(bad) in str(info.value)
    assert {p: p.read_bytes() for p in stored} == stored


def test_import_backend_rejects_frame_count_mismatch(tmp_path):
    ctx = _context(tmp_path, "import")
    _write_caches(ctx.layout, num_frames=5)
    fileio.write_npz(ctx.layout.hmr_keypoints(VID), keypoints_2d=np.zeros((4, 75, 3)), image_size=np.array([240, 320]))
    with pytest.raises(StageInputError, match="4 frames"):
        human_pose.run(ctx)


def test_import_backend_missing_cache_names_it(tmp_path):
    ctx = _context(tmp_path, "import")
    with pytest.raises(StageInputError, match="hmr_results.pt"):
        human_pose.run(ctx)


def test_missing_video_names_the_path(tmp_path):
    ctx = _context(tmp_path, None)
    with pytest.raises(StageInputError, match="input video not found") as info:
        human_pose.run(ctx)
    assert str(ctx.layout.video(VID)) in str(info.value)
    assert not ctx.layout.hmr_result(VID).exists()


def test_unknown_backend_and_fit_setting_are_named(tmp_path):
    with pytest.raises(StageInputError, match="human_pose.backend"):
        human_pose.run(_context(tmp_path, "gem"))
    ctx = StageContext(video=VID, layout=Layout.create(tmp_path), config={"human_pose": {"fit": {"iters": 3}}})
    with pytest.raises(StageInputError, match="human_pose.fit setting.*iters"):
        human_pose.run(ctx)


def _body_with_wrists(left_xy, right_xy, visibility=1.0) -> np.ndarray:
    body = np.zeros((NUM_BODY, 3), dtype=np.float32)
    body[index("left_wrist")] = (*left_xy, visibility)
    body[index("right_wrist")] = (*right_xy, visibility)
    body[index("left_elbow")] = (left_xy[0], left_xy[1] - 40, visibility)
    body[index("right_elbow")] = (right_xy[0], right_xy[1] - 40, visibility)
    return body


def _hand(wrist_xy, label_side: str, score: float = 0.9):
    hand = np.zeros((21, 3), dtype=np.float32)
    hand[:, :2] = np.asarray(wrist_xy) + np.arange(21)[:, None] * 0.5
    hand[:, 2] = score
    return hand, label_side, score


def test_mediapipe_labels_are_unmirrored():
    # MediaPipe assumes a selfie (mirrored) image: its "Left" is the person's right hand on camera footage.
    assert LABEL_TO_SIDE == {"Left": "right", "Right": "left"}


def test_hands_follow_pose_wrists_not_labels():
    body = _body_with_wrists(left_xy=(400, 200), right_xy=(200, 210))
    # Both hands carry the wrong label: the pose wrists must win.
    near_left, near_right = _hand((402, 203), "right"), _hand((197, 212), "left")
    left, right = assign_hands([near_right, near_left], body, 1.0, (480, 640))
    assert np.allclose(left[0, :2], (402, 203)) and np.allclose(right[0, :2], (197, 212))
    # One hand only: it goes to the nearer wrist.
    left, right = assign_hands([_hand((198, 209), "left")], body, 1.0, (480, 640))
    assert left is None and np.allclose(right[0, :2], (198, 209))
    # A hand far from both wrists is a false detection.
    left, right = assign_hands([_hand((600, 40), "left")], body, 1.0, (480, 640))
    assert left is None and right is None


def test_hands_fall_back_to_labels_without_pose():
    body = _body_with_wrists((0, 0), (0, 0), visibility=0.0)
    left, right = assign_hands([_hand((100, 100), "left", 0.9), _hand((300, 100), "right", 0.8)], body, 1.0, (480, 640))
    assert np.allclose(left[0, :2], (100, 100)) and np.allclose(right[0, :2], (300, 100))


def test_import_dir_copies_validated_caches(tmp_path):
    source = Layout.create(tmp_path / "grail_results")
    _write_caches(source)
    ctx = StageContext(
        video=VID,
        layout=Layout.create(tmp_path / "ours"),
        config={"human_pose": {"backend": "import", "import_dir": str(tmp_path / "grail_results")}},
    )
    human_pose.run(ctx)
    assert ctx.layout.hmr_result(VID).read_bytes() == source.hmr_result(VID).read_bytes()
    assert ctx.layout.hmr_keypoints(VID).read_bytes() == source.hmr_keypoints(VID).read_bytes()


def test_model_complexity_that_needs_a_download_is_refused(tmp_path):
    ctx = StageContext(video=VID, layout=Layout.create(tmp_path), config={"human_pose": {"model_complexity": 2}})
    with pytest.raises(StageInputError, match="human_pose.model_complexity"):
        human_pose.run(ctx)
