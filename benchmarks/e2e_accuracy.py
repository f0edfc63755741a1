"""End-to-end accuracy and filter benchmark on synthetic scenes: is the reconstruction metrically right?

    python benchmarks/e2e_accuracy.py --results_dir results/e2e --categories box bottle drill mug \\
        --videos_per_category 1 --frames 30 --width 320 --height 240 --variants normal --seed 0 --device cpu

For every (category, variant, index) it generates a synthetic video with ground truth
(``reconstruction.synth``), runs the selected stages through ``reconstruction.pipeline.run_stage`` with
``skip_done`` (re-runs reuse finished stages), evaluates the outputs against the ground truth
(``reconstruction.eval``) and writes ``<results_dir>/benchmark/e2e_accuracy.{json,md}``:

- per category (``normal`` videos; medians over videos): stage 1 2D keypoint error (px, median over visible
  joints) and MPJPE (m); stage 2 object/human mask IoU (median over frames); stage 3 object translation /
  rotation error; stage 4 body MPJPE, hand-joint error during contact, object errors, contact F1 per hand,
  max penetration, body jitter relative to stage 1; seconds per stage;
- per variant: stage 5 pass rate (``normal``) or reject rate (bad variants) and which checks rejected.

``--oracle_stage3`` measures stage 4 alone: the ground-truth object poses (optionally spoiled along the viewing
rays by ``--oracle_depth_error`` / ``--oracle_depth_noise`` metres) are written into the stage-3 cache and stage 3
imports them (``object_pose.backend: import``).

The ground truth stores no per-frame masks, so the generator's instance maps are kept beside it
(``<results_dir>/benchmark/gt_masks/<video>.npz``); with ``--reuse`` an existing video is kept and its
instance maps are re-rendered from the (deterministic) scene when missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconstruction import fileio, pipeline  # noqa: E402
from reconstruction.config import load_config  # noqa: E402
from reconstruction.eval.evaluate import (  # noqa: E402
    _load_mesh,
    _model_points,
    evaluate_human_pose,
    evaluate_masks,
    evaluate_object_pose,
    evaluate_video,
)
from reconstruction.layout import Layout, VideoId  # noqa: E402
from reconstruction.synth.generate import video_name  # noqa: E402
from reconstruction.synth.ground_truth import load_ground_truth  # noqa: E402

logger = logging.getLogger("benchmarks.e2e_accuracy")

DATASET = "Synthetic"
BAD_VARIANTS = ("static_object", "camera_shake", "object_lost")
# The stage-5 check that should reject each bad variant (contract section 7).
EXPECTED_REJECTION = {
    "static_object": ("filter_object_motion",),
    "camera_shake": ("camera_trans",),
    "object_lost": ("object_mask", "total_mask"),
}

# (table title, stage key in metrics.json, metric key, unit scale, format)
CATEGORY_COLUMNS = (
    ("S1 2D kp px", "human_pose", "keypoint_2d_error_median_px", 1.0, "{:.1f}"),
    ("S1 MPJPE cm", "human_pose", "body_mpjpe_m", 100.0, "{:.1f}"),
    ("S2 obj IoU", "masks", "object_mask_iou_median", 1.0, "{:.3f}"),
    ("S2 hum IoU", "masks", "human_mask_iou_median", 1.0, "{:.3f}"),
    ("S3 t cm", "object_pose", "object_translation_error_m", 100.0, "{:.2f}"),
    ("S3 R deg", "object_pose", "object_rotation_error_deg", 1.0, "{:.2f}"),
    ("S3 t med cm", "object_pose", "object_translation_error_median_m", 100.0, "{:.2f}"),
    ("S3 R med deg", "object_pose", "object_rotation_error_median_deg", 1.0, "{:.2f}"),
    ("S3 t held cm", "object_pose", "object_translation_error_held_m", 100.0, "{:.1f}"),
    ("S3 dz held cm", "object_pose", "object_depth_bias_held_m", 100.0, "{:+.1f}"),
    ("S4 MPJPE cm", "optimize", "body_mpjpe_m", 100.0, "{:.1f}"),
    ("S4 hand@contact cm", "optimize", "hand_joint_error_contact_m", 100.0, "{:.1f}"),
    ("S4 t cm", "optimize", "object_translation_error_m", 100.0, "{:.2f}"),
    ("S4 R deg", "optimize", "object_rotation_error_deg", 1.0, "{:.2f}"),
    ("S4 t med cm", "optimize", "object_translation_error_median_m", 100.0, "{:.2f}"),
    ("S4 R med deg", "optimize", "object_rotation_error_median_deg", 1.0, "{:.2f}"),
    ("S4 dz held cm", "optimize", "object_depth_bias_held_m", 100.0, "{:+.1f}"),
    ("S4 F1 L", "optimize", "contact_left_f1", 1.0, "{:.2f}"),
    ("S4 F1 R", "optimize", "contact_right_f1", 1.0, "{:.2f}"),
    ("S4 pen cm", "optimize", "penetration_max_m", 100.0, "{:.2f}"),
    ("S4/S1 jitter", "derived", "jitter_ratio_s4_over_s1", 1.0, "{:.2f}"),
)


def parse_stages(text: str) -> list[int]:
    """``"1-6"`` or ``"1,2,3"`` -> sorted stage numbers in 1..6."""
    numbers: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-"))
            numbers.update(range(lo, hi + 1))
        else:
            numbers.add(int(part))
    if not numbers or min(numbers) < 1 or max(numbers) > 6:
        raise ValueError(f"--stages must name stages within 1-6, got {text!r}")
    return sorted(numbers)


def gt_masks_path(layout: Layout, vid: VideoId) -> Path:
    return layout.results_dir / "benchmark" / "gt_masks" / vid.rel.with_suffix(".npz")


def ensure_video(
    layout: Layout, vid: VideoId, category: str, variant: str, seed: int, frames: int, width: int, height: int,
    reuse: bool, device: str,
) -> float:  # fmt: skip
    """Generate the synthetic video (or keep it with ``reuse``) and its ground-truth instance maps.
    Returns the seconds spent."""
    from reconstruction.body import load_body_model
    from reconstruction.synth.scene import SceneConfig, build_scene, render_scene
    from reconstruction.synth.writer import write_video_files

    have_video = layout.video(vid).exists() and layout.ground_truth(vid).exists()
    if reuse and have_video and gt_masks_path(layout, vid).exists():
        return 0.0
    start = time.perf_counter()
    config = SceneConfig(category=category, variant=variant, num_frames=frames, width=width, height=height, seed=seed)
    scene = build_scene(config, load_body_model("anny"))
    rendered = render_scene(scene, device=device)
    if not (reuse and have_video):
        write_video_files(layout, vid, scene, rendered)
    instance = rendered.output.instance.cpu().numpy().astype(np.uint8)
    fileio.write_npz(gt_masks_path(layout, vid), instance=instance)
    return time.perf_counter() - start


def oracle_object_poses(gt_poses_cam: np.ndarray, depth_error_m: float, noise_m: float, seed: int) -> np.ndarray:
    """Ground-truth object->camera poses, optionally spoiled the way a monocular tracker errs: every
    translation slid along its viewing ray by ``depth_error_m`` (the projection is unchanged, the depth is
    off) plus per-frame Gaussian noise of ``noise_m`` along the ray."""
    poses = np.array(gt_poses_cam, dtype=np.float64, copy=True)
    if depth_error_m or noise_m:
        rng = np.random.default_rng(seed)
        t = poses[:, :3, 3]
        distance = np.linalg.norm(t, axis=-1, keepdims=True)
        offset = depth_error_m + noise_m * rng.standard_normal(distance.shape)
        poses[:, :3, 3] = t * (distance + offset) / distance
    return poses


def write_oracle_stage3(layout: Layout, vid: VideoId, depth_error_m: float, noise_m: float) -> None:
    """Write the (spoiled) ground-truth poses into the stage-3 cache, where ``object_pose.backend: import``
    reads them by default. An unchanged cache is left alone (its manifest stays valid)."""
    gt = load_ground_truth(layout.ground_truth(vid))
    poses = oracle_object_poses(gt.object_poses_cam, depth_error_m, noise_m, gt.seed)
    path = layout.object_poses(vid)
    if path.exists():
        from reconstruction.render_config import load_pickle

        current = np.asarray(load_pickle(path), dtype=np.float64)
        if current.shape == poses.shape and np.allclose(current, poses, atol=1e-9):
            return
    fileio.write_pickle(path, poses)


def run_stages(
    vid: VideoId, config: Any, results_dir: Path, stages: list[int], device: str,
    oracle: tuple[float, float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run (or reuse) each stage; stop at the first failure. Seconds are the stage's own run time (from the
    manifest for reused stages). ``oracle`` (depth error, noise in m): stage 3 imports the ground-truth
    poses so spoiled (``write_oracle_stage3``) instead of tracking."""
    seconds: dict[str, float] = {}
    status: dict[str, str] = {}
    for stage in stages:
        name = pipeline.stage_name(stage)
        if stage == 3 and oracle is not None:
            write_oracle_stage3(pipeline.layout_for(config, results_dir), vid, *oracle)
        try:
            result = pipeline.run_stage(vid, stage, config, results_dir, device=device, skip_done=True)
        except Exception as exc:  # noqa: BLE001 - a failed stage is a benchmark figure, not a crash
            logger.exception("%s: stage %d (%s) failed", vid, stage, name)
            status[name] = f"failed: {type(exc).__name__}: {exc}"
            break
        reused = result.info.get("status") == "reused"
        status[name] = "reused" if reused else "done"
        original = result.info.get("original_seconds") if reused else result.seconds
        seconds[name] = float(original if original is not None else result.seconds)
        logger.info("%s: stage %d (%s) %s in %.1f s", vid, stage, name, status[name], seconds[name])
    return {"stage_seconds": seconds, "stage_status": status}


