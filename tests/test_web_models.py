"""Fat-model behaviour on the real PostgreSQL and Redis: launch chains, progress, cancel, retry, review, reaping."""

from __future__ import annotations

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq.job import Job

from hoiweb.engine import ConfigError
from hoiweb.launch import reconcile
from hoiweb.models import Config, Run, RunStateError, StageJob, Video
from tests.web_support import default_config_text, make_run, make_video

pytest_plugins = ["tests.web_support"]

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_run_freezes_a_validated_config(storage):
    run = make_run()
    assert run.config_raw["optimization"]["opt_stage_specs"], "the validated dict is stored on the run"
    assert run.stages == {str(n): {"status": "pending", "progress": 0.0} for n in range(1, 7)}
    assert run.category == run.video.category


def test_invalid_config_is_rejected_with_the_key_path(storage):
    bad = default_config_text().replace("optimization:", "optimisation:", 1)
    with pytest.raises(ConfigError) as info:
        Run.create_for(make_video(), bad)
    assert "optimi" in str(info.value)
    with pytest.raises(ConfigError, match="YAML"):
        Run.create_for(make_video(), "paths: [unclosed")
    assert Run.objects.count() == 0


def test_config_versions(storage, admin_user):
    text = default_config_text()
    v1 = Config.create_version("manip", text, user=admin_user)
    assert Config.create_version("manip", text) == v1, "an unchanged text is not a new version"
    v2 = Config.create_version("manip", text + "\n# tweak\n")
    assert (v1.version, v2.version) == (1, 2)


def test_launch_chains_one_rq_job_per_stage(storage, rq_clean):
    run = make_run()
    jobs = run.launch()
    run.refresh_from_db()
    assert run.status == Run.QUEUED and run.attempt == 1
    assert [j.stage for j in jobs] == [1, 2, 3, 4, 5, 6]
    conn = django_rq.get_connection("gpu")
    rq_jobs = [Job.fetch(j.rq_job_id, connection=conn) for j in jobs]
    assert [j.origin for j in rq_jobs] == ["gpu", "gpu", "gpu", "gpu", "cpu", "gpu"], "the filter runs on the cpu queue"
    assert rq_jobs[0].dependency_ids == []
    for previous, job in zip(rq_jobs, rq_jobs[1:], strict=False):
        assert job.dependency_ids == [previous.id]
    assert rq_jobs[0].func_name == "workers.jobs.run_stage_job" and rq_jobs[0].args == (run.pk, 1)
    assert django_rq.get_queue("gpu").count == 1, "only stage 1 is runnable; the rest wait on dependencies"
    assert list(StageJob.objects.filter(run=run).values_list("status", flat=True)) == ["queued"] + ["deferred"] * 5
    with pytest.raises(RunStateError):
        run.launch()


def test_progress_finish_and_filter_report(storage, rq_clean):
    run = make_run()
    jobs = run.launch()
    run.record_stage_started(jobs[0])
    run.refresh_from_db()
    assert run.status == Run.RUNNING and run.current_stage == 1 and run.started_at is not None
    run.record_progress(1, 0.4, "frame 5/12", eta_seconds=3.0)
    run.refresh_from_db()
    assert run.stages["1"]["progress"] == 0.4 and run.stages["1"]["message"] == "frame 5/12"
    report = {
        "valid": False,
        "checks": [
            {"name": "camera_translation", "value": 0.0, "threshold": 0.1, "passed": True},
            {"name": "object_mask", "value": 0.61, "threshold": 0.5, "passed": False},
            {"name": "penetration", "value": 0.001, "threshold": 0.02, "passed": False},
        ],
        "eval_data": {"keypoint_tracking": 12.5},
    }
    for job in jobs[:-1]:
        run.record_stage_finished(
            job, 1.5, {"contact_distance": 0.01}, {"filter_report": report} if job.stage == 5 else {}
        )
    run.refresh_from_db()
    assert run.status == Run.RUNNING
    assert run.failed_check == "object_mask", "the first failed check names the triage column"
    assert run.metrics == {"contact_distance": 0.01, "keypoint_tracking": 12.5, "filter/camera_translation": 0.0,
                           "filter/object_mask": 0.61, "filter/penetration": 0.001}  # fmt: skip
    run.record_stage_finished(jobs[-1], 2.0, {}, {"gt_metrics": {"mpjpe_m": 0.05}})
    run.refresh_from_db()
    assert run.status == Run.SUCCEEDED and run.finished_at is not None and run.gt_metrics == {"mpjpe_m": 0.05}
    assert all(run.stages[str(n)]["status"] == "succeeded" for n in range(1, 7))


def test_failure_cancels_the_rest_and_retry_resumes_from_the_failed_stage(storage, rq_clean):
    run = make_run()
    jobs = run.launch()
    run.record_stage_finished(jobs[0], 1.0, {}, {})
    run.record_stage_finished(jobs[1], 1.0, {}, {})
    run.record_stage_started(jobs[2])
    run.record_stage_failed(jobs[2], "stage 3 failed: boom")
    run.refresh_from_db()
    assert run.status == Run.FAILED and "boom" in run.error
    later = StageJob.objects.filter(run=run, stage__gt=3)
    assert set(later.values_list("status", flat=True)) == {StageJob.CANCELLED}
    conn = django_rq.get_connection("gpu")
    assert not Job.exists(jobs[4].rq_job_id, connection=conn), "waiting jobs are dropped from Redis"
    new_jobs = run.retry()
    run.refresh_from_db()
    assert [j.stage for j in new_jobs] == [3, 4, 5, 6], "stages 1-2 succeeded: their caches are reused"
    assert run.attempt == 2 and run.status == Run.QUEUED and run.error == ""
    assert run.stages["1"]["status"] == "succeeded" and run.stages["3"]["status"] == "queued"
    assert Job.fetch(new_jobs[0].rq_job_id, connection=conn).dependency_ids == []


