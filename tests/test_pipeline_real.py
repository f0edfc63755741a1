"""The real six stages through ``python -m reconstruction`` on a tiny synthetic video (8 frames, 160x120):
every contract artefact, --skip_done reuse, a stage-4 weight change killed with SIGKILL mid-stage then
resumed (exactly 4-6 rerun), and a changed video invalidating every stage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from reconstruction import pipeline
from reconstruction.config import load_config
from reconstruction.layout import Layout, VideoId
from reconstruction.render_config import load_pickle
from tests.pipeline_helpers import manifests, output_mtimes

pytestmark = pytest.mark.slow

for _module in [*pipeline.STAGE_MODULES.values(), "reconstruction.synth.generate"]:
    pytest.importorskip(_module)

from reconstruction.__main__ import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WEIGHT = ("optimization", "opt_stage_specs", "init_opt", "loss_cfg", "keypoint_tracking", "weight")


def small_config(path: Path, keypoint_weight: float = 0.3) -> Path:
    """The default config with few iterations (seconds per stage on a CPU)."""
    config = load_config(None)
    specs = {name: {"niter": 10} for name in config.raw["optimization"]["opt_stage_specs"]}
    specs["init_opt"]["loss_cfg"] = {"keypoint_tracking": {"weight": keypoint_weight}}
    config = config.merge({"optimization": {"opt_stage_specs": specs}, "object_pose": {"iterations": 5}})
    path.write_text(config.to_yaml())
    return path


def summary(out: str) -> dict[int, str]:
    """Stage -> status from the CLI's summary table (one video)."""
    rows = out.strip().splitlines()[2:]
    return {int(row.split()[1]): row.split()[3] for row in rows}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_real")
    results = root / "res"
    made = subprocess.run(
        [sys.executable, "-m", "reconstruction.synth", "--results_dir", str(results), "--category", "box",
         "--num_videos", "1", "--num_frames", "8", "--width", "160", "--height", "120", "--ik_steps", "20"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    vid = VideoId.parse(made.stdout.strip().splitlines()[-1])
    config_path = small_config(root / "small.yaml")
    t0 = time.perf_counter()
    code = main(["--results_dir", str(results), "--video_id", str(vid), "--config", str(config_path),
                 "--device", "cpu"])  # fmt: skip
    seconds = time.perf_counter() - t0
    return SimpleNamespace(root=root, results=results, layout=Layout.create(results), vid=vid, config=config_path,
                           exit_code=code, seconds=seconds)  # fmt: skip


def test_full_run_writes_every_contract_artefact(scene):
    assert scene.exit_code == 0
    layout, vid = scene.layout, scene.vid
    for path in (
        layout.hmr_result(vid),
        layout.hmr_keypoints(vid),
        layout.masks_cache(vid),
        layout.depth_cache(vid),
        layout.object_poses(vid),
        layout.raw_hoi_data(vid),
        layout.loss_history(vid),
        layout.contact_labels(vid),
        layout.filter_report(vid),
    ):
        assert path.is_file() and path.stat().st_size > 0, path
    assert layout.invalid_marker(vid).is_file() or layout.valid_hoi_data(vid).is_file()
    vis = layout.result_vis(vid)
    for name in ("input.mp4", "recon_result.mp4", "recon_result_top_view.mp4", "recon_comparison.mp4"):
        assert (vis / name).stat().st_size > 1000, name
    assert "scenepic" in (vis / "recon_result.html").read_text().lower()
    hoi = load_pickle(layout.raw_hoi_data(vid))
    assert {"human_data", "obj_data", "meta", "eval_data"} <= set(hoi)
    assert hoi["obj_data"]["obj_R"].shape == (8, 3, 3)
    found = manifests(layout, vid)
    assert sorted(found) == [1, 2, 3, 4, 5, 6]
    for manifest in found.values():
        assert manifest["status"] == "done" and manifest["seconds"] > 0
        assert manifest["hash_seconds"] < 0.5  # the bookkeeping is negligible next to the stage
        for rel, digest in manifest["outputs"].items():
            assert pipeline.file_sha256(layout.results_dir / rel) == digest
    # no temporary files were left behind by any stage
    assert not [p for p in layout.results_dir.rglob(".*.tmp-*")]


def test_skip_done_reuses_every_stage(scene, capsys):
    before = output_mtimes(scene.layout, scene.vid)
    capsys.readouterr()
    t0 = time.perf_counter()
    code = main(["--results_dir", str(scene.results), "--video_id", str(scene.vid), "--config", str(scene.config),
                 "--device", "cpu", "--skip_done"])  # fmt: skip
    seconds = time.perf_counter() - t0
    assert code == 0
    assert summary(capsys.readouterr().out) == {s: "reused" for s in range(1, 7)}
    assert output_mtimes(scene.layout, scene.vid) == before
    assert seconds < 0.1 * scene.seconds


def test_weight_change_killed_mid_stage4_then_reruns_exactly_4_to_6(scene, tmp_path, capsys):
    results = tmp_path / "res"
    shutil.copytree(scene.results, results)
    layout, vid = Layout.create(results), scene.vid
    changed = small_config(tmp_path / "changed.yaml", keypoint_weight=0.6)
    for stage in (1, 2, 3):
        assert pipeline.check_stage(vid, stage, changed, results) == (True, "up to date")
    assert pipeline.check_stage(vid, 4, changed, results) == (False, "config changed")

    args = ["--results_dir", str(results), "--video_id", str(vid), "--config", str(changed), "--device", "cpu",
            "--skip_done"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "reconstruction", *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while layout.manifest(vid, 4).exists():  # removed when stage 4 starts
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(1.0)  # well inside the optimisation (about 10 s here)
        assert proc.poll() is None, "stage 4 finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert sorted(manifests(layout, vid)) == [1, 2, 3, 5, 6]
    assert pipeline.check_stage(vid, 4, changed, results) == (False, "no manifest")

    capsys.readouterr()
    assert main(args) == 0
    assert summary(capsys.readouterr().out) == {1: "reused", 2: "reused", 3: "reused", 4: "done", 5: "done",
                                                6: "done"}  # fmt: skip
    m4 = json.loads(layout.manifest(vid, 4).read_text())
    assert m4["config"]["optimization"]["opt_stage_specs"]["init_opt"]["loss_cfg"]["keypoint_tracking"]["weight"] == 0.6
    assert not list(results.rglob(".*.tmp-*"))  # leftovers of the killed writes were cleaned up


def test_changed_video_invalidates_every_stage(scene, tmp_path):
    results = tmp_path / "res"
    shutil.copytree(scene.results, results)
    layout, vid = Layout.create(results), scene.vid
    video = layout.video(vid)
    video.write_bytes(video.read_bytes() + b"\0")
    for stage in range(1, 7):
        ok, why = pipeline.check_stage(vid, stage, scene.config, results)
        assert not ok and why.startswith("inputs changed:") and "videos_kling" in why, (stage, why)


def copy_video(src: Layout, vid: VideoId, dst: Layout, new: VideoId, stage_caches: bool) -> None:
    """Copy a video's render inputs (and its stage 1-3 caches, without manifests) under a new id."""
    pairs = [
        (src.video(vid), dst.video(new)),
        (src.mesh(vid), dst.dir("mesh_dir") / new.dataset / new.category / f"{new.name}.obj"),
        (src.depth_gt(vid), dst.depth_gt(new)),
        (src.ground_truth(vid), dst.ground_truth(new)),
    ]
    if stage_caches:
        for getter in ("hmr_result", "hmr_keypoints", "masks_cache", "depth_cache", "object_poses"):
            pairs.append((getattr(src, getter)(vid), getattr(dst, getter)(new)))
    for source, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shutil.copytree(src.render_input_dir(vid), dst.render_input_dir(new))


def test_reference_caches_rerun_4_to_6_with_stage4_batched(scene, tmp_path, capsys):
    """A results dir with stage 1-3 caches but none of our manifests (as a reference run leaves it)."""
    layout = Layout.create(tmp_path / "res")
    ids = [VideoId.parse("Imported/box/a"), VideoId.parse("Imported/box/b")]
    for new in ids:
        copy_video(scene.layout, scene.vid, layout, new, stage_caches=True)
    capsys.readouterr()
    code = main(["--results_dir", str(layout.results_dir), "--dataset", "Imported", "--config", str(scene.config),
                 "--device", "cpu", "--skip_step1", "--skip_step2", "--skip_step3", "--batch_videos", "2"])  # fmt: skip
    assert code == 0
    rows = [row.split() for row in capsys.readouterr().out.strip().splitlines()[2:]]
    table = {(row[0], int(row[1])): row[3] for row in rows}
    for vid in ids:
        assert [table[(str(vid), s)] for s in range(1, 7)] == ["skipped"] * 3 + ["done"] * 3
        found = manifests(layout, vid)
        assert sorted(found) == [4, 5, 6]
        assert found[4]["info"]["batch_size"] == 2  # both videos were optimised in one call
        rel = layout.object_poses(vid).relative_to(layout.results_dir).as_posix()
        assert found[4]["inputs"][rel] == pipeline.file_sha256(layout.object_poses(vid))
        assert layout.result_vis(vid).joinpath("recon_result.mp4").is_file()


def test_import_without_stage_caches_is_one_clear_error(scene, tmp_path, capsys):
    layout = Layout.create(tmp_path / "res")
    copy_video(scene.layout, scene.vid, layout, scene.vid, stage_caches=False)
    capsys.readouterr()
    code = main(["--results_dir", str(layout.results_dir), "--video_id", str(scene.vid), "--config",
                 str(scene.config), "--device", "cpu", "--skip_step1", "--skip_step2", "--skip_step3"])  # fmt: skip
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(err) == 1 and "stage 1 (human_pose) is skipped (--skip_step1) but its output is missing" in err[0]
    assert str(layout.hmr_result(scene.vid)) in err[0]
