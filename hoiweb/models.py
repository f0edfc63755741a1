"""hoiweb's data: the database row is the truth; RQ carries only ids.

Fat models: every state change of a run (launch, progress, finish, fail, cancel, retry, review) is a method
here, so views, workers and management commands share one implementation.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from reconstruction.layout import STAGE_NAMES

log = logging.getLogger(__name__)

STAGES = STAGE_NAMES  # the engine's stage numbering (reconstruction.layout imports no torch)
STAGE_LABELS: dict[int, str] = {
    1: "Human pose",
    2: "Masks & depth",
    3: "Object pose",
    4: "Optimisation",
    5: "Filter",
    6: "Visualise",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def validate_name_component(value: str, what: str = "name") -> str:
    """A dataset/category/video name: becomes a path component, so no separators and no dot-only names."""
    if not NAME_RE.match(value or "") or value in {".", ".."}:
        raise ValueError(f"{what} {value!r} must be 1-128 characters of letters, digits, '_', '-', '.'")
    return value


class Dataset(models.Model):
    name = models.CharField(max_length=128, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Category(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="categories")
    name = models.CharField(max_length=128)

    class Meta:
        ordering = ["dataset__name", "name"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="uniq_category_per_dataset")]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return f"{self.dataset.name}/{self.name}"


class Video(models.Model):
    """One input video with its render inputs, stored in the engine's results layout under ``results_dir``."""

    SOURCE_UPLOAD = "upload"
    SOURCE_REGISTERED = "registered"
    SOURCE_CHOICES = [(SOURCE_UPLOAD, "uploaded"), (SOURCE_REGISTERED, "registered results dir")]

    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="videos")
    name = models.CharField(max_length=128)
    video_id = models.CharField(max_length=400, unique=True)  # "<dataset>/<category>/<name>"
    source = models.CharField(max_length=16, choices=SOURCE_CHOICES, default=SOURCE_UPLOAD)
    # Empty = settings.RESULTS_DIR; a registered results dir of the reference pipeline keeps its own root.
    results_dir = models.CharField(max_length=1000, blank=True, default="")
    num_frames = models.PositiveIntegerField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    has_ground_truth = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["video_id"]

    def __str__(self) -> str:
        return self.video_id

    @property
    def dataset(self) -> Dataset:
        return self.category.dataset

    def results_root(self) -> Path:
        return Path(self.results_dir) if self.results_dir else Path(settings.RESULTS_DIR)

    def vid(self):
        from reconstruction.layout import VideoId

        return VideoId.parse(self.video_id)

    def layout(self):
        from reconstruction.layout import Layout

        return Layout.create(self.results_root())

    @classmethod
    def get_or_create_for_id(cls, video_id: str, **fields: Any) -> tuple[Video, bool]:
        from reconstruction.layout import VideoId

        vid = VideoId.parse(video_id)
        for part, what in ((vid.dataset, "dataset"), (vid.category, "category"), (vid.name, "video name")):
            validate_name_component(part, what)
        dataset, _ = Dataset.objects.get_or_create(name=vid.dataset)
        category, _ = Category.objects.get_or_create(dataset=dataset, name=vid.category)
        return cls.objects.get_or_create(video_id=str(vid), defaults={"category": category, "name": vid.name, **fields})


class Config(models.Model):
    """A named, versioned engine config (YAML), validated by ``reconstruction.config.load_config``."""

    name = models.CharField(max_length=128)
    version = models.PositiveIntegerField(default=1)
    yaml_text = models.TextField()
    raw = models.JSONField(default=dict)  # the validated dict
    note = models.CharField(max_length=500, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="uniq_config_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @classmethod
    def create_version(cls, name: str, yaml_text: str, user=None, note: str = "") -> Config:
        """Validate ``yaml_text`` and store it as the next version of ``name`` (raises ConfigError)."""
        from hoiweb.engine import validate_config_text

        validate_name_component(name, "config name")
        raw = validate_config_text(yaml_text)
        with transaction.atomic():
            last = cls.objects.select_for_update().filter(name=name).order_by("-version").first()
            version = (last.version + 1) if last else 1
            if last is not None and last.yaml_text == yaml_text:
                return last
            return cls.objects.create(
                name=name, version=version, yaml_text=yaml_text, raw=raw, note=note, created_by=user
            )


class RunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=Run.ACTIVE_STATUSES)


