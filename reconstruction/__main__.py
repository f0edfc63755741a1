"""``python -m reconstruction``: the reference-compatible pipeline runner (see docs/cli.md).

Flags follow GRAIL's ``recon_4dhoi`` (contract section 1) plus ``--device`` and ``--batch_videos``.
Bad flags or missing inputs print one line naming the problem and exit 2; a failing stage is logged with
the video id, the other videos go on, and the run ends with a summary table and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from reconstruction import pipeline
from reconstruction.layout import STAGE_NAMES, VideoId

log = logging.getLogger("reconstruction.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A bad flag or a missing input: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line instead of argparse's usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from reconstruction.config import DEFAULT_CONFIG

    parser = _Parser(
        prog="python -m reconstruction",
        description="4D human-object interaction reconstruction, stages 1-6 (GRAIL recon_4dhoi flags).",
    )
    parser.add_argument("--dataset", help="run every video of this dataset")
    parser.add_argument("--category", help="with --dataset: only this category")
    parser.add_argument("--video_id", help="run one video: <dataset>/<category>/<name>")
    parser.add_argument("--results_dir", default="results", help="results dir (default: results)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="config YAML (default: %(default)s)")
    for number, name in STAGE_NAMES.items():
        parser.add_argument(
            f"--skip_step{number}", action="store_true", help=f"skip stage {number} ({name}), reuse its outputs"
        )
    parser.add_argument("--skip_done", action="store_true", help="reuse stages whose manifest still matches")
    parser.add_argument("--verbose", action="store_true", help="write debug artefacts, log debug lines")
    parser.add_argument("--is_static_obj", action="store_true", help="force static-object mode")
    parser.add_argument("--job_chunk_idx", type=int, default=0, help="process chunk i of --num_job_chunks")
    parser.add_argument("--num_job_chunks", type=int, default=1, help="split the video list into n chunks")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument(
        "--batch_videos", type=int, default=1, help="optimise stage 4 of N videos in one batch (default 1)"
    )
    return parser


# ---- progress --------------------------------------------------------------------------------------
class ProgressDisplay:
    """Per-video and per-stage bars on one stderr line (TTY), else throttled plain log lines."""

    BAR = 20
    MIN_REDRAW_SECONDS = 0.1

    def __init__(self, stream: TextIO, total_videos: int, stages: Sequence[int], tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.total_videos = total_videos
        self.stages = list(stages)
        self.video_index: dict[VideoId, int] = {}
        self.line = ""
        self.last_logged: tuple[int, float] = (-1, 0.0)  # (decile, time) of the last plain line
        self.current: tuple[VideoId, int] | None = None
        self.stage_started = time.monotonic()
        self.last_drawn = 0.0

    @staticmethod
    def _bar(fraction: float, width: int) -> str:
        filled = int(round(fraction * width))
        return "#" * filled + "-" * (width - filled)

    def update(self, vid: VideoId, stage: int, fraction: float, message: str) -> None:
        index = self.video_index.setdefault(vid, len(self.video_index) + 1)
        position = self.stages.index(stage) if stage in self.stages else 0
        video_fraction = (position + fraction) / max(1, len(self.stages))
        if self.current != (vid, stage):
            self.current, self.stage_started = (vid, stage), time.monotonic()
        if self.tty:
            now = time.monotonic()
            if now - self.last_drawn < self.MIN_REDRAW_SECONDS and 0.0 < fraction < 1.0:
                return  # an optimiser may report every iteration; the terminal needs ~10 frames/s
            self.last_drawn = now
            elapsed = now - self.stage_started
            text = (
                f"[{index}/{self.total_videos}] {vid} [{self._bar(video_fraction, 12)}] "
                f"stage {stage} {STAGE_NAMES[stage]} [{self._bar(fraction, self.BAR)}] {fraction:4.0%} "
                f"{elapsed:5.0f}s {message}"
            )
            self.draw(text[:200])
            return
        decile, now = int(fraction * 10), time.monotonic()
        if decile != self.last_logged[0] or now - self.last_logged[1] > 30:
            self.last_logged = (decile, now)
            log.info("%s stage %d %s: %3.0f%% %s", vid, stage, STAGE_NAMES[stage], 100 * fraction, message)

    def draw(self, text: str) -> None:
        self.clear()
        self.stream.write(text)
        self.stream.flush()
        self.line = text

    def clear(self) -> None:
        if self.tty and self.line:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def redraw(self) -> None:
        if self.tty and self.line:
            self.stream.write(self.line)
            self.stream.flush()

    def close(self) -> None:
        self.clear()
        self.line = ""


class _BarAwareHandler(logging.StreamHandler):
    """Log lines go above the progress bar, which is drawn again after them."""

    def __init__(self, stream: TextIO, display: ProgressDisplay | None = None) -> None:
        super().__init__(stream)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        if self.display is not None:
            self.display.clear()
        super().emit(record)
        if self.display is not None:
            self.display.redraw()


# ---- helpers -------------------------------------------------------------------------------------
def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_device(device: str) -> str:
    if device == "cpu":
        return device
    if not device.startswith("cuda"):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    if ":" in device:
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: no such GPU ({torch.cuda.device_count()} visible)")
    return device


def select_videos(args: argparse.Namespace, layout: Any) -> list[VideoId]:
    """The videos the flags name, sorted, before sharding."""
    if args.video_id:
        if args.dataset or args.category:
            raise UsageError("--video_id cannot be combined with --dataset/--category")
        try:
            vid = VideoId.parse(args.video_id)
        except ValueError as exc:
            raise UsageError(f"--video_id: {exc}") from None
        if not layout.video(vid).exists():
            raise UsageError(f"--video_id {vid}: input video not found: {layout.video(vid)}")
        return [vid]
    if args.category and not args.dataset:
        raise UsageError("--category needs --dataset")
    if not args.dataset:
        raise UsageError("name the videos: --video_id <dataset>/<category>/<name> or --dataset D [--category C]")
    videos = layout.list_videos(args.dataset, args.category)
    if not videos:
        where = layout.dir("video_dir") / args.dataset / (args.category or "")
        raise UsageError(f"no videos (*.mp4) found under {where}")
    return videos


def _summary(outcomes: list[pipeline.StageOutcome]) -> str:
    rows = [("video", "stage", "status", "seconds")]
    for o in outcomes:
        rows.append((str(o.video), f"{o.stage} {STAGE_NAMES[o.stage]}", o.status, f"{o.seconds:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths[:3], strict=True)]
        lines.append("  ".join([*cells, row[3].rjust(widths[3])]))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _CancelOnSignal:
    """First SIGINT/SIGTERM asks the running stage to stop at its next check; a second SIGINT interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _CancelOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested (%s): finishing at the next check; Ctrl-C again to interrupt",
                    signal.Signals(signum).name)  # fmt: skip

    def __call__(self) -> bool:
        return self.requested


