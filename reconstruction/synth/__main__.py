"""``python -m reconstruction.synth``: generate synthetic HOI videos with ground truth.

Example: ``python -m reconstruction.synth --results_dir results --dataset Synthetic --category box
--num_videos 2 --num_frames 60 --seed 0``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from reconstruction.synth.generate import generate
from reconstruction.synth.ground_truth import VARIANTS
from reconstruction.synth.objects import CATEGORIES

logger = logging.getLogger("reconstruction.synth")


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
