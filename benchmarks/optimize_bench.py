"""Stage 4 optimiser speed: one video and batches of videos, default iteration counts.

Usage: python benchmarks/optimize_bench.py [--device cpu|cuda] [--frames 120] [--batch_videos 1 4 16]
       [--init_iters 400] [--contact_iters 200] [--refine_iters 100] [--no_compile] [--compile_dynamic true|none|false]
       [--no_cuda_graph] [--cold_frames 120x1 90x1 120x16] [--threads N] [--no_depth] [--json out.json]

Workload (the default manip_anny config's terms): anny body (subset skinning), 75 2D keypoints, smoothness,
pose and foot terms, an object of ~1,000 triangles tracked in 2D, depth_pointcloud against 3,000 depth
samples per frame (depth rendered from the true scene, as a MoGe-like backend would give), contact,
contact smoothness and penetration. The stage 1-3 estimates are the truth plus noise. Timings exclude
setup; the first (short) run warms the allocator and, with --compile, the compiler.
Prints a markdown table: seconds per batch, seconds per video, videos/minute, peak memory.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconstruction.body import load_body_model  # noqa: E402
from reconstruction.config import load_config  # noqa: E402
from reconstruction.optim import geometry  # noqa: E402
from reconstruction.optim.optimizer import HOIOptimizer, VideoInputs  # noqa: E402
from reconstruction.projection import project  # noqa: E402

K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
WORLD_TO_CAM = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1.0, 1.0], [0, 1.0, 0, 3.0], [0, 0, 0, 1.0]])
IMAGE_SIZE = (480, 640)


def _sphere(radius: float = 0.07, rings: int = 24, segments: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A UV sphere of ~1,100 triangles (stand-in for an object mesh)."""
    verts = [[0.0, 0.0, radius]]
    for i in range(1, rings):
        theta = math.pi * i / rings
        for j in range(segments):
            phi = 2 * math.pi * j / segments
            verts.append([radius * math.sin(theta) * math.cos(phi), radius * math.sin(theta) * math.sin(phi),
                          radius * math.cos(theta)])  # fmt: skip
    verts.append([0.0, 0.0, -radius])
    faces = []
    for j in range(segments):
        faces.append([0, 1 + j, 1 + (j + 1) % segments])
    for i in range(rings - 2):
        for j in range(segments):
            a, b = 1 + i * segments + j, 1 + i * segments + (j + 1) % segments
            faces += [[a, a + segments, b], [b, a + segments, b + segments]]
    last = len(verts) - 1
    base = 1 + (rings - 2) * segments
    for j in range(segments):
        faces.append([base + j, last, base + (j + 1) % segments])
    return torch.tensor(verts), torch.tensor(faces)


