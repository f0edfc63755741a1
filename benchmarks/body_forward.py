"""Body-model forward + backward time per batch of frames (what stage 4 pays per iteration).

Usage: python benchmarks/body_forward.py [--model anny] [--device cpu] [--frames 1 30 120] [--repeats 5]
       [--threads N]

Times one optimiser-like step: pose (T, J, 3) and trans (T, 3) require grad, the shape is fixed (cached rest
model), loss = squared keypoints (+ optionally the mean squared vertex), backward. Prints a markdown table
(median / best of the repeats, ms). On a shared machine, prefer --threads 1 and the best figure.
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


def time_step(
    model, num_frames: int, repeats: int, backward: bool, vertex_loss: bool = True, subset: int | None = None
) -> list[float]:
    device = model.device
    generator = torch.Generator().manual_seed(0)
    pose = (0.1 * torch.randn(num_frames, len(model.joint_names), 3, generator=generator)).to(device)
    trans = torch.randn(num_frames, 3, generator=generator).to(device)
    shape = model.default_shape()
    vertex_ids = None
    if subset:  # an evenly spread vertex subset, as stage 4's losses use
        vertex_ids = torch.linspace(0, model.num_vertices - 1, subset).long().to(device)
    times = []
    for _ in range(repeats + 1):  # first run warms caches (rest model, allocator)
        pose_var = pose.clone().requires_grad_(backward)
        trans_var = trans.clone().requires_grad_(backward)
        _sync(device)
        start = time.perf_counter()
        if backward:
            out = model.forward(pose_var, shape, trans_var, vertex_ids=vertex_ids)
            loss = out.keypoints.square().sum()
            if vertex_loss:  # a loss on every vertex (stage 4's depth/contact terms touch many)
                loss = loss + out.vertices.square().mean()
            loss.backward()
        else:
            with torch.no_grad():
                out = model.forward(pose_var, shape, trans_var)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times[1:]


def _ms(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):.1f} / {1000 * min(times):.1f}"


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
    print(
        "| frames | forward ms (median / best) | fwd+bwd, keypoint loss | fwd+bwd, keypoint + all-vertex loss "
        "| fwd+bwd, keypoint + 1,000-vertex subset loss |"
    )
    print("|---:|---:|---:|---:|---:|")
    for num_frames in args.frames:
        fwd = time_step(model, num_frames, args.repeats, backward=False)
        keypoints = time_step(model, num_frames, args.repeats, backward=True, vertex_loss=False)
        both = time_step(model, num_frames, args.repeats, backward=True)
        subset = time_step(model, num_frames, args.repeats, backward=True, subset=1000)
        print(f"| {num_frames} | {_ms(fwd)} | {_ms(keypoints)} | {_ms(both)} | {_ms(subset)} |")


if __name__ == "__main__":
    main()
