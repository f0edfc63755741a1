"""Stage 2 ``sam2`` mask backend speed: SAM 2 video propagation of two masks over T frames.

Usage: python benchmarks/sam2_speed.py [--config configs/sam2.1/sam2.1_hiera_s.yaml] [--device cpu]
       [--frames 60] [--size 480 640] [--image-size 1024] [--threads N]

Compute does not depend on the weights, so the network is built from the package's config with random
weights (no checkpoint needed): the timing is that of a real checkpoint of the same config. ``--image-size``
below the model's 1024 is only for smoke runs. Prints one markdown table row (wall s, s / frame).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from reconstruction.backends import sam2_masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=sam2_masks.DEFAULT_CONFIG)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--image-size", type=int, default=1024, help="the model's input resolution")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    started = time.perf_counter()
    overrides = () if args.image_size == 1024 else (f"++model.image_size={args.image_size}",)
    predictor = sam2_masks.build_predictor({"sam2_model_cfg": args.config}, args.device, None, overrides)
    build_seconds = time.perf_counter() - started

    height, width = args.size
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, height, width, 3), dtype=np.uint8)
    first_object = np.zeros((height, width), bool)
    first_object[height // 4 : height // 2, width // 4 : width // 2] = True
    first_human = np.zeros((height, width), bool)
    first_human[height // 3 :, width // 2 :] = True
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    object_masks, _ = sam2_masks.track_masks(frames, first_object, first_human, {}, args.device, predictor=predictor)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    assert object_masks.shape == (args.frames, height, width)
    print("| device | config | model px | frames | frame size | build s | wall s | s / frame |")
    print("|---|---|---|---|---|---|---|---|")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.machine()} CPU"
    print(
        f"| {device} | {args.config.rsplit('/', 1)[-1]} | {args.image_size} | {args.frames} | {width}x{height} "
        f"| {build_seconds:.1f} | {seconds:.1f} | {seconds / args.frames:.3f} |"
    )


if __name__ == "__main__":
    main()