class Run(models.Model):
    """One execution of the six stages on one video with a frozen config."""

    CREATED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
        "created",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    )
    STATUS_CHOICES = [(s, s) for s in (CREATED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    ACTIVE_STATUSES = (QUEUED, RUNNING)
    UNREVIEWED, ACCEPTED, REJECTED = "unreviewed", "accepted", "rejected"
    REVIEW_CHOICES = [(s, s) for s in (UNREVIEWED, ACCEPTED, REJECTED)]
    FILTER_PASSED = "passed"  # failed_check value of a run whose filter accepted every check

    video = models.ForeignKey(Video, on_delete=models.PROTECT, related_name="runs")
    # Denormalised from video for the list/triage queries (one table, indexed).
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="runs")
    config = models.ForeignKey(Config, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    config_name = models.CharField(max_length=160, blank=True, default="")
    config_yaml = models.TextField()  # frozen snapshot: what the worker runs, whatever happens to Config later
    config_raw = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=CREATED)
    current_stage = models.PositiveSmallIntegerField(null=True, blank=True)
    first_stage = models.PositiveSmallIntegerField(default=1)
    last_stage = models.PositiveSmallIntegerField(default=6)
    # {"1": {"status": "succeeded", "progress": 1.0, "message": "...", "seconds": 12.3}, ...}
    stages = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)  # eval_data + stage figures (flat name -> number)
    gt_metrics = models.JSONField(default=dict)  # metrics against ground truth (synthetic videos)
    filter_report = models.JSONField(default=dict)
    # "" = filter not run yet, "passed", else the name of the first failed check.
    failed_check = models.CharField(max_length=64, blank=True, default="")
    review_state = models.CharField(max_length=16, choices=REVIEW_CHOICES, default=UNREVIEWED)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    device = models.CharField(max_length=32, default="cuda")
    attempt = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="run_recent"),
            models.Index(fields=["status", "-created_at"], name="run_status"),
            models.Index(fields=["review_state", "-created_at"], name="run_review"),
            models.Index(fields=["failed_check", "-created_at"], name="run_failed_check"),
            models.Index(fields=["category", "failed_check", "review_state"], name="run_triage"),
            models.Index(fields=["config_name", "-created_at"], name="run_config"),
        ]
        permissions = [
            ("launch_runs", "Can launch, cancel and retry runs"),
            ("review_runs", "Can accept and reject runs"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} {self.video_id_text}"

    @property
    def video_id_text(self) -> str:
        return self.video.video_id

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    # ---- creation and launch -----------------------------------------------------------------------
    @classmethod
    def create_for(cls, video: Video, config_yaml: str, *, config: Config | None = None, user=None,
                   first_stage: int = 1, last_stage: int = 6, device: str | None = None) -> Run:  # fmt: skip
        from hoiweb.engine import validate_config_text

        raw = (
            config.raw if config is not None and config.yaml_text == config_yaml else validate_config_text(config_yaml)
        )
        if not (1 <= first_stage <= last_stage <= 6):
            raise ValueError(f"stages must satisfy 1 <= first ({first_stage}) <= last ({last_stage}) <= 6")
        return cls.objects.create(
            video=video,
            category=video.category,
            config=config,
            config_name=str(config) if config else _unnamed_config_label(config_yaml),
            config_yaml=config_yaml,
            config_raw=raw,
            first_stage=first_stage,
            last_stage=last_stage,
            device=device or getattr(settings, "HOIWEB_DEVICE", "cuda"),
            created_by=user,
            stages={str(n): {"status": "pending", "progress": 0.0} for n in range(first_stage, last_stage + 1)},
        )

    def stage_numbers(self) -> list[int]:
        return list(range(self.first_stage, self.last_stage + 1))

    def launch(self, from_stage: int | None = None) -> list[StageJob]:
        """Queue this run's stages (from ``from_stage``) as chained RQ jobs once the transaction commits."""
        from hoiweb import launch as launcher

        start = from_stage or self.first_stage
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.pk)
            if run.is_active:
                raise RunStateError(f"run {run.pk} is already {run.status}")
            run.attempt += 1
            run.status = Run.QUEUED
            run.cancel_requested = False
            run.error = ""
            run.current_stage = None
            run.finished_at = None
            stages = dict(run.stages)
            for n in range(start, run.last_stage + 1):
                stages[str(n)] = {"status": "queued", "progress": 0.0}
            run.stages = stages
            run.save()
            jobs = [
                StageJob.objects.create(
                    run=run,
                    stage=n,
                    attempt=run.attempt,
                    queue=launcher.queue_for_stage(n),
                    rq_job_id=launcher.job_id_for(run.pk, n, run.attempt),
                )
                for n in range(start, run.last_stage + 1)
            ]
            transaction.on_commit(lambda: launcher.enqueue_on_commit(jobs))
        self.refresh_from_db()
        return jobs

    def retry(self) -> list[StageJob]:
        """Re-queue from the first stage that did not succeed; earlier stages are reused from their caches."""
        if self.is_active:
            raise RunStateError(f"run {self.pk} is {self.status}; cancel it before retrying")
        start = self.first_stage
        for n in self.stage_numbers():
            if self.stages.get(str(n), {}).get("status") == "succeeded":
                start = n + 1
            else:
                break
        if start > self.last_stage:
            start = self.first_stage  # everything succeeded: a retry re-runs the whole run
        return self.launch(from_stage=start)

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Ask a running stage to stop (cooperatively) and drop stages still waiting in Redis."""
        from hoiweb import launch as launcher

        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.pk)
            if not run.is_active:
                raise RunStateError(f"run {run.pk} is {run.status}; nothing to cancel")
            run.cancel_requested = True
            pending = list(run.jobs.filter(status__in=StageJob.WAITING_STATUSES))
            for job in pending:
                job.status = StageJob.CANCELLED
                job.ended_at = timezone.now()
                job.error = reason
                job.save(update_fields=["status", "ended_at", "error"])
                run._set_stage(job.stage, status="cancelled")
            if not run.jobs.filter(status=StageJob.RUNNING).exists():
                run.status = Run.CANCELLED
                run.finished_at = timezone.now()
                run.error = reason
            run.save()
            ids = [j.rq_job_id for j in pending]
            transaction.on_commit(lambda: launcher.cancel_rq_jobs(ids))
        self.refresh_from_db()

    # ---- progress from the worker ------------------------------------------------------------------
    def _set_stage(self, stage: int, **fields: Any) -> None:
        stages = dict(self.stages)
        entry = dict(stages.get(str(stage), {}))
        entry.update(fields)
        stages[str(stage)] = entry
        self.stages = stages

    def record_stage_started(self, job: StageJob) -> None:
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.pk)
            run.status = Run.RUNNING
            run.current_stage = job.stage
            if run.started_at is None:
                run.started_at = timezone.now()
            run._set_stage(
                job.stage, status="running", progress=0.0, message="starting", started=timezone.now().isoformat()
            )
            run.save(update_fields=["status", "current_stage", "started_at", "stages", "updated_at"])

    def record_progress(self, stage: int, fraction: float, message: str = "", eta_seconds: float | None = None) -> None:
        """One progress update of a running stage (the worker throttles calls)."""
        fraction = max(0.0, min(1.0, float(fraction)))
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.pk)
            run._set_stage(stage, progress=fraction, message=str(message)[:300], eta_seconds=eta_seconds)
            run.save(update_fields=["stages", "updated_at"])
        StageJob.objects.filter(run_id=self.pk, stage=stage, status=StageJob.RUNNING).update(
            progress=fraction, message=str(message)[:300], heartbeat_at=timezone.now()
        )

    def record_stage_finished(self, job: StageJob, seconds: float, metrics: dict[str, float], info: dict) -> None:
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.pk)
            run._set_stage(job.stage, status="succeeded", progress=1.0, seconds=round(seconds, 3), message="done")
            run.metrics = {**run.metrics, **{k: v for k, v in metrics.items() if _is_number(v)}}
            if info.get("filter_report") is not None:
                run.apply_filter_report(info["filter_report"])
            if info.get("gt_metrics"):
                run.gt_metrics = {k: v for k, v in info["gt_metrics"].items() if _is_number(v)}
            if job.stage >= run.last_stage:
                run.status = Run.SUCCEEDED
                run.finished_at = timezone.now()
                run.current_stage = None
            run.save()

    def apply_filter_report(self, report: dict) -> None:
        """Store stage 5's report (every check with value, threshold, verdict) and the first failed check."""
        report = normalise_filter_report(report)
        self.filter_report = report
        checks = report["checks"]
        failed = [c for c in checks if not c["passed"] and not c.get("skipped")]
        if failed:
            self.failed_check = str(failed[0].get("name", "unknown"))[:64]
        elif report.get("valid") is False:
            self.failed_check = str(report.get("first_failure") or "unknown")[:64]
        else:
            self.failed_check = Run.FILTER_PASSED
        for key, value in (report.get("eval_data") or {}).items():
            if _is_number(value):
                self.metrics[key] = value
        for check in checks:  # each check's value is sortable in the runs list, as stage 5 reports it
            if _is_number(check.get("value")):
                self.metrics[f"filter/{check['name']}"] = check["value"]

    def record_stage_failed(self, job: StageJob, error: str, *, cancelled: bool = False) -> None:
        from hoiweb import launch as launcher

        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.pk)
            run._set_stage(job.stage, status="cancelled" if cancelled else "failed", message=error[:300])
            later = list(
                run.jobs.filter(attempt=job.attempt, stage__gt=job.stage, status__in=StageJob.WAITING_STATUSES)
            )
            for other in later:
                other.status = StageJob.CANCELLED
                other.error = f"stage {job.stage} {'was cancelled' if cancelled else 'failed'}"
                other.ended_at = timezone.now()
                other.save(update_fields=["status", "error", "ended_at"])
                run._set_stage(other.stage, status="cancelled")
            run.status = Run.CANCELLED if cancelled else Run.FAILED
            run.error = error
            run.finished_at = timezone.now()
            run.current_stage = job.stage
            run.save()
            ids = [j.rq_job_id for j in later]
            transaction.on_commit(lambda: launcher.cancel_rq_jobs(ids))

    # ---- review -------------------------------------------------------------------------------------
    def review(self, user, verdict: str, reason_tags: list[str] | None = None, note: str = "") -> ReviewDecision:
        """Record a decision; the full history is kept and the latest decision sets ``review_state``."""
        if verdict not in (Run.ACCEPTED, Run.REJECTED):
            raise ValueError(f"verdict must be 'accepted' or 'rejected', got {verdict!r}")
        tags = sorted({t.strip() for t in (reason_tags or []) if t and t.strip()})
        with transaction.atomic():
            decision = ReviewDecision.objects.create(run=self, user=user, verdict=verdict, reason_tags=tags, note=note)
            Run.objects.filter(pk=self.pk).update(review_state=verdict, reviewed_at=decision.created_at)
        self.review_state = verdict
        self.reviewed_at = decision.created_at
        return decision

    # ---- artefacts ------------------------------------------------------------------------------------
    def artefact_paths(self) -> dict[str, Path]:
        """Files of this run the web serves, by stable name (the only paths artefact URLs can reach)."""
        layout, vid = self.video.layout(), self.video.vid()
        vis = layout.result_vis(vid)
        paths = {
            "input": vis / "input.mp4",
            "recon_result": vis / "recon_result.mp4",
            "recon_result_top_view": vis / "recon_result_top_view.mp4",
            "recon_comparison": vis / "recon_comparison.mp4",
            "scenepic": vis / "recon_result.html",
            "scenepic_page": layout.scenepic_page(vid),
            "video": layout.video(vid),
            "loss_history": layout.loss_history(vid),
            "contact_labels": layout.contact_labels(vid),
            "filter_report": layout.filter_report(vid),
            "metrics": layout.metrics(vid),
            "hoi_data": layout.valid_hoi_data(vid) if layout.valid_hoi_data(vid).exists() else layout.raw_hoi_data(vid),
        }
        return paths