# ---- main ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    display: ProgressDisplay | None = None
    handler = _BarAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root, engine = logging.getLogger(), logging.getLogger("reconstruction")
    levels = (root.level, engine.level)
    root.addHandler(handler)
    try:
        try:
            args = build_parser().parse_args(argv)
            root.setLevel(logging.INFO)
            # --verbose: the engine's debug lines, not every library's
            engine.setLevel(logging.DEBUG if args.verbose else logging.NOTSET)
            plan = _prepare(args)
        except UsageError as exc:
            print(f"python -m reconstruction: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        config, videos, skip, device = plan
        if not videos:
            log.info("chunk %d of %d holds no videos; nothing to do", args.job_chunk_idx, args.num_job_chunks)
            return EXIT_OK
        stages = [s for s in pipeline.ALL_STAGES if s not in skip]
        display = ProgressDisplay(sys.stderr, len(videos), stages)
        handler.display = display
        log.info("%d video(s), stages %s, device %s%s", len(videos), ",".join(map(str, stages)) or "none", device,
                 ", skip_done" if args.skip_done else "")  # fmt: skip
        outcomes: list[pipeline.StageOutcome] = []
        cancel = _CancelOnSignal()
        try:
            with cancel:
                outcomes = pipeline.run_videos(
                    videos,
                    config,
                    args.results_dir,
                    device=device,
                    skip_steps=skip,
                    skip_done=args.skip_done or bool(config.raw.get("pipeline", {}).get("skip_done")),
                    verbose=args.verbose or bool(config.raw.get("pipeline", {}).get("verbose")),
                    is_static_obj=args.is_static_obj,
                    progress=display.update,
                    should_cancel=cancel,
                    on_outcome=lambda o: _log_outcome(o, display),
                    batch_videos=args.batch_videos,
                )
        except KeyboardInterrupt:
            display.close()
            print("python -m reconstruction: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        display.close()
        print(_summary(outcomes))
        if any(o.status == "failed" for o in outcomes):
            return EXIT_FAILED
        if any(o.status == "cancelled" for o in outcomes) or cancel.requested:
            return EXIT_INTERRUPTED
        if any(o.status == "input_error" for o in outcomes):
            return EXIT_USAGE
        return EXIT_OK
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        engine.setLevel(levels[1])


def _log_outcome(outcome: pipeline.StageOutcome, display: ProgressDisplay) -> None:
    if outcome.status in ("done", "reused", "skipped"):
        log.info("%s stage %d %s: %s (%.2f s)", outcome.video, outcome.stage, STAGE_NAMES[outcome.stage],
                 outcome.status, outcome.seconds)  # fmt: skip
    elif outcome.status == "cancelled":
        log.warning("%s stage %d %s: cancelled", outcome.video, outcome.stage, STAGE_NAMES[outcome.stage])


def _prepare(args: argparse.Namespace) -> tuple[Any, list[VideoId], set[int], str]:
    """Validate flags and inputs; everything that can be checked before running a stage."""
    from reconstruction.config import ConfigError, load_config

    if args.num_job_chunks < 1:
        raise UsageError(f"--num_job_chunks must be >= 1, got {args.num_job_chunks}")
    if not 0 <= args.job_chunk_idx < args.num_job_chunks:
        raise UsageError(f"--job_chunk_idx must be in [0, {args.num_job_chunks - 1}], got {args.job_chunk_idx}")
    if args.batch_videos < 1:
        raise UsageError(f"--batch_videos must be >= 1, got {args.batch_videos}")
    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise UsageError(f"--results_dir: folder not found: {results_dir}")
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        raise UsageError(f"--config: {exc}") from None
    device = _check_device(args.device or _default_device())
    pipeline_cfg = config.raw.get("pipeline", {}) or {}
    skip = {n for n in pipeline.ALL_STAGES if getattr(args, f"skip_step{n}") or pipeline_cfg.get(f"skip_step{n}")}
    layout = pipeline.layout_for(config, results_dir)
    videos = select_videos(args, layout)
    chunk = pipeline.job_chunk(videos, args.job_chunk_idx, args.num_job_chunks)
    if args.num_job_chunks > 1:
        log.info("chunk %d of %d: %d of %d video(s)", args.job_chunk_idx, args.num_job_chunks, len(chunk),
                 len(videos))  # fmt: skip
    return config, chunk, skip, device


if __name__ == "__main__":
    sys.exit(main())