def make_video(body, num_frames: int, seed: int, with_depth: bool) -> VideoInputs:
    generator = torch.Generator().manual_seed(seed)
    T, J = num_frames, body.num_joints
    shape = body.default_shape()
    phase = torch.linspace(0, math.pi, T)
    pose = torch.zeros(T, J, 3)
    pose[:, body.joint_index("upperarm01.R"), 0] = -0.6 * torch.sin(phase)
    pose[:, body.joint_index("lowerarm01.R"), 0] = -0.5 * torch.sin(phase)
    trans = torch.zeros(T, 3)
    trans[:, 2] = body.root_height_standing(shape)
    with torch.no_grad():
        out = body.forward(pose, shape, trans)
    verts, faces = _sphere()
    hand = out.vertices[:, body.vertex_segments["right_hand"]]
    obj_world = torch.eye(4).repeat(T, 1, 1)
    obj_world[:, :3, 3] = hand.mean(1)
    obj_world[:, 1, 3] = hand[..., 1].min(1).values - 0.072
    kp = project(geometry.apply_homogeneous(out.keypoints, WORLD_TO_CAM), K)
    depth = obj_masks = human_masks = None
    if with_depth:
        from reconstruction.render import Mesh, render

        obj_verts = geometry.transform(verts[None], obj_world[:, :3, :3], obj_world[:, :3, 3])
        rendered = render([Mesh(out.vertices, body.faces, instance_id=1), Mesh(obj_verts, faces, instance_id=2)], K,
                          WORLD_TO_CAM, IMAGE_SIZE)  # fmt: skip
        depth, obj_masks, human_masks = rendered.depth, rendered.mask(2), rendered.mask(1)
    noisy_pose = pose + 0.05 * torch.randn(T, J, 3, generator=generator) * (torch.rand(J, 1, generator=generator) < 0.3)
    obj_cam = WORLD_TO_CAM @ obj_world
    obj_cam[:, :3, 3] += 0.02 * torch.randn(T, 3, generator=generator)
    return VideoInputs(
        name=f"bench/sphere/{seed}", K=K, world_to_cam=WORLD_TO_CAM, image_size=IMAGE_SIZE, body_pose=noisy_pose,
        body_shape=shape, body_trans=trans + 0.03 * torch.randn(3, generator=generator),
        keypoints_2d=torch.cat([kp + torch.randn(kp.shape, generator=generator), torch.ones(T, 75, 1)], -1),
        object_vertices=verts, object_faces=faces, object_poses_cam=obj_cam,
        contact=torch.tensor([[False, t >= T // 3] for t in range(T)]), depth=depth, object_masks=obj_masks,
        human_masks=human_masks, ground_z=0.0,
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--batch_videos", type=int, nargs="+", default=[1])
    parser.add_argument("--init_iters", type=int, default=400)
    parser.add_argument("--contact_iters", type=int, default=200)
    parser.add_argument("--refine_iters", type=int, default=100)
    parser.add_argument("--no_compile", action="store_true", help="no torch.compile (CUDA; the CPU never compiles)")
    parser.add_argument(
        "--cold_frames",
        nargs="+",
        default=None,
        metavar="FRAMESxVIDEOS",
        help="instead: runs of these sizes (e.g. 120x1 90x1 120x16) in turn, no warm-up (compile time included)",
    )
    parser.add_argument("--compile_dynamic", choices=["false", "none", "true"], default="true")
    parser.add_argument("--no_cuda_graph", action="store_true", help="run every iteration eagerly on CUDA")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no_depth", action="store_true", help="no depth maps (the 'static' depth backend)")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    body = load_body_model("anny", device=device)
    base = load_config().merge({"optimization": {"compile": not args.no_compile, "cuda_graph": not args.no_cuda_graph}})

    def config(init_iters: int, contact_iters: int):
        iters = {"init_opt": init_iters, "contact_opt": contact_iters, "refine_opt": args.refine_iters}
        return base.merge({"optimization": {"opt_stage_specs": {k: {"niter": n} for k, n in iters.items()}}})

    HOIOptimizer.compile_dynamic = {"false": False, "none": None, "true": True}[args.compile_dynamic]
    # Inputs are built on the CPU, as stage 4 loads its caches; the optimiser moves them to the device.
    cpu_body = load_body_model("anny", device="cpu")
    if args.cold_frames:
        cold_runs(args, body, device, cpu_body, config)
        return
    videos = [make_video(cpu_body, args.frames, seed, not args.no_depth) for seed in range(max(args.batch_videos))]
    warm = HOIOptimizer(body, config(5, 5).optimization, device=device)
    warm.run([videos[0]])
    rows = []
    for count in args.batch_videos:
        optimizer = HOIOptimizer(body, config(args.init_iters, args.contact_iters).optimization, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        results = optimizer.run(videos[:count])
        _sync(device)
        seconds = time.perf_counter() - start
        peak = (
            torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        final = results[0].final_losses.get("total")
        rows.append({"batch_videos": count, "frames": args.frames, "seconds": round(seconds, 2),
                     "seconds_per_video": round(seconds / count, 2), "videos_per_minute": round(60 * count / seconds, 2),
                     "peak_memory_mib": round(peak, 1), "peak_memory_mib_per_video": round(peak / count, 1),
                     "final_total_loss_video0": final})  # fmt: skip
    iters = f"init {args.init_iters} + contact {args.contact_iters} + refine {args.refine_iters}"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"\nStage 4 optimiser, {args.frames} frames, {iters} iterations, device {name}, torch {torch.__version__}, "
          f"compile={not args.no_compile}, cuda_graph={not args.no_cuda_graph}, threads={torch.get_num_threads()}, depth={'no' if args.no_depth else 'yes'}\n")  # fmt: skip
    print(
        "| videos / batch | seconds | s / video | videos / min | peak MiB | peak MiB / video | final loss (video 0) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_videos']} | {r['seconds']} | {r['seconds_per_video']} | {r['videos_per_minute']} | "
              f"{r['peak_memory_mib']} | {r['peak_memory_mib_per_video']} | {r['final_total_loss_video0']:.5g} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "device": name, "rows": rows}, fh, indent=2)


def cold_runs(args, body, device, cpu_body, config) -> None:
    """Runs of the sizes in ``--cold_frames`` (FRAMESxVIDEOS), in this order, in one fresh process: what a
    worker pays, torch.compile and CUDA graph capture included."""
    print(f"\ncold runs, compile={not args.no_compile} (dynamic={args.compile_dynamic}), "
          f"cuda_graph={not args.no_cuda_graph}")  # fmt: skip
    print("| run | frames | videos | seconds | s / video | final loss (video 0) |")
    print("|---|---|---|---|---|---|")
    for index, size in enumerate(args.cold_frames):
        frames, count = (int(x) for x in (size.split("x") + ["1"])[:2])
        videos = [make_video(cpu_body, frames, index * 100 + v, not args.no_depth) for v in range(count)]
        optimizer = HOIOptimizer(body, config(args.init_iters, args.contact_iters).optimization, device=device)
        _sync(device)
        start = time.perf_counter()
        result = optimizer.run(videos)[0]
        _sync(device)
        seconds = time.perf_counter() - start
        print(f"| {index + 1} | {frames} | {count} | {seconds:.2f} | {seconds / count:.2f} | "
              f"{result.final_losses.get('total'):.5g} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
