"""JSON API for scripts: list, detail, launch, review. Token auth (``Authorization: Token <key>``).

Reads also accept a logged-in browser session; writes require a token (so they need no CSRF cookie and a
session cannot be ridden by another site).
"""

from __future__ import annotations

import functools
import json

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from hoiweb.engine import ConfigError
from hoiweb.models import ApiToken, Config, Run, RunStateError, Video
from hoiweb.queries import RunFilter


def _error(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def token_auth(view):
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        header = request.headers.get("Authorization", "")
        if header.startswith("Token "):
            user = ApiToken.authenticate(header[6:].strip())
            if user is None:
                return _error(401, "invalid API token")
            request.user = user
        elif request.method != "GET" or not request.user.is_authenticated:
            return _error(401, "send 'Authorization: Token <key>' (create one with manage.py create_user --token)")
        return view(request, *args, **kwargs)

    return login_not_required(csrf_exempt(wrapper))


def run_json(run: Run, detail: bool = False) -> dict:
    data = {
        "id": run.pk,
        "video_id": run.video.video_id,
        "config": run.config_name,
        "status": run.status,
        "current_stage": run.current_stage,
        "failed_check": run.failed_check,
        "review_state": run.review_state,
        "metrics": run.metrics,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
    if detail:
        data.update(
            stages=run.stages,
            gt_metrics=run.gt_metrics,
            filter_report=run.filter_report,
            error=run.error,
            config_yaml=run.config_yaml,
            reviews=[
                {"verdict": r.verdict, "user": r.user.get_username() if r.user else None, "at": r.created_at.isoformat(),
                 "reason_tags": r.reason_tags, "note": r.note}
                for r in run.reviews.select_related("user")[:50]
            ],
            artefacts={name: path.exists() for name, path in run.artefact_paths().items()},
        )  # fmt: skip
    return data


def _body(request) -> dict:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError as exc:
            raise ValueError(f"invalid JSON body: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("the JSON body must be an object")
        return data
    return request.POST.dict()


@token_auth
@require_http_methods(["GET", "POST"])
def runs(request):
    if request.method == "GET":
        qs = RunFilter.from_querydict(request.GET).apply().select_related("video")
        try:
            limit = min(int(request.GET.get("limit", 100)), 1000)
            offset = max(int(request.GET.get("offset", 0)), 0)
        except ValueError:
            return _error(400, "limit and offset must be integers")
        return JsonResponse({"count": qs.count(), "results": [run_json(r) for r in qs[offset : offset + limit]]})
    if not request.user.has_perm("hoiweb.launch_runs"):
        return _error(403, "launching needs the launch_runs permission (admin role)")
    try:
        body = _body(request)
    except ValueError as exc:
        return _error(400, str(exc))
    video = Video.objects.filter(video_id=str(body.get("video_id", "")).strip("/")).first()
    if video is None:
        return _error(400, f"no such video: {body.get('video_id')!r}")
    config = None
    if body.get("config_id"):
        config = Config.objects.filter(pk=body["config_id"]).first()
        if config is None:
            return _error(400, f"no such config id {body['config_id']}")
    text = body.get("config_yaml") or (config.yaml_text if config else None)
    if text is None:
        from hoiweb.engine import default_config_text

        text = default_config_text()
    try:
        run = Run.create_for(video, text, config=config, user=request.user,
                             first_stage=int(body.get("first_stage", 1)), last_stage=int(body.get("last_stage", 6)))  # fmt: skip
    except ConfigError as exc:
        return _error(400, "invalid config", errors=exc.errors)
    except ValueError as exc:
        return _error(400, str(exc))
    run.launch()
    return JsonResponse(run_json(run, detail=True), status=201)


@token_auth
@require_http_methods(["GET"])
def run_detail(request, run_id: int):
    return JsonResponse(run_json(get_object_or_404(Run.objects.select_related("video"), pk=run_id), detail=True))


@token_auth
@require_POST
def run_review(request, run_id: int):
    if not request.user.has_perm("hoiweb.review_runs"):
        return _error(403, "reviewing needs the review_runs permission (reviewer role)")
    run = get_object_or_404(Run, pk=run_id)
    try:
        body = _body(request)
        tags = body.get("reason_tags") or []
        if isinstance(tags, str):
            tags = [t for t in tags.split(",") if t.strip()]
        decision = run.review(request.user, str(body.get("verdict", "")), list(tags), str(body.get("note", ""))[:4000])
    except ValueError as exc:
        return _error(400, str(exc))
    return JsonResponse(
        {
            "run": run.pk,
            "verdict": decision.verdict,
            "review_state": run.review_state,
            "reason_tags": decision.reason_tags,
        }
    )


@token_auth
@require_POST
def run_action(request, run_id: int, action: str):
    if not request.user.has_perm("hoiweb.launch_runs"):
        return _error(403, "needs the launch_runs permission (admin role)")
    run = get_object_or_404(Run, pk=run_id)
    try:
        if action == "cancel":
            run.cancel(reason=f"cancelled by {request.user.get_username()} (API)")
        elif action == "retry":
            run.retry()
        else:
            return _error(404, f"unknown action {action}")
    except RunStateError as exc:
        return _error(409, str(exc))
    run.refresh_from_db()
    return JsonResponse(run_json(run, detail=True))
