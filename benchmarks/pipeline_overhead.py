"""Overhead of the pipeline's manifests: hashing inputs/outputs and the ``--skip_done`` check.

    python benchmarks/pipeline_overhead.py --frames 120 --height 480 --width 640

Builds a results dir whose files have the sizes of a real video of that shape (input MP4, stage caches,
depth list of float32 maps, hoi_data, result videos), registers stages that only write those files, and
measures (1) sha256 throughput, (2) the bookkeeping of a full 6-stage run (plan + manifest) minus the
stages' own write time, (3) a 6-stage ``--skip_done`` run that reuses everything, cold (new process:
nothing hashed yet) and warm (hashes cached by path/inode/size/mtime).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconstruction import fileio, pipeline  # noqa: E402
from reconstruction.config import load_config  # noqa: E402
from reconstruction.layout import Layout, VideoId  # noqa: E402
from reconstruction.stages.base import StageResult  # noqa: E402


def sizes(frames: int, height: int, width: int) -> dict[str, int]:
    """Bytes per artefact for a video of this shape (H.264 ~0.1 bit/pixel; float32 depth; bit masks)."""
    pixels = frames * height * width
    return {
        "video": pixels // 80,
        "hmr": frames * 110 * 3 * 4 * 3,
        "keypoints": frames * 75 * 3 * 8,
        "masks": pixels * 2 // 40,  # compressed bool masks
        "depth": pixels * 4,
        "poses": frames * 16 * 8,
        "hoi": frames * 400 * 8,
        "vis": pixels // 80 * 4,
    }


def make_stage(number: int, files: dict[int, list[tuple[Path, int]]], write_seconds: list[float]):
    def run(ctx):
        t0 = time.perf_counter()
        out = []
        for path, size in files[number]:
            fileio.write_bytes(path, os.urandom(size))
            out.append(path)
        write_seconds.append(time.perf_counter() - t0)
        return StageResult(files=out)

    return SimpleNamespace(NUMBER=number, NAME=f"bench{number}", run=run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    args = parser.parse_args()
    size = sizes(args.frames, args.height, args.width)
    vid = VideoId.parse("bench/cat/v0")
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout.create(tmp)
        layout.video(vid).parent.mkdir(parents=True)
        layout.video(vid).write_bytes(os.urandom(size["video"]))
        files = {
            1: [(layout.hmr_result(vid), size["hmr"]), (layout.hmr_keypoints(vid), size["keypoints"])],
            2: [(layout.masks_cache(vid), size["masks"]), (layout.depth_cache(vid), size["depth"])],
            3: [(layout.object_poses(vid), size["poses"])],
            4: [(layout.raw_hoi_data(vid), size["hoi"])],
            5: [(layout.filter_report(vid), 2000)],
            6: [(layout.output(vid) / "result_vis" / f"{n}.mp4", size["vis"] // 4) for n in range(4)],
        }
        write_seconds: list[float] = []
        for number in range(1, 7):
            pipeline.register_stage(number, make_stage(number, files, write_seconds))
        config = load_config(None)

        blob = os.urandom(64 << 20)
        t0 = time.perf_counter()
        hashlib.sha256(blob).hexdigest()
        throughput = 64 / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        outcomes = pipeline.run_video(vid, config, layout.results_dir)
        full = time.perf_counter() - t0
        assert all(o.status == "done" for o in outcomes)
        bookkeeping = full - sum(write_seconds)

        pipeline._hash_cache.clear()
        t0 = time.perf_counter()
        outcomes = pipeline.run_video(vid, config, layout.results_dir, skip_done=True)
        cold = time.perf_counter() - t0
        assert all(o.status == "reused" for o in outcomes)
        t0 = time.perf_counter()
        pipeline.run_video(vid, config, layout.results_dir, skip_done=True)
        warm = time.perf_counter() - t0
        total_mb = sum(s for v in files.values() for _, s in v) / 1e6 + size["video"] / 1e6
        manifest_bytes = sum(layout.manifest(vid, s).stat().st_size for s in range(1, 7))

    print(json.dumps({
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "shape": f"{args.frames}x{args.height}x{args.width}",
        "artefacts_mb": round(total_mb, 1),
        "sha256_mb_per_s": round(throughput),
        "full_run_bookkeeping_s": round(bookkeeping, 3),
        "skip_done_all_reused_cold_s": round(cold, 3),
        "skip_done_all_reused_warm_s": round(warm, 3),
        "manifest_bytes_total": manifest_bytes,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
