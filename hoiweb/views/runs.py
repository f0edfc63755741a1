"""Runs list, run page, run actions (review, cancel, retry), status polling, artefacts, triage."""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count
from django.http import Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from hoiweb.charts import run_charts
from hoiweb.engine import config_diff
from hoiweb.forms import BulkReviewForm, ReviewForm
from hoiweb.models import REASON_TAGS, STAGE_LABELS, Category, Dataset, Run, RunStateError, StageJob
from hoiweb.queries import RunFilter, distinct_values, gt_metric_names, metric_names
from hoiweb.views.files import serve_file

SERVED_FILES = {
    "input", "recon_result", "recon_result_top_view", "recon_comparison", "scenepic", "scenepic_page",
    "video", "loss_history", "contact_labels", "filter_report", "metrics", "hoi_data",
}  # fmt: skip


def _stage_rows(run: Run) -> list[dict]:
    rows = []
    for n in run.stage_numbers():
        entry = run.stages.get(str(n), {})
        rows.append(
            {"number": n, "label": STAGE_LABELS[n], "percent": round(100 * float(entry.get("progress") or 0)), **entry}
        )
    return rows


@require_GET
def runs_list(request):
    run_filter = RunFilter.from_querydict(request.GET)
    qs = run_filter.apply().select_related("video", "category__dataset")
    per_page = request.GET.get("per_page", "")
    paginator = Paginator(
        qs, min(int(per_page), 500) if per_page.isdigit() and int(per_page) > 0 else settings.RUNS_PER_PAGE
    )
    page = paginator.get_page(request.GET.get("page"))
    metrics = metric_names()
    shown = [m for m in request.GET.getlist("col") if m in metrics] or default_metric_columns(metrics)
    runs = list(page.object_list)
    for run in runs:  # precomputed here: template filter calls per cell dominate the page's render time
        run.metric_values = [run.metrics.get(m) for m in shown]
        run.mini_stages = [(n, (run.stages.get(str(n)) or {}).get("status", "pending")) for n in run.stage_numbers()]
    context = {
        "page": page,
        "runs": runs,
        "filter": run_filter,
        "querystring": run_filter.querystring(),
        "metric_cols": shown,
        "metric_names": metrics,
        "gt_metric_names": gt_metric_names(),
        "datasets": Dataset.objects.all(),
        "categories": Category.objects.select_related("dataset"),
        "statuses": [s for s, _ in Run.STATUS_CHOICES],
        "review_states": [s for s, _ in Run.REVIEW_CHOICES],
        "failed_checks": distinct_values("failed_check"),
        "configs": distinct_values("config_name"),
        "reason_tags": REASON_TAGS,
        "sort": run_filter.sort,
        "total": paginator.count,
    }
    return render(request, "hoiweb/runs_list.html", context)


PREFERRED_COLUMNS = ("eval/contact", "eval/penetration", "eval/keypoint_tracking", "mpjpe", "object_translation_error",
                     "object_rotation_error_deg", "jitter", "contact_distance", "penetration_ratio")  # fmt: skip


def default_metric_columns(names: list[str], count: int = 5) -> list[str]:
    preferred = [m for m in PREFERRED_COLUMNS if m in names]
    return (preferred + [m for m in names if m not in preferred])[:count]


@require_GET
def run_detail(request, run_id: int):
    run = get_object_or_404(Run.objects.select_related("video__category__dataset", "config", "created_by"), pk=run_id)
    StageJob.reap_dead()
    run.refresh_from_db()
    run_filter = RunFilter.from_querydict(request.GET)
    previous_id, next_id = run_filter.neighbours(run.pk)
    qs = run_filter.querystring()
    paths = run.artefact_paths()
    available = {name: path.exists() for name, path in paths.items()}
    checks = (run.filter_report or {}).get("checks") or []
    jobs = list(run.jobs.order_by("-attempt", "stage"))
    context = {
        "run": run,
        "stage_rows": _stage_rows(run),
        "jobs": jobs,
        "available": available,
        "charts": run_charts(run),
        "checks": checks,
        "metrics": sorted(run.metrics.items()),
        "gt_metrics": sorted(run.gt_metrics.items()),
        "reviews": run.reviews.select_related("user")[:50],
        "review_form": ReviewForm(),
        "reason_tags": REASON_TAGS,
        "previous_url": f"{reverse('run_detail', args=[previous_id])}?{qs}" if previous_id else "",
        "next_url": f"{reverse('run_detail', args=[next_id])}?{qs}" if next_id else "",
        "list_url": f"{reverse('runs_list')}?{qs}",
        "querystring": qs,
        "config_diff": config_diff(run.config_yaml),
        "fps": run.video.fps or 30,
        "can_review": request.user.has_perm("hoiweb.review_runs"),
        "can_launch": request.user.has_perm("hoiweb.launch_runs"),
    }
    return render(request, "hoiweb/run_detail.html", context)


@require_GET
def run_status(request, run_id: int):
    """Polled by the run page and the runs list (every ~1.5 s while a run is active)."""
    StageJob.reap_dead()
    run = get_object_or_404(Run, pk=run_id)
    return JsonResponse(run_status_payload(run))


def run_status_payload(run: Run) -> dict:
    running = run.jobs.filter(status=StageJob.RUNNING).order_by("-attempt", "stage").first() if run.is_active else None
    return {
        "log_tail": "\n".join(running.log_tail.splitlines()[-25:]) if running else "",
        "worker": running.worker_name if running else "",
        "id": run.pk,
        "status": run.status,
        "active": run.is_active,
        "current_stage": run.current_stage,
        "error": run.error,
        "stages": _stage_rows(run),
        "failed_check": run.failed_check,
        "review_state": run.review_state,
    }


