"""Runs through the real Redis and a real RQ worker process (``python -m workers``): finish, cancel, worker death.

These tests use the pipeline's light stages (``tests/pipeline_light_stages.py``: real file I/O in the results
layout, milliseconds per stage) so that the worker machinery is tested quickly; ``test_web_engine.py`` runs
the six real engine stages.
"""

from __future__ import annotations

import os
import signal

import pytest

from hoiweb.models import Run, StageJob, WorkerHeartbeat
from tests.web_support import default_config_text, make_video, start_worker, stop_worker, upload_files, wait_for

pytest_plugins = ["tests.web_support"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LIGHT = ["--setup", "tests.pipeline_light_stages:register_all"]


@pytest.fixture
def fast_liveness(settings):
    settings.HEARTBEAT_SECONDS = 0.5
    settings.WORKER_DEAD_AFTER_SECONDS = 3


def _launch_upload(client, storage, user) -> Run:
    from tests.test_web_views import launch_post

    client.force_login(user)
    response = client.post("/launch/", launch_post(upload_files(storage)))
    assert response.status_code == 302, response.content.decode()[:3000]
    return Run.objects.get()


def test_worker_process_runs_an_uploaded_video_to_the_end(
    client, storage, admin_user, rq_clean, settings, fast_liveness
):
    run = _launch_upload(client, storage, admin_user)
    log = storage / "worker.log"
    proc = start_worker(settings, "--burst", *LIGHT, log_path=log, extra_env={"LIGHT_STAGE_SLEEP_4": "1.5"})
    try:
        proc.wait(120)
    finally:
        stop_worker(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    run.refresh_from_db()
    assert run.status == Run.SUCCEEDED, (run.error, log.read_text()[-3000:])
    assert [run.stages[str(n)]["status"] for n in range(1, 7)] == ["succeeded"] * 6
    assert run.stages["4"]["seconds"] >= 1.5
    jobs = list(StageJob.objects.filter(run=run).order_by("stage"))
    assert {j.status for j in jobs} == {StageJob.SUCCEEDED}
    assert all(j.worker_name.endswith(str(proc.pid)) and j.pid == proc.pid and j.gpu == "cpu" for j in jobs)
    assert jobs[3].heartbeat_at > jobs[3].started_at, "the heartbeat thread ran during the long stage"
    assert WorkerHeartbeat.objects.get(pid=proc.pid).stopped_at is not None
    # the artefacts the stages wrote are served, with ranges
    response = client.get(f"/runs/{run.pk}/files/recon_result", HTTP_RANGE="bytes=0-4")
    assert response.status_code == 206 and b"".join(response.streaming_content) == b"stage"
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "video-result" in page and 'id="scenepic"' in page


def test_killed_worker_is_detected_and_retry_resumes_from_the_cache(
    client, storage, admin_user, rq_clean, settings, fast_liveness
):
    run = _launch_upload(client, storage, admin_user)
    stage_log = storage / "stages.log"
    log = storage / "worker.log"
    env = {"LIGHT_STAGE_SLEEP_2": "30", "LIGHT_STAGE_LOG": str(stage_log)}
    proc = start_worker(settings, *LIGHT, log_path=log, extra_env=env)
    try:
        wait_for(lambda: StageJob.objects.filter(run=run, stage=2, status=StageJob.RUNNING, progress__gt=0).exists(), 60,
                 what="stage 2 running with progress")  # fmt: skip
        os.killpg(proc.pid, signal.SIGKILL)  # the worker dies mid-stage: no cleanup code runs
        proc.wait(10)
    finally:
        stop_worker(proc)
    status = client.get(f"/runs/{run.pk}/status.json").json()
    assert status["status"] == "running", "not yet presumed dead"

    def reaped():
        return client.get(f"/runs/{run.pk}/status.json").json()["status"] == "failed"

    wait_for(reaped, 15, interval=0.5, what="the dead worker's stage to be failed")
    run.refresh_from_db()
    assert "stopped sending heartbeats" in run.error and f"pid {proc.pid}" in run.error
    assert run.stages["2"]["status"] == "failed" and run.stages["1"]["status"] == "succeeded"
    assert set(StageJob.objects.filter(run=run, stage__gt=2).values_list("status", flat=True)) == {StageJob.CANCELLED}

    assert client.post(f"/runs/{run.pk}/retry").status_code == 302
    run.refresh_from_db()
    assert run.status == Run.QUEUED and run.attempt == 2
    proc = start_worker(settings, "--burst", *LIGHT, log_path=log, extra_env={"LIGHT_STAGE_LOG": str(stage_log)})
    try:
        proc.wait(120)
    finally:
        stop_worker(proc)
    run.refresh_from_db()
    assert run.status == Run.SUCCEEDED, (run.error, log.read_text()[-3000:])
    stages_run = [line.split()[0] for line in stage_log.read_text().splitlines()]
    assert stages_run == ["1", "2", "2", "3", "4", "5", "6"], "stage 1 ran once: the retry resumed from stage 2"


def test_cancel_stops_a_running_stage(client, storage, admin_user, rq_clean, settings, fast_liveness):
    make_video("ds/cups/c1")
    client.force_login(admin_user)
    response = client.post("/launch/", {"source": "existing", "video_id": "ds/cups/c1", "config_yaml": default_config_text(),
                                        "first_stage": 1, "last_stage": 6})  # fmt: skip
    assert response.status_code == 302
    run = Run.objects.get()
    # an existing video without input files: stage 1 of the light pipeline needs the video -> make it exist
    from tests.web_support import write_tiny_video

    write_tiny_video(run.video.layout().video(run.video.vid()))
    stage_log = storage / "stages.log"
    proc = start_worker(settings, *LIGHT, log_path=storage / "worker.log",
                        extra_env={"LIGHT_STAGE_SLEEP_3": "30", "LIGHT_STAGE_LOG": str(stage_log)})  # fmt: skip
    try:
        wait_for(lambda: StageJob.objects.filter(run=run, stage=3, status=StageJob.RUNNING, progress__gt=0).exists(), 60,
                 what="stage 3 running")  # fmt: skip
        assert client.post(f"/runs/{run.pk}/cancel").status_code == 302
        wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.CANCELLED, 20, what="the run to be cancelled")
        assert proc.poll() is None, "the worker survives a cancel and takes the next job"
    finally:
        stop_worker(proc)
    run.refresh_from_db()
    assert run.stages["3"]["status"] == "cancelled" and run.stages["4"]["status"] == "cancelled"
    assert [line.split()[0] for line in stage_log.read_text().splitlines()] == ["1", "2", "3"]
    layout, vid = run.video.layout(), run.video.vid()
    assert not layout.object_poses(vid).exists(), "the pipeline rolled back the cancelled stage's outputs"


def test_redis_flush_during_a_stage_the_run_still_finishes(
    client, storage, admin_user, rq_clean, settings, fast_liveness
):
    import django_rq
    from django.core.management import call_command

    run = _launch_upload(client, storage, admin_user)
    log = storage / "worker.log"
    proc = start_worker(settings, *LIGHT, log_path=log, extra_env={"LIGHT_STAGE_SLEEP_2": "3"})
    try:
        wait_for(
            lambda: StageJob.objects.filter(run=run, stage=2, status=StageJob.RUNNING).exists(), 60, what="stage 2"
        )
        conn = django_rq.get_connection("gpu")
        lost = [k for k in conn.scan_iter("rq:job:*")]
        conn.delete(*lost)  # Redis loses every job (the worker itself survives, as after FLUSHDB + re-registration)
        for name in ("gpu", "cpu"):
            django_rq.get_queue(name).empty()
        call_command("reconcile")
        wait_for(lambda: Run.objects.get(pk=run.pk).status in (Run.SUCCEEDED, Run.FAILED), 90, what="the run to finish")
    finally:
        stop_worker(proc)
    run.refresh_from_db()
    assert run.status == Run.SUCCEEDED, (run.error, log.read_text()[-3000:])
    assert StageJob.objects.filter(run=run, rq_job_id__contains="-re").count() == 4, "stages 3-6 were re-enqueued"
