"""Synthetic-scene generator: seconds per video, and MediaPipe pose detection rate on its frames.

Usage: python benchmarks/synth_bench.py [--categories box bottle drill mug] [--frames 60]
       [--width 640 --height 480] [--seed 0] [--results_dir DIR] [--device cpu] [--body_device cpu]
       [--no_detection] [--threads N]

Generates one video per category (seed, seed+1, ...) into a temporary results dir (or ``--results_dir``),
timing (wall clock, plus the process CPU time: on a shared machine the CPU figure is the stable one)
scene building (body sampling + hand IK + motion), rendering (all frames + the object alone for
its visibility) and writing (MP4, masks, depth, config, mesh, ground truth). Then runs
``mediapipe.solutions.pose.Pose(static_image_mode=False)`` over every decoded frame of every video and
reports the fraction of frames with a detected person. Also per video: the ground truth's foot skating
(``reconstruction.eval`` metric, cm/frame) and the fraction of frames whose visible object pixels are under
1 % of frame 0's (``--variant object_lost`` must exceed a third). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reconstruction.body import load_body_model
from reconstruction.eval import metrics
from reconstruction.eval.evaluate import FOOT_INDICES
from reconstruction.layout import Layout, VideoId
from reconstruction.synth.generate import video_name
from reconstruction.synth.objects import CATEGORIES
from reconstruction.synth.scene import OBJECT_ID, SceneConfig, build_scene, render_scene
from reconstruction.synth.writer import write_video_files
from reconstruction.video import read_video


def detection_rate(video_path: Path) -> tuple[int, int]:
    """(frames with a detected pose, frames) for one video, tracking mode as stage 1 would run it."""
    import mediapipe as mp

    frames, _ = read_video(video_path)
    detected = 0
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1) as pose:
        for frame in frames:
            if pose.process(np.ascontiguousarray(frame)).pose_landmarks is not None:
                detected += 1
    return detected, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--variant", default="normal")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no_detection", action="store_true", help="skip the MediaPipe detection pass")
    parser.add_argument("--body_device", default="cpu", help="device of the body model (scene building, IK)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results_dir = Path(args.results_dir or tempfile.mkdtemp(prefix="synth_bench_"))
    layout = Layout.create(results_dir)
    body = load_body_model("anny", device=args.body_device)

    rows, total_detected, total_frames = [], 0, 0
    for index, category in enumerate(args.categories):
        config = SceneConfig(category=category, variant=args.variant, num_frames=args.frames, width=args.width,
                             height=args.height, seed=args.seed + index)  # fmt: skip
        vid = VideoId("Synthetic", category, video_name(category, args.variant, args.seed, index))
        c0, t0 = time.process_time(), time.perf_counter()
        scene = build_scene(config, body)
        t1 = time.perf_counter()
        rendered = render_scene(scene, device=args.device)
        t2 = time.perf_counter()
        write_video_files(layout, vid, scene, rendered)
        t3, c3 = time.perf_counter(), time.process_time()
        if args.no_detection:
            detected, frames = 0, config.num_frames
        else:
            detected, frames = detection_rate(layout.video(vid))
        total_detected, total_frames = total_detected + detected, total_frames + frames
        report = scene.ik_report
        gaps = ", ".join(f"{h} {1000 * g:.1f}" for h, g in report["closest_gap_m"].items())
        skate = metrics.foot_skating(scene.keypoints_world[:, FOOT_INDICES].numpy())
        pixels = (rendered.output.instance == OBJECT_ID).sum(dim=(1, 2)).cpu().numpy()
        hidden = float((pixels < 0.01 * pixels[0]).mean())
        rows.append((str(vid), t1 - t0, t2 - t1, t3 - t2, t3 - t0, c3 - c0, detected / frames, gaps, skate, hidden))

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, device {args.device}, {args.width}x{args.height}, {args.frames} frames")  # fmt: skip
    print()
    print(
        "| video | build+IK s | render s | write s | total s (wall) | CPU s | MediaPipe pose detected | IK closest gap (mm)"
        " | foot skating cm/frame | frames object hidden |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for vid, build, render_s, write, total, cpu, rate, gaps, skate, hidden in rows:
        print(
            f"| {vid} | {build:.1f} | {render_s:.1f} | {write:.1f} | {total:.1f} | {cpu:.1f} | {100 * rate:.1f}% | {gaps}"
            f" | {100 * skate:.3f} | {100 * hidden:.0f}% |"
        )
    if args.no_detection:
        print("\n(MediaPipe detection not run: --no_detection)")
    mean_total = sum(r[4] for r in rows) / len(rows)
    mean_cpu = sum(r[5] for r in rows) / len(rows)
    print()
    print(f"mean seconds per video: {mean_total:.1f} wall, {mean_cpu:.1f} CPU (process time, all threads); MediaPipe detection rate over all {total_frames} frames: "
          f"{100 * total_detected / total_frames:.1f}%")  # fmt: skip
    print(f"files in {results_dir}")


if __name__ == "__main__":
    main()