@require_GET
def run_file(request, run_id: int, name: str):
    if name not in SERVED_FILES:
        raise Http404("unknown artefact")
    run = get_object_or_404(Run.objects.select_related("video"), pk=run_id)
    path = run.artefact_paths()[name]
    download = None
    if name == "hoi_data":
        download = f"{run.video.video_id.replace('/', '__')}__hoi_data.pkl"
    response = serve_file(request, path, download_name=download)
    if name in ("scenepic", "scenepic_page"):
        # The 3D page runs its own scripts: sandbox it into an opaque origin (no cookies, no access to the app).
        response["Content-Security-Policy"] = "sandbox allow-scripts"
    return response


@require_POST
@permission_required("hoiweb.review_runs", raise_exception=True)
def run_review(request, run_id: int):
    run = get_object_or_404(Run, pk=run_id)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(f"invalid review: {form.errors.as_text()}")
    run.review(request.user, form.cleaned_data["verdict"], form.tags(), form.cleaned_data["note"])
    messages.success(request, f"Run {run.pk} {form.cleaned_data['verdict']}.")
    qs = request.POST.get("querystring", "")
    if request.POST.get("advance") == "1":
        _, next_id = RunFilter.from_querydict(_parse_qs(qs)).neighbours(run.pk)
        if next_id:
            return redirect(f"{reverse('run_detail', args=[next_id])}?{qs}")
    return redirect(f"{reverse('run_detail', args=[run.pk])}?{qs}")


def _parse_qs(qs: str):
    from django.http import QueryDict

    return QueryDict(qs)


@require_POST
@permission_required("hoiweb.launch_runs", raise_exception=True)
def run_cancel(request, run_id: int):
    run = get_object_or_404(Run, pk=run_id)
    try:
        run.cancel(reason=f"cancelled by {request.user.get_username()}")
        messages.info(request, f"Run {run.pk}: cancel requested.")
    except RunStateError as exc:
        messages.error(request, str(exc))
    return redirect("run_detail", run_id=run.pk)


@require_POST
@permission_required("hoiweb.launch_runs", raise_exception=True)
def run_retry(request, run_id: int):
    run = get_object_or_404(Run, pk=run_id)
    try:
        jobs = run.retry()
        messages.success(request, f"Run {run.pk} re-queued from stage {jobs[0].stage}.")
    except RunStateError as exc:
        messages.error(request, str(exc))
    return redirect("run_detail", run_id=run.pk)


@require_POST
@permission_required("hoiweb.review_runs", raise_exception=True)
def bulk_review(request):
    form = BulkReviewForm(request.POST)
    qs = request.POST.get("querystring", "")
    if not form.is_valid():
        messages.error(request, f"Bulk review refused: {form.errors.as_text()}")
        return redirect(f"{reverse('runs_list')}?{qs}")
    if form.cleaned_data["select_all_matching"]:
        runs = list(RunFilter.from_querydict(_parse_qs(qs)).apply())
    else:
        runs = list(Run.objects.filter(pk__in=form.cleaned_data["run_ids"]))
    if not runs:
        messages.error(request, "No runs selected.")
        return redirect(f"{reverse('runs_list')}?{qs}")
    with transaction.atomic():
        for run in runs:
            run.review(request.user, form.cleaned_data["verdict"], form.tags(), form.cleaned_data["note"])
    messages.success(request, f"{len(runs)} run(s) {form.cleaned_data['verdict']}.")
    return redirect(f"{reverse('runs_list')}?{qs}")


@require_GET
def triage(request):
    """Category x failed check (and review state) counts; every cell links to the filtered runs list."""
    base = RunFilter.from_querydict(request.GET)
    for key in ("category", "failed_check", "review_state"):
        base.params.pop(key, None)
    qs = base.apply().order_by()
    cells = qs.values("category_id", "failed_check", "review_state").annotate(n=Count("id"))
    by_check: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_review: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    checks: set[str] = set()
    totals_check: dict[str, int] = defaultdict(int)
    totals_review: dict[str, int] = defaultdict(int)
    for row in cells:
        check = row["failed_check"] or "none"
        checks.add(check)
        by_check[row["category_id"]][check] += row["n"]
        by_review[row["category_id"]][row["review_state"]] += row["n"]
        totals_check[check] += row["n"]
        totals_review[row["review_state"]] += row["n"]
    ordered_checks = sorted(checks, key=lambda c: (c != Run.FILTER_PASSED, c == "none", c))
    review_states = [s for s, _ in Run.REVIEW_CHOICES]
    categories = Category.objects.select_related("dataset").filter(pk__in=list(by_check))
    rows = []
    list_url = reverse("runs_list")
    for category in categories:
        counts = by_check[category.pk]
        reviews = by_review[category.pk]
        rows.append({
            "category": category,
            "total": sum(counts.values()),
            "checks": [{"name": c, "n": counts.get(c, 0),
                        "url": f"{list_url}?{urlencode({**base.params, 'category': category.pk, 'failed_check': c})}"}
                       for c in ordered_checks],
            "reviews": [{"name": s, "n": reviews.get(s, 0),
                         "url": f"{list_url}?{urlencode({**base.params, 'category': category.pk, 'review_state': s})}"}
                        for s in review_states],
        })  # fmt: skip
    context = {
        "rows": rows,
        "checks": ordered_checks,
        "review_states": review_states,
        "totals_check": [totals_check.get(c, 0) for c in ordered_checks],
        "totals_review": [totals_review.get(s, 0) for s in review_states],
        "grand_total": sum(totals_check.values()),
        "filter": base,
        "datasets": Dataset.objects.all(),
        "statuses": [s for s, _ in Run.STATUS_CHOICES],
        "configs": distinct_values("config_name"),
    }
    return render(request, "hoiweb/triage.html", context)
