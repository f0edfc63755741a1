"""``python -m reconstruction.synth``: generate synthetic HOI videos with ground truth.

Example: ``python -m reconstruction.synth --results_dir results --dataset Synthetic --category box
--num_videos 2 --num_frames 60 --seed 0``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from reconstruction.layout import Layout, VideoId
from reconstruction.synth.ground_truth import VARIANTS
from reconstruction.synth.objects import CATEGORIES

logger = logging.getLogger("reconstruction.synth")


def video_name(category: str, variant: str, seed: int, index: int) -> str:
    return f"{category}_{variant}_s{seed}_{index:03d}"


def generate(
    results_dir: str,
    dataset: str,
    category: str,
    num_videos: int,
    num_frames: int,
    seed: int,
    variant: str = "normal",
    width: int = 640,
    height: int = 480,
    hands: str = "auto",
    ik_steps: int = 100,
    device: str = "cpu",
) -> list[VideoId]:
    """Generate ``num_videos`` videos; video ``i`` uses seed ``seed + i``. Returns their ids."""
    from reconstruction.body import load_body_model
    from reconstruction.synth.scene import SceneConfig, build_scene, render_scene
    from reconstruction.synth.writer import write_video_files

    if category not in CATEGORIES:
        raise ValueError(f"--category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    layout = Layout.create(results_dir)
    body = load_body_model("anny")
    ids = []
    for index in range(num_videos):
        start = time.perf_counter()
        config = SceneConfig(
            category=category, variant=variant, num_frames=num_frames, width=width, height=height,
            seed=seed + index, hands=hands, ik_steps=ik_steps,
        )  # fmt: skip
        vid = VideoId(dataset, category, video_name(category, variant, seed, index))
        scene = build_scene(config, body)
        rendered = render_scene(scene, device=device)
        write_video_files(layout, vid, scene, rendered)
        ids.append(vid)
        logger.info("wrote %s (%d frames) in %.1f s", vid, num_frames, time.perf_counter() - start)
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reconstruction.synth", description=__doc__)
    parser.add_argument("--results_dir", required=True)
    parser.add_argument("--dataset", default="Synthetic")
    parser.add_argument("--category", required=True, choices=CATEGORIES)
    parser.add_argument("--num_videos", type=int, default=1)
    parser.add_argument("--num_frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="normal", choices=VARIANTS)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--hands", default="auto", choices=("auto", "one", "two"))
    parser.add_argument("--ik_steps", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.num_videos < 1 or args.num_frames < 4:
        parser.error("--num_videos must be >= 1 and --num_frames >= 4")
    ids = generate(
        args.results_dir, args.dataset, args.category, args.num_videos, args.num_frames, args.seed,
        args.variant, args.width, args.height, args.hands, args.ik_steps, args.device,
    )  # fmt: skip
    for vid in ids:
        print(vid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
