"""Turns a Run into RQ jobs: the only place of the web that knows stage order and queues.

One job per stage, chained with ``depends_on``; stages run on the ``gpu`` queue except the filter (stage
5), which needs no GPU and goes to ``cpu``. Jobs carry only ids: the job function reads everything else
from the database (the source of truth) when it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import django_rq
from redis.exceptions import RedisError
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

log = logging.getLogger(__name__)

JOB_FUNCTION = "workers.jobs.run_stage_job"
CPU_STAGES = frozenset({5})
STAGE_TIMEOUT_SECONDS = {1: 3600, 2: 3600, 3: 3600, 4: 7200, 5: 1800, 6: 3600}


def queue_for_stage(stage: int) -> str:
    return "cpu" if stage in CPU_STAGES else "gpu"


def job_id_for(run_id: int, stage: int, attempt: int) -> str:
    return f"hoiweb-run{run_id}-a{attempt}-s{stage}"


def connection():
    return django_rq.get_connection("gpu")


def enqueue_jobs(jobs: Iterable) -> list[Job]:
    """Enqueue StageJob rows (already committed) as a ``depends_on`` chain, in stage order."""
    from hoiweb.models import StageJob

    enqueued: list[Job] = []
    previous: Job | None = None
    for stage_job in sorted(jobs, key=lambda j: j.stage):
        queue = django_rq.get_queue(stage_job.queue)
        rq_job = queue.enqueue(
            JOB_FUNCTION,
            args=(stage_job.run_id, stage_job.stage),
            kwargs={"stage_job_id": stage_job.pk},
            job_id=stage_job.rq_job_id,
            depends_on=previous,
            job_timeout=STAGE_TIMEOUT_SECONDS[stage_job.stage],
            result_ttl=86400,
            failure_ttl=7 * 86400,
            description=f"run {stage_job.run_id} stage {stage_job.stage} attempt {stage_job.attempt}",
        )
        status = StageJob.DEFERRED if previous is not None else StageJob.QUEUED
        StageJob.objects.filter(pk=stage_job.pk, status__in=StageJob.WAITING_STATUSES).update(status=status)
        enqueued.append(rq_job)
        previous = rq_job
    log.info("enqueued %d stage job(s): %s", len(enqueued), ", ".join(j.id for j in enqueued))
    return enqueued


def enqueue_on_commit(jobs: list) -> None:
    """``transaction.on_commit`` hook: enqueue, and if Redis is unreachable leave the rows queued in PostgreSQL
    (the source of truth) for ``manage.py reconcile`` instead of failing the request that launched them."""
    try:
        enqueue_jobs(jobs)
    except RedisError:
        log.exception(
            "Redis unreachable: %d stage job(s) of run %s stay queued in PostgreSQL; run `manage.py reconcile`",
            len(jobs), jobs[0].run_id if jobs else "?",
        )  # fmt: skip


def requeue(waiting: list) -> list[Job]:
    """Enqueue waiting StageJobs again under fresh RQ ids (their old jobs were lost or are dropped here)."""
    cancel_rq_jobs(j.rq_job_id for j in waiting)
    for j in waiting:
        j.rq_job_id = f"{job_id_for(j.run_id, j.stage, j.attempt)}-re{_nonce()}"
        j.save(update_fields=["rq_job_id"])
    return enqueue_jobs(waiting)


def ensure_rest_enqueued(run_id: int, attempt: int, after_stage: int) -> bool:
    """Called by a stage job as it finishes: if Redis lost the stages waiting on it (a flush or restart while
    it ran), enqueue them again so the run carries on. Returns whether anything was re-enqueued."""
    from hoiweb.models import StageJob

    waiting = list(
        StageJob.objects.filter(run_id=run_id, attempt=attempt, stage__gt=after_stage, status__in=StageJob.WAITING_STATUSES)
        .order_by("stage")
    )  # fmt: skip
    if not waiting or all(rq_job_exists(j.rq_job_id) for j in waiting):
        return False
    log.warning("run %s: stages %s were lost from Redis; re-enqueueing them", run_id, [j.stage for j in waiting])
    requeue(waiting)
    return True


def cancel_rq_jobs(job_ids: Iterable[str]) -> int:
    """Drop waiting jobs from Redis (a job already running stops cooperatively through the DB flag)."""
    conn = connection()
    cancelled = 0
    for job_id in job_ids:
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            continue
        try:
            job.cancel()
            job.delete()
            cancelled += 1
        except InvalidJobOperation:
            pass
    return cancelled


def rq_job_exists(job_id: str) -> bool:
    try:
        Job.fetch(job_id, connection=connection())
    except NoSuchJobError:
        return False
    return True


def reconcile() -> dict[str, int]:
    """Re-enqueue what PostgreSQL says is waiting or running but Redis no longer knows (e.g. after a flush).

    Runs whose running stage's worker is dead are failed by ``StageJob.reap_dead`` first; waiting stages of
    a live run whose RQ job vanished are re-enqueued as a fresh chain from the first waiting stage.
    """
    from hoiweb.models import Run, StageJob

    counts = {"reaped": len(StageJob.reap_dead()), "requeued_runs": 0, "ok_runs": 0}
    for run in Run.objects.active().order_by("pk"):
        jobs = list(run.jobs.filter(attempt=run.attempt).order_by("stage"))
        waiting = [j for j in jobs if j.status in StageJob.WAITING_STATUSES]
        running = [j for j in jobs if j.status == StageJob.RUNNING]
        if running and rq_job_exists(running[0].rq_job_id):
            counts["ok_runs"] += 1
            continue
        if running:
            # The job's record vanished from Redis. If its worker is alive the stage finishes and re-enqueues
            # the stages after it (ensure_rest_enqueued); if not, reap_dead fails it. Nothing to enqueue now.
            counts["ok_runs"] += 1
            continue
        if waiting and all(rq_job_exists(j.rq_job_id) for j in waiting):
            counts["ok_runs"] += 1
            continue
        if not waiting:
            continue
        # Redis lost (some of) the chain: drop what is left and enqueue the waiting stages again.
        requeue(waiting)
        counts["requeued_runs"] += 1
        log.warning("reconcile: re-enqueued run %s from stage %d", run.pk, waiting[0].stage)
    return counts


def _nonce() -> str:
    import secrets

    return secrets.token_hex(3)


def queue_stats() -> list[dict]:
    from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    stats = []
    for name in ("gpu", "cpu"):
        queue = django_rq.get_queue(name)
        stats.append(
            {
                "name": name,
                "queued": queue.count,
                "deferred": DeferredJobRegistry(queue=queue).count,
                "started": StartedJobRegistry(queue=queue).count,
                "finished": FinishedJobRegistry(queue=queue).count,
                "failed": FailedJobRegistry(queue=queue).count,
            }
        )
    return stats


def failed_jobs(limit: int = 50) -> list[dict]:
    from rq.registry import FailedJobRegistry

    out = []
    for name in ("gpu", "cpu"):
        queue = django_rq.get_queue(name)
        registry = FailedJobRegistry(queue=queue)
        for job_id in registry.get_job_ids(0, limit - 1, desc=True):
            try:
                job = Job.fetch(job_id, connection=queue.connection)
            except NoSuchJobError:
                continue
            exc = (job.latest_result().exc_string if job.latest_result() else "") or ""
            out.append({"id": job_id, "queue": name, "description": job.description, "ended_at": job.ended_at,
                        "error": exc.strip().splitlines()[-1] if exc.strip() else ""})  # fmt: skip
    return out[:limit]


def rq_workers() -> list[dict]:
    from rq.worker import Worker

    out = []
    for worker in Worker.all(connection=connection()):
        job = worker.get_current_job()
        out.append(
            {
                "name": worker.name,
                "state": worker.get_state(),
                "queues": ",".join(q.name for q in worker.queues),
                "current_job": job.id if job else "",
                "last_heartbeat": worker.last_heartbeat,
                "successful": worker.successful_job_count,
                "failed": worker.failed_job_count,
            }
        )
    return out
