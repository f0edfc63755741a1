"""Run stages 1-6 on a video with caching, manifests, progress and cooperative cancellation.

The API the workers and the CLI call:

- ``run_stage(video_id, stage, config, results_dir, ...) -> StageResult``: one stage of one video.
- ``run_video(video_id, config, results_dir, ...) -> list[StageOutcome]``: stages 1-6 with skip flags.
- ``run_videos(videos, config, results_dir, ..., batch_videos=N)``: several videos; stage 4 of up to N
  videos in one batch when the optimiser offers ``run_batch(ctxs)``.

Caching. After a stage succeeds the pipeline writes its manifest (``Layout.manifest``): sha256 of the
stage's input files (render inputs and upstream stage outputs), the config subtree the stage depends on,
the files it wrote with their hashes, package versions, device and seconds. ``skip_done`` reuses a stage
only when a fresh manifest would be identical in inputs and config and every recorded output still has its
hash. Because downstream inputs include upstream outputs by content, a rerun stage that writes different
files invalidates everything after it, and nothing else.

Crash safety. Outputs are written atomically by the stages (``reconstruction.fileio``); the stage's old
manifest is removed before it runs and the new one is written (atomically) last, so a killed stage leaves
no manifest that a later run would trust. On failure or cancellation the files the attempt wrote are
removed, so no partial set of outputs is left either.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import importlib
import importlib.util
import json
import logging
import platform
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconstruction import fileio
from reconstruction.layout import STAGE_NAMES, Layout, VideoId
from reconstruction.stages.base import StageCancelled, StageContext, StageInputError, StageResult

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
ALL_STAGES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

# Stage number -> module path; imported lazily so a missing stage only fails when it is run.
STAGE_MODULES: dict[int, str] = {
    1: "reconstruction.stages.human_pose",
    2: "reconstruction.stages.preprocess",
    3: "reconstruction.stages.object_pose",
    4: "reconstruction.stages.optimize",
    5: "reconstruction.stages.filtering",
    6: "reconstruction.stages.visualize",
}
_registered: dict[int, Any] = {}

# Config sections (dotted paths into ``config.raw``) each stage depends on. A change anywhere in these
# reruns the stage; a change elsewhere does not.
STAGE_CONFIG_KEYS: dict[int, tuple[str, ...]] = {
    1: ("human_model", "human_pose"),
    2: ("preprocess", "depth", "geometry_backend"),
    3: ("object_pose", "obj_pose_tracking"),
    4: ("optimization", "human_model", "post_processing", "eval", "camera_mode"),
    5: ("filtering", "eval", "optimization.eval", "optimization.pre_eval"),
    6: ("visualization", "optimization.vis_cfg"),
}
# Parts of those sections a stage does not read (glob over dotted paths): the visualisation options and
# the acceptance thresholds live inside ``optimization``/``eval`` but only matter to stages 5-6.
STAGE_CONFIG_EXCLUDE: dict[int, tuple[str, ...]] = {
    4: ("optimization.vis_cfg", "optimization.eval.*.threshold", "eval.*.threshold"),
}
# Names of stage 4's batched entry point ``f(ctxs: list[StageContext]) -> list[StageResult]``.
BATCH_ENTRY_POINTS = ("run_batch", "run_many")
# Stages whose result depends on the static-object flag.
STATIC_OBJ_STAGES = (3, 4)

PACKAGES = ("torch", "numpy", "scipy", "opencv-python-headless", "mediapipe", "anny", "roma", "trimesh", "scenepic")


class StageUnavailable(RuntimeError):
    """The stage's module is not installed / not importable."""


class SkippedStageMissing(StageInputError):
    """A stage was skipped (``--skip_stepN``) but a later stage needs outputs it never produced."""


# ---- stage registry ------------------------------------------------------------------------------
def register_stage(number: int, stage: str | Any) -> None:
    """Use ``stage`` (a module path or an object with NUMBER, NAME, run) for stage ``number``."""
    _registered[number] = stage


def unregister_stage(number: int) -> None:
    _registered.pop(number, None)


