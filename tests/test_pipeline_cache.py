"""Manifests, --skip_done invalidation, rollback, cancellation, skip flags and batching of the pipeline,
with the light stages of ``pipeline_light_stages`` (milliseconds per stage)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from reconstruction import fileio, pipeline
from reconstruction.config import load_config
from reconstruction.layout import VideoId
from reconstruction.stages.base import StageCancelled, StageInputError, StageResult
from tests import pipeline_light_stages as light
from tests.pipeline_helpers import make_results_dir, manifests, output_mtimes, statuses
from tests.pipeline_light_stages import light_stages  # noqa: F401 (autouse fixture)

VID = VideoId.parse("synth/box/v0")


@pytest.fixture
def config():
    return load_config(None)


def ran(tmp_path: Path) -> list[str]:
    """Stage runs recorded by the light stages since the last call (then cleared)."""
    log = tmp_path / "stage_log.txt"
    lines = log.read_text().split("\n") if log.exists() else []
    log.unlink(missing_ok=True)
    return [line for line in lines if line]


def test_manifest_records_inputs_config_outputs(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    outcomes = pipeline.run_video(VID, config, layout.results_dir)
    assert statuses(outcomes) == {s: "done" for s in range(1, 7)}
    found = manifests(layout, VID)
    assert sorted(found) == [1, 2, 3, 4, 5, 6]
    m4 = found[4]
    assert m4["video_id"] == str(VID) and m4["stage"] == 4 and m4["name"] == "optimize"
    assert m4["device"] == "cpu" and m4["seconds"] >= 0 and m4["packages"]["torch"]
    # inputs: the video, stage 1-3 outputs (by content), optional render inputs recorded as absent
    video_rel = "generation/videos_kling/synth/box/v0.mp4"
    assert m4["inputs"][video_rel] == hashlib.sha256(layout.video(VID).read_bytes()).hexdigest()
    for path in (layout.hmr_result(VID), layout.masks_cache(VID), layout.object_poses(VID)):
        rel = path.relative_to(layout.results_dir).as_posix()
        assert m4["inputs"][rel] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m4["inputs"][layout.render_config(VID).relative_to(layout.results_dir).as_posix()] is None
    # config: exactly the sections stage 4 depends on, minus visualisation and thresholds
    assert set(m4["config"]) == {"optimization", "human_model", "post_processing", "eval", "camera_mode",
                                 "is_static_obj"}  # fmt: skip
    assert "vis_cfg" not in m4["config"]["optimization"]
    assert all("threshold" not in v for v in m4["config"]["optimization"]["eval"].values())
    assert found[5]["config"]["optimization.eval"]["contact"]["threshold"] == 5.0
    assert set(found[2]["config"]) == {"preprocess", "depth", "geometry_backend"}
    # outputs with their hashes
    for rel, digest in m4["outputs"].items():
        assert hashlib.sha256((layout.results_dir / rel).read_bytes()).hexdigest() == digest
    assert set(m4["outputs"]) == {
        layout.raw_hoi_data(VID).relative_to(layout.results_dir).as_posix(),
        layout.loss_history(VID).relative_to(layout.results_dir).as_posix(),
    }


def test_skip_done_does_no_work(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir)
    ran(tmp_path)
    before = output_mtimes(layout, VID)
    manifest_bytes = {s: layout.manifest(VID, s).read_bytes() for s in range(1, 7)}
    outcomes = pipeline.run_video(VID, config, layout.results_dir, skip_done=True)
    assert statuses(outcomes) == {s: "reused" for s in range(1, 7)}
    assert ran(tmp_path) == []  # no stage function was called
    assert output_mtimes(layout, VID) == before  # nothing rewritten, manifests included
    assert {s: layout.manifest(VID, s).read_bytes() for s in range(1, 7)} == manifest_bytes
    assert all(o.result.info["original_seconds"] is not None for o in outcomes)


def test_stage4_weight_change_reruns_exactly_4_to_6(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir)
    changed = config.merge(
        {"optimization": {"opt_stage_specs": {"init_opt": {"loss_cfg": {"keypoint_tracking": {"weight": 0.5}}}}}}
    )
    ran(tmp_path)
    outcomes = pipeline.run_video(VID, changed, layout.results_dir, skip_done=True)
    assert statuses(outcomes) == {1: "reused", 2: "reused", 3: "reused", 4: "done", 5: "done", 6: "done"}
    assert ran(tmp_path) == [f"{s} {VID}" for s in (4, 5, 6)]
    # and with the changed config everything is now up to date
    again = pipeline.run_video(VID, changed, layout.results_dir, skip_done=True)
    assert set(statuses(again).values()) == {"reused"}


def test_stage2_setting_reruns_2_to_6(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir)
    changed = config.merge({"depth": {"min_valid_pixels": 50}})
    outcomes = pipeline.run_video(VID, changed, layout.results_dir, skip_done=True)
    assert statuses(outcomes) == {1: "reused", 2: "done", 3: "done", 4: "done", 5: "done", 6: "done"}


def test_visualisation_setting_reruns_only_6_and_threshold_only_5(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir)
    vis = config.merge({"optimization": {"vis_cfg": {"vis_contact": False}}})
    assert statuses(pipeline.run_video(VID, vis, layout.results_dir, skip_done=True)) == {
        1: "reused", 2: "reused", 3: "reused", 4: "reused", 5: "reused", 6: "done"
    }  # fmt: skip
    threshold = vis.merge({"optimization": {"eval": {"contact": {"threshold": 4.0}}}})
    result = statuses(pipeline.run_video(VID, threshold, layout.results_dir, skip_done=True))
    assert result[4] == "reused" and result[5] == "done"
    # the light stage 5 reads only ``filtering``, so its output is unchanged and stage 6 is reused
    assert result[6] == "reused"


def test_changed_video_invalidates_everything(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir)
    video = layout.video(VID)
    video.write_bytes(video.read_bytes()[:-1] + b"\x00")
    outcomes = pipeline.run_video(VID, config, layout.results_dir, skip_done=True)
    assert statuses(outcomes) == {s: "done" for s in range(1, 7)}


def test_tampered_or_missing_output_reruns_that_stage(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir)
    layout.object_poses(VID).write_bytes(b"edited by hand")
    outcomes = statuses(pipeline.run_video(VID, config, layout.results_dir, skip_done=True))
    # stage 3 reruns and restores the same bytes, so 4-6 stay valid
    assert outcomes == {1: "reused", 2: "reused", 3: "done", 4: "reused", 5: "reused", 6: "reused"}
    layout.loss_history(VID).unlink()
    outcomes = statuses(pipeline.run_video(VID, config, layout.results_dir, skip_done=True))
    assert outcomes[4] == "done" and outcomes[3] == "reused"


def test_stage_failure_rolls_back_and_other_videos_continue(tmp_path, config, monkeypatch):
    ids = ["synth/box/v0", "synth/box/v1"]
    layout = make_results_dir(tmp_path / "res", ids)
    pipeline.run_videos(ids, config, layout.results_dir)
    bad = VideoId.parse(ids[0])
    old_hoi = layout.raw_hoi_data(bad).read_bytes()
    monkeypatch.setenv("LIGHT_STAGE_FAIL_4", ids[0])
    changed = config.merge({"optimization": {"seed": 3}})
    outcomes = pipeline.run_videos(ids, changed, layout.results_dir, skip_done=True)
    by_video = {(str(o.video), o.stage): o.status for o in outcomes}
    assert by_video[(ids[0], 4)] == "failed" and (ids[0], 5) not in by_video
    assert [by_video[(ids[1], s)] for s in (4, 5, 6)] == ["done", "done", "done"]
    failed = next(o for o in outcomes if o.status == "failed")
    assert "told to fail" in failed.error
    assert not layout.manifest(bad, 4).exists()  # removed before the attempt; never rewritten
    assert layout.raw_hoi_data(bad).read_bytes() == old_hoi  # untouched by the failed attempt
    # the next run must redo stage 4 (no trusted manifest) once the failure is gone
    monkeypatch.delenv("LIGHT_STAGE_FAIL_4")
    again = statuses(pipeline.run_video(bad, changed, layout.results_dir, skip_done=True))
    assert again[4] == "done" and again[3] == "reused"


def test_cancellation_leaves_no_partial_output(tmp_path, config, monkeypatch):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    for stage in (1, 2, 3):
        pipeline.run_stage(VID, stage, config, layout.results_dir)
    monkeypatch.setenv("LIGHT_STAGE_SLEEP_4", "0.5")
    seen: list[float] = []
    with pytest.raises(StageCancelled):
        pipeline.run_stage(VID, 4, config, layout.results_dir, progress=lambda f, m: seen.append(f),
                           should_cancel=lambda: len(seen) > 5)  # fmt: skip
    assert len(seen) > 5 and all(0.0 <= f <= 1.0 for f in seen)
    assert not layout.manifest(VID, 4).exists()
    # the stage had written hoi_data.pkl before it was cancelled: rolled back
    assert not layout.raw_hoi_data(VID).exists() and not layout.loss_history(VID).exists()
    assert not list(layout.output(VID).rglob("*.tmp-*"))


def test_cancel_before_start_runs_nothing(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    with pytest.raises(StageCancelled):
        pipeline.run_stage(VID, 1, config, layout.results_dir, should_cancel=lambda: True)
    assert ran(tmp_path) == [] and not layout.hmr_result(VID).exists()


def test_missing_upstream_output_is_a_clear_input_error(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    with pytest.raises(StageInputError, match=r"stage 4 \(optimize\) needs .*hmr_results.pt from stage 1"):
        pipeline.run_stage(VID, 4, config, layout.results_dir)
    with pytest.raises(StageInputError, match="input video not found"):
        pipeline.run_stage("synth/box/absent", 1, config, layout.results_dir)


def test_skipped_stage_with_missing_outputs_is_reported(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    outcomes = pipeline.run_video(VID, config, layout.results_dir, skip_steps={1, 2, 3})
    assert [(o.stage, o.status) for o in outcomes] == [(1, "input_error")]
    assert "stage 1 (human_pose) is skipped (--skip_step1) but its output is missing" in outcomes[0].error
    assert str(layout.hmr_result(VID)) in outcomes[0].error
    # skipping the last stages needs nothing
    outcomes = pipeline.run_video(VID, config, layout.results_dir, skip_steps={5, 6})
    assert statuses(outcomes) == {1: "done", 2: "done", 3: "done", 4: "done", 5: "skipped", 6: "skipped"}


def write_reference_caches(layout, vid: VideoId, frames: int = 4, h: int = 12, w: int = 16) -> None:
    """Stage 1-3 caches in the reference's formats (contract section 4) and hoiweb's stage-1 files."""
    import torch

    masks = {t: {0: np.zeros((h, w), bool), 1: np.ones((h, w), bool)} for t in range(frames)}
    fileio.write_npz(layout.masks_cache(vid), masks=np.array(masks, dtype=object))
    fileio.write_torch(layout.depth_cache(vid), [torch.full((h, w), 2.0) for _ in range(frames)])
    fileio.write_pickle(layout.object_poses(vid), np.tile(np.eye(4), (frames, 1, 1)))
    motion = {"pose_aa": torch.zeros(frames, 104, 3), "shape": torch.zeros(6), "trans": torch.zeros(frames, 3)}
    fileio.write_torch(layout.hmr_result(vid), {"body_model": "anny", "motion_incam": motion,
                                                "motion_global": motion, "predicted_body_height": 1.7,
                                                "keypoints_3d_cam": torch.zeros(frames, 75, 3)})  # fmt: skip
    fileio.write_npz(layout.hmr_keypoints(vid), keypoints_2d=np.zeros((frames, 75, 3)), image_size=np.array([h, w]))


def test_import_reference_caches_and_rerun_4_to_6(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    write_reference_caches(layout, VID)
    outcomes = pipeline.run_video(VID, config, layout.results_dir, skip_steps={1, 2, 3})
    assert statuses(outcomes) == {1: "skipped", 2: "skipped", 3: "skipped", 4: "done", 5: "done", 6: "done"}
    assert not layout.manifest(VID, 1).exists()  # imported caches get no manifest of ours
    m4 = pipeline.read_manifest(layout, VID, 4)
    rel = layout.object_poses(VID).relative_to(layout.results_dir).as_posix()
    assert m4["inputs"][rel] == hashlib.sha256(layout.object_poses(VID).read_bytes()).hexdigest()
    # a different imported cache invalidates stage 4 on the next --skip_done run
    fileio.write_pickle(layout.object_poses(VID), np.tile(np.eye(4), (5, 1, 1)))
    again = statuses(pipeline.run_video(VID, config, layout.results_dir, skip_steps={1, 2, 3}, skip_done=True))
    assert again[4] == "done"
    assert pickle.loads(layout.object_poses(VID).read_bytes()).shape == (5, 4, 4)


@pytest.mark.parametrize("num_videos", [0, 1, 5, 7, 24, 25])
@pytest.mark.parametrize("num_chunks", [1, 2, 3, 8])
def test_job_chunks_partition_exactly(num_videos, num_chunks):
    videos = [f"d/c/v{i:03d}" for i in range(num_videos)]
    chunks = [pipeline.job_chunk(videos, i, num_chunks) for i in range(num_chunks)]
    assert [v for chunk in chunks for v in chunk] == videos  # contiguous, in order, none missing/doubled
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(a) for a in np.array_split(np.arange(num_videos), num_chunks)]
    with pytest.raises(ValueError, match="job_chunk_idx"):
        pipeline.job_chunk(videos, num_chunks, num_chunks)


def test_models_are_shared_across_videos(tmp_path, config):
    ids = ["synth/box/v0", "synth/box/v1"]
    layout = make_results_dir(tmp_path / "res", ids)
    loads: list[str] = []

    def run(ctx):
        if "body" not in ctx.models:
            loads.append(str(ctx.video))
            ctx.models["body"] = object()
        return light._run(ctx, 1)

    pipeline.register_stage(1, SimpleNamespace(NUMBER=1, NAME="human_pose", run=run))
    models: dict = {}
    pipeline.run_videos(ids, config, layout.results_dir, skip_steps={2, 3, 4, 5, 6}, models=models)
    assert loads == [ids[0]] and "body" in models
    pipeline.MODEL_CACHE.clear()
    for vid in ids:  # default: the process-wide cache
        pipeline.run_stage(vid, 1, config, layout.results_dir)
    assert "body" in pipeline.MODEL_CACHE and len(loads) == 2
    pipeline.MODEL_CACHE.clear()


@pytest.mark.parametrize("entry_point", pipeline.BATCH_ENTRY_POINTS)
def test_batch_videos_calls_run_batch_once_per_group(tmp_path, config, entry_point):
    ids = [f"synth/box/v{i}" for i in range(5)]
    layout = make_results_dir(tmp_path / "res", ids)
    batches: list[list[str]] = []

    def run_batch(ctxs):
        batches.append([str(c.video) for c in ctxs])
        return [light._run(ctx, 4) for ctx in ctxs]

    stage4 = SimpleNamespace(NUMBER=4, NAME="optimize", run=lambda ctx: light._run(ctx, 4), **{entry_point: run_batch})
    pipeline.register_stage(4, stage4)
    outcomes = pipeline.run_videos(ids, config, layout.results_dir, batch_videos=2)
    assert batches == [ids[0:2], ids[2:4]]  # the last group has one video: plain run
    assert all(o.status == "done" for o in outcomes) and len(outcomes) == 30
    batched = [o for o in outcomes if o.stage == 4 and o.result.info.get("batch_size") == 2]
    assert len(batched) == 4
    for vid in ids:
        assert pipeline.read_manifest(layout, VideoId.parse(vid), 4)["status"] == "done"
    # reused per video on --skip_done, no batch call at all
    batches.clear()
    again = pipeline.run_videos(ids, config, layout.results_dir, batch_videos=2, skip_done=True)
    assert batches == [] and {o.status for o in again} == {"reused"}


def test_batch_without_run_batch_runs_sequentially(tmp_path, config, caplog):
    ids = ["synth/box/v0", "synth/box/v1"]
    layout = make_results_dir(tmp_path / "res", ids)
    with caplog.at_level("INFO", logger="reconstruction.pipeline"):
        outcomes = pipeline.run_videos(ids, config, layout.results_dir, batch_videos=4)
    assert {o.status for o in outcomes} == {"done"}
    assert "no run_batch" in caplog.text


def test_stage_reporting_a_missing_file_fails_without_manifest(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])

    def run(ctx):
        fileio.write_bytes(ctx.layout.hmr_result(ctx.video), b"x")
        return StageResult(files=[ctx.layout.hmr_result(ctx.video), ctx.layout.hmr_keypoints(ctx.video)])

    pipeline.register_stage(1, SimpleNamespace(NUMBER=1, NAME="human_pose", run=run))
    with pytest.raises(RuntimeError, match="did not write"):
        pipeline.run_stage(VID, 1, config, layout.results_dir)
    assert not layout.manifest(VID, 1).exists() and not layout.hmr_result(VID).exists()


def test_unavailable_stage_module_is_named(tmp_path, config):
    pipeline.register_stage(3, "reconstruction.stages.no_such_stage")
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    with pytest.raises(pipeline.StageUnavailable, match=r"stage 3 \(object_pose\).*no_such_stage not found"):
        pipeline.run_stage(VID, 3, config, layout.results_dir)


def test_leftover_temp_files_of_a_killed_write_are_removed(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir, skip_steps={4, 5, 6})
    stray = layout.object_poses(VID).parent / ".poses_in_cam.pkl.tmp-abc123.pkl"
    stray.write_bytes(b"half")
    pipeline.run_stage(VID, 3, config, layout.results_dir)
    assert not stray.exists()


def test_failing_batch_falls_back_to_one_by_one(tmp_path, config, caplog):
    ids = ["synth/box/v0", "synth/box/v1"]
    layout = make_results_dir(tmp_path / "res", ids)

    def run_batch(ctxs):
        light._run(ctxs[0], 4)  # writes some outputs, then fails: they must be rolled back first
        raise ValueError("videos of one batch must have the same length")

    pipeline.register_stage(4, SimpleNamespace(NUMBER=4, NAME="optimize", run=lambda ctx: light._run(ctx, 4),
                                               run_batch=run_batch))  # fmt: skip
    with caplog.at_level("WARNING", logger="reconstruction.pipeline"):
        outcomes = pipeline.run_videos(ids, config, layout.results_dir, batch_videos=2)
    assert "optimising them one by one" in caplog.text
    assert {o.status for o in outcomes} == {"done"} and len(outcomes) == 12
    assert all("batch_size" not in o.result.info for o in outcomes if o.stage == 4)


def test_one_process_per_video_and_lock_freed_when_holder_dies(tmp_path, config):
    import os
    import signal
    import subprocess
    import sys
    import time

    layout = make_results_dir(tmp_path / "res", [str(VID)])
    ready = tmp_path / "locked"
    code = (
        "import sys, time, pathlib; from reconstruction import pipeline; from reconstruction.layout import *; "
        f"layout = Layout.create({str(layout.results_dir)!r}); "
        f"ctx = pipeline.video_lock(layout, VideoId.parse({str(VID)!r})); ctx.__enter__(); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    )
    repo = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(pipeline.VideoBusy, match="another process is running a stage of this video"):
            pipeline.run_stage(VID, 1, config, layout.results_dir)
        assert ran(tmp_path) == [] and not layout.hmr_result(VID).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert pipeline.run_stage(VID, 1, config, layout.results_dir).info["status"] == "done"


def test_check_stage_reports_staleness_without_running(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    assert pipeline.check_stage(VID, 1, config, layout.results_dir) == (False, "no manifest")
    pipeline.run_video(VID, config, layout.results_dir)
    ran(tmp_path)
    assert all(pipeline.check_stage(VID, s, config, layout.results_dir) == (True, "up to date") for s in range(1, 7))
    layout.video(VID).write_bytes(b"another video")
    for stage in range(1, 7):
        ok, why = pipeline.check_stage(VID, stage, config, layout.results_dir)
        assert not ok and why.startswith("inputs changed:") and "videos_kling" in why
    assert ran(tmp_path) == []


def test_batch_size_is_recorded_in_the_manifest(tmp_path, config):
    ids = ["synth/box/v0", "synth/box/v1"]
    layout = make_results_dir(tmp_path / "res", ids)
    stage4 = SimpleNamespace(NUMBER=4, NAME="optimize", run=lambda ctx: light._run(ctx, 4),
                             run_many=lambda ctxs: [light._run(ctx, 4) for ctx in ctxs])  # fmt: skip
    pipeline.register_stage(4, stage4)
    pipeline.run_videos(ids, config, layout.results_dir, batch_videos=2, skip_steps={5, 6})
    for vid in ids:
        assert pipeline.read_manifest(layout, VideoId.parse(vid), 4)["info"]["batch_size"] == 2


def test_verbose_rerun_only_when_debug_artefacts_are_missing(tmp_path, config):
    layout = make_results_dir(tmp_path / "res", [str(VID)])
    pipeline.run_video(VID, config, layout.results_dir, skip_steps={2, 3, 4, 5, 6})
    assert pipeline.run_stage(VID, 1, config, layout.results_dir, skip_done=True).info["status"] == "reused"
    verbose = pipeline.run_stage(VID, 1, config, layout.results_dir, skip_done=True, verbose=True)
    assert verbose.info["status"] == "done" and pipeline.read_manifest(layout, VID, 1)["verbose"] is True
    # a verbose result serves later runs with or without --verbose
    for flag in (True, False):
        result = pipeline.run_stage(VID, 1, config, layout.results_dir, skip_done=True, verbose=flag)
        assert result.info["status"] == "reused"