def recorded_stages(layout: Layout, vid: VideoId, stages: list[int]) -> dict[str, Any]:
    """Seconds and status of stages already run (from their manifests), running nothing."""
    seconds: dict[str, float] = {}
    status: dict[str, str] = {}
    for stage in stages:
        manifest = pipeline.read_manifest(layout, vid, stage)
        name = pipeline.stage_name(stage)
        status[name] = "recorded" if manifest is not None else "missing"
        if manifest is not None and manifest.get("seconds") is not None:
            seconds[name] = float(manifest["seconds"])
    return {"stage_seconds": seconds, "stage_status": status}


def filter_outcome(layout: Layout, vid: VideoId) -> dict[str, Any] | None:
    path = layout.filter_report(vid)
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    failed = [c["name"] for c in report["checks"] if c["verdict"] == "fail"]
    return {"verdict": report["verdict"], "first_failure": report.get("first_failure"), "failed_checks": failed,
            "checks": {c["name"]: {k: c[k] for k in ("value", "threshold", "verdict")} for c in report["checks"]}}  # fmt: skip


def metrics_cache_path(layout: Layout, vid: VideoId) -> Path:
    return layout.results_dir / "benchmark" / "metrics" / vid.rel.with_suffix(".json")


def _metric_sources(layout: Layout, vid: VideoId) -> list[Path]:
    """The stage outputs the ground-truth metrics are computed from: stage 1, 3 and 4 results."""
    return [layout.hmr_result(vid), layout.object_poses(vid), layout.raw_hoi_data(vid)]