def normalise_filter_report(report: dict) -> dict:
    """Stage 5's report with ``checks`` as an ordered list of dicts that each carry name/value/threshold/passed.

    Accepts a list of check dicts or a mapping name -> check dict, and ``passed``/``ok``/``verdict`` spellings.
    """
    raw = report.get("checks") or []
    if isinstance(raw, dict):
        raw = [
            {"name": name, **(value if isinstance(value, dict) else {"value": value})} for name, value in raw.items()
        ]
    checks = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        check = dict(item)
        verdict = str(check.get("verdict", "")).lower()
        if verdict in ("skipped", "skip"):
            check["skipped"] = True
        if verdict == "truncate":
            check["truncated"] = True  # the result was cut at the first failing frame instead of rejected
        if "passed" not in check and verdict in ("truncate", "skipped", "skip"):
            check["passed"] = verdict == "truncate"
        if "passed" not in check:
            verdict = check.get("ok", check.get("verdict", True))
            check["passed"] = (
                verdict in (True, "pass", "passed", "ok") if isinstance(verdict, str | bool) else bool(verdict)
            )
        check["passed"] = bool(check["passed"])
        check.setdefault("name", "unknown")
        checks.append(check)
    return {**report, "checks": checks}


def _unnamed_config_label(config_yaml: str) -> str:
    from hoiweb.engine import default_config_text

    try:
        return "default" if config_yaml.strip() == default_config_text().strip() else "custom"
    except FileNotFoundError:
        return "custom"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN != NaN


