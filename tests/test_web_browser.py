"""Headless Chromium (Debian's, driven by Playwright) against a live server and a real worker process.

Log in, upload, launch, watch the progress bar move, open the run page, the comparison video plays, the
ScenePic iframe renders, accept with a reason, the triage counts change. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hoiweb.models import Run
from tests.web_support import REPO, make_run, make_user, make_video, start_worker, stop_worker, upload_files, wait_for

pytest_plugins = ["tests.web_support"]
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        yield page
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"web_{name}.png"), full_page=True)


def test_upload_launch_watch_review_triage(browser_page, live_server, storage, settings, rq_clean):
    settings.HEARTBEAT_SECONDS = 0.5
    page = browser_page
    make_user("alice", "admin")
    # some history so the list and triage pages have content
    for i, (check, review) in enumerate(
        [("object_mask", "unreviewed"), ("passed", "accepted"), ("penetration", "rejected")]
    ):
        old = make_run(make_video(f"demo/mugs/old{i}"))
        Run.objects.filter(pk=old.pk).update(status=Run.SUCCEEDED, failed_check=check, review_state=review,
                                             metrics={"contact_distance": 0.01 * (i + 1), "penetration_ratio": 0.002 * i})  # fmt: skip
    files_dir = storage / "upload"
    files_dir.mkdir()
    paths = {}
    for field, (name, data) in upload_files(storage).items():
        paths[field] = files_dir / name
        paths[field].write_bytes(data)

    worker = start_worker(settings, "--setup", "tests.web_stages:register", log_path=storage / "worker.log",
                          extra_env={"LIGHT_STAGE_SLEEP_2": "4", "LIGHT_STAGE_SLEEP_4": "5"})  # fmt: skip
    try:
        page.goto(f"{live_server.url}/")
        assert "/accounts/login/" in page.url
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-alice")
        shot(page, "01_login")
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        shot(page, "02_runs_list")

        page.goto(f"{live_server.url}/triage/")
        accepted_before = int(page.locator('#triage-matrix td[data-review="accepted"]').first.inner_text())

        page.goto(f"{live_server.url}/launch/")
        page.check("input[name=source][value=upload]")
        page.fill("#id_dataset", "demo")
        page.fill("#id_category", "mugs")
        page.fill("#id_name", "browser1")
        for field in ("video", "mesh", "object_mask", "human_mask", "depth", "render_config"):
            page.set_input_files(f"#id_{field}", str(paths[field]))
        page.wait_for_selector("#config-state.ok")  # inline validation of the YAML editor
        shot(page, "03_launch")
        page.click("#launch-btn")
        page.wait_for_url("**/runs/*/")
        run = Run.objects.get(video__video_id="demo/mugs/browser1")

        # the progress bar of stage 2 moves while the worker runs it
        bar = page.locator('.progress[data-stage="2"] > span')
        wait_for(lambda: 0 < _width(bar) < 100, 60, interval=0.2, what="stage 2 progress > 0")
        first = _width(bar)
        wait_for(lambda: _width(bar) > first, 20, interval=0.2, what="stage 2 progress to grow")
        shot(page, "04_run_progress")

        wait_for(
            lambda: Run.objects.get(pk=run.pk).status in (Run.SUCCEEDED, Run.FAILED), 120, what="the run to finish"
        )
        run.refresh_from_db()
        assert run.status == Run.SUCCEEDED, run.error
        page.wait_for_selector("#run-status.succeeded", timeout=15000)  # the page reloads itself when done
        page.wait_for_selector("#video-comparison", timeout=15000)
        page.evaluate("document.querySelector('#video-comparison').play()")
        page.wait_for_function("document.querySelector('#video-comparison').readyState >= 2", timeout=15000)
        page.wait_for_function("document.querySelector('#video-comparison').currentTime > 0", timeout=15000)
        page.evaluate("document.querySelector('#video-comparison').pause()")
        page.click("#step-fwd")  # frame stepping
        assert "frame" in page.inner_text("#frame-label")
        frame = page.frame_locator("#scenepic")
        frame.locator("canvas").first.wait_for(timeout=20000)
        page.locator("#scenepic").scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        shot(page, "05_run_done")

        page.click("text=looks good")
        page.uncheck("#advance")
        page.evaluate("document.activeElement.blur()")  # shortcuts are ignored while typing in a field
        page.keyboard.press("a")  # the accept shortcut
        page.wait_for_selector("#review-state.accepted")
        run.refresh_from_db()
        assert run.review_state == Run.ACCEPTED
        assert run.reviews.get().reason_tags == ["looks good"]
        shot(page, "06_accepted")

        page.goto(f"{live_server.url}/triage/")
        cells = page.locator('#triage-matrix td[data-review="accepted"]')
        assert int(cells.first.inner_text()) == accepted_before + 1
        shot(page, "07_triage")
        page.goto(f"{live_server.url}/workers/")
        shot(page, "08_workers")
        assert not page.js_errors, page.js_errors
    finally:
        stop_worker(worker)
        from django.db import connections

        connections.close_all()
        if (storage / "worker.log").exists():
            shutil.copy(storage / "worker.log", ARTIFACTS / "web_browser_worker.log")


def _width(locator) -> float:
    style = locator.get_attribute("style") or ""
    try:
        return float(style.split("width:")[1].split("%")[0])
    except (IndexError, ValueError):
        return 0.0
