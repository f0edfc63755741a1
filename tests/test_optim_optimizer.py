"""The multi-stage optimiser on a constructed anny + box scene (real body model, few iterations)."""

from __future__ import annotations

import copy

import pytest
import torch

from reconstruction.config import load_config
from reconstruction.optim.optimizer import HOIOptimizer, OptimizerInputError

from .optim_scene import make_scene


@pytest.fixture(scope="module")
def body():
    from reconstruction.body import load_body_model

    return load_body_model("anny")


def _config(init_iters: int = 40, contact_iters: int = 20, refine_iters: int = 10):
    stages = {"init_opt": init_iters, "contact_opt": contact_iters, "refine_opt": refine_iters}
    return load_config().merge({"optimization": {"opt_stage_specs": {k: {"niter": n} for k, n in stages.items()}}})


def _keypoint_error(body, pose, trans, gt) -> float:
    with torch.no_grad():
        kp = body.forward(pose, gt["shape"], trans).keypoints
    return float((kp[:, :33] - gt["keypoints_world"][:, :33]).norm(dim=-1).mean())


def test_stages_reduce_their_loss_and_record_history(body):
    gt, video = make_scene(body, 8)
    config = _config(30, 15)
    result = HOIOptimizer(body, config.optimization).run([video], eval_cfg=config.eval_metrics)[0]
    stages = result.history["stages"]
    assert [s["name"] for s in stages] == ["init_opt", "contact_opt", "refine_opt"]
    for stage in stages:
        assert len(stage["total"]) == stage["niter"]
        assert stage["total"][-1] < stage["total"][0], stage["name"]
        for term, values in stage["terms"].items():
            assert len(values) == stage["niter"], term
    init_terms = stages[0]["terms"]
    # init_opt moves the body (not its pose: stage 1 fitted that) onto the keypoints; the contact stages refine
    assert init_terms["keypoint_tracking"][-1] < 0.7 * init_terms["keypoint_tracking"][0]
    assert stages[-1]["terms"]["keypoint_tracking"][-1] < 0.5 * init_terms["keypoint_tracking"][0]
    assert set(result.eval_data) == {"keypoint_tracking", "contact", "penetration"}
    assert result.body_pose.shape == video.body_pose.shape
    assert result.obj_pose_cam.shape == (8, 4, 4)


def test_result_is_closer_to_ground_truth_than_its_init(body):
    gt, video = make_scene(body, 10)
    # stage 3 jitter on top of the scene's constant offset: smoothness and contact reduce it
    generator = torch.Generator().manual_seed(1)
    video.object_poses_cam = video.object_poses_cam.clone()
    # (depth is what a silhouette tracker gets wrong; its 2D track is held by verts_tracking)
    video.object_poses_cam[:, 2, 3] += 0.03 * torch.randn(10, generator=generator)
    before_body = _keypoint_error(body, video.body_pose, video.body_trans, gt)
    c2w = torch.linalg.inv(video.world_to_cam)

    def jitter_error(obj_t: torch.Tensor) -> float:
        # error after removing the constant offset: the frame-to-frame noise of the trajectory
        error = obj_t - gt["obj_world"][:, :3, 3]
        return float((error - error.mean(0)).norm(dim=-1).mean())

    before_obj = jitter_error((c2w @ video.object_poses_cam)[:, :3, 3])
    result = HOIOptimizer(body, _config(60, 20).optimization).run([video])[0]
    after_body = _keypoint_error(body, result.body_pose, result.body_trans, gt)
    after_obj = jitter_error(result.obj_t)
    assert after_body < 0.6 * before_body, (before_body, after_body)
    assert after_obj < 0.9 * before_obj, (before_obj, after_obj)


def test_batched_videos_give_the_same_result_as_one_by_one(body):
    _, first = make_scene(body, 6, name="Synthetic/box/a")
    _, second = make_scene(body, 6, name="Synthetic/box/b")
    second.body_trans = second.body_trans + torch.tensor([0.02, 0.0, 0.0])
    config = _config(10, 5).optimization
    optimizer = HOIOptimizer(body, config)
    batched = optimizer.run([copy.copy(first), copy.copy(second)])
    alone = [optimizer.run([copy.copy(v)])[0] for v in (first, second)]
    for together, single in zip(batched, alone, strict=True):
        assert together.name == single.name
        assert torch.allclose(together.body_trans, single.body_trans, atol=1e-4)
        assert torch.allclose(together.obj_t, single.obj_t, atol=1e-4)
    assert batched[0].history["batch_size"] == 2


def test_only_listed_variables_move_and_xy_only(body):
    _, video = make_scene(body, 6)
    stage = {
        "opt_vars": {"human_trans_global": {"lr": 0.01, "xy_only": True}},
        "niter": 10,
        "loss_cfg": {"keypoint_tracking": {"weight": 1.0}, "verts_tracking": {"weight": 1.0}},
    }
    raw = load_config().raw
    raw["optimization"]["opt_stage_specs"] = {"only_global": stage}
    result = HOIOptimizer(body, load_config(raw).optimization).run([video])[0]
    assert torch.equal(result.body_pose, video.body_pose)  # no pose residual in this stage
    offset = result.body_trans - video.body_trans
    assert torch.allclose(offset, offset[:1].expand_as(offset), atol=1e-6)  # one global offset
    assert offset[0, :2].abs().max() > 1e-3 and offset[0, 2].abs() < 1e-7  # xy only
    c2w = torch.linalg.inv(video.world_to_cam)
    assert torch.allclose(result.obj_t, (c2w @ video.object_poses_cam)[:, :3, 3], atol=1e-5)


def test_videos_of_different_length_cannot_share_a_batch(body):
    _, short = make_scene(body, 6)
    _, long = make_scene(body, 8)
    with pytest.raises(OptimizerInputError, match="same length"):
        HOIOptimizer(body, _config(1, 1).optimization).run([short, long])
