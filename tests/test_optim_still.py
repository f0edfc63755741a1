"""obj_still_reg (issue #5): frames where stage 3 sees the object still hold it in stage 4, so a hand that
touches an object without lifting it does not drag it (stage 5's filter_object_motion then sees it static);
a carried object stays free."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reconstruction.config import load_config
from reconstruction.optim.optimizer import HOIOptimizer, _Batch
from reconstruction.render_config import load_pickle
from reconstruction.stages import filtering, optimize
from reconstruction.stages.base import StageContext

from .optim_scene import make_scene, write_scene_caches


@pytest.fixture(scope="module")
def body():
    from reconstruction.body import load_body_model

    return load_body_model("anny")


def _config(still_weight: float | None = None, init_iters: int = 100, contact_iters: int = 60):
    stages = {"init_opt": {"niter": init_iters}, "contact_opt": {"niter": contact_iters}}
    if still_weight is not None:
        for spec in stages.values():
            spec["loss_cfg"] = {"obj_still_reg": {"weight": still_weight}}
    return load_config().merge({"optimization": {"opt_stage_specs": stages}})


def test_still_frames_are_the_start_before_the_first_move_and_the_end_after_the_last(body):
    _, video = make_scene(body, 8)
    config = load_config().optimization
    device = torch.device("cpu")
    # still start 0-1, carried 2-3, a pause while held (4), carried 5, put down 6-7
    video.object_moving = torch.tensor([False, False, True, True, False, True, False, False])
    batch = _Batch([video], body, config, device)
    assert batch.still_start[0].tolist() == [True, True] + [False] * 6
    assert batch.object_still[0].tolist() == [True, True, False, False, False, False, True, True]
    assert "obj_still_reg" not in batch.inactive_terms
    video.object_moving = torch.zeros(8, dtype=torch.bool)  # never moves: the whole clip is its still start
    batch = _Batch([video], body, config, device)
    assert batch.still_start.all() and batch.object_still.all()
    video.object_moving = None  # unknown: nothing is held, and the history says why
    batch = _Batch([video], body, config, device)
    assert not batch.object_still.any() and "obj_still_reg" in batch.inactive_terms


def test_touched_static_object_stays_within_object_static_thr_and_is_filtered_out(tmp_path, body):
    """The constructed static scene: the right hand reaches the box, which never moves; stage 3 is 2.2 cm
    off (constant). Without obj_still_reg the contact term drags the box after the first contact frame."""
    threshold = load_config().filtering.object_static_thr
    extents = {}
    for weight in (0.0, None):  # None: the default config's weight
        layout, vid, _, _ = write_scene_caches(tmp_path / str(weight), body, num_frames=10, variant="static_object")
        optimize.run(StageContext(video=vid, layout=layout, config=_config(weight)))
        labels = json.loads(layout.contact_labels(vid).read_text())
        assert not any(labels["object_moving"]) and any(map(any, labels["frames"])), "touched, never moved"
        obj_t = load_pickle(layout.raw_hoi_data(vid))["obj_data"]["obj_t"]
        extents[weight] = float(np.linalg.norm(obj_t.max(0) - obj_t.min(0)))
    # the drag this term is there to stop was 1.2-1.7 cm on the synthetic static_object videos; on this small
    # scene the smoothness terms of the default config already hold the box to a few mm without it
    assert extents[None] <= extents[0.0] + 1e-3, extents
    assert extents[None] < 0.25 * threshold, extents
    filtering.run(StageContext(video=vid, layout=layout, config=load_config()))
    checks = {c["name"]: c for c in json.loads(layout.filter_report(vid).read_text())["checks"]}
    motion = checks["filter_object_motion"]
    assert motion["verdict"] == "fail" and motion["data"]["state"] == "static", motion


def test_carried_object_stays_free_and_its_still_start_rests_where_the_render_put_it(body):
    gt, video = make_scene(body, 10)  # the box rests until contact_from, then moves with the hand
    contact_from = gt["contact_from"]
    video.object_moving = torch.arange(10) >= contact_from
    video.object_pose_first_world = gt["obj_world"][0]
    c2w = torch.linalg.inv(video.world_to_cam)
    truth = gt["obj_world"][:, :3, 3]
    init_error = ((c2w @ video.object_poses_cam)[:, :3, 3] - truth).norm(dim=-1)
    results = {
        weight: HOIOptimizer(body, _config(weight, 60, 40).optimization).run([video])[0] for weight in (0.0, None)
    }
    free, held = results[0.0], results[None]
    error = (held.obj_t - truth).norm(dim=-1)
    # still start: near the known resting pose (stage 3 was 6-7 cm off there; verts_tracking still pulls a few
    # mm towards stage 3's projection)
    assert error[:contact_from].max() < 0.01 and init_error[:contact_from].min() > 0.05, (error, init_error)
    # carried frames: as good as without the term (mean error within 5 mm), and the object travels with the hand
    carried = slice(contact_from, None)
    free_error = (free.obj_t - truth).norm(dim=-1)
    assert error[carried].mean() < free_error[carried].mean() + 0.005, (error, free_error)
    travel = lambda t: float((t.max(0).values - t.min(0).values).norm())  # noqa: E731
    assert travel(held.obj_t) > 0.5 * travel(truth) > load_config().filtering.object_static_thr