def load_stage(number: int) -> Any:
    """The module (or registered object) implementing stage ``number``."""
    if number not in STAGE_MODULES:
        raise ValueError(f"stage must be one of {ALL_STAGES}, got {number!r}")
    target = _registered.get(number, STAGE_MODULES[number])
    if isinstance(target, str):
        try:
            target = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise StageUnavailable(
                    f"stage {number} ({STAGE_NAMES[number]}) is not available: module {target} not found"
                ) from exc
            raise
    if getattr(target, "NUMBER", number) != number or not callable(getattr(target, "run", None)):
        raise StageUnavailable(f"stage {number}: {target!r} does not expose NUMBER={number} and run(ctx)")
    return target


def check_available(number: int) -> None:
    """Raise ``StageUnavailable`` when stage ``number`` cannot be imported, without importing it."""
    if number not in STAGE_MODULES:
        raise ValueError(f"stage must be one of {ALL_STAGES}, got {number!r}")
    target = _registered.get(number, STAGE_MODULES[number])
    if isinstance(target, str) and importlib.util.find_spec(target) is None:
        raise StageUnavailable(f"stage {number} ({STAGE_NAMES[number]}) is not available: module {target} not found")


def stage_name(number: int) -> str:
    return STAGE_NAMES[number]


# ---- per-stage file sets -------------------------------------------------------------------------
def stage_inputs(layout: Layout, vid: VideoId, stage: int) -> list[Path]:
    """Render inputs a stage reads (hashed when present; ``video`` must exist)."""
    render = {
        1: [
            layout.render_config(vid),
            layout.character_data(vid),
            layout.cam_k(vid),
            # the reference's own stage-1 files, which the import backend converts
            layout.reference_hmr_output(vid),
            layout.reference_gem_cache(vid),
        ],
        2: [
            layout.render_config(vid),
            layout.cam_k(vid),
            layout.first_object_mask(vid),
            layout.first_human_mask(vid),
            layout.depth_gt(vid),
        ],
        3: [
            layout.mesh(vid),
            layout.render_config(vid),
            layout.cam_k(vid),
            layout.first_object_mask(vid),
            layout.depth_gt(vid),
        ],
        4: [
            layout.mesh(vid),
            layout.render_config(vid),
            layout.character_data(vid),
            layout.cam_k(vid),
            layout.depth_gt(vid),
            layout.ground_truth(vid),
        ],
        5: [layout.mesh(vid), layout.render_config(vid), layout.cam_k(vid), layout.ground_truth(vid)],
        6: [layout.mesh(vid), layout.render_config(vid), layout.cam_k(vid)],
    }[stage]
    return [layout.video(vid), *render]


def stage_outputs(layout: Layout, vid: VideoId, stage: int) -> tuple[list[Path], list[Path]]:
    """(required, optional) contract outputs of a stage: what later stages read."""
    return {
        1: ([layout.hmr_result(vid), layout.hmr_keypoints(vid)], []),
        2: ([layout.masks_cache(vid), layout.depth_cache(vid)], []),
        3: ([layout.object_poses(vid)], []),
        4: ([layout.raw_hoi_data(vid)], [layout.loss_history(vid), layout.contact_labels(vid)]),
        5: ([layout.filter_report(vid)], [layout.invalid_marker(vid), layout.valid_hoi_data(vid)]),
        6: ([], []),
    }[stage]


def stage_write_roots(layout: Layout, vid: VideoId, stage: int) -> list[Path]:
    """Files/folders a stage writes into; files new or changed there during a failed attempt are removed."""
    return {
        1: [layout.hmr_result(vid).parent, layout.hmr_keypoints(vid).parent],
        2: [layout.masks_cache(vid), layout.depth_cache(vid), *_debug_files(layout, vid, "masks", "depth")],
        3: [layout.object_poses(vid).parent.parent],
        4: [layout.output(vid)],
        5: [layout.output(vid), layout.valid(vid)],
        6: [
            layout.output(vid) / "result_vis",
            layout.valid(vid) / "result_vis",
            layout.scenepic_page(vid).parent,
        ],
    }[stage]


def _debug_files(layout: Layout, vid: VideoId, *kinds: str) -> list[Path]:
    """``--verbose`` debug videos the layout knows of (``<kind>_debug_video``), for the rollback."""
    return [getattr(layout, f"{kind}_debug_video")(vid) for kind in kinds if hasattr(layout, f"{kind}_debug_video")]


