"""Shared helpers of the pipeline tests: a results dir with input videos, manifest snapshots."""

from __future__ import annotations

import json
from pathlib import Path

from reconstruction.layout import Layout, VideoId


def make_results_dir(root: Path, video_ids: list[str], size: int = 4096) -> Layout:
    """A results dir whose video_dir holds one input file per id (bytes differ per video)."""
    layout = Layout.create(root)
    for index, text in enumerate(video_ids):
        path = layout.video(VideoId.parse(text))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes((index * 7 + i) % 251 for i in range(size)))
    return layout


def manifests(layout: Layout, vid: VideoId) -> dict[int, dict]:
    out = {}
    for stage in range(1, 7):
        path = layout.manifest(vid, stage)
        if path.exists():
            out[stage] = json.loads(path.read_text())
    return out


def output_mtimes(layout: Layout, vid: VideoId) -> dict[str, int]:
    """mtime_ns of every output and manifest of a video (what "no work" must leave untouched)."""
    found = {}
    for stage, manifest in manifests(layout, vid).items():
        found[str(layout.manifest(vid, stage))] = layout.manifest(vid, stage).stat().st_mtime_ns
        for rel in manifest["outputs"]:
            found[rel] = (layout.results_dir / rel).stat().st_mtime_ns
    return found


def statuses(outcomes) -> dict[int, str]:
    return {o.stage: o.status for o in outcomes}
