"""Workers & queues page, export of results."""

from __future__ import annotations

import json
import logging
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError

from hoiweb import launch as launcher
from hoiweb.models import Dataset, Run, StageJob, WorkerHeartbeat

log = logging.getLogger(__name__)


@require_GET
def workers(request):
    reaped = StageJob.reap_dead()
    redis_error = ""
    try:
        rq_workers = launcher.rq_workers()
        queues = launcher.queue_stats()
        failed = launcher.failed_jobs(limit=30)
    except RedisError as exc:
        rq_workers, queues, failed = [], [], []
        redis_error = f"Redis unreachable: {exc}"
    rq_by_name = {w["name"]: w for w in rq_workers}
    rows = []
    for hb in WorkerHeartbeat.objects.select_related("current_job__run").order_by("stopped_at", "-last_seen")[:200]:
        rows.append(
            {"hb": hb, "rq": rq_by_name.pop(hb.name, None), "age": (timezone.now() - hb.last_seen).total_seconds()}
        )
    context = {
        "rows": rows,
        "unregistered": list(rq_by_name.values()),
        "queues": queues,
        "failed": failed,
        "redis_error": redis_error,
        "reaped": reaped,
        "running": StageJob.objects.filter(status=StageJob.RUNNING)
        .select_related("run__video")
        .order_by("started_at")[:100],
        "recent_failures": StageJob.objects.filter(status=StageJob.FAILED)
        .select_related("run__video")
        .order_by("-ended_at")[:20],
        "dead_after": settings.WORKER_DEAD_AFTER_SECONDS,
    }
    return render(request, "hoiweb/workers.html", context)


@require_GET
def export(request):
    """Zip of accepted results (hoi_data.pkl, mesh_data, result_vis) of a dataset/category, with a manifest."""
    dataset = request.GET.get("dataset", "").strip()
    category = request.GET.get("category", "").strip()
    if not dataset:
        counts = (
            Run.objects.filter(review_state=Run.ACCEPTED)
            .values("category__dataset__name", "category__name", "category_id")
            .order_by("category__dataset__name", "category__name")
        )
        from django.db.models import Count

        counts = counts.annotate(n=Count("id"))
        return render(request, "hoiweb/export.html", {"counts": counts, "datasets": Dataset.objects.all()})
    runs = Run.objects.filter(review_state=Run.ACCEPTED, category__dataset__name=dataset).select_related(
        "video", "category"
    )
    if category:
        runs = runs.filter(category__name=category)
    latest: dict[int, Run] = {}
    for run in runs.order_by("video_id", "-finished_at", "-id"):
        latest.setdefault(run.video_id, run)  # one result per video: its latest accepted run
    if not latest:
        raise Http404("no accepted runs in that dataset/category")
    path = build_export_zip(list(latest.values()), f"{dataset}{'-' + category if category else ''}")
    name = f"hoiweb-accepted-{dataset}{'-' + category if category else ''}.zip"
    response = FileResponse(open(path, "rb"), as_attachment=True, filename=name, content_type="application/zip")  # noqa: SIM115
    path.unlink()  # the open handle keeps the data until the response is sent
    return response


def build_export_zip(runs: list[Run], label: str) -> Path:
    export_dir = Path(settings.EXPORT_DIR)
    export_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"export-{label}-", suffix=".zip", dir=export_dir)
    manifest = {"created_at": timezone.now().isoformat(), "label": label, "runs": []}
    with open(fd, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for run in runs:
            layout, vid = run.video.layout(), run.video.vid()
            prefix = f"{vid.dataset}/{vid.category}/{vid.name}"
            files = []
            sources = [(run.artefact_paths()["hoi_data"], "hoi_data/hoi_data.pkl")]
            for folder, arc in ((layout.valid_mesh_dir(vid), "mesh_data"), (layout.result_vis(vid), "result_vis")):
                if folder.is_dir():
                    sources += [(p, f"{arc}/{p.relative_to(folder)}") for p in sorted(folder.rglob("*")) if p.is_file()]
            for src, arc in sources:
                if src.is_file():
                    zf.write(src, f"{prefix}/{arc}")
                    files.append(arc)
            decision = run.reviews.first()
            manifest["runs"].append({
                "video_id": run.video.video_id, "run_id": run.pk, "config": run.config_name,
                "metrics": run.metrics, "gt_metrics": run.gt_metrics, "failed_check": run.failed_check,
                "accepted_by": decision.user.get_username() if decision and decision.user else None,
                "accepted_at": decision.created_at.isoformat() if decision else None,
                "reason_tags": decision.reason_tags if decision else [], "files": files,
            })  # fmt: skip
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    return Path(tmp)
