"""Stages 2 and 3 on synthetic scenes with ground truth: mask IoU, object pose error, seconds per stage.

Per category, ``--videos`` videos of ``--frames`` frames at ``--width`` x ``--height`` are generated with
the synthetic-scene generator (kept between runs in ``--workdir``), then stage 2 (default backends) and
stage 3 (default backend) run on them. Reported per category: object and human mask IoU (median over
frames 1..T-1, frame 0 being the given mask), object translation error median (cm) and rotation error
median (deg) over all frames, and seconds per video per stage.

    python benchmarks/stage23_bench.py --workdir var/bench23 --categories box bottle drill mug

Targets (issue 4): object IoU >= 0.85, human IoU >= 0.9, translation <= 2 cm, rotation <= 5 deg.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconstruction.eval.metrics import add_s, rotation_error_deg, symmetric_rotation_error_deg  # noqa: E402
from reconstruction.layout import Layout, VideoId  # noqa: E402
from reconstruction.render_config import load_pickle  # noqa: E402
from reconstruction.stages import object_pose, preprocess  # noqa: E402
from reconstruction.stages.base import StageContext  # noqa: E402
from reconstruction.stages.scene_inputs import load_masks_cache, masks_to_tensors  # noqa: E402
from reconstruction.synth.ground_truth import load_ground_truth  # noqa: E402

logger = logging.getLogger("stage23_bench")


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    inter = (pred & truth).reshape(len(pred), -1).sum(1)
    union = (pred | truth).reshape(len(pred), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def generate(layout: Layout, vid: VideoId, category: str, frames: int, width: int, height: int, seed: int) -> Path:
    """Synthetic video in the contract layout + the per-frame GT instance masks (npz beside it)."""
    truth_masks = layout.results_dir / "gt_masks" / f"{vid.name}.npz"
    if truth_masks.exists() and layout.video(vid).exists():
        return truth_masks
    from reconstruction import fileio
    from reconstruction.body import load_body_model
    from reconstruction.synth.scene import HUMAN_ID, OBJECT_ID, SceneConfig, build_scene, render_scene
    from reconstruction.synth.writer import write_video_files

    config = SceneConfig(category=category, num_frames=frames, width=width, height=height, seed=seed)
    scene = build_scene(config, load_body_model("anny"))
    rendered = render_scene(scene)
    write_video_files(layout, vid, scene, rendered)
    instance = rendered.output.instance.cpu().numpy()
    fileio.write_npz(truth_masks, object=instance == OBJECT_ID, human=instance == HUMAN_ID)
    return truth_masks


def evaluate_masks(layout: Layout, vid: VideoId, truth_masks: Path) -> dict[str, float]:
    """Stage 2 alone: object and human mask IoU medians (frames 1..T-1) and seconds."""
    stage2 = preprocess.run(StageContext(video=vid, layout=layout, config={}))
    with np.load(truth_masks) as data:
        gt_object, gt_human = data["object"], data["human"]
    object_masks, human_masks = masks_to_tensors(load_masks_cache(layout.masks_cache(vid)))
    object_iou, human_iou = mask_iou(object_masks, gt_object), mask_iou(human_masks, gt_human)
    logger.info("%s object IoU per frame: %s", vid, " ".join(f"{v:.2f}" for v in object_iou))
    return {
        "object_iou_median": float(np.median(object_iou[1:])),
        "human_iou_median": float(np.median(human_iou[1:])),
        "stage2_s": stage2.seconds,
    }


def evaluate(layout: Layout, vid: VideoId, truth_masks: Path) -> dict[str, float]:
    masks = evaluate_masks(layout, vid, truth_masks)
    stage3 = object_pose.run(StageContext(video=vid, layout=layout, config={}))
    gt = load_ground_truth(layout.ground_truth(vid))
    poses = load_pickle(layout.object_poses(vid))
    trans_err = np.linalg.norm(poses[:, :3, 3] - gt.object_poses_cam[:, :3, 3], axis=1)
    raw_rot_err = rotation_error_deg(poses[:, :3, :3], gt.object_poses_cam[:, :3, :3])
    axis = gt.extra.get("object_symmetry_axis")  # a turn about it changes no pixel: measured modulo it
    rot_err = (
        raw_rot_err
        if axis is None
        else symmetric_rotation_error_deg(poses[:, :3, :3], gt.object_poses_cam[:, :3, :3], axis)
    )
    # ADD-S: symmetric objects (bottle, mug body) have rotations no image can tell apart.
    import trimesh

    vertices = np.asarray(trimesh.load(gt.object_mesh_path, force="mesh", process=False).vertices)
    model_points = vertices[:: max(1, len(vertices) // 500)]  # bounded memory: T x N x N distances
    return {
        "object_iou_median": masks["object_iou_median"],
        "human_iou_median": masks["human_iou_median"],
        "translation_cm_median": float(np.median(trans_err) * 100),
        "rotation_deg_median": float(np.median(rot_err)),
        "translation_cm_max": float(trans_err.max() * 100),
        "rotation_deg_max": float(rot_err.max()),
        "rotation_deg_median_ignoring_symmetry": float(np.median(raw_rot_err)),
        "add_s_cm": float(add_s(poses, gt.object_poses_cam, model_points) * 100),
        "stage2_s": masks["stage2_s"],
        "stage3_s": stage3.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="var/bench23")
    parser.add_argument("--categories", nargs="+", default=["box", "bottle", "drill", "mug"])
    parser.add_argument("--videos", type=int, default=1)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate_only", action="store_true")
    parser.add_argument("--stage2_only", action="store_true", help="masks only (IoU, stage 2 seconds), no stage 3")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    layout = Layout.create(args.workdir)
    rows = {}
    for category in args.categories:
        per_video = []
        for index in range(args.videos):
            vid = VideoId("Synthetic", category, f"{category}_{args.seed + index:03d}")
            start = time.perf_counter()
            truth_masks = generate(layout, vid, category, args.frames, args.width, args.height, args.seed + index)
            logger.info("%s ready in %.1f s", vid, time.perf_counter() - start)
            if args.generate_only:
                continue
            result = (evaluate_masks if args.stage2_only else evaluate)(layout, vid, truth_masks)
            logger.info("%s: %s", vid, json.dumps({k: round(v, 3) for k, v in result.items()}))
            per_video.append(result)
        if per_video:
            rows[category] = {key: float(np.median([r[key] for r in per_video])) for key in per_video[0]}
    if not rows:
        return 0
    print(f"\nstage 2+3 benchmark, {platform.node()} ({platform.processor() or platform.machine()}), "
          f"{time.strftime('%Y-%m-%d')}, {args.videos} video(s)/category, {args.frames} frames {args.width}x{args.height}")  # fmt: skip
    header = ["category", "obj IoU", "human IoU", "trans cm", "rot deg", "trans max", "rot max", "ADD-S cm", "stage2 s",
              "stage3 s"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    keys = ("object_iou_median", "human_iou_median", "translation_cm_median", "rotation_deg_median",
            "translation_cm_max", "rotation_deg_max", "add_s_cm", "stage2_s", "stage3_s")  # fmt: skip
    for category, row in rows.items():
        print(f"| {category} | " + " | ".join(f"{row[k]:.3g}" if k in row else "-" for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
