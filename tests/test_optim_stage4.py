"""Stage 4 end to end on constructed stage 1-3 caches: outputs in the contract's schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconstruction.config import load_config
from reconstruction.render_config import load_pickle
from reconstruction.stages import optimize
from reconstruction.stages.base import StageContext, StageInputError

from .optim_scene import write_scene_caches


@pytest.fixture(scope="module")
def body():
    from reconstruction.body import load_body_model

    return load_body_model("anny")


def _quick_config():
    return load_config().merge(
        {
            "optimization": {
                "opt_stage_specs": {"init_opt": {"niter": 30}, "contact_opt": {"niter": 10}, "refine_opt": {"niter": 5}}
            }
        }
    )


def test_stage4_writes_hoi_data_history_and_contact_labels(tmp_path, body):
    layout, vid, gt, _ = write_scene_caches(tmp_path, body, num_frames=10)
    progress = []
    ctx = StageContext(video=vid, layout=layout, config=_quick_config(), progress=lambda f, m: progress.append(f))
    result = optimize.run(ctx)
    assert optimize.NUMBER == 4 and optimize.NAME == "optimize"
    assert layout.raw_hoi_data(vid) in result.files
    hoi = load_pickle(layout.raw_hoi_data(vid))
    assert set(hoi) >= {"human_data", "obj_data", "meta", "eval_data"}
    human, obj, meta = hoi["human_data"], hoi["obj_data"], hoi["meta"]
    T = 10
    assert human["poses"].shape == (T, body.num_joints * 3)
    assert human["trans"].shape == (T, 3)
    assert human["left_hand_pose"].shape == (T, 45)  # contract: 15 MANO-order joints
    assert human["body_model"] == "anny" and human["betas"].shape == (6,)
    assert obj["obj_R"].shape == (T, 3, 3) and obj["obj_t"].shape == (T, 3)
    assert obj["obj_R_cam"].shape == (T, 3, 3) and obj["obj_t_cam"].shape == (T, 3)
    assert np.allclose(np.linalg.det(obj["obj_R"]), 1.0, atol=1e-4)  # smoothing keeps rotations proper
    assert meta["contact_frames"].shape == (T, 2) and meta["contact_frames"].dtype == bool
    assert meta["contact_hand"] == "right" and meta["contact_frames"][:, 1].any()
    assert not meta["contact_frames"][:, 0].any()
    assert 0 <= meta["inter_start_idx"] <= meta["inter_end_idx"] < T
    assert meta["obj_path"].endswith(".obj") and meta["masks_cache_file"].endswith(".npz")
    assert meta["render_config_file"].endswith("first_frame_pose.pickle")
    assert "opt_stage_specs" in meta["optimization_config"]
    assert set(hoi["eval_data"]) == {"keypoint_tracking", "contact", "penetration"}
    history = json.loads(layout.loss_history(vid).read_text())
    assert [s["name"] for s in history["stages"]] == ["init_opt", "contact_opt", "refine_opt"]
    assert len(history["stages"][0]["terms"]["keypoint_tracking"]) == 30
    labels = json.loads(layout.contact_labels(vid).read_text())
    assert labels["intervals"] and labels["intervals"][0]["hand"] == "right"
    assert progress and progress[-1] == 1.0
    # the optimised body matches the 2D keypoints much better than stage 1's perturbed one (eval 47)
    assert hoi["eval_data"]["keypoint_tracking"] < 0.2 * 47.0
    assert not layout.metrics(vid).exists()  # no ground truth for this constructed scene


def test_savgol_smoothing_removes_jitter():
    t = np.linspace(0, 1, 30)
    clean = np.stack([t, t**2, np.sin(t)], -1)
    noisy = clean + 0.01 * np.random.default_rng(0).standard_normal(clean.shape)
    smooth = optimize.savgol(noisy, 11, 2)
    assert np.abs(smooth - clean).mean() < 0.6 * np.abs(noisy - clean).mean()
    assert optimize.savgol(noisy[:2], 11, 2).shape == (2, 3)  # too short to filter: unchanged


def test_missing_cache_is_a_clear_error(tmp_path, body):
    layout, vid, _, _ = write_scene_caches(tmp_path, body, num_frames=6)
    layout.object_poses(vid).unlink()
    ctx = StageContext(video=vid, layout=layout, config=_quick_config())
    with pytest.raises(StageInputError, match="poses_in_cam.pkl"):
        optimize.run(ctx)
    assert not layout.raw_hoi_data(vid).exists()
