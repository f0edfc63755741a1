"""Light stages for testing the pipeline's machinery in milliseconds.

Each one really reads its inputs from the layout (the video and the upstream outputs) and writes its
contract outputs atomically with ``reconstruction.fileio``: an output's bytes are a digest of the bytes it
read plus the config section it depends on, so a changed input or setting changes everything downstream,
exactly as for the real stages. Env vars steer them from a subprocess: ``LIGHT_STAGE_SLEEP_<N>`` (seconds,
spent in small cancellable steps after the first output is written), ``LIGHT_STAGE_FAIL_<N>`` (a video id
that makes stage N raise), ``LIGHT_STAGE_LOG`` (a file each run appends "<stage> <video>" to).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from reconstruction import fileio
from reconstruction.stages.base import StageContext, StageInputError, StageResult

CONFIG_SECTIONS = {
    1: ("human_pose",),
    2: ("preprocess", "depth"),
    3: ("object_pose",),
    4: ("optimization",),
    5: ("filtering",),
    6: ("visualization",),
}


def _outputs(ctx: StageContext, number: int) -> list[Path]:
    layout, vid = ctx.layout, ctx.video
    return {
        1: [layout.hmr_result(vid), layout.hmr_keypoints(vid)],
        2: [layout.masks_cache(vid), layout.depth_cache(vid)],
        3: [layout.object_poses(vid)],
        4: [layout.raw_hoi_data(vid), layout.loss_history(vid)],
        5: [layout.filter_report(vid)],
        6: [layout.result_vis(vid) / "recon_result.mp4", layout.result_vis(vid) / "recon_result.html"],
    }[number]


def _run(ctx: StageContext, number: int) -> StageResult:
    sources = [ctx.layout.video(ctx.video)] + [p for n in range(1, number) for p in _outputs(ctx, n)]
    digest = hashlib.sha256()
    for path in sources:
        if not path.exists():
            raise StageInputError(f"stage {number} needs {path}")
        digest.update(path.read_bytes())
    settings = {name: ctx.config.section(name) for name in CONFIG_SECTIONS[number]}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    if os.environ.get(f"LIGHT_STAGE_FAIL_{number}") == str(ctx.video):
        raise RuntimeError(f"light stage {number} told to fail on {ctx.video}")
    if log := os.environ.get("LIGHT_STAGE_LOG"):
        with open(log, "a") as fh:
            fh.write(f"{number} {ctx.video}\n")
    outputs = _outputs(ctx, number)
    sleep = float(os.environ.get(f"LIGHT_STAGE_SLEEP_{number}", "0"))
    for index, path in enumerate(outputs):
        fileio.write_bytes(path, f"stage {number} output {index} {digest.hexdigest()}\n".encode())
        if index == 0 and sleep:
            steps = max(1, int(sleep / 0.02))
            for step in range(steps):
                ctx.check_cancelled()
                ctx.progress(step / steps, "working")
                time.sleep(sleep / steps)
        ctx.check_cancelled()
        ctx.progress((index + 1) / len(outputs), f"wrote {path.name}")
    return StageResult(files=outputs, metrics={"inputs_read": float(len(sources))})


def make_stage(number: int) -> SimpleNamespace:
    return SimpleNamespace(NUMBER=number, NAME=f"light{number}", run=lambda ctx: _run(ctx, number))


def register_all() -> None:
    from reconstruction import pipeline

    for number in range(1, 7):
        pipeline.register_stage(number, make_stage(number))


def unregister_all() -> None:
    from reconstruction import pipeline

    for number in range(1, 7):
        pipeline.unregister_stage(number)


@pytest.fixture(autouse=True)
def light_stages(monkeypatch, tmp_path):
    """Register the light stages for a test (each run logged to ``tmp_path/stage_log.txt``); a test module
    opts in by importing this fixture."""
    register_all()
    monkeypatch.setenv("LIGHT_STAGE_LOG", str(tmp_path / "stage_log.txt"))
    yield
    unregister_all()
