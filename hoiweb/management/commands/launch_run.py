"""Launch a run on a registered video from the command line."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from hoiweb.engine import ConfigError, default_config_text
from hoiweb.models import Config, Run, Video


class Command(BaseCommand):
    help = "Queue the six stages (or --first/--last) of a run on VIDEO_ID with a config file."

    def add_arguments(self, parser):
        parser.add_argument("--video-id", required=True, help="dataset/category/name of a registered video")
        parser.add_argument("--config", help="YAML config path (default: the default config)")
        parser.add_argument("--config-name", help="also save the config as a named version")
        parser.add_argument("--first", type=int, default=1)
        parser.add_argument("--last", type=int, default=6)
        parser.add_argument(
            "--if-not-done", action="store_true", help="do nothing if the video has an active or succeeded run"
        )

    def handle(self, *args, video_id, config=None, config_name=None, first=1, last=6, if_not_done=False, **options):
        video = Video.objects.filter(video_id=video_id.strip("/")).first()
        if video is None:
            raise CommandError(f"no video {video_id!r}; import it with manage.py register_results_dir or upload it")
        if if_not_done:
            existing = video.runs.filter(status__in=[*Run.ACTIVE_STATUSES, Run.SUCCEEDED]).order_by("-pk").first()
            if existing is not None:
                self.stdout.write(f"run {existing.pk} is already {existing.status}: nothing to do")
                return
        text = Path(config).read_text() if config else default_config_text()
        try:
            saved = Config.create_version(config_name, text) if config_name else None
            run = Run.create_for(video, text, config=saved, first_stage=first, last_stage=last)
        except ConfigError as exc:
            raise CommandError(f"{config or 'default config'}: " + "; ".join(exc.errors)) from exc
        jobs = run.launch()
        self.stdout.write(f"run {run.pk} queued: " + ", ".join(j.rq_job_id for j in jobs))