def metric_sources_digest(layout: Layout, vid: VideoId) -> str:
    """SHA-1 of the stage outputs the metrics are computed from (stage 1, 3 and 4 results; absent ones count as
    absent): the benchmark's metrics cache is valid for exactly these bytes. (A modification time is not enough:
    ``cp -r`` of a results dir gives every file a new one, and a stale cache copied after the outputs looked fresh.)"""
    digest = hashlib.sha1()
    for source in _metric_sources(layout, vid):
        digest.update(source.name.encode())
        digest.update(source.read_bytes() if source.exists() else b"absent")
    return digest.hexdigest()


def _cached_metrics(layout: Layout, vid: VideoId) -> dict[str, Any] | None:
    """The benchmark's cached metrics report when it was computed from the current stage outputs (same
    ``metric_sources_digest``), else stage 4's metrics.json when it is newer than every stage output it was
    computed from (stage 4 writes it beside its result)."""
    cache = metrics_cache_path(layout, vid)
    if cache.exists():
        report = json.loads(cache.read_text())
        if isinstance(report.get("stages"), dict) and report.get("sources_sha1") == metric_sources_digest(layout, vid):
            return report
    newest = max((src.stat().st_mtime_ns for src in _metric_sources(layout, vid) if src.exists()), default=0)
    path = layout.metrics(vid)
    if path.exists() and path.stat().st_mtime_ns >= newest:
        report = json.loads(path.read_text())
        if isinstance(report.get("stages"), dict):
            return report
    return None


