"""The e2e benchmark's metrics cache: valid for exactly the stage outputs it was computed from, also in a copy."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from reconstruction.layout import Layout, VideoId

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e_accuracy.py"


@pytest.fixture(scope="module")
def e2e():
    spec = importlib.util.spec_from_file_location("e2e_accuracy_under_test", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(layout: Layout, vid: VideoId, hoi: bytes) -> None:
    for path, content in ((layout.hmr_result(vid), b"stage 1"), (layout.object_poses(vid), b"stage 3"),
                          (layout.raw_hoi_data(vid), hoi)):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_cached_metrics_follow_the_outputs_bytes_not_their_times(e2e, tmp_path):
    vid = VideoId("Synthetic", "box", "box_normal_s0_000")
    layout = Layout.create(tmp_path / "a")
    _outputs(layout, vid, b"stage 4, first run")
    cache = e2e.metrics_cache_path(layout, vid)
    cache.parent.mkdir(parents=True)
    report = {"video": str(vid), "stages": {"optimize": {"body_mpjpe_m": 0.069}}}
    cache.write_text(json.dumps({**report, "sources_sha1": e2e.metric_sources_digest(layout, vid)}))
    assert e2e._cached_metrics(layout, vid)["stages"] == report["stages"]

    # stage 4 reruns: the cache no longer applies (and stage 4 left no metrics.json to fall back on)
    _outputs(layout, vid, b"stage 4, second run")
    assert e2e._cached_metrics(layout, vid) is None

    # a copy of a results dir: every file gets a new time, the stale cache as new as the outputs; still stale
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert e2e._cached_metrics(Layout.create(tmp_path / "b"), vid) is None
    # ... and a cache made from the copied outputs themselves stays valid in the copy
    _outputs(layout, vid, b"stage 4, first run")
    shutil.rmtree(tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert e2e._cached_metrics(Layout.create(tmp_path / "b"), vid)["stages"] == report["stages"]
