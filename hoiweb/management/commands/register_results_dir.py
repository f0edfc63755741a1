"""Import the videos of an existing results dir (reference-pipeline layout) with their caches and results."""

from __future__ import annotations

import io
import json
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from hoiweb.engine import default_config_text, gt_metrics_from_report
from hoiweb.models import STAGES, Run, Video


def probe_video(path: Path) -> dict:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return {
                "num_frames": int(stream.frames) or None,
                "fps": float(stream.average_rate or 0) or None,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
            }
    except Exception:  # noqa: BLE001 - an unreadable video is registered without its figures
        return {}


def stages_done(layout, vid) -> dict[int, bool]:
    return {
        1: layout.hmr_result(vid).exists(),
        2: layout.masks_cache(vid).exists() and layout.depth_cache(vid).exists(),
        3: layout.object_poses(vid).exists(),
        4: layout.raw_hoi_data(vid).exists(),
        5: layout.filter_report(vid).exists() or layout.invalid_marker(vid).exists() or layout.valid(vid).exists(),
        6: (layout.result_vis(vid) / "recon_result.mp4").exists(),
    }


def eval_data(path: Path) -> dict[str, float]:
    from hoiweb.uploads import RestrictedUnpickler

    try:
        data = RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
        return {str(k): float(v) for k, v in (data.get("eval_data") or {}).items()}
    except Exception:  # noqa: BLE001 - metrics are optional on import
        return {}


class Command(BaseCommand):
    help = "Scan PATH (a results dir) and register its videos, with a run recording the stages already done."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--dataset", help="only this dataset")
        parser.add_argument("--category", help="only this category")
        parser.add_argument("--config", help="YAML the existing results were made with (recorded on the runs)")

    def handle(self, *args, path, dataset=None, category=None, config=None, **options):
        from reconstruction.layout import Layout

        root = Path(path).resolve()
        if not root.is_dir():
            raise CommandError(f"{root} is not a directory")
        layout = Layout.create(root)
        vids = layout.list_videos(dataset, category)
        if not vids:
            raise CommandError(f"no videos under {layout.dir('video_dir')} (expected <dataset>/<category>/<name>.mp4)")
        config_text = Path(config).read_text() if config else _default_or_empty()
        config_raw = yaml.safe_load(config_text) or {} if config_text else {}
        added = runs = 0
        for vid in vids:
            with transaction.atomic():
                video, created = Video.get_or_create_for_id(
                    str(vid), source=Video.SOURCE_REGISTERED, results_dir=str(root),
                    has_ground_truth=layout.ground_truth(vid).exists(), **probe_video(layout.video(vid)),
                )  # fmt: skip
                added += int(created)
                done = stages_done(layout, vid)
                if not any(done.values()) or video.runs.exists():
                    continue
                run = Run.objects.create(
                    video=video, category=video.category, config_name="imported", config_yaml=config_text,
                    config_raw=config_raw if isinstance(config_raw, dict) else {},
                    stages={str(n): {"status": "succeeded" if done[n] else "pending", "progress": 1.0 if done[n] else 0.0}
                            for n in STAGES},
                )  # fmt: skip
                if layout.filter_report(vid).exists():
                    run.apply_filter_report(json.loads(layout.filter_report(vid).read_text()))
                elif layout.invalid_marker(vid).exists():
                    marker = json.loads(layout.invalid_marker(vid).read_text() or "{}")
                    failed = marker.get("failed_checks") or [
                        marker.get("failed_check") or marker.get("reason") or "invalid"
                    ]
                    run.failed_check = str(failed[0])[:64]
                elif layout.valid(vid).exists():
                    run.failed_check = Run.FILTER_PASSED
                if done[4]:
                    run.metrics.update(eval_data(layout.raw_hoi_data(vid)))
                for n in STAGES:  # hoiweb's own results dirs carry per-stage manifests: timings and figures
                    manifest = _read_json(layout.manifest(vid, n))
                    if isinstance(manifest, dict) and done[n]:
                        run.stages[str(n)]["seconds"] = manifest.get("seconds")
                        run.metrics.update(
                            {k: v for k, v in (manifest.get("metrics") or {}).items() if isinstance(v, int | float)}
                        )
                if layout.metrics(vid).exists():
                    run.gt_metrics = gt_metrics_from_report(json.loads(layout.metrics(vid).read_text()))
                run.status = Run.SUCCEEDED if all(done.values()) else Run.CREATED
                run.finished_at = timezone.now() if run.status == Run.SUCCEEDED else None
                run.save()
                runs += 1
        self.stdout.write(f"{len(vids)} video(s) found, {added} new, {runs} run(s) imported from {root}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (ValueError, OSError):
        return None


def _default_or_empty() -> str:
    try:
        return default_config_text()
    except FileNotFoundError:
        return ""