def evaluate(layout: Layout, vid: VideoId, device: str, stage4: bool = True) -> dict[str, Any]:
    """Ground-truth metrics of every stage output, cached under ``benchmark/metrics`` (never written into
    the stage outputs: stage 4 owns metrics.json). ``stage4=False`` leaves out the stage-4 figures unless
    cached (their exact penetration test is the slow part on a CPU)."""
    report = _cached_metrics(layout, vid)
    if report is None and stage4:
        report = evaluate_video(layout, vid, device)
        fileio.write_json(
            metrics_cache_path(layout, vid), {**report, "sources_sha1": metric_sources_digest(layout, vid)}
        )
    elif report is None:
        gt = load_ground_truth(layout.ground_truth(vid))
        model_points = _model_points(_load_mesh(gt.object_mesh_path)[0])
        stages = {"human_pose": evaluate_human_pose(layout, vid, gt),
                  "object_pose": evaluate_object_pose(layout, vid, gt, model_points)}  # fmt: skip
        report = {"video": str(vid), "stages": {k: v for k, v in stages.items() if v is not None}}
    stages = report["stages"]
    if gt_masks_path(layout, vid).exists():
        with np.load(gt_masks_path(layout, vid)) as data:
            masks = evaluate_masks(layout, vid, data["instance"])
        if masks is not None:
            stages["masks"] = masks
    s1 = stages.get("human_pose", {}).get("body_accel_jitter_m_per_frame2")
    s4 = stages.get("optimize", {}).get("body_accel_jitter_m_per_frame2")
    if s1 and s4 is not None:
        stages["derived"] = {"jitter_ratio_s4_over_s1": s4 / s1}
    return report


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(statistics.median(values)) if values else None


