from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from hoiweb.views import api, launch, ops, runs

urlpatterns = [
    path("", runs.runs_list, name="runs_list"),
    path("runs/<int:run_id>/", runs.run_detail, name="run_detail"),
    path("runs/<int:run_id>/status.json", runs.run_status, name="run_status"),
    path("runs/<int:run_id>/files/<str:name>", runs.run_file, name="run_file"),
    path("runs/<int:run_id>/review", runs.run_review, name="run_review"),
    path("runs/<int:run_id>/cancel", runs.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/retry", runs.run_retry, name="run_retry"),
    path("runs/bulk-review", runs.bulk_review, name="bulk_review"),
    path("triage/", runs.triage, name="triage"),
    path("launch/", launch.launch, name="launch"),
    path("configs/", launch.config_list, name="config_list"),
    path("configs/new", launch.config_new, name="config_new"),
    path("configs/<int:config_id>/", launch.config_detail, name="config_detail"),
    path("configs/validate", launch.validate_config, name="config_validate"),
    path("workers/", ops.workers, name="workers"),
    path("export/", ops.export, name="export"),
    path("api/runs", api.runs, name="api_runs"),
    path("api/runs/<int:run_id>", api.run_detail, name="api_run_detail"),
    path("api/runs/<int:run_id>/review", api.run_review, name="api_run_review"),
    path("api/runs/<int:run_id>/<str:action>", api.run_action, name="api_run_action"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
