from django.contrib import admin

from hoiweb.models import ApiToken, Category, Config, Dataset, ReviewDecision, Run, StageJob, Video, WorkerHeartbeat


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "video",
        "config_name",
        "status",
        "current_stage",
        "failed_check",
        "review_state",
        "created_at",
    )
    list_filter = ("status", "review_state", "failed_check")
    search_fields = ("video__video_id",)
    raw_id_fields = ("video", "category", "config", "created_by")


@admin.register(StageJob)
class StageJobAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "stage", "attempt", "status", "worker_name", "gpu", "started_at", "ended_at")
    list_filter = ("status", "stage")
    raw_id_fields = ("run",)


@admin.register(Video)
class VideoAdmin(admin.ModelAdmin):
    list_display = ("video_id", "source", "num_frames", "fps", "width", "height", "created_at")
    search_fields = ("video_id",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "name", "prefix", "created_at", "last_used")
    readonly_fields = ("key_hash", "prefix")


admin.site.register([Dataset, Category, Config, ReviewDecision, WorkerHeartbeat])