def test_cancel_queued_run(storage, rq_clean):
    run = make_run()
    jobs = run.launch()
    run.cancel()
    run.refresh_from_db()
    assert run.status == Run.CANCELLED and run.cancel_requested
    assert django_rq.get_queue("gpu").count == 0
    assert set(StageJob.objects.filter(run=run).values_list("status", flat=True)) == {StageJob.CANCELLED}
    with pytest.raises(RunStateError):
        run.cancel()
    assert jobs


def test_cancel_running_run_is_cooperative(storage, rq_clean):
    run = make_run()
    jobs = run.launch()
    StageJob.objects.filter(pk=jobs[0].pk).update(status=StageJob.RUNNING)
    run.record_stage_started(jobs[0])
    run.cancel()
    run.refresh_from_db()
    assert run.cancel_requested and run.status == Run.RUNNING, "the running stage stops itself and marks the run"


def test_review_history_latest_wins(storage, admin_user, reviewer_user):
    run = make_run()
    run.review(reviewer_user, Run.REJECTED, ["object drift", " jitter "], "drifts at the end")
    run.review(admin_user, Run.ACCEPTED, [], "fine after all")
    run.refresh_from_db()
    assert run.review_state == Run.ACCEPTED
    history = list(run.reviews.all())
    assert [d.verdict for d in history] == [Run.ACCEPTED, Run.REJECTED]
    assert history[1].reason_tags == ["jitter", "object drift"] and history[1].user == reviewer_user
    with pytest.raises(ValueError):
        run.review(admin_user, "maybe")


def test_reap_dead_marks_the_run_failed_with_the_reason(storage, rq_clean, settings):
    settings.WORKER_DEAD_AFTER_SECONDS = 30
    run = make_run()
    jobs = run.launch()
    stale = timezone.now() - timedelta(seconds=120)
    StageJob.objects.filter(pk=jobs[0].pk).update(
        status=StageJob.RUNNING, heartbeat_at=stale, worker_name="h-gpu0", pid=4242
    )
    fresh = make_run(make_video("ds/cups/v2"))
    fresh_jobs = fresh.launch()
    StageJob.objects.filter(pk=fresh_jobs[0].pk).update(status=StageJob.RUNNING, heartbeat_at=timezone.now())
    reaped = StageJob.reap_dead()
    assert [j.pk for j in reaped] == [jobs[0].pk]
    run.refresh_from_db()
    assert run.status == Run.FAILED and "h-gpu0" in run.error and "heartbeat" in run.error
    fresh.refresh_from_db()
    assert fresh.status == Run.QUEUED


def test_reconcile_reenqueues_after_redis_flush(storage, rq_clean):
    run = make_run()
    run.launch()
    conn = django_rq.get_connection("gpu")
    for key in conn.scan_iter("rq:*"):  # what FLUSHDB does to RQ's data
        conn.delete(key)
    assert django_rq.get_queue("gpu").count == 0
    counts = reconcile()
    assert counts["requeued_runs"] == 1
    jobs = list(StageJob.objects.filter(run=run).order_by("stage"))
    assert django_rq.get_queue("gpu").count == 1
    assert all(Job.exists(j.rq_job_id, connection=conn) for j in jobs)
    assert reconcile()["requeued_runs"] == 0, "a second pass finds Redis and PostgreSQL in agreement"


def test_video_ids_cannot_escape_the_results_dir(db):
    for bad in ("../x/y", "a/b/..", "a/../b/c", "a/b/c/d", "a/b c/d"):
        with pytest.raises(ValueError):
            Video.get_or_create_for_id(bad)


def test_filter_report_spellings(storage):
    run = make_run()
    run.apply_filter_report({"valid": True, "checks": {"camera_translation": {"value": 0.01, "threshold": 0.1, "ok": True},
                                                       "static_human": {"value": 0.2, "threshold": 0.01, "verdict": "pass"}}})  # fmt: skip
    assert run.failed_check == Run.FILTER_PASSED
    assert [c["name"] for c in run.filter_report["checks"]] == ["camera_translation", "static_human"]
    run.apply_filter_report({"valid": False, "checks": [{"name": "object_on_table", "passed": False, "skipped": True},
                                                        {"name": "object_motion", "value": 0.0, "threshold": 0.02, "ok": False}]})  # fmt: skip
    assert run.failed_check == "object_motion", "a skipped check never names the failure"


def test_filter_report_of_the_engine(storage):
    """The format reconstruction.stages.filtering writes: verdict pass | fail | skipped | truncate."""
    run = make_run()
    run.apply_filter_report({
        "verdict": "invalid", "first_failure": "object_mask",
        "checks": [{"name": "camera_trans", "value": 0.0, "threshold": 0.1, "verdict": "pass", "detail": ""},
                   {"name": "object_on_table", "value": None, "threshold": None, "verdict": "skipped", "detail": "no table"},
                   {"name": "object_mask", "value": 0.7, "threshold": 0.5, "verdict": "truncate", "detail": ""},
                   {"name": "static_human", "value": 0.001, "threshold": 0.01, "verdict": "fail", "detail": ""}],
    })  # fmt: skip
    assert run.failed_check == "static_human"
    by_name = {c["name"]: c for c in run.filter_report["checks"]}
    assert (
        by_name["object_on_table"]["skipped"]
        and by_name["object_mask"]["passed"]
        and by_name["object_mask"]["truncated"]
    )
    assert by_name["camera_trans"]["passed"] and not by_name["static_human"]["passed"]
