"""Views, forms and uploads through Django's test client on the real PostgreSQL and Redis."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from hoiweb.models import ApiToken, Run, StageJob, Video
from tests.web_support import (
    REPO,
    as_uploads,
    default_config_text,
    make_run,
    make_user,
    make_video,
    png_bytes,
    render_config_dict,
    upload_files,
)

pytest_plugins = ["tests.web_support"]
pytestmark = pytest.mark.django_db(transaction=True)


def login(client, user):
    client.force_login(user)
    return client


def launch_post(files: dict, **fields) -> dict:
    data = {
        "source": "upload",
        "dataset": "ds",
        "category": "cups",
        "name": "up1",
        "config_yaml": default_config_text(),
        "first_stage": 1,
        "last_stage": 6,
        **fields,
    }
    data.update(as_uploads(files))
    return data


# ---- access control ---------------------------------------------------------------------------------------
def test_every_page_requires_login(client, storage):
    run = make_run()
    for url in ["/", f"/runs/{run.pk}/", "/triage/", "/launch/", "/workers/", "/export/", "/configs/",
                f"/runs/{run.pk}/files/video"]:  # fmt: skip
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert client.get("/api/runs").status_code == 401


def test_viewer_cannot_launch_or_review(client, storage, viewer_user, rq_clean):
    run = make_run()
    login(client, viewer_user)
    assert client.get("/").status_code == 200
    assert client.get("/launch/").status_code == 403
    assert client.post(f"/runs/{run.pk}/review", {"verdict": "accepted"}).status_code == 403
    assert client.post(f"/runs/{run.pk}/retry").status_code == 403
    run.refresh_from_db()
    assert run.review_state == Run.UNREVIEWED and run.status == Run.CREATED


def test_posts_need_csrf(storage, reviewer_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer_user)
    run = make_run()
    assert client.post(f"/runs/{run.pk}/review", {"verdict": "accepted"}).status_code == 403
    run.refresh_from_db()
    assert run.review_state == Run.UNREVIEWED


# ---- upload + launch --------------------------------------------------------------------------------------
def test_upload_launch_stores_inputs_in_the_engine_layout(client, storage, admin_user, rq_clean, settings):
    login(client, admin_user)
    response = client.post("/launch/", launch_post(upload_files(storage)))
    assert response.status_code == 302, response.content.decode()[:2000]
    run = Run.objects.get()
    assert response["Location"] == f"/runs/{run.pk}/"
    video = run.video
    assert (video.video_id, video.num_frames, video.width, video.height) == ("ds/cups/up1", 12, 160, 120)
    layout, vid = video.layout(), video.vid()
    for path in (layout.video(vid), layout.own_mesh(vid), layout.first_object_mask(vid), layout.first_human_mask(vid),
                 layout.depth_gt(vid), layout.cam_k(vid), layout.render_config(vid)):  # fmt: skip
        assert path.is_file() and str(path).startswith(str(settings.RESULTS_DIR)), path
    from reconstruction.render_config import load_cam_k, load_render_config

    config = load_render_config(layout.render_config(vid))
    assert config.frame_width == 160 and np.allclose(config.obj_t, [0, 0, 0.75])
    assert np.allclose(load_cam_k(layout.cam_k(vid)), config.intrinsics())
    assert run.status == Run.QUEUED and StageJob.objects.filter(run=run).count() == 6
    assert not list((storage / "media" / "staging").iterdir()), "staging is cleaned up"


@pytest.mark.parametrize(
    "field, payload, message",
    [
        ("video", ("in.mp4", b"just some text, not a video"), "not a decodable video"),
        ("mesh", ("cube.obj", b"hello world\n"), "no faces"),
        ("mesh", ("cube.obj", b"v 0 0 0\nv 100 0 0\nv 0 100 0\nf 1 2 3\n"), "outside"),
        ("object_mask", ("obj.png", b"GIF89a not a png"), "not a readable image"),
        ("depth", ("depth.png", png_bytes(np.zeros((120, 160), np.uint8))), "16-bit"),
        ("render_config", ("render.json", b'{"obj_R": 1}'), "missing key"),
    ],
)
def test_bad_uploads_are_rejected_and_leave_nothing(client, storage, admin_user, rq_clean, field, payload, message):
    login(client, admin_user)
    files = upload_files(storage)
    files[field] = payload
    response = client.post("/launch/", launch_post(files))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert Video.objects.count() == 0 and Run.objects.count() == 0
    results = storage / "results"
    assert not [p for p in results.rglob("*") if p.is_file()], "a failed upload leaves no file behind"


def test_render_config_pickle_is_read_with_a_restricted_unpickler(client, storage, admin_user, rq_clean):
    login(client, admin_user)

    class Evil:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(storage / "pwned")],))

    files = upload_files(storage)
    files["render_config"] = ("first_frame_pose.pickle", pickle.dumps({"x": Evil()}))
    response = client.post("/launch/", launch_post(files))
    assert "not allowed in an uploaded pickle" in response.content.decode()
    assert not (storage / "pwned").exists()
    numpy_pickle = {k: np.asarray(v) if isinstance(v, list) else v for k, v in render_config_dict().items()}
    files["render_config"] = ("first_frame_pose.pickle", pickle.dumps(numpy_pickle))
    assert client.post("/launch/", launch_post(files)).status_code == 302, "a NumPy-only pickle is accepted"


def test_upload_size_limit(client, storage, admin_user, rq_clean, settings):
    settings.MAX_UPLOAD_MB = 0
    login(client, admin_user)
    response = client.post("/launch/", launch_post(upload_files(storage)))
    assert "exceeds the 0 MB limit" in response.content.decode()
    assert Video.objects.count() == 0


def test_invalid_config_in_the_launch_form(client, storage, admin_user, rq_clean):
    login(client, admin_user)
    bad = default_config_text().replace("human_model:", "human_modle:", 1)
    response = client.post("/launch/", launch_post(upload_files(storage), config_yaml=bad))
    assert response.status_code == 200 and "human_mod" in response.content.decode()
    assert Video.objects.count() == 0
    validation = client.post("/configs/validate", {"config_yaml": bad}).json()
    assert not validation["valid"] and validation["errors"] and "-human_model:" in validation["diff"]
    assert client.post("/configs/validate", {"config_yaml": default_config_text()}).json() == {
        "valid": True,
        "errors": [],
        "diff": "",
    }


def test_launch_existing_video_and_batch(client, storage, admin_user, rq_clean):
    login(client, admin_user)
    make_video("ds/cups/a")
    make_video("ds/cups/b")
    make_video("ds/bowls/c")
    data = {
        "source": "existing",
        "video_id": "ds/cups/a",
        "config_yaml": default_config_text(),
        "first_stage": 2,
        "last_stage": 4,
    }
    assert client.post("/launch/", data).status_code == 302
    run = Run.objects.get()
    assert (run.first_stage, run.last_stage, sorted(run.stages)) == (2, 4, ["2", "3", "4"])
    data = {"source": "batch", "batch_dataset": "ds", "batch_category": "cups", "config_yaml": default_config_text(),
            "first_stage": 1, "last_stage": 6, "save_as": "batchcfg"}  # fmt: skip
    assert client.post("/launch/", data).status_code == 302
    assert Run.objects.filter(config_name="batchcfg v1").count() == 2


# ---- pages -----------------------------------------------------------------------------------------------
def _seed_runs():
    runs = []
    for i, (cat, check, review) in enumerate([("cups", "object_mask", "unreviewed"), ("cups", "passed", "accepted"),
                                              ("bowls", "penetration", "rejected"), ("bowls", "passed", "unreviewed")]):  # fmt: skip
        run = make_run(make_video(f"ds/{cat}/v{i}"))
        Run.objects.filter(pk=run.pk).update(status=Run.SUCCEEDED, failed_check=check, review_state=review,
                                             metrics={"contact_distance": 0.01 * (i + 1), "jitter": 5.0 - i})  # fmt: skip
        runs.append(run)
    return runs


def test_runs_list_filters_sort_and_pagination(client, storage, viewer_user):
    runs = _seed_runs()
    login(client, viewer_user)
    page = client.get("/?failed_check=passed").content.decode()
    assert "ds/cups/v1" in page and "ds/bowls/v3" in page and "ds/cups/v0" not in page
    page = client.get("/?dataset=ds&review_state=rejected").content.decode()
    assert "ds/bowls/v2" in page and "ds/cups/v1" not in page
    response = client.get("/?sort=-metric:contact_distance")
    order = [r.pk for r in response.context["runs"]]
    assert order == [r.pk for r in reversed(runs)]
    response = client.get("/?sort=metric:jitter&per_page=2")
    assert [r.pk for r in response.context["runs"]] == [runs[3].pk, runs[2].pk]
    assert response.context["page"].paginator.num_pages == 2
    assert "contact_distance" in response.context["metric_names"]
    Run.objects.filter(pk=runs[0].pk).update(gt_metrics={"optimize.mpjpe": 0.2})
    Run.objects.filter(pk=runs[2].pk).update(gt_metrics={"optimize.mpjpe": 0.1})
    response = client.get("/?sort=gt:optimize.mpjpe")
    assert [r.pk for r in response.context["runs"]][:2] == [runs[2].pk, runs[0].pk], "runs without the metric sort last"


def test_run_page_and_neighbours_within_the_filter(client, storage, reviewer_user):
    runs = _seed_runs()
    login(client, reviewer_user)
    response = client.get(f"/runs/{runs[1].pk}/?failed_check=passed")
    assert response.status_code == 200
    assert response.context["next_url"] == f"/runs/{runs[3].pk}/?failed_check=passed" or response.context[
        "previous_url"
    ].startswith(f"/runs/{runs[3].pk}/")
    body = response.content.decode()
    assert 'id="accept-btn"' in body and "not produced yet" in body
    response = client.post(f"/runs/{runs[3].pk}/review", {"verdict": "accepted", "reason_tags": ["looks good"], "note": "ok",
                                                         "advance": "1", "querystring": "failed_check=passed"})  # fmt: skip
    assert response.status_code == 302 and response["Location"] == f"/runs/{runs[1].pk}/?failed_check=passed"
    assert Run.objects.get(pk=runs[3].pk).review_state == Run.ACCEPTED


def test_run_page_shows_checks_metrics_charts_and_serves_ranges(client, storage, viewer_user):
    run = make_run()
    report = {"valid": False, "checks": [{"name": "object_mask", "value": 0.61, "threshold": 0.5, "passed": False},
                                         {"name": "penetration", "value": 0.03, "threshold": 0.02, "passed": True}]}  # fmt: skip
    run.apply_filter_report(report)
    run.save()
    layout, vid = run.video.layout(), run.video.vid()
    from reconstruction import fileio

    history = {"stages": [{"name": "init_opt", "niter": 3, "terms": {"keypoint_tracking": [2.0, 1.5, 0.9]}, "total": [3.0, 2.0, 1.0]},
                          {"name": "contact_opt", "niter": 2, "terms": {"contact": [0.5, 0.2]}, "total": [0.6, 0.3]}]}  # fmt: skip
    fileio.write_json(layout.loss_history(vid), history)
    labels = {"frames": [[False, False], [False, True], [True, True], [True, False]], "object_speed": [0.0, 0.01, 0.02, 0.01],
              "hand_distance": [[0.3, 0.2], [0.2, 0.01], [0.01, 0.0], [0.0, 0.1]]}  # fmt: skip
    fileio.write_json(layout.contact_labels(vid), labels)
    data = bytes(range(256)) * 40
    fileio.write_bytes(layout.result_vis(vid) / "recon_comparison.mp4", data)
    login(client, viewer_user)
    response = client.get(f"/runs/{run.pk}/")
    body = response.content.decode()
    assert "object_mask" in body and "0.61" in body and "fail" in body
    titles = [c["title"] for c in response.context["charts"]]
    assert titles == [
        "Loss · init_opt",
        "Loss · contact_opt",
        "Contact per hand",
        "Object speed",
        "Hand-object distance",
    ]
    charts = {c["title"]: c for c in response.context["charts"]}
    assert {t["name"]: t["y"] for t in charts["Loss · init_opt"]["data"]} == {
        "keypoint_tracking": [2.0, 1.5, 0.9],
        "total": [3.0, 2.0, 1.0],
    }
    contact = {t["name"]: t["y"] for t in charts["Contact per hand"]["data"]}
    assert contact["left hand"] == [0.0, 0.0, 0.8, 0.8] and contact["right hand"] == [1.0, 1.8, 1.8, 1.0]
    assert charts["Object speed"]["data"][0]["y"][2] == pytest.approx(0.02 * 12)
    assert "/static/vendor/plotly/plotly.min.js" in body
    response = client.get(f"/runs/{run.pk}/files/recon_comparison", HTTP_RANGE="bytes=100-199")
    assert response.status_code == 206 and response["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert b"".join(response.streaming_content) == data[100:200]
    response = client.get(f"/runs/{run.pk}/files/recon_comparison", HTTP_RANGE="bytes=-10")
    assert b"".join(response.streaming_content) == data[-10:]
    assert client.get(f"/runs/{run.pk}/files/recon_comparison", HTTP_RANGE=f"bytes={len(data)}-").status_code == 416
    full = client.get(f"/runs/{run.pk}/files/recon_comparison")
    assert full.status_code == 200 and full["Accept-Ranges"] == "bytes" and b"".join(full.streaming_content) == data
    assert client.get(f"/runs/{run.pk}/files/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get(f"/runs/{run.pk}/files/recon_result").status_code == 404


def test_plotly_is_served_locally(client, viewer_user):
    login(client, viewer_user)
    response = client.get("/static/vendor/plotly/plotly.min.js")
    assert response.status_code == 200
    assert b"plotly" in b"".join(response.streaming_content)[:2000].lower()


def test_triage_counts_and_bulk_review(client, storage, reviewer_user):
    runs = _seed_runs()
    login(client, reviewer_user)
    response = client.get("/triage/")
    rows = {str(r["category"]): r for r in response.context["rows"]}
    cups = {c["name"]: c["n"] for c in rows["ds/cups"]["checks"]}
    assert cups == {"passed": 1, "object_mask": 1, "penetration": 0}
    bowls_reviews = {c["name"]: c["n"] for c in rows["ds/bowls"]["reviews"]}
    assert bowls_reviews == {"unreviewed": 1, "accepted": 0, "rejected": 1}
    cell = next(c for c in rows["ds/cups"]["checks"] if c["name"] == "object_mask")
    listed = client.get(cell["url"])
    assert [r.pk for r in listed.context["runs"]] == [runs[0].pk]
    response = client.post("/runs/bulk-review", {"verdict": "rejected", "reason_tags": ["mask wrong"], "run_ids": f"{runs[0].pk},{runs[3].pk}",
                                                 "querystring": "dataset=ds"})  # fmt: skip
    assert response.status_code == 302
    assert set(Run.objects.filter(review_state=Run.REJECTED).values_list("pk", flat=True)) == {
        runs[0].pk,
        runs[2].pk,
        runs[3].pk,
    }
    response = client.post(
        "/runs/bulk-review", {"verdict": "accepted", "select_all_matching": "on", "querystring": "failed_check=passed"}
    )
    assert set(Run.objects.filter(review_state=Run.ACCEPTED).values_list("pk", flat=True)) == {runs[1].pk, runs[3].pk}
    rows = {str(r["category"]): r for r in client.get("/triage/").context["rows"]}
    assert {c["name"]: c["n"] for c in rows["ds/bowls"]["reviews"]} == {"unreviewed": 0, "accepted": 1, "rejected": 1}


def test_workers_page_and_cancel_retry_buttons(client, storage, admin_user, rq_clean):
    login(client, admin_user)
    run = make_run()
    run.launch()
    body = client.get("/workers/").content.decode()
    assert "gpu" in body and "cpu" in body
    queues = {q["name"]: q for q in client.get("/workers/").context["queues"]}
    assert queues["gpu"]["queued"] == 1 and queues["gpu"]["deferred"] == 4 and queues["cpu"]["deferred"] == 1
    assert client.post(f"/runs/{run.pk}/cancel").status_code == 302
    assert Run.objects.get(pk=run.pk).status == Run.CANCELLED
    assert client.post(f"/runs/{run.pk}/retry").status_code == 302
    run.refresh_from_db()
    assert run.status == Run.QUEUED and run.attempt == 2


def test_export_zip_of_accepted_runs(client, storage, admin_user):
    runs = _seed_runs()
    from reconstruction import fileio

    for run in runs:
        layout, vid = run.video.layout(), run.video.vid()
        fileio.write_bytes(layout.valid_hoi_data(vid), pickle.dumps({"obj_data": {"obj_t": np.zeros((3, 3))}}))
        fileio.write_bytes(layout.result_vis(vid) / "recon_result.mp4", b"mp4")
    login(client, admin_user)
    response = client.get("/export/?dataset=ds&category=cups")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    manifest = json.loads(archive.read("manifest.json"))
    assert [r["video_id"] for r in manifest["runs"]] == ["ds/cups/v1"], "only accepted runs of the category"
    assert "ds/cups/v1/hoi_data/hoi_data.pkl" in archive.namelist()
    assert "ds/cups/v1/result_vis/recon_result.mp4" in archive.namelist()
    one = client.get(f"/runs/{runs[1].pk}/files/hoi_data")
    assert one.status_code == 200 and "attachment" in one["Content-Disposition"]
    assert client.get("/export/?dataset=nope").status_code == 404


# ---- API -------------------------------------------------------------------------------------------------
def test_api_with_token(client, storage, admin_user, rq_clean):
    make_video("ds/cups/a")
    _, key = ApiToken.issue(admin_user)
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    response = client.post("/api/runs", json.dumps({"video_id": "ds/cups/a"}), content_type="application/json", **auth)
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    assert response.json()["status"] == "queued"
    listing = client.get("/api/runs?status=queued", **auth).json()
    assert listing["count"] == 1 and listing["results"][0]["id"] == run_id
    detail = client.get(f"/api/runs/{run_id}", **auth).json()
    assert detail["stages"]["1"]["status"] == "queued" and "config_yaml" in detail
    review = client.post(f"/api/runs/{run_id}/review", json.dumps({"verdict": "rejected", "reason_tags": ["jitter"]}),
                         content_type="application/json", **auth)  # fmt: skip
    assert review.status_code == 200 and review.json()["review_state"] == "rejected"
    bad = client.post("/api/runs", json.dumps({"video_id": "ds/cups/a", "config_yaml": "paths: {x: 1}"}),
                      content_type="application/json", **auth)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["errors"]
    assert client.get("/api/runs", HTTP_AUTHORIZATION="Token wrong").status_code == 401
    viewer = make_user("viewer2", None)
    _, viewer_key = ApiToken.issue(viewer)
    forbidden = client.post("/api/runs", json.dumps({"video_id": "ds/cups/a"}), content_type="application/json",
                            HTTP_AUTHORIZATION=f"Token {viewer_key}")  # fmt: skip
    assert forbidden.status_code == 403


def test_web_process_never_imports_torch(storage):
    code = (
        "import django, sys; django.setup(); from django.test import Client; import hoiweb.urls, hoiweb.views.runs, "
        "hoiweb.views.launch, hoiweb.views.api, hoiweb.launch, hoiweb.uploads, hoiweb.charts; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "hoiweb.settings"})  # fmt: skip
    assert out.stdout.strip() == "False", out.stderr


def test_management_commands(storage, rq_clean, capsys):
    from django.core.management import call_command

    call_command("create_user", "carol", "--password", "secret-pw", "--role", "admin", "--token")
    assert "API token:" in capsys.readouterr().out
    from reconstruction import fileio
    from tests.web_support import write_tiny_video

    root = storage / "grail"
    from reconstruction.layout import Layout, VideoId

    layout = Layout.create(root)
    done, fresh = VideoId.parse("gr/mugs/done"), VideoId.parse("gr/mugs/fresh")
    write_tiny_video(layout.video(done))
    write_tiny_video(layout.video(fresh))
    for stage_file in (layout.hmr_result(done), layout.masks_cache(done), layout.depth_cache(done), layout.object_poses(done),
                       layout.raw_hoi_data(done)):  # fmt: skip
        fileio.write_bytes(stage_file, b"x")
    fileio.write_json(
        layout.filter_report(done),
        {"valid": False, "checks": [{"name": "static_human", "value": 0.001, "threshold": 0.01, "passed": False}]},
    )
    call_command("register_results_dir", str(root))
    imported = Run.objects.get(video__video_id="gr/mugs/done")
    assert imported.failed_check == "static_human" and imported.stages["5"]["status"] == "succeeded"
    assert imported.stages["6"]["status"] == "pending" and imported.status == Run.CREATED
    assert Video.objects.get(video_id="gr/mugs/fresh").num_frames == 12
    assert Video.objects.get(video_id="gr/mugs/done").results_dir == str(root.resolve())
    call_command("launch_run", "--video-id", "gr/mugs/fresh")
    assert Run.objects.get(video__video_id="gr/mugs/fresh").status == Run.QUEUED
    call_command("launch_run", "--video-id", "gr/mugs/fresh", "--if-not-done")
    assert Run.objects.filter(video__video_id="gr/mugs/fresh").count() == 1
    jobs = imported.retry()
    assert [j.stage for j in jobs] == [6], "a retry of an imported run only runs what is missing"


def test_metric_columns_are_chosen_and_kept_in_links(client, storage, viewer_user):
    _seed_runs()
    client.force_login(viewer_user)
    response = client.get("/?col=jitter&sort=-created&dataset=ds")
    assert response.context["metric_cols"] == ["jitter"]
    assert "col=jitter" in response.context["querystring"] and "dataset=ds" in response.context["querystring"]
    assert response.context["metric_cols"] != client.get("/").context["metric_cols"]