# ---- hashing -------------------------------------------------------------------------------------
_hash_cache: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per process on (path, inode, size, mtime) so a video is hashed once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _hash_cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
        _hash_cache[key] = digest
    return digest


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not _is_temp(p))
    return [path]


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp-" in path.name


def _rel(layout: Layout, path: Path) -> str:
    try:
        return path.resolve().relative_to(layout.results_dir.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _abs(layout: Layout, rel: str) -> Path:
    path = Path(rel)
    return path if path.is_absolute() else layout.results_dir / path


def hash_files(layout: Layout, paths: Iterable[Path]) -> dict[str, str | None]:
    """Relative path -> sha256 (``None`` for an absent optional file); folders are expanded."""
    out: dict[str, str | None] = {}
    for path in paths:
        if not path.exists():
            out[_rel(layout, path)] = None
            continue
        for file in _expand(path):
            out[_rel(layout, file)] = file_sha256(file)
    return out


# ---- config --------------------------------------------------------------------------------------
def as_config(config: Any) -> Any:
    """A ReconConfig from a ReconConfig, dict, path or ``None`` (the default file)."""
    if hasattr(config, "raw") and hasattr(config, "section"):
        return config
    from reconstruction.config import load_config

    return load_config(config)


def _get_dotted(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _drop_excluded(node: Any, prefix: str, patterns: Sequence[str]) -> Any:
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        path = f"{prefix}.{key}"
        if any(fnmatch.fnmatchcase(path, pat) for pat in patterns):
            continue
        out[key] = _drop_excluded(value, path, patterns)
    return out


def stage_config(config: Any, stage: int, is_static_obj: bool = False) -> dict[str, Any]:
    """The config subtree stage ``stage`` depends on (what its manifest records and compares)."""
    raw = config.raw
    excluded = STAGE_CONFIG_EXCLUDE.get(stage, ())
    subtree = {key: _drop_excluded(_get_dotted(raw, key), key, excluded) for key in STAGE_CONFIG_KEYS[stage]}
    if stage in STATIC_OBJ_STAGES:
        subtree["is_static_obj"] = bool(is_static_obj)
    return json.loads(json.dumps(subtree, sort_keys=True, default=str))  # plain, canonical


def _effective_static(config: Any, is_static_obj: bool) -> bool:
    return bool(is_static_obj or _get_dotted(config.raw, "pipeline.is_static_obj"))


def layout_for(config: Any, results_dir: str | Path) -> Layout:
    if hasattr(config, "layout_paths"):
        paths = config.layout_paths()
    else:
        paths = {k: v for k, v in (config.raw.get("paths") or {}).items() if k != "results_dir"}
    return Layout.create(results_dir, paths)


# ---- environment -----------------------------------------------------------------------------------
_versions: dict[str, str] | None = None


def package_versions() -> dict[str, str]:
    global _versions
    if _versions is None:
        from importlib.metadata import PackageNotFoundError, version

        found = {"python": platform.python_version()}
        for name in ("hoiweb", *PACKAGES):
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                continue
        commit = _source_commit()
        if commit:
            found["hoiweb_commit"] = commit
        _versions = found
    return dict(_versions)


def _source_commit() -> str | None:
    """The git commit of the engine's source tree (provenance only; ``None`` outside a checkout)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


# Models loaded once per process and shared by every video's StageContext.
MODEL_CACHE: dict[str, Any] = {}


# ---- manifests -------------------------------------------------------------------------------------
def read_manifest(layout: Layout, vid: VideoId, stage: int) -> dict[str, Any] | None:
    path = layout.manifest(vid, stage)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("%s: unreadable manifest %s; treating stage %d as not done", vid, path, stage)
        return None
    return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None


@dataclass
class _Plan:
    """What a stage attempt needs: where, with which inputs/config, and what was there before."""

    vid: VideoId
    stage: int
    layout: Layout
    config: Any
    device: str
    inputs: dict[str, str | None]
    config_subtree: dict[str, Any]
    hash_seconds: float
    verbose: bool = False  # debug artefacts asked for: a manifest without them does not satisfy this
    snapshot: dict[Path, int] = field(default_factory=dict)
    started: float = 0.0


def _gather_inputs(layout: Layout, vid: VideoId, stage: int) -> list[Path]:
    video = layout.video(vid)
    if not video.exists():
        raise StageInputError(f"{vid}: input video not found: {video}")
    paths = list(stage_inputs(layout, vid, stage))
    for upstream in range(1, stage):
        required, optional = stage_outputs(layout, vid, upstream)
        for path in required:
            if not path.exists():
                raise StageInputError(
                    f"{vid}: stage {stage} ({stage_name(stage)}) needs {path} from stage {upstream} "
                    f"({stage_name(upstream)}); run stage {upstream} first"
                )
        paths += required + optional
        manifest = read_manifest(layout, vid, upstream)
        if manifest:
            paths += [_abs(layout, rel) for rel in manifest.get("outputs", {})]
    unique = dict.fromkeys(paths)  # keep order, drop duplicates
    return list(unique)


def _plan(layout: Layout, vid: VideoId, stage: int, config: Any, device: str, is_static_obj: bool) -> _Plan:
    t0 = time.perf_counter()
    inputs = hash_files(layout, _gather_inputs(layout, vid, stage))
    return _Plan(
        vid=vid,
        stage=stage,
        layout=layout,
        config=config,
        device=device,
        inputs=inputs,
        config_subtree=stage_config(config, stage, is_static_obj),
        hash_seconds=time.perf_counter() - t0,
    )


def manifest_matches(plan: _Plan, manifest: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether ``manifest`` proves the stage is done for these inputs and config (and why not)."""
    if manifest is None:
        return False, "no manifest"
    if manifest.get("status") != "done":
        return False, "previous attempt did not finish"
    if manifest.get("inputs") != plan.inputs:
        changed = sorted(
            k
            for k in set(plan.inputs) | set(manifest.get("inputs", {}))
            if plan.inputs.get(k) != manifest.get("inputs", {}).get(k)
        )
        return False, f"inputs changed: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}"
    if manifest.get("config") != plan.config_subtree:
        return False, "config changed"
    if plan.verbose and not manifest.get("verbose", False):
        return False, "debug artefacts (--verbose) asked for"
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict):
        return False, "manifest lists no outputs"
    for rel, digest in outputs.items():
        path = _abs(plan.layout, rel)
        if not path.is_file():
            return False, f"output missing: {rel}"
        if file_sha256(path) != digest:
            return False, f"output changed: {rel}"
    return True, "up to date"


def _snapshot(roots: Iterable[Path]) -> dict[Path, int]:
    files: dict[Path, int] = {}
    for root in roots:
        if root.is_file():
            files[root] = root.stat().st_mtime_ns
        elif root.is_dir():
            for path in root.rglob("*"):
                if path.is_file():
                    files[path] = path.stat().st_mtime_ns
    return files


def _remove_temp_files(roots: Iterable[Path]) -> None:
    """Temporary files of writes a killed process never finished (``fileio.atomic_path`` names)."""
    for root in roots:
        folder = root if root.is_dir() else root.parent
        if not folder.is_dir():
            continue
        pattern = "**/.*.tmp-*" if root.is_dir() else f".{root.name}.tmp-*"
        for tmp in folder.glob(pattern):
            if tmp.is_file():
                log.info("removing leftover temporary file %s", tmp)
                tmp.unlink(missing_ok=True)


def _begin(plan: _Plan) -> None:
    """Remove the stale manifest and leftovers, remember what is on disk, then the stage may write."""
    layout, vid, stage = plan.layout, plan.vid, plan.stage
    layout.manifest(vid, stage).unlink(missing_ok=True)
    roots = stage_write_roots(layout, vid, stage)
    _remove_temp_files(roots)
    plan.snapshot = _snapshot(roots)
    plan.started = time.perf_counter()


def _rollback(plan: _Plan) -> list[Path]:
    """Remove files the failed attempt created or rewrote: no partial set of outputs survives."""
    removed = []
    for path, mtime in _snapshot(stage_write_roots(plan.layout, plan.vid, plan.stage)).items():
        if plan.snapshot.get(path) != mtime:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("%s stage %d: removed %d file(s) of the unfinished attempt", plan.vid, plan.stage, len(removed))
    return removed


def _finish(plan: _Plan, result: StageResult, seconds: float) -> StageResult:
    """Hash the outputs and write the manifest (atomically, last)."""
    layout = plan.layout
    t0 = time.perf_counter()
    files = [Path(p) for p in result.files]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise RuntimeError(f"stage {plan.stage} reported output(s) it did not write: {', '.join(missing)}")
    outputs = {k: v for k, v in hash_files(layout, files).items() if v is not None}
    hash_seconds = plan.hash_seconds + time.perf_counter() - t0
    manifest = {
        "format": MANIFEST_FORMAT,
        "status": "done",
        "video_id": str(plan.vid),
        "stage": plan.stage,
        "name": stage_name(plan.stage),
        "inputs": plan.inputs,
        "config": plan.config_subtree,
        "outputs": outputs,
        "packages": package_versions(),
        "device": plan.device,
        "verbose": plan.verbose,
        "host": socket.gethostname(),
        "seconds": round(seconds, 4),
        "hash_seconds": round(hash_seconds, 4),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": result.metrics,
        "info": result.info,
    }
    fileio.write_json(layout.manifest(plan.vid, plan.stage), manifest)
    result.seconds = seconds
    result.info = {**result.info, "status": "done", "hash_seconds": hash_seconds}
    return result


def _context(
    plan: _Plan,
    progress: Callable[[float, str], None] | None,
    should_cancel: Callable[[], bool] | None,
    verbose: bool,
    is_static_obj: bool,
    models: dict[str, Any] | None,
) -> StageContext:
    return StageContext(
        video=plan.vid,
        layout=plan.layout,
        config=plan.config,
        device=plan.device,
        verbose=verbose,
        is_static_obj=is_static_obj,
        progress=_clamped(progress),
        should_cancel=should_cancel or (lambda: False),
        models=MODEL_CACHE if models is None else models,
    )


def _clamped(progress: Callable[[float, str], None] | None) -> Callable[[float, str], None]:
    if progress is None:
        return lambda fraction, message: None

    def report(fraction: float, message: str = "") -> None:
        progress(min(1.0, max(0.0, float(fraction))), message)

    return report


def _reused(plan: _Plan, manifest: dict[str, Any], seconds: float) -> StageResult:
    files = [_abs(plan.layout, rel) for rel in manifest["outputs"]]
    info = {"status": "reused", "original_seconds": manifest.get("seconds"), "hash_seconds": seconds}
    return StageResult(files=files, seconds=seconds, metrics=dict(manifest.get("metrics", {})), info=info)


class VideoBusy(StageInputError):
    """Another process is running a stage of the same video."""


@contextlib.contextmanager
def video_lock(layout: Layout, vid: VideoId) -> Iterator[None]:
    """One process at a time per video (an advisory ``flock``; the kernel drops it when a process dies)."""
    path = layout.manifest(vid, 1).parent / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VideoBusy(f"{vid}: another process is running a stage of this video (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- public API ------------------------------------------------------------------------------------
def run_stage(
    video_id: str | VideoId,
    stage: int,
    config: Any,
    results_dir: str | Path,
    device: str = "cpu",
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    skip_done: bool = False,
    verbose: bool = False,
    is_static_obj: bool = False,
    models: dict[str, Any] | None = None,
) -> StageResult:
    """Run one stage of one video (or reuse it when ``skip_done`` and its manifest still matches).

    ``result.info["status"]`` is ``"done"`` or ``"reused"``. Raises ``StageInputError`` for missing inputs,
    ``StageCancelled`` when ``should_cancel()`` turned true (no outputs of the attempt are left), and the
    stage's own exception when it fails (likewise rolled back).
    """
    vid = video_id if isinstance(video_id, VideoId) else VideoId.parse(str(video_id))
    config = as_config(config)
    layout = layout_for(config, results_dir)
    is_static_obj = _effective_static(config, is_static_obj)
    check_available(stage)
    if should_cancel is not None and should_cancel():
        raise StageCancelled(f"cancelled before stage {stage} of {vid}")
    with video_lock(layout, vid):
        return _run_locked(layout, vid, stage, config, device, progress, should_cancel, skip_done,
                           verbose, is_static_obj, models)  # fmt: skip


def _run_locked(
    layout: Layout,
    vid: VideoId,
    stage: int,
    config: Any,
    device: str,
    progress: Callable[[float, str], None] | None,
    should_cancel: Callable[[], bool] | None,
    skip_done: bool,
    verbose: bool,
    is_static_obj: bool,
    models: dict[str, Any] | None,
) -> StageResult:
    t0 = time.perf_counter()
    plan = _plan(layout, vid, stage, config, device, is_static_obj)
    plan.verbose = verbose
    if skip_done:
        manifest = read_manifest(layout, vid, stage)
        ok, why = manifest_matches(plan, manifest)
        if ok and manifest is not None:
            log.debug("%s stage %d (%s): reused (manifest matches)", vid, stage, stage_name(stage))
            return _reused(plan, manifest, time.perf_counter() - t0)
        log.info("%s stage %d (%s): rerun: %s", vid, stage, stage_name(stage), why)
    module = load_stage(stage)  # only now: a fully reused run never imports the stages (torch, models)
    _begin(plan)
    ctx = _context(plan, progress, should_cancel, verbose, is_static_obj, models)
    try:
        ctx.progress(0.0, f"stage {stage} {stage_name(stage)}")
        result = module.run(ctx)
        if not isinstance(result, StageResult):
            raise TypeError(f"stage {stage} returned {type(result).__name__}, expected StageResult")
        seconds = time.perf_counter() - plan.started
        result = _finish(plan, result, seconds)
    except BaseException:
        _rollback(plan)
        raise
    ctx.progress(1.0, "done")
    return result


def check_stage(
    video_id: str | VideoId, stage: int, config: Any, results_dir: str | Path, is_static_obj: bool = False
) -> tuple[bool, str]:
    """Whether ``--skip_done`` would reuse this stage now, and why not (reads and hashes, runs nothing)."""
    vid = video_id if isinstance(video_id, VideoId) else VideoId.parse(str(video_id))
    config = as_config(config)
    layout = layout_for(config, results_dir)
    manifest = read_manifest(layout, vid, stage)
    if manifest is None:
        return False, "no manifest"
    try:
        plan = _plan(layout, vid, stage, config, manifest.get("device", "cpu"),
                     _effective_static(config, is_static_obj))  # fmt: skip
    except StageInputError as exc:
        return False, str(exc)
    return manifest_matches(plan, manifest)


@dataclass
class StageOutcome:
    """One row of a run's summary."""

    video: VideoId
    stage: int
    status: str  # done | reused | skipped | failed | cancelled | input_error
    seconds: float = 0.0
    result: StageResult | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "reused", "skipped")


def _check_skipped(layout: Layout, vid: VideoId, stage: int) -> None:
    required, _ = stage_outputs(layout, vid, stage)
    for path in required:
        if not path.exists():
            raise SkippedStageMissing(
                f"{vid}: stage {stage} ({stage_name(stage)}) is skipped (--skip_step{stage}) "
                f"but its output is missing: {path}"
            )


def _outcome_from_exception(vid: VideoId, stage: int, exc: BaseException, seconds: float) -> StageOutcome:
    if isinstance(exc, StageCancelled):
        status = "cancelled"
    elif isinstance(exc, StageInputError | StageUnavailable):
        status = "input_error"
    else:
        status = "failed"
    message = str(exc) if isinstance(exc, StageInputError | StageUnavailable) else f"{type(exc).__name__}: {exc}"
    return StageOutcome(vid, stage, status, seconds, error=message)


VideoProgress = Callable[[VideoId, int, float, str], None]


def run_video(
    video_id: str | VideoId,
    config: Any,
    results_dir: str | Path,
    device: str = "cpu",
    skip_steps: Iterable[int] = (),
    skip_done: bool = False,
    verbose: bool = False,
    is_static_obj: bool = False,
    progress: VideoProgress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    models: dict[str, Any] | None = None,
    on_outcome: Callable[[StageOutcome], None] | None = None,
) -> list[StageOutcome]:
    """Stages 1-6 of one video; stops at the first failure (later stages depend on it)."""
    return run_videos(
        [video_id],
        config,
        results_dir,
        device=device,
        skip_steps=skip_steps,
        skip_done=skip_done,
        verbose=verbose,
        is_static_obj=is_static_obj,
        progress=progress,
        should_cancel=should_cancel,
        models=models,
        on_outcome=on_outcome,
    )


def run_videos(
    videos: Sequence[str | VideoId],
    config: Any,
    results_dir: str | Path,
    device: str = "cpu",
    skip_steps: Iterable[int] = (),
    skip_done: bool = False,
    verbose: bool = False,
    is_static_obj: bool = False,
    progress: VideoProgress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    models: dict[str, Any] | None = None,
    on_outcome: Callable[[StageOutcome], None] | None = None,
    batch_videos: int = 1,
) -> list[StageOutcome]:
    """Stages 1-6 of several videos. A failing video is logged and the others go on.

    With ``batch_videos > 1`` videos are taken in groups: stages 1-3 per video, then stage 4 of the group
    in one call of the optimiser's ``run_batch(ctxs)`` when it has one (else one by one), then 5-6.
    """
    config = as_config(config)
    layout = layout_for(config, results_dir)
    vids = [v if isinstance(v, VideoId) else VideoId.parse(str(v)) for v in videos]
    skip = set(skip_steps)
    bad = sorted(s for s in skip if s not in ALL_STAGES)
    if bad:
        raise ValueError(f"skip_steps must be within {ALL_STAGES}, got {bad}")
    outcomes: list[StageOutcome] = []
    batch = max(1, int(batch_videos))

    def record(outcome: StageOutcome) -> StageOutcome:
        outcomes.append(outcome)
        if outcome.status in ("failed", "input_error"):
            log.error("%s stage %d (%s) %s: %s", outcome.video, outcome.stage, stage_name(outcome.stage),
                      outcome.status, outcome.error)  # fmt: skip
        if on_outcome is not None:
            on_outcome(outcome)
        return outcome

    def one(vid: VideoId, stage: int) -> StageOutcome:
        if stage in skip:
            try:
                if any(s not in skip for s in range(stage + 1, 7)):
                    _check_skipped(layout, vid, stage)
            except StageInputError as exc:
                return record(StageOutcome(vid, stage, "input_error", error=str(exc)))
            return record(StageOutcome(vid, stage, "skipped"))
        stage_progress = None if progress is None else (lambda f, m: progress(vid, stage, f, m))
        t0 = time.perf_counter()
        try:
            result = run_stage(vid, stage, config, results_dir, device, stage_progress, should_cancel,
                               skip_done, verbose, is_static_obj, models)  # fmt: skip
        except (Exception, StageCancelled) as exc:
            if not isinstance(exc, StageInputError | StageUnavailable | StageCancelled):
                log.exception("%s stage %d (%s) failed", vid, stage, stage_name(stage))
            return record(_outcome_from_exception(vid, stage, exc, time.perf_counter() - t0))
        return record(StageOutcome(vid, stage, result.info.get("status", "done"), result.seconds, result))

    for start in range(0, len(vids), batch):
        group = vids[start : start + batch]
        alive = {vid: True for vid in group}
        for stage in ALL_STAGES:
            todo = [vid for vid in group if alive[vid]]
            if stage == 4 and batch > 1 and 4 not in skip and len(todo) > 1:
                results = _run_stage4_batch(todo, config, layout, device, progress, should_cancel, skip_done,
                                            verbose, is_static_obj, models, record, one)  # fmt: skip
            else:
                results = [one(vid, stage) for vid in todo]
            for outcome in results:
                if not outcome.ok:
                    alive[outcome.video] = False
                if outcome.status == "cancelled":
                    return outcomes
    return outcomes


def _run_stage4_batch(
    vids: list[VideoId],
    config: Any,
    layout: Layout,
    device: str,
    progress: VideoProgress | None,
    should_cancel: Callable[[], bool] | None,
    skip_done: bool,
    verbose: bool,
    is_static_obj: bool,
    models: dict[str, Any] | None,
    record: Callable[[StageOutcome], StageOutcome],
    one: Callable[[VideoId, int], StageOutcome],
) -> list[StageOutcome]:
    """Stage 4 of several videos in one optimiser call (``run_batch``), manifests written per video.

    Falls back to one video at a time when the optimiser has no ``run_batch`` or the batch fails.
    """
    try:
        module = load_stage(4)
    except StageUnavailable as exc:
        return [record(StageOutcome(vid, 4, "input_error", error=str(exc))) for vid in vids]
    batch_entry = next((getattr(module, name) for name in BATCH_ENTRY_POINTS if hasattr(module, name)), None)
    if batch_entry is None:
        log.info("stage 4 has no run_batch: optimising %d videos one after the other", len(vids))
        return [one(vid, 4) for vid in vids]
    outcomes: list[StageOutcome] = []
    with contextlib.ExitStack() as locks:
        plans: list[_Plan] = []
        for vid in vids:
            try:
                locks.enter_context(video_lock(layout, vid))
                plan = _plan(layout, vid, 4, config, device, _effective_static(config, is_static_obj))
                plan.verbose = verbose
            except StageInputError as exc:
                outcomes.append(record(StageOutcome(vid, 4, "input_error", error=str(exc))))
                continue
            manifest = read_manifest(layout, vid, 4)
            if skip_done and manifest is not None and manifest_matches(plan, manifest)[0]:
                result = _reused(plan, manifest, plan.hash_seconds)
                outcomes.append(record(StageOutcome(vid, 4, "reused", result.seconds, result)))
                continue
            plans.append(plan)
        if not plans:
            return outcomes
        failed = _batch_attempt(batch_entry, plans, progress, should_cancel, verbose,
                                _effective_static(config, is_static_obj), models, record, outcomes)  # fmt: skip
    if failed:  # outside the locks: ``one`` takes each video's lock itself
        outcomes += [one(plan.vid, 4) for plan in plans]
    return outcomes


def _batch_attempt(
    run_batch: Callable[[list[StageContext]], list[StageResult]],
    plans: list[_Plan],
    progress: VideoProgress | None,
    should_cancel: Callable[[], bool] | None,
    verbose: bool,
    is_static_obj: bool,
    models: dict[str, Any] | None,
    record: Callable[[StageOutcome], StageOutcome],
    outcomes: list[StageOutcome],
) -> bool:
    """Run one batch; append outcomes; True when the batch failed and should be retried video by video."""
    ctxs = []
    for plan in plans:
        _begin(plan)
        vid_progress = None if progress is None else (lambda f, m, v=plan.vid: progress(v, 4, f, m))
        ctxs.append(_context(plan, vid_progress, should_cancel, verbose, is_static_obj, models))
    log.info("stage 4: optimising %d videos in one batch", len(plans))
    t0 = time.perf_counter()
    try:
        results = run_batch(ctxs)
    except BaseException as exc:
        for plan in plans:
            _rollback(plan)
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, StageCancelled):
            elapsed = time.perf_counter() - t0
            outcomes += [record(_outcome_from_exception(p.vid, 4, exc, elapsed)) for p in plans]
            return False
        # e.g. videos of different lengths, or out of memory: each video on its own still may work
        log.warning("stage 4 batch of %d videos failed (%s: %s); optimising them one by one",
                    len(plans), type(exc).__name__, exc)  # fmt: skip
        return True
    share = (time.perf_counter() - t0) / len(plans)  # the batch's time, attributed evenly
    for plan, result in zip(plans, results, strict=True):
        try:
            result.info = {**result.info, "batch_size": len(plans)}
            result = _finish(plan, result, share)
        except Exception as exc:
            _rollback(plan)
            outcomes.append(record(_outcome_from_exception(plan.vid, 4, exc, share)))
            continue
        outcomes.append(record(StageOutcome(plan.vid, 4, "done", share, result)))
    return False


