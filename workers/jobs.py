"""RQ job functions: call the engine for one stage and write status, progress and results to the DB.

Imported by the worker process only (it sets up Django first); the engine (torch) is imported lazily
inside the job so that merely enqueueing by name never pulls torch into the web process.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
import traceback
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from hoiweb.engine import gt_metrics_from_report

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
# Models the engine loads (body model, detectors, ...) stay here across jobs: RQ's SimpleWorker runs every
# job in this one process.
MODELS: dict[str, Any] = {}


class _TailHandler(logging.Handler):
    """Keeps the last lines logged by the engine during one stage (shown on the run page)."""

    def __init__(self, maxlen: int = LOG_TAIL_LINES):
        super().__init__(level=logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the stage
            pass

    def text(self) -> str:
        return "\n".join(self.lines)


class _Heartbeat(threading.Thread):
    """Refreshes ``StageJob.heartbeat_at`` while the stage runs; silence means the worker died."""

    def __init__(self, stage_job_id: int, interval: float):
        super().__init__(daemon=True, name=f"heartbeat-{stage_job_id}")
        self.stage_job_id = stage_job_id
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        from hoiweb.models import StageJob

        try:
            while not self.stopped.wait(self.interval):
                StageJob.objects.filter(pk=self.stage_job_id, status=StageJob.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:  # noqa: BLE001
            log.exception("heartbeat thread of stage job %s stopped", self.stage_job_id)
        finally:
            connection.close()


class _Reporter:
    """Engine progress callback and cancel check, throttled so a fast stage cannot flood the DB."""

    def __init__(self, run, stage: int, tail: _TailHandler, stage_job_id: int):
        self.run = run
        self.stage = stage
        self.tail = tail
        self.stage_job_id = stage_job_id
        self.min_interval = 1.0 / max(settings.PROGRESS_WRITES_PER_SECOND, 0.1)
        self.started = time.monotonic()
        self.last_write = 0.0
        self.last_cancel_check = 0.0
        self.cancelled = False
        self.writes = 0

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self.last_write < self.min_interval and fraction < 1.0:
            return
        self.last_write = now
        elapsed = now - self.started
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 0.02 else None
        self.run.record_progress(self.stage, fraction, message, eta_seconds=round(eta, 1) if eta is not None else None)
        from hoiweb.models import StageJob

        StageJob.objects.filter(pk=self.stage_job_id).update(log_tail=self.tail.text())
        self.writes += 1

    def should_cancel(self) -> bool:
        if self.cancelled:
            return True
        now = time.monotonic()
        if now - self.last_cancel_check < 1.0:
            return False
        self.last_cancel_check = now
        from hoiweb.models import Run

        self.cancelled = bool(Run.objects.filter(pk=self.run.pk).values_list("cancel_requested", flat=True).first())
        return self.cancelled


def worker_identity() -> dict[str, Any]:
    return {
        "worker_name": os.environ.get("HOIWEB_WORKER_NAME", f"{socket.gethostname()}-pid{os.getpid()}"),
        "hostname": socket.gethostname(),
        "gpu": os.environ.get("HOIWEB_WORKER_GPU", os.environ.get("CUDA_VISIBLE_DEVICES", "")),
        "pid": os.getpid(),
    }


def worker_device() -> str:
    """``HOIWEB_DEVICE`` (set by ``python -m workers``), else cuda when torch sees a GPU."""
    device = os.environ.get("HOIWEB_DEVICE")
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_stage_job(run_id: int, stage: int, stage_job_id: int | None = None) -> dict[str, Any]:
    """Run one stage of one run. Returns a small summary (RQ keeps it as the job result)."""
    from hoiweb.models import Run, StageJob, WorkerHeartbeat

    close_old_connections()
    run = Run.objects.select_related("video__category__dataset").get(pk=run_id)
    if stage_job_id is not None:
        job = StageJob.objects.get(pk=stage_job_id)
    else:
        job = StageJob.objects.filter(run=run, stage=stage, attempt=run.attempt).get()
    if (
        job.status not in StageJob.WAITING_STATUSES
        or run.cancel_requested
        or not run.is_active
        or job.attempt != run.attempt
    ):
        if job.status in StageJob.WAITING_STATUSES:
            StageJob.objects.filter(pk=job.pk).update(
                status=StageJob.CANCELLED, ended_at=timezone.now(), error="run no longer active"
            )
        log.info("skipping %s: run %s is %s", job, run.pk, run.status)
        return {"skipped": True}

    ident = worker_identity()
    now = timezone.now()
    StageJob.objects.filter(pk=job.pk).update(status=StageJob.RUNNING, started_at=now, heartbeat_at=now, **ident)
    WorkerHeartbeat.objects.filter(name=ident["worker_name"]).update(current_job=job, last_seen=now)
    job.refresh_from_db()
    run.record_stage_started(job)

    tail = _TailHandler()
    engine_logger = logging.getLogger("reconstruction")
    engine_logger.addHandler(tail)
    if engine_logger.level == logging.NOTSET or engine_logger.level > logging.INFO:
        engine_logger.setLevel(logging.INFO)
    heartbeat = _Heartbeat(job.pk, settings.HEARTBEAT_SECONDS)
    heartbeat.start()
    reporter = _Reporter(run, stage, tail, job.pk)
    started = time.monotonic()
    try:
        from reconstruction.config import load_config
        from reconstruction.pipeline import run_stage
        from reconstruction.stages.base import StageCancelled

        config = load_config(run.config_raw)
        try:
            result = run_stage(
                run.video.video_id,
                stage,
                config,
                run.video.results_root(),
                device=worker_device(),
                progress=reporter.progress,
                should_cancel=reporter.should_cancel,
                models=MODELS,
                # A stage whose manifest still matches (same inputs, config subtree, outputs) is reused, so a
                # relaunch with a changed stage-4 weight reruns stages 4-6 only.
                skip_done=True,
            )
        except StageCancelled as exc:
            _finish_job(job, StageJob.CANCELLED, time.monotonic() - started, tail, error=str(exc) or "cancelled")
            run.record_stage_failed(job, f"cancelled during stage {stage}", cancelled=True)
            return {"cancelled": True}
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        tail.lines.append(traceback.format_exc())
        _finish_job(job, StageJob.FAILED, time.monotonic() - started, tail, error=error)
        run.record_stage_failed(job, f"stage {stage} failed: {error}")
        log.exception("run %s stage %s failed", run_id, stage)
        raise
    finally:
        heartbeat.stopped.set()
        engine_logger.removeHandler(tail)
        WorkerHeartbeat.objects.filter(name=ident["worker_name"], current_job=job).update(current_job=None)

    seconds = float(result.seconds or (time.monotonic() - started))
    info = _stage_outputs(run, stage, dict(result.info or {}))
    _finish_job(job, StageJob.SUCCEEDED, seconds, tail)
    run.record_stage_finished(job, seconds, dict(result.metrics or {}), info)
    from hoiweb.launch import ensure_rest_enqueued

    ensure_rest_enqueued(run.pk, job.attempt, stage)
    return {
        "stage": stage,
        "seconds": seconds,
        "files": [str(p) for p in result.files],
        "progress_writes": reporter.writes,
    }


def _finish_job(job, status: str, seconds: float, tail: _TailHandler, error: str = "") -> None:
    from hoiweb.models import StageJob

    StageJob.objects.filter(pk=job.pk).update(
        status=status, ended_at=timezone.now(), seconds=round(seconds, 3), log_tail=tail.text()[-20000:], error=error,
        progress=1.0 if status == StageJob.SUCCEEDED else job.progress,
    )  # fmt: skip


def _stage_outputs(run, stage: int, info: dict[str, Any]) -> dict[str, Any]:
    """Pick up the JSON reports a stage wrote (filter report, ground-truth metrics) for the Run row."""
    layout, vid = run.video.layout(), run.video.vid()
    if stage == 5 and "filter_report" not in info:
        report = _read_json(layout.filter_report(vid))
        if isinstance(report, dict):
            info["filter_report"] = report
    if stage == 4 and layout.ground_truth(vid).exists():
        _evaluate_against_ground_truth(layout, vid)
    if stage >= 4 and "gt_metrics" not in info:
        data = _read_json(layout.metrics(vid))
        if isinstance(data, dict):
            # metrics.json (reconstruction.eval): {"stages": {"human_pose": {...}, "optimize": {...}}, ...}
            info["gt_metrics"] = gt_metrics_from_report(data)
    return info


def _evaluate_against_ground_truth(layout, vid) -> None:
    """Synthetic videos: write metrics.json (all stages vs ground truth) once stage 4 has a result.

    An evaluation error is logged, never fails the stage: the reconstruction itself succeeded."""
    try:
        from reconstruction.eval.evaluate import evaluate_and_save
    except ImportError as exc:
        log.info("ground-truth evaluation unavailable: %s", exc)
        return
    try:
        evaluate_and_save(layout, vid, device=worker_device())
    except Exception:  # noqa: BLE001
        log.exception("ground-truth evaluation of %s failed", vid)


def _read_json(path) -> Any:
    """A stage's JSON report, or None when absent or unreadable (logged: the stage itself succeeded)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        log.warning("could not read %s: %s", path, exc)
        return None
