"""Stage 1 (human pose) accuracy and time on synthetic videos, one per object category.

Usage: python benchmarks/stage1_bench.py [--results_dir DIR] [--categories box bottle drill mug]
       [--num_frames 60] [--width 640] [--height 480] [--device cpu] [--seed 0] [--iterations N]

Generates the videos with the project's synth module (reused when already in DIR), runs stage 1 with the
default MediaPipe backend, and compares with the ground truth:
- 2D: median pixel error of MediaPipe's 33 body keypoints that it marks visible (confidence > 0.5) against
  the projected ground-truth keypoints (target <= 8 px);
- 3D: MPJPE of the fitted body over ``keypoints.MPJPE_BODY_JOINTS`` in the camera frame, no alignment
  (target <= 8 cm); also the hips-aligned (root-relative) MPJPE;
- seconds per video of the MediaPipe part and of the fitting part.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reconstruction.keypoints import MPJPE_BODY_JOINTS, NUM_BODY, index
from reconstruction.layout import Layout, VideoId
from reconstruction.stages import human_pose
from reconstruction.stages.base import StageContext
from reconstruction.synth.ground_truth import load_ground_truth

CATEGORIES = ("box", "bottle", "drill", "mug")


def generate_video(results_dir: Path, category: str, args: argparse.Namespace) -> VideoId:
    from reconstruction.synth.generate import generate, video_name

    vid = VideoId("Synthetic", category, video_name(category, "normal", args.seed, 0))
    layout = Layout.create(results_dir)
    if layout.video(vid).exists() and layout.ground_truth(vid).exists():
        return vid
    (made,) = generate(
        str(results_dir), "Synthetic", category, num_videos=1, num_frames=args.num_frames, seed=args.seed,
        width=args.width, height=args.height, device=args.device,
    )  # fmt: skip
    return made


def evaluate(layout: Layout, vid: VideoId) -> dict[str, float]:
    gt = load_ground_truth(layout.ground_truth(vid))
    w2c = gt.world_to_cam[0]
    truth = gt.keypoints_3d_world @ w2c[:3, :3].T + w2c[:3, 3]
    uv = truth @ gt.K.T
    uv = uv[..., :2] / uv[..., 2:3]
    with np.load(layout.hmr_keypoints(vid)) as data:
        detected = data["keypoints_2d"]
    visible = detected[:, :NUM_BODY, 2] > 0.5
    error_2d = np.linalg.norm(detected[:, :NUM_BODY, :2] - uv[:, :NUM_BODY], axis=-1)
    fitted = torch.load(layout.hmr_result(vid), weights_only=True)["keypoints_3d_cam"].numpy()
    joints = [index(n) for n in MPJPE_BODY_JOINTS]
    hips = [index("left_hip"), index("right_hip")]
    mpjpe = np.linalg.norm(fitted[:, joints] - truth[:, joints], axis=-1).mean()
    relative = (fitted[:, joints] - fitted[:, hips].mean(1, keepdims=True)) - (
        truth[:, joints] - truth[:, hips].mean(1, keepdims=True)
    )
    hand_seen = (detected[:, NUM_BODY:, 2] > 0).reshape(len(detected), 2, -1).any(-1).mean()
    return {
        "median_2d_px": float(np.median(error_2d[visible])) if visible.any() else float("nan"),
        "visible_fraction": float(visible.mean()),
        "hands_detected": float(hand_seen),
        "mpjpe_cm": float(mpjpe * 100),
        "rel_mpjpe_cm": float(np.linalg.norm(relative, axis=-1).mean() * 100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", default=None, help="where the synthetic videos live (default: a temp dir)")
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--num_frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="override human_pose.fit.iterations")
    args = parser.parse_args()

    results_dir = Path(args.results_dir or tempfile.mkdtemp(prefix="stage1_bench_"))
    layout = Layout.create(results_dir)
    config: dict = {"human_pose": {"backend": "mediapipe"}}
    if args.iterations is not None:
        config["human_pose"]["fit"] = {"iterations": args.iterations}
    models: dict = {}
    rows = []
    for category in args.categories:
        vid = generate_video(results_dir, category, args)
        ctx = StageContext(video=vid, layout=layout, config=config, device=args.device, models=models)
        started = time.perf_counter()
        result = human_pose.run(ctx)
        total = time.perf_counter() - started
        row = {"category": category, **evaluate(layout, vid)}
        row.update(detect_s=result.metrics["detect_seconds"], fit_s=result.metrics["fit_seconds"], total_s=total)
        rows.append(row)
        print(f"{category}: {row}", flush=True)

    print()
    print(
        f"Stage 1 benchmark, {datetime.date.today()}, {platform.node()} ({platform.processor() or platform.machine()}), "
        f"device {args.device}, torch threads {torch.get_num_threads()}, {args.num_frames} frames "
        f"{args.width}x{args.height}, results in {results_dir}"
    )
    print()
    print("| category | 2D median px (visible) | visible | hands seen | MPJPE cm | hip-aligned MPJPE cm "
          "| MediaPipe s | fit s | total s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['category']} | {r['median_2d_px']:.2f} | {r['visible_fraction']:.2f} | {r['hands_detected']:.2f} "
            f"| {r['mpjpe_cm']:.2f} | {r['rel_mpjpe_cm']:.2f} | {r['detect_s']:.1f} | {r['fit_s']:.1f} "
            f"| {r['total_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