class RunStateError(Exception):
    """An action that the run's current state does not allow (e.g. retrying a running run)."""


class StageJob(models.Model):
    """One RQ job: one stage of one attempt of a run."""

    DEFERRED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
        "deferred",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    )
    STATUS_CHOICES = [(s, s) for s in (DEFERRED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    WAITING_STATUSES = (DEFERRED, QUEUED)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="jobs")
    stage = models.PositiveSmallIntegerField()
    attempt = models.PositiveIntegerField(default=1)
    queue = models.CharField(max_length=32, default="gpu")
    rq_job_id = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=QUEUED)
    worker_name = models.CharField(max_length=200, blank=True, default="")
    hostname = models.CharField(max_length=200, blank=True, default="")
    gpu = models.CharField(max_length=32, blank=True, default="")
    pid = models.IntegerField(null=True, blank=True)
    enqueued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=300, blank=True, default="")
    seconds = models.FloatField(null=True, blank=True)
    log_tail = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["run", "attempt", "stage"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="stagejob_liveness"),
            models.Index(fields=["run", "attempt", "stage"], name="stagejob_run"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} stage {self.stage} attempt {self.attempt} ({self.status})"

    @property
    def stage_name(self) -> str:
        return STAGES.get(self.stage, str(self.stage))

    @classmethod
    def reap_dead(cls, now=None, exclude_worker: str = "") -> list[StageJob]:
        """Mark running jobs whose worker stopped sending heartbeats as failed (their run too).

        ``exclude_worker``: a live worker reaping others never reaps its own job (it knows it is alive)."""
        now = now or timezone.now()
        cutoff = now - timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS)
        reaped = []
        candidates = cls.objects.filter(status=cls.RUNNING, heartbeat_at__lt=cutoff)
        if exclude_worker:
            candidates = candidates.exclude(worker_name=exclude_worker)
        for job in candidates.select_related("run"):
            with transaction.atomic():
                locked = cls.objects.select_for_update().get(pk=job.pk)
                if locked.status != cls.RUNNING or locked.heartbeat_at >= cutoff:
                    continue
                age = (now - locked.heartbeat_at).total_seconds()
                reason = (
                    f"worker {locked.worker_name or '?'} (pid {locked.pid}) stopped sending heartbeats "
                    f"{age:.0f} s ago during stage {locked.stage} ({locked.stage_name}); presumed dead"
                )
                locked.status = cls.FAILED
                locked.error = reason
                locked.ended_at = now
                locked.save(update_fields=["status", "error", "ended_at"])
                locked.run.record_stage_failed(locked, reason)
                log.warning("reaped %s: %s", locked, reason)
                reaped.append(locked)
        return reaped


