"""Body-model forward + backward time per batch of frames (what stage 4 pays per iteration).

Usage: python benchmarks/body_forward.py [--model anny] [--device cpu] [--frames 1 30 120] [--repeats 5]
       [--threads N]

Times one optimiser-like step: pose (T, J, 3) and trans (T, 3) require grad, the shape is fixed (cached rest
model), loss = keypoints + a vertex term, backward. Prints a markdown table (median and best of the repeats).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from reconstruction.body import load_body_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(model, num_frames: int, repeats: int, backward: bool) -> list[float]:
    device = model.device
    generator = torch.Generator().manual_seed(0)
    pose = (0.1 * torch.randn(num_frames, len(model.joint_names), 3, generator=generator)).to(device)
    trans = torch.randn(num_frames, 3, generator=generator).to(device)
    shape = model.default_shape()
    times = []
    for _ in range(repeats + 1):  # first run warms caches (rest model, allocator)
        pose_var = pose.clone().requires_grad_(backward)
        trans_var = trans.clone().requires_grad_(backward)
        _sync(device)
        start = time.perf_counter()
        if backward:
            out = model.forward(pose_var, shape, trans_var)
            loss = out.keypoints.square().sum() + out.vertices.square().mean()
            loss.backward()
        else:
            with torch.no_grad():
                out = model.forward(pose_var, shape, trans_var)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="anny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 30, 120])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_body_model(args.model, device=args.device)
    print(
        f"# {args.model} on {args.device} ({platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print("| frames | forward ms (median / best) | forward+backward ms (median / best) |")
    print("|---:|---:|---:|")
    for num_frames in args.frames:
        fwd = time_step(model, num_frames, args.repeats, backward=False)
        both = time_step(model, num_frames, args.repeats, backward=True)
        print(
            f"| {num_frames} | {1000 * statistics.median(fwd):.1f} / {1000 * min(fwd):.1f} "
            f"| {1000 * statistics.median(both):.1f} / {1000 * min(both):.1f} |"
        )


if __name__ == "__main__":
    main()
