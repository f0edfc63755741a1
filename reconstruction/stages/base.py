"""The seam between the pipeline and a stage: ``run(ctx: StageContext) -> StageResult``.

The pipeline (not the stage) handles caching, manifests and cancellation bookkeeping; a stage reads its
inputs through ``ctx.layout``, writes its outputs with ``reconstruction.fileio`` and reports progress
through ``ctx.progress``. It calls ``ctx.check_cancelled()`` between units of work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconstruction.layout import Layout, VideoId

ProgressCallback = Callable[[float, str], None]


class StageCancelled(Exception):
    """Raised inside a stage when the caller asked to stop; no partial output is left."""


class StageInputError(Exception):
    """Bad or missing input for a stage; the message names the file or setting."""


@dataclass
class StageContext:
    video: VideoId
    layout: Layout
    config: Any  # reconstruction.config.ReconConfig (whole, frozen); a stage reads its own subtree
    device: str = "cpu"
    verbose: bool = False
    is_static_obj: bool = False
    progress: ProgressCallback = lambda fraction, message: None
    should_cancel: Callable[[], bool] = lambda: False
    models: dict[str, Any] = field(default_factory=dict)  # per-process model cache, reused across videos

    def check_cancelled(self) -> None:
        if self.should_cancel():
            raise StageCancelled(f"cancelled during {self.video}")


@dataclass
class StageResult:
    files: list[Path]
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    number: int
    name: str

    def run(self, ctx: StageContext) -> StageResult: ...