class ReviewDecision(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="reviews")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    verdict = models.CharField(max_length=16, choices=[(Run.ACCEPTED, "accept"), (Run.REJECTED, "reject")])
    reason_tags = models.JSONField(default=list)
    note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["run", "-created_at"], name="review_run")]

    def __str__(self) -> str:
        return f"{self.verdict} run {self.run_id} by {self.user}"


REASON_TAGS = [
    "hand-object contact wrong",
    "object drift",
    "object pose flip",
    "penetration",
    "body pose wrong",
    "jitter",
    "foot skating",
    "bad input video",
    "mask wrong",
    "looks good",
]


class WorkerHeartbeat(models.Model):
    """A worker process (``python -m workers``): registered at start, refreshed by a heartbeat thread."""

    name = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    pid = models.IntegerField()
    gpu = models.CharField(max_length=32, blank=True, default="")
    queues = models.CharField(max_length=200, default="gpu")
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    current_job = models.ForeignKey(StageJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_alive(self) -> bool:
        return (
            self.stopped_at is None
            and (timezone.now() - self.last_seen).total_seconds() < settings.WORKER_DEAD_AFTER_SECONDS
        )


class ApiToken(models.Model):
    """Token for the JSON API; only a SHA-256 of the key is stored (the key is shown once)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.name} ({self.prefix}...)"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str = "default") -> tuple[ApiToken, str]:
        key = secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, key_hash=cls.hash_key(key), prefix=key[:8])
        return token, key

    @classmethod
    def authenticate(cls, key: str):
        token = cls.objects.select_related("user").filter(key_hash=cls.hash_key(key)).first()
        if token is None or not token.user.is_active:
            return None
        cls.objects.filter(pk=token.pk).update(last_used=timezone.now())
        return token.user
