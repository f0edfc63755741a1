"""Stage 6 on a real small scene: every artefact, overlay accuracy, penetration colouring, ScenePic page."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from reconstruction.render_config import load_pickle
from reconstruction.stages import visualize
from reconstruction.stages.base import StageContext, StageInputError
from reconstruction.video import read_video
from tests.render_scene import build_scene

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _run(scene, config=None):
    ctx = StageContext(video=scene.video, layout=scene.layout, config=config)
    return visualize.run(ctx)


def _red(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(int)
    return (f[..., 0] > 120) & (f[..., 0] - f[..., 1] > 70) & (f[..., 0] - f[..., 2] > 70)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    scene = build_scene(tmp_path_factory.mktemp("clean"), num_frames=8, image_size=(240, 320))
    result = _run(scene)
    return scene, result


def test_all_artifacts_decode_with_input_frame_count(clean):
    scene, result = clean
    out_dir = scene.layout.result_vis(scene.video)
    names = {p.name for p in result.files}
    assert names == {
        "input.mp4",
        "recon_result.mp4",
        "recon_result_top_view.mp4",
        "recon_comparison.mp4",
        "recon_result.html",
    }
    h, w = scene.image_size
    expected = {
        "input.mp4": (h, w),
        "recon_result.mp4": (h, w),
        "recon_result_top_view.mp4": (h, w),
        "recon_comparison.mp4": (h, 3 * w),
    }
    for name, size in expected.items():
        frames, fps = read_video(out_dir / name)
        assert frames.shape == (scene.num_frames, *size, 3), name
        assert fps == pytest.approx(30.0)
    assert (out_dir / "input.mp4").read_bytes() == scene.layout.video(scene.video).read_bytes()
    assert scene.layout.scenepic_page(scene.video).read_bytes() == (out_dir / "recon_result.html").read_bytes()
    assert result.metrics["frames"] == scene.num_frames


def test_overlay_covers_ground_truth_silhouette(clean):
    scene, _ = clean
    out_dir = scene.layout.result_vis(scene.video)
    overlay, _ = read_video(out_dir / "recon_result.mp4")
    original, _ = read_video(out_dir / "input.mp4")
    changed = np.abs(overlay.astype(int) - original.astype(int)).mean(-1) > 14
    truth = scene.silhouette
    iou = (changed & truth).sum() / (changed | truth).sum()
    assert iou > 0.9, f"overlay/silhouette IoU {iou:.3f}"


def test_clean_pose_has_no_red_and_views_differ(clean):
    scene, result = clean
    out_dir = scene.layout.result_vis(scene.video)
    overlay, _ = read_video(out_dir / "recon_result.mp4")
    assert _red(overlay).sum() == 0
    assert result.metrics["frames_with_penetration"] == 0
    top, _ = read_video(out_dir / "recon_result_top_view.mp4")
    comparison, _ = read_video(out_dir / "recon_comparison.mp4")
    w = scene.image_size[1]
    side = comparison[:, :, 2 * w :]
    # The side and top views are their own renderings, not copies of the input.
    assert np.abs(side.astype(int) - original_like(out_dir)).mean() > 10
    assert top.std() > 10
    # The top view's trails grow: the last frame has more object-trail pixels than the first.
    orange = lambda f: ((f[..., 0] > 200) & (f[..., 1] > 100) & (f[..., 1] < 190) & (f[..., 2] < 80)).sum()  # noqa: E731
    assert orange(top[-1]) > orange(top[0])


def original_like(out_dir: Path) -> np.ndarray:
    frames, _ = read_video(out_dir / "input.mp4")
    return frames.astype(int)


def test_penetrating_pose_shows_red(tmp_path):
    scene = build_scene(tmp_path, num_frames=4, image_size=(120, 160), penetrating=True, name="penetrate")
    result = _run(scene, config={"visualization": {"vis_html": False}})
    out_dir = scene.layout.result_vis(scene.video)
    overlay, _ = read_video(out_dir / "recon_result.mp4")
    assert (_red(overlay).reshape(len(overlay), -1).sum(1) > 5).all()
    assert result.metrics["frames_with_penetration"] == 4
    assert result.metrics["max_penetration_depth_m"] > 0.05
    assert not (out_dir / "recon_result.html").exists()


def test_shorter_reconstruction_keeps_input_frame_count(tmp_path):
    scene = build_scene(tmp_path, num_frames=6, image_size=(96, 128), name="short")
    hoi_path = scene.layout.raw_hoi_data(scene.video)
    hoi = load_pickle(hoi_path)
    hoi["human_data"] = {k: (v[:4] if k in ("poses", "trans") else v) for k, v in hoi["human_data"].items()}
    hoi["obj_data"] = {k: (v[:4] if k in ("obj_R", "obj_t") else v) for k, v in hoi["obj_data"].items()}
    hoi["meta"]["contact_frames"] = hoi["meta"]["contact_frames"][:4]
    from reconstruction import fileio

    fileio.write_pickle(hoi_path, hoi)
    _run(scene, config={"visualization": {"vis_html": False}})
    out_dir = scene.layout.result_vis(scene.video)
    for name in ("recon_result.mp4", "recon_result_top_view.mp4", "recon_comparison.mp4"):
        frames, _ = read_video(out_dir / name)
        assert len(frames) == 6, name


def test_missing_inputs_are_named(tmp_path):
    scene = build_scene(tmp_path, num_frames=3, image_size=(64, 96), name="broken")
    scene.layout.raw_hoi_data(scene.video).unlink()
    with pytest.raises(StageInputError, match="hoi_data.pkl"):
        _run(scene)
    scene2 = build_scene(tmp_path / "b", num_frames=3, image_size=(64, 96), name="broken2")
    scene2.layout.mesh(scene2.video).unlink()
    with pytest.raises(StageInputError, match="object mesh not found"):
        _run(scene2)


@pytest.mark.browser
def test_scenepic_page_opens_in_chromium(clean):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed (apt-get install -y chromium)")
    scene, result = clean
    html = scene.layout.result_vis(scene.video) / "recon_result.html"
    assert html.stat().st_size < 20e6
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "recon_result_html.png"
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "request",
            lambda req: requests.append(req.url) if not req.url.startswith(("file:", "data:", "blob:")) else None,
        )
        page.goto(html.as_uri())
        page.wait_for_selector("canvas", timeout=20000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shot))
        canvas = page.query_selector("canvas")
        box = canvas.bounding_box()
        browser.close()
    assert not errors, errors
    assert not requests, f"external requests: {requests}"
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    x, y, w, h = (int(v) for v in (box["x"], box["y"], box["width"], box["height"]))
    region = image[y : y + h, x : x + w]
    non_white = (np.abs(region - 255).sum(-1) > 30).mean()
    assert non_white > 0.02, f"canvas looks empty ({non_white:.3%} drawn)"
    shutil.copy(html, ARTIFACTS / "recon_result.html")


def test_with_recon_config(tmp_path):
    """The pipeline hands stage 6 a ReconConfig: its visualization options are honoured."""
    from reconstruction.config import load_config

    scene = build_scene(tmp_path, num_frames=3, image_size=(64, 96), name="cfg")
    config = load_config(None).merge({"visualization": {"vis_html": False, "extra_views": []}})
    result = _run(scene, config=config)
    assert sorted(p.name for p in result.files) == ["input.mp4", "recon_comparison.mp4", "recon_result.mp4"]
    frames, _ = read_video(scene.layout.result_vis(scene.video) / "recon_comparison.mp4")
    assert frames.shape == (3, 64, 3 * 96, 3)
    disabled = _run(scene, config=load_config(None).merge({"visualization": {"enable": False}}))
    assert disabled.files == []


def test_cancel_mid_run_keeps_previous_outputs(tmp_path):
    from reconstruction.stages.base import StageCancelled

    scene = build_scene(tmp_path, num_frames=visualize.FRAMES_PER_CHUNK + 2, image_size=(48, 64), name="cancel")
    config = {"visualization": {"vis_html": False}}
    _run(scene, config=config)
    out_dir = scene.layout.result_vis(scene.video)
    before = {p.name: p.read_bytes() for p in out_dir.glob("*.mp4")}
    calls = []

    def cancel_on_second_chunk():
        calls.append(1)
        return len(calls) >= 2

    ctx = StageContext(video=scene.video, layout=scene.layout, config=config, should_cancel=cancel_on_second_chunk)
    with pytest.raises(StageCancelled):
        visualize.run(ctx)
    after = {p.name: p.read_bytes() for p in out_dir.glob("*.mp4")}
    assert after == before, "a cancelled run must not replace or truncate earlier outputs"
    assert not list(out_dir.glob(".*tmp-*"))
