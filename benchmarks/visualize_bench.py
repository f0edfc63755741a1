"""Stage 6 wall time: all artefacts for a synthetic anny + box sequence (default 120 frames, 640x480).

    python benchmarks/visualize_bench.py --device cpu --frames 120 --height 480 --width 640

The input video and stage-4 result are generated first (not timed) with tests/render_scene.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from reconstruction.stages import visualize  # noqa: E402
from reconstruction.stages.base import StageContext  # noqa: E402
from tests.render_scene import build_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        scene = build_scene(Path(tmp), num_frames=args.frames, image_size=(args.height, args.width))
        from reconstruction.body import load_body_model

        load_body_model("anny", device=args.device)  # model construction is per process, not per video
        ctx = StageContext(video=scene.video, layout=scene.layout, config=None, device=args.device)
        start = time.perf_counter()
        cpu_start = time.process_time()
        result = visualize.run(ctx)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        sizes = {p.name: p.stat().st_size for p in result.files}
    report = {
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "cpu_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "frames": args.frames,
        "image": f"{args.width}x{args.height}",
        "seconds": round(seconds, 2),
        "process_cpu_seconds": round(cpu_seconds, 2),  # robust to other processes' load; / threads ~ idle wall
        "phases": {k: round(v, 2) for k, v in result.info["timings"].items()},
        "bytes": sizes,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
