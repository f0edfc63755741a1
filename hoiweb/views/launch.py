"""Launch page (upload or pick videos, edit a config) and config management."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hoiweb.engine import ConfigError, config_diff, default_config_text, validate_config_text
from hoiweb.forms import ConfigForm, LaunchForm, normalise_newlines
from hoiweb.models import Config, Run, Video
from hoiweb.uploads import UploadError, commit_upload, discard_committed, stage_upload

UPLOAD_FIELDS = ("video", "mesh", "object_mask", "human_mask", "depth", "cam_k", "render_config", "character_data")


def _default_text() -> str:
    try:
        return default_config_text()
    except FileNotFoundError as exc:
        return f"# {exc}\n"


def launch_runs(video_list, form: LaunchForm, user) -> list[Run]:
    config = form.resolve_config(user)
    runs = []
    for video in video_list:
        run = Run.create_for(
            video, form.cleaned_data["config_yaml"], config=config, user=user,
            first_stage=form.cleaned_data["first_stage"], last_stage=form.cleaned_data["last_stage"],
        )  # fmt: skip
        run.launch()
        runs.append(run)
    return runs


@require_http_methods(["GET", "POST"])
@permission_required("hoiweb.launch_runs", raise_exception=True)
def launch(request):
    if request.method == "POST":
        form = LaunchForm(request.POST, request.FILES)
        if form.is_valid():
            bundle = None
            try:
                with transaction.atomic():
                    if form.cleaned_data["source"] == LaunchForm.SOURCE_UPLOAD:
                        uploads = {k: request.FILES[k] for k in UPLOAD_FIELDS if k in request.FILES}
                        bundle = stage_upload(
                            form.cleaned_data["new_video_id"], uploads, form.cleaned_data["render_config_text"]
                        )
                        videos = [commit_upload(bundle, user=request.user)]
                    else:
                        videos = form.cleaned_data["videos"]
                    runs = launch_runs(videos, form, request.user)
            except BaseException as exc:
                if bundle is not None:
                    discard_committed(bundle)  # the transaction rolled the Video back: remove its files too
                if not isinstance(exc, UploadError | ConfigError):
                    raise
                if isinstance(exc, UploadError):
                    form.add_error(exc.field if exc.field in form.fields else None, exc.message)
                else:
                    form.add_error("config_yaml", exc.errors)
            else:
                if len(runs) == 1:
                    messages.success(request, f"Run {runs[0].pk} queued for {runs[0].video.video_id}.")
                    return redirect("run_detail", run_id=runs[0].pk)
                messages.success(request, f"{len(runs)} runs queued.")
                return redirect(f"{reverse('runs_list')}?status=queued")
    else:
        initial = {"config_yaml": _default_text()}
        if request.GET.get("video_id"):
            initial.update(source=LaunchForm.SOURCE_EXISTING, video_id=request.GET["video_id"])
        form = LaunchForm(initial=initial)
    configs = {str(c.pk): c.yaml_text for c in Config.objects.all()[:200]}
    context = {
        "form": form,
        "config_texts": configs,
        "default_text": _default_text(),
        "video_ids": Video.objects.order_by("-created_at").values_list("video_id", flat=True)[:500],
        "diff": config_diff(form["config_yaml"].value() or "") if form.is_bound else "",
        "max_upload_mb": settings.MAX_UPLOAD_MB,
    }
    return render(request, "hoiweb/launch.html", context)


@require_POST
def validate_config(request):
    """Inline validation for the YAML editor: errors and the diff against the default config."""
    text = normalise_newlines(request.POST.get("config_yaml", ""))
    try:
        validate_config_text(text)
        errors: list[str] = []
    except ConfigError as exc:
        errors = exc.errors
    return JsonResponse({"valid": not errors, "errors": errors, "diff": config_diff(text)})


@require_GET
def config_list(request):
    return render(request, "hoiweb/configs.html", {"configs": Config.objects.select_related("created_by")[:500]})


@require_GET
def config_detail(request, config_id: int):
    config = get_object_or_404(Config, pk=config_id)
    return render(request, "hoiweb/config_detail.html", {"config": config, "diff": config_diff(config.yaml_text),
                                                          "runs": config.runs.order_by("-created_at")[:20]})  # fmt: skip


@require_http_methods(["GET", "POST"])
@permission_required("hoiweb.launch_runs", raise_exception=True)
def config_new(request):
    if request.method == "POST":
        form = ConfigForm(request.POST)
        if form.is_valid():
            config = Config.create_version(form.cleaned_data["name"], form.cleaned_data["yaml_text"], user=request.user,
                                           note=form.cleaned_data["note"])  # fmt: skip
            messages.success(request, f"Saved {config}.")
            return redirect("config_detail", config_id=config.pk)
    else:
        base = (
            Config.objects.filter(pk=request.GET.get("from")).first() if request.GET.get("from", "").isdigit() else None
        )
        form = ConfigForm(
            initial={"name": base.name if base else "", "yaml_text": base.yaml_text if base else _default_text()}
        )
    return render(
        request, "hoiweb/config_new.html", {"form": form, "diff": config_diff(form["yaml_text"].value() or "")}
    )


def config_texts_json(request):
    return JsonResponse({str(c.pk): c.yaml_text for c in Config.objects.all()[:200]}, json_dumps_params={"indent": 0})