def summarise(videos: list[dict[str, Any]], categories: list[str], stage_names: list[str]) -> dict[str, Any]:
    per_category = {}
    for category in categories:
        rows = [v for v in videos if v["category"] == category and v["variant"] == "normal"]
        figures = {}
        for _, stage, key, _, _ in CATEGORY_COLUMNS:
            figures[f"{stage}.{key}"] = _median([v["metrics"].get(stage, {}).get(key) for v in rows])
        for name in stage_names:
            figures[f"seconds.{name}"] = _median([v["stage_seconds"].get(name) for v in rows])
        per_category[category] = {"videos": len(rows), **figures}
    per_variant = {}
    for variant in sorted({v["variant"] for v in videos}):
        rows = [v for v in videos if v["variant"] == variant and v["filter"] is not None]
        if not rows:
            continue
        rejected = [v for v in rows if v["filter"]["verdict"] != "valid"]
        checks: dict[str, int] = {}
        for v in rejected:
            for name in v["filter"]["failed_checks"]:
                checks[name] = checks.get(name, 0) + 1
        entry = {"videos": len(rows), "pass_rate": 1 - len(rejected) / len(rows),
                 "reject_rate": len(rejected) / len(rows), "failed_checks": checks}  # fmt: skip
        if variant in EXPECTED_REJECTION:
            right = [v for v in rejected if set(v["filter"]["failed_checks"]) & set(EXPECTED_REJECTION[variant])]
            entry["rejected_by_expected_check_rate"] = len(right) / len(rows)
            entry["expected_checks"] = list(EXPECTED_REJECTION[variant])
        per_variant[variant] = entry
    return {"per_category": per_category, "per_variant": per_variant}


def _cell(value: float | None, scale: float, fmt: str) -> str:
    return "-" if value is None else fmt.format(value * scale)