def job_chunk(items: Sequence[Any], chunk_idx: int, num_chunks: int) -> list[Any]:
    """Chunk ``chunk_idx`` of ``num_chunks`` contiguous chunks (sizes differ by at most one, the first
    ``len % num_chunks`` chunks one longer, as ``numpy.array_split``): an exact partition."""
    if num_chunks < 1:
        raise ValueError(f"num_job_chunks must be >= 1, got {num_chunks}")
    if not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"job_chunk_idx must be in [0, {num_chunks - 1}], got {chunk_idx}")
    size, extra = divmod(len(items), num_chunks)
    start = chunk_idx * size + min(chunk_idx, extra)
    stop = start + size + (1 if chunk_idx < extra else 0)
    return list(items[start:stop])


__all__ = [
    "ALL_STAGES",
    "MODEL_CACHE",
    "STAGE_CONFIG_KEYS",
    "STAGE_MODULES",
    "SkippedStageMissing",
    "VideoBusy",
    "check_stage",
    "StageOutcome",
    "StageUnavailable",
    "file_sha256",
    "job_chunk",
    "load_stage",
    "manifest_matches",
    "read_manifest",
    "register_stage",
    "run_stage",
    "run_video",
    "run_videos",
    "stage_config",
    "stage_inputs",
    "stage_outputs",
    "unregister_stage",
    "video_lock",
]
