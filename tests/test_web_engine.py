"""End to end: a synthetic video, registered from its results dir, runs the six REAL engine stages through
Redis and a real ``python -m workers`` process; the run finishes and its artefacts are served."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import yaml

from hoiweb.models import Run, StageJob, Video
from tests.web_support import REPO, default_config_text, start_worker, stop_worker

pytest_plugins = ["tests.web_support"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ENGINE_MODULES = [
    "reconstruction.pipeline",
    "reconstruction.synth.__main__",
    "reconstruction.stages.human_pose",
    "reconstruction.stages.preprocess",
    "reconstruction.stages.object_pose",
    "reconstruction.stages.optimize",
    "reconstruction.stages.filtering",
    "reconstruction.stages.visualize",
]


def _missing_engine_modules() -> list[str]:
    missing = []
    for name in ENGINE_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


def quick_config() -> str:
    """The default config with few optimiser iterations (the test checks plumbing, not accuracy)."""
    raw = yaml.safe_load(default_config_text())
    for spec in raw["optimization"]["opt_stage_specs"].values():
        spec["niter"] = min(int(spec.get("niter", 20)), 20)
    return yaml.safe_dump(raw, sort_keys=False)


@pytest.mark.skipif(
    bool(_missing_engine_modules()), reason=f"engine not complete on this branch: {_missing_engine_modules()}"
)
def test_six_real_stages_through_a_worker(client, storage, admin_user, rq_clean, settings, live_server):
    from django.core.management import call_command

    results = storage / "synthetic"
    out = subprocess.run(
        [sys.executable, "-m", "reconstruction.synth", "--results_dir", str(results), "--dataset", "webtest",
         "--category", "mug", "--num_videos", "1", "--num_frames", "16", "--width", "320", "--height", "240",
         "--seed", "0", "--ik_steps", "30"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    video_id = out.stdout.strip().splitlines()[-1].strip()
    call_command("register_results_dir", str(results))
    video = Video.objects.get(video_id=video_id)
    assert video.num_frames == 16 and video.has_ground_truth

    client.force_login(admin_user)
    response = client.post("/launch/", {"source": "existing", "video_id": video_id, "config_yaml": quick_config(),
                                        "first_stage": 1, "last_stage": 6})  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:3000]
    run = Run.objects.get(video=video)
    log = storage / "worker.log"
    worker = start_worker(settings, "--burst", log_path=log)
    try:
        worker.wait(1500)
    finally:
        stop_worker(worker)
    run.refresh_from_db()
    assert run.status == Run.SUCCEEDED, (run.error, log.read_text()[-4000:])
    assert [run.stages[str(n)]["status"] for n in range(1, 7)] == ["succeeded"] * 6
    assert all(run.stages[str(n)]["seconds"] > 0 for n in range(1, 7))
    assert set(StageJob.objects.filter(run=run).values_list("status", flat=True)) == {StageJob.SUCCEEDED}
    assert run.filter_report["checks"], "stage 5 recorded every check"
    assert run.failed_check, "triage knows whether the filter passed"
    if run.video.layout().metrics(run.video.vid()).exists():
        assert run.gt_metrics, "ground-truth metrics of the synthetic video are on the run"
    response = client.get(f"/runs/{run.pk}/files/recon_comparison", HTTP_RANGE="bytes=0-99")
    assert response.status_code == 206 and len(b"".join(response.streaming_content)) == 100
    page = client.get(f"/runs/{run.pk}/")
    assert page.status_code == 200
    assert any(c["title"].startswith("Loss") for c in page.context["charts"]), "loss curves from loss_history.json"
    assert client.get(f"/runs/{run.pk}/files/scenepic").status_code == 200
    _look_at_it_in_chromium(live_server.url, client, run)


def _look_at_it_in_chromium(base_url: str, client, run) -> None:
    """The real artefacts in the browser: the comparison video decodes, the charts and ScenePic render."""
    import os
    from pathlib import Path

    if not Path("/usr/bin/chromium").exists():
        return
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    from tests.test_web_browser import ARGS, ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    session = client.cookies["sessionid"].value
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        context.add_cookies([{"name": "sessionid", "value": session, "url": base_url}])
        page = context.new_page()
        page.goto(f"{base_url}/runs/{run.pk}/")
        page.evaluate("document.querySelector('#video-comparison').play()")
        page.wait_for_function("document.querySelector('#video-comparison').readyState >= 2", timeout=20000)
        page.wait_for_selector(".chart .main-svg", timeout=20000)  # plotly drew the charts
        page.frame_locator("#scenepic").locator("canvas").first.wait_for(timeout=20000)
        page.evaluate("document.querySelector('#video-comparison').pause()")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "web_engine_run.png"), full_page=True)
        context.close()
        browser.close()
    from django.db import connections

    connections.close_all()
