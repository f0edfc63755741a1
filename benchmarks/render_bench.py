"""Renderer throughput: 640x480, anny body (~27k triangles) + object (~2k) + ground plane.

    python benchmarks/render_bench.py --device cpu --frames 30 --repeats 3

Prints frames/s for a batch of animated frames (body swaying, object moving, camera fixed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconstruction.render import Mesh, render  # noqa: E402
from reconstruction.render.scene import ground_plane, look_at_world_to_cam, uv_sphere  # noqa: E402


def body_mesh(num_frames: int, device: str, cull: bool = False, kind: str = "anny") -> Mesh:
    """A body standing on z=0, swaying about the vertical axis: anny's rest mesh, or with
    ``kind="proxy"`` (machines without anny) an ellipsoid with about as many triangles."""
    if kind == "anny":
        try:
            import anny
        except ImportError as exc:
            raise SystemExit("anny is not installed here: use --body proxy") from exc
        model = anny.Anny()
        with torch.no_grad():
            out = model(pose_parameters=torch.eye(4).expand(1, model.bone_count, 4, 4).clone())
        rest = out["vertices"][0].float()
        faces = model.get_triangular_faces()
    else:
        rest, faces = uv_sphere(1.0, 118, 118)  # 27,612 triangles
        rest = rest * torch.tensor([0.25, 0.15, 0.85]) + torch.tensor([0.0, 0.0, 0.85])
    rest = rest - torch.tensor([0.0, 0.0, float(rest[:, 2].min())])
    angles = torch.linspace(-0.4, 0.4, num_frames)
    c, s = torch.cos(angles), torch.sin(angles)
    R = torch.zeros(num_frames, 3, 3)
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1
    verts = torch.einsum("tij,vj->tvi", R, rest)
    colors = torch.tensor([0.8, 0.6, 0.5]).expand(rest.shape[0], 3)
    return Mesh(verts.to(device), faces.to(device), colors.to(device), 1, cull_backfaces=cull)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--body", choices=["anny", "proxy"], default="anny")
    parser.add_argument("--cull", action="store_true", help="cull the body's back faces (closed mesh)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    T = args.frames
    body = body_mesh(T, device, cull=args.cull, kind=args.body)
    sphere_v, sphere_f = uv_sphere(0.08, 32, 32)  # 1984 triangles
    path = torch.stack([torch.linspace(0.3, 0.5, T), torch.full((T,), -0.3), torch.linspace(0.9, 1.2, T)], -1)
    obj = Mesh(
        (sphere_v[None] + path[:, None]).to(device),
        sphere_f.to(device),
        torch.tensor([0.2, 0.4, 0.9]).expand(sphere_v.shape[0], 3).to(device),
        2,
    )
    gv, gf, gc = ground_plane(size=20.0, cells=20)
    ground = Mesh(gv.to(device), gf.to(device), gc.to(device), 3)
    f = 600.0 * args.width / 640
    K = torch.tensor([[f, 0, args.width / 2], [0, f, args.height / 2], [0, 0, 1.0]], device=device)
    w2c = torch.as_tensor(
        look_at_world_to_cam(eye=(0.0, -3.5, 1.4), target=(0.0, 0.0, 0.9)), dtype=torch.float32, device=device
    )
    meshes = [body, obj, ground]
    triangles = sum(int(m.faces.shape[0]) for m in meshes)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    render(meshes, K, w2c, (args.height, args.width))  # warm-up
    sync()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = render(meshes, K, w2c, (args.height, args.width))
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    best = min(times)
    coverage = {
        name: float((out.instance == i).float().mean()) for i, name in ((1, "body"), (2, "object"), (3, "ground"))
    }
    result = {
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(),
        "frames": T,
        "image": f"{args.width}x{args.height}",
        "triangles": triangles,
        "cull_backfaces": args.cull,
        "body": args.body,
        "seconds_best": round(best, 3),
        "seconds_all": [round(t, 3) for t in times],
        "frames_per_s": round(T / best, 2),
        # CPU seconds of this process per frame: robust to other processes' load on a shared machine.
        "process_cpu_s_per_frame": round(min(cpu_times) / T, 4),
        "coverage": coverage,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