def markdown(summary: dict[str, Any], stage_names: list[str], header: dict[str, Any]) -> str:
    lines = [
        "# End-to-end accuracy on synthetic scenes",
        "",
        f"- command: `{header['command']}`",
        f"- machine: {header['machine']}; date {header['date']}; wall {header['wall_seconds']:.0f} s; "
        f"load average at start {header['loadavg_start']}, at end {header['loadavg_end']}",
        "- per category: `normal` videos, median over videos of each video's figure (translation/rotation/MPJPE: "
        "mean over frames, `med` columns: median over frames, `held` columns: mean over the frames a hand holds the object, "
        "`dz`: signed camera-depth error, > 0 too far; 2D keypoints: median over visible joints; IoU: median over frames)",
        "",
    ]
    titles = [c[0] for c in CATEGORY_COLUMNS]
    lines.append("| category | n | " + " | ".join(titles) + " |")
    lines.append("|---" * (len(titles) + 2) + "|")
    for category, fig in summary["per_category"].items():
        cells = [_cell(fig[f"{stage}.{key}"], scale, fmt) for _, stage, key, scale, fmt in CATEGORY_COLUMNS]
        lines.append(f"| {category} | {fig['videos']} | " + " | ".join(cells) + " |")
    lines += ["", "Seconds per stage per video (median over `normal` videos):", ""]
    lines.append("| category | " + " | ".join(stage_names) + " | total |")
    lines.append("|---" * (len(stage_names) + 2) + "|")
    for category, fig in summary["per_category"].items():
        secs = [fig[f"seconds.{n}"] for n in stage_names]
        total = sum(s for s in secs if s is not None)
        lines.append(f"| {category} | " + " | ".join(_cell(s, 1.0, "{:.1f}") for s in secs) + f" | {total:.1f} |")
    if summary["per_variant"]:
        lines += ["", "Stage 5 filter:", "", "| variant | n | pass rate | reject rate | rejected by expected check | "
                  "failed checks (count) |", "|---|---|---|---|---|---|"]  # fmt: skip
        for variant, entry in summary["per_variant"].items():
            right = entry.get("rejected_by_expected_check_rate")
            checks = ", ".join(f"{k} ({n})" for k, n in sorted(entry["failed_checks"].items())) or "-"
            expected = f"{right:.2f} ({'/'.join(entry['expected_checks'])})" if right is not None else "-"
            lines.append(f"| {variant} | {entry['videos']} | {entry['pass_rate']:.2f} | {entry['reject_rate']:.2f} | "
                         f"{expected} | {checks} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", required=True)
    parser.add_argument("--categories", nargs="+", default=["box", "bottle", "drill", "mug"])
    parser.add_argument("--videos_per_category", type=int, default=1)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--variants", nargs="+", default=["normal"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", default=None, help="config YAML (default: the engine's default)")
    parser.add_argument("--stages", default="1-6", help="stages to run, e.g. 1-6 or 1-3")
    parser.add_argument("--reuse", action="store_true", help="keep videos already generated in results_dir")
    parser.add_argument("--evaluate_only", action="store_true",
                        help="generate and run nothing: evaluate what is in results_dir (seconds from the manifests)")  # fmt: skip
    parser.add_argument(
        "--metrics_variants",
        nargs="+",
        default=None,
        help="variants whose ground-truth metrics are computed (default: all); others: filter only",
    )
    parser.add_argument(
        "--no_stage4_metrics",
        action="store_true",
        help="with --evaluate_only: skip stage-4 metrics not already in metrics.json (slow on CPU)",
    )
    parser.add_argument("--oracle_stage3", action="store_true",
                        help="stage 3 imports the ground-truth object poses (object_pose.backend: import): "
                        "measures stage 4 alone")  # fmt: skip
    parser.add_argument("--oracle_depth_error", type=float, default=0.0,
                        help="with --oracle_stage3: slide every pose along its viewing ray by this many metres")  # fmt: skip
    parser.add_argument("--oracle_depth_noise", type=float, default=0.0,
                        help="with --oracle_stage3: per-frame Gaussian depth noise (m) along the viewing ray")  # fmt: skip
    parser.add_argument("--report_name", default="e2e_accuracy",
                        help="<results_dir>/benchmark/<name>.{json,md} (parallel runs on one results dir)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    started, load_start = time.perf_counter(), os.getloadavg()
    stages = parse_stages(args.stages)
    stage_names = [pipeline.stage_name(s) for s in stages]
    config = load_config(args.config)
    oracle = None
    if args.oracle_stage3:
        config = config.merge({"object_pose": {"backend": "import", "import_dir": None}})
        oracle = (args.oracle_depth_error, args.oracle_depth_noise)
    results_dir = Path(args.results_dir)
    layout = pipeline.layout_for(config, results_dir)
    videos = []
    for variant in args.variants:
        for category in args.categories:
            for index in range(args.videos_per_category):
                seed = args.seed + index
                vid = VideoId(DATASET, category, video_name(category, variant, args.seed, index))
                if args.evaluate_only:
                    if not layout.ground_truth(vid).exists():
                        logger.warning("%s: not generated, skipped", vid)
                        continue
                    gen_seconds, run = 0.0, recorded_stages(layout, vid, stages)
                else:
                    gen_seconds = ensure_video(layout, vid, category, variant, seed, args.frames, args.width,
                                               args.height, args.reuse, args.device)  # fmt: skip
                    run = run_stages(vid, config, results_dir, stages, args.device, oracle)
                wanted = args.metrics_variants is None or variant in args.metrics_variants
                report = (
                    evaluate(layout, vid, args.device, stage4=not args.no_stage4_metrics) if wanted else {"stages": {}}
                )
                videos.append({"video": str(vid), "category": category, "variant": variant, "seed": seed,
                               "generate_seconds": gen_seconds, **run, "metrics": report["stages"],
                               "filter": filter_outcome(layout, vid)})  # fmt: skip
                fileio.write_json(results_dir / "benchmark" / f"{args.report_name}_videos.json", videos)
    summary = summarise(videos, args.categories, stage_names)
    header = {
        "command": " ".join(["python", "benchmarks/e2e_accuracy.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, device {args.device}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "loadavg_start": [round(x, 1) for x in load_start],
        "loadavg_end": [round(x, 1) for x in os.getloadavg()],
    }
    text = markdown(summary, stage_names, header)
    out_dir = results_dir / "benchmark"
    fileio.write_json(out_dir / f"{args.report_name}.json", {**header, "summary": summary, "videos": videos})
    fileio.write_bytes(out_dir / f"{args.report_name}.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
