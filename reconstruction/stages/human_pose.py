"""Stage 1, human pose: 2D body and hand keypoints per frame, then the body model fitted to them.

Backends (config ``human_pose.backend``):
- ``mediapipe`` (default): MediaPipe pose + hands -> ``fit_body`` initialised from the render's frame-0 pose.
- ``import``: hoiweb stage-1 caches made elsewhere (an earlier run) at ``layout.hmr_result`` /
  ``layout.hmr_keypoints`` are validated and kept; without them the reference's own GEM/WiLoR SMPL-X
  output (``layout.reference_hmr_output``, else GEM's ``layout.reference_gem_cache``) is converted
  into them (``backends.grail_stage1``).

Writes ``layout.hmr_keypoints(vid)`` (npz: ``keypoints_2d`` (T,75,3) x_px, y_px, confidence;
``image_size`` (H,W)) and ``layout.hmr_result(vid)`` (torch dict: ``body_model``, ``motion_incam`` and
``motion_global`` each {pose_aa (T,J,3), shape (S,), trans (T,3)}, ``predicted_body_height``,
``keypoints_3d_cam`` (T,75,3)).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruction import fileio
from reconstruction.backends.mediapipe_pose import MediaPipePoseSettings, get_detector
from reconstruction.keypoints import NUM_BODY
from reconstruction.layout import Layout
from reconstruction.render_config import load_cam_k, load_character_data, load_render_config
from reconstruction.stages.base import StageContext, StageInputError, StageResult
from reconstruction.stages.fit_body import FitSettings, fit_body, transform_body

NUMBER = 1
NAME = "human_pose"
BACKENDS = ("mediapipe", "import")
UP_AXIS = {"anny": 2, "smplx": 1}  # rest-pose up axis of each body model's own frame

logger = logging.getLogger(__name__)


def stage_settings(config: Any) -> dict[str, Any]:
    """The ``human_pose`` config section, or {} when the config has none."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config.get("human_pose") or {})
    try:
        return dict(config.section("human_pose") or {})
    except (KeyError, AttributeError, ValueError):
        return {}


def run(ctx: StageContext) -> StageResult:
    started = time.perf_counter()
    settings = stage_settings(ctx.config)
    backend = settings.get("backend", "mediapipe")
    if backend not in BACKENDS:
        raise StageInputError(f"human_pose.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "import":
        result = import_caches(ctx, settings.get("import_dir"))
    else:
        result = run_mediapipe(ctx, settings)
    result.seconds = time.perf_counter() - started
    result.info["backend"] = backend
    return result


# ---- import backend -------------------------------------------------------------------------------
def import_caches(ctx: StageContext, import_dir: str | None = None) -> StageResult:
    """Validate existing stage-1 caches and keep them, or convert the reference's own stage-1 files.

    Without ``human_pose.import_dir`` the caches are already in this results dir; with it, that folder is
    read as another results dir (same layout). hoiweb's caches (``hmr_results.pt`` + ``keypoints.npz``)
    are kept as they are (copied here from an import dir). Without them, the reference's native stage-1
    output (``<hmr_dir>/<d>/<c>/<v>.npz``, GEM + WiLoR) or GEM's cache (``gem_smpl_pred.pt``) is converted
    (``backends.grail_stage1``) into hoiweb's caches here. An invalid source leaves this results dir untouched.
    """
    from reconstruction.backends import grail_stage1

    source = Layout.create(import_dir) if import_dir else ctx.layout
    result_path = source.hmr_result(ctx.video)
    keypoints_path = source.hmr_keypoints(ctx.video)
    if not (result_path.exists() and keypoints_path.exists()):
        native = grail_stage1.find_native(source, ctx.video)
        if native is not None:
            return convert_native(ctx, native)
        setting = "human_pose.import_dir" if import_dir else "human_pose.backend=import"
        missing = result_path if not result_path.exists() else keypoints_path
        raise StageInputError(
            f"{setting}: stage-1 cache not found: {missing} (nor the reference's "
            f"{grail_stage1.native_output_path(source, ctx.video)} or {grail_stage1.gem_cache_path(source, ctx.video)})"
        )
    keypoints = load_keypoints(keypoints_path)
    result = load_hmr_result(result_path)
    num_frames = result["motion_incam"]["trans"].shape[0]
    if keypoints["keypoints_2d"].shape[0] != num_frames:
        raise StageInputError(
            f"{keypoints_path}: {keypoints['keypoints_2d'].shape[0]} frames of keypoints but {result_path} "
            f"has {num_frames} frames of motion"
        )
    if import_dir:
        copies = [
            (result_path, ctx.layout.hmr_result(ctx.video)),
            (keypoints_path, ctx.layout.hmr_keypoints(ctx.video)),
        ]
        for src, dst in copies:
            if src.resolve() != dst.resolve():
                fileio.write_bytes(dst, src.read_bytes())
        result_path, keypoints_path = (dst for _, dst in copies)
    ctx.progress(1.0, "imported stage-1 caches")
    return StageResult(files=[result_path, keypoints_path], metrics={"frames": float(num_frames)})


def convert_native(ctx: StageContext, path: Path) -> StageResult:
    """The reference's SMPL-X stage-1 file at ``path`` -> hoiweb's two stage-1 caches in this results dir."""
    from reconstruction.backends import grail_stage1

    native = grail_stage1.read_native(path)  # validated before anything else is loaded
    layout, vid = ctx.layout, ctx.video
    config_path = _require(layout.render_config(vid), "render config")
    try:
        render_config = load_render_config(config_path)
    except ValueError as exc:
        raise StageInputError(str(exc)) from exc
    body = body_model_for(ctx, "smplx")
    shape = native.betas.to(body.device)
    pose_cam, trans_cam = grail_stage1.engine_pose(body, native)
    pose_cam, trans_cam = pose_cam.to(body.device), trans_cam.to(body.device)
    cam_to_world = torch.linalg.inv(torch.as_tensor(render_config.world_to_cam(), dtype=torch.float32))
    pose_world, trans_world = transform_body(body, pose_cam, shape, trans_cam, cam_to_world.to(body.device))
    with torch.no_grad():
        keypoints_3d = body.forward(pose_cam, shape, trans_cam).keypoints
    height = native.predicted_body_height
    result = {
        "body_model": "smplx",
        "motion_incam": {"pose_aa": pose_cam.cpu(), "shape": shape.cpu(), "trans": trans_cam.cpu()},
        "motion_global": {"pose_aa": pose_world.cpu(), "shape": shape.cpu(), "trans": trans_world.cpu()},
        "predicted_body_height": body_height(body, shape, "smplx") if height is None else height,
        "keypoints_3d_cam": keypoints_3d.cpu(),
        "imported_from": str(path),
    }
    if native.foot_contact_probs is not None:
        result["foot_contact_probs"] = torch.as_tensor(native.foot_contact_probs, dtype=torch.float32)
    result_path = fileio.write_torch(layout.hmr_result(vid), result)
    keypoints_path = fileio.write_npz(
        layout.hmr_keypoints(vid),
        keypoints_2d=native.keypoints_2d,
        image_size=np.array([render_config.frame_height, render_config.frame_width], dtype=np.int64),
    )
    ctx.progress(1.0, f"converted the reference's stage-1 output {path.name}")
    return StageResult(
        files=[result_path, keypoints_path],
        metrics={"frames": float(native.num_frames)},
        info={"imported_from": str(path)},
    )


def load_keypoints(path: Path) -> dict[str, np.ndarray]:
    """Read and validate a keypoint cache (npz ``keypoints_2d`` (T,75,3), ``image_size`` (2,))."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 - any read failure is a bad cache file
        raise StageInputError(f"{path}: not a readable keypoint cache ({exc})") from exc
    for key in ("keypoints_2d", "image_size"):
        if key not in arrays:
            raise StageInputError(f"{path}: missing array {key!r}")
    points = arrays["keypoints_2d"]
    if points.ndim != 3 or points.shape[1:] != (NUM_BODY + 42, 3) or points.shape[0] == 0:
        raise StageInputError(f"{path}: keypoints_2d must have shape (T,75,3), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise StageInputError(f"{path}: keypoints_2d holds NaN or infinite values")
    if arrays["image_size"].shape != (2,):
        raise StageInputError(f"{path}: image_size must be (H, W), got shape {arrays['image_size'].shape}")
    return arrays


def load_hmr_result(path: Path) -> dict[str, Any]:
    """Read and validate an ``hmr_results.pt`` dict (contract stage-1 layout)."""
    try:
        # Caches of other tools may hold numpy arrays, which weights_only refuses; results dirs are the
        # operator's own files (as for the render pickles), never uploads.
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any read failure is a bad cache file
        raise StageInputError(f"{path}: not a readable stage-1 result ({exc})") from exc
    if not isinstance(data, dict):
        raise StageInputError(f"{path}: expected a dict, got {type(data).__name__}")
    for key in ("body_model", "motion_incam", "motion_global"):
        if key not in data:
            raise StageInputError(f"{path}: missing key {key!r}")
    num_frames = None
    for motion_key in ("motion_incam", "motion_global"):
        motion = data[motion_key]
        if not isinstance(motion, dict):
            raise StageInputError(f"{path}: {motion_key} must be a dict")
        for key in ("pose_aa", "shape", "trans"):
            if key not in motion:
                raise StageInputError(f"{path}: {motion_key} lacks {key!r}")
            value = torch.as_tensor(np.asarray(motion[key]) if not torch.is_tensor(motion[key]) else motion[key])
            if not bool(torch.isfinite(value).all()):
                raise StageInputError(f"{path}: {motion_key}.{key} holds NaN or infinite values")
            motion[key] = value
        pose, trans = motion["pose_aa"], motion["trans"]
        if pose.ndim != 3 or pose.shape[-1] != 3 or trans.ndim != 2 or trans.shape[-1] != 3:
            raise StageInputError(
                f"{path}: {motion_key} pose_aa must be (T,J,3) and trans (T,3), "
                f"got {tuple(pose.shape)} and {tuple(trans.shape)}"
            )
        if pose.shape[0] != trans.shape[0] or (num_frames is not None and trans.shape[0] != num_frames):
            raise StageInputError(f"{path}: frame counts of pose_aa/trans disagree")
        num_frames = trans.shape[0]
    if "keypoints_3d_cam" in data:
        points = torch.as_tensor(data["keypoints_3d_cam"])
        if not bool(torch.isfinite(points).all()):
            raise StageInputError(f"{path}: keypoints_3d_cam holds NaN or infinite values")
    return data


# ---- mediapipe backend ----------------------------------------------------------------------------
def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise StageInputError(f"{what} not found: {path}")
    return path


def _read_inputs(ctx: StageContext) -> dict[str, Any]:
    layout, vid = ctx.layout, ctx.video
    video_path = _require(layout.video(vid), "input video")
    from reconstruction.video import read_video

    try:
        frames, fps = read_video(video_path)
    except (OSError, ValueError) as exc:
        raise StageInputError(f"{video_path}: {exc}") from exc
    config_path = _require(layout.render_config(vid), "render config")
    try:
        render_config = load_render_config(config_path)
    except ValueError as exc:
        raise StageInputError(str(exc)) from exc
    cam_k_path = layout.cam_k(vid)
    try:
        K = load_cam_k(cam_k_path) if cam_k_path.exists() else render_config.intrinsics()
    except ValueError as exc:
        raise StageInputError(str(exc)) from exc
    character_path = _require(layout.character_data(vid), "character data")
    try:
        character = load_character_data(character_path)
    except ValueError as exc:
        raise StageInputError(f"{character_path}: not valid JSON ({exc})") from exc
    for key in ("pose_aa", "trans"):
        if key not in character:
            raise StageInputError(f"{character_path}: missing {key!r} (the character's frame-0 pose)")
    if "shape" not in character and "height_m" not in character:
        raise StageInputError(f"{character_path}: needs 'shape' or 'height_m'")
    height, width = frames.shape[1:3]
    if (height, width) != (render_config.frame_height, render_config.frame_width):
        raise StageInputError(
            f"{video_path}: frames are {width}x{height} but {config_path} says "
            f"{render_config.frame_width}x{render_config.frame_height}"
        )
    return {"frames": frames, "fps": fps, "render_config": render_config, "K": K, "character": character}


def body_model_for(ctx: StageContext, name: str):
    """The process-wide body model (cached in ``ctx.models``)."""
    key = f"body_model:{name}:{ctx.device}"
    if key not in ctx.models:
        from reconstruction.body import load_body_model

        ctx.models[key] = load_body_model(name, device=ctx.device)
    return ctx.models[key]


def fit_settings_from(settings: dict[str, Any]) -> FitSettings:
    """``human_pose.fit`` overrides FitSettings fields; an unknown key is an error naming it."""
    overrides = dict(settings.get("fit") or {})
    known = FitSettings.__dataclass_fields__
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise StageInputError(f"unknown human_pose.fit setting(s): {', '.join(unknown)}")
    return FitSettings(**overrides)


def detector_settings(settings: dict[str, Any]) -> MediaPipePoseSettings:
    """MediaPipe settings from ``human_pose`` (``model_complexity``, ``min_detection_confidence``)."""
    complexity = int(settings.get("model_complexity", 1))
    if complexity != 1:
        # 0 (lite) and 2 (heavy) are downloaded by MediaPipe at first use; nothing may be downloaded here.
        raise StageInputError(
            f"human_pose.model_complexity={complexity}: mediapipe 0.10.14 ships only the full pose model "
            "(model_complexity 1) and nothing may be downloaded at run time"
        )
    confidence = float(settings.get("min_detection_confidence", 0.5))
    if not 0.0 <= confidence <= 1.0:
        raise StageInputError(f"human_pose.min_detection_confidence must be in [0, 1], got {confidence}")
    return MediaPipePoseSettings(
        model_complexity=complexity,
        min_detection_confidence=confidence,
        hand_min_detection_confidence=confidence,
    )


def first_frame_body(
    model, character: dict[str, Any], render_config, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The character's shape (S,) and its frame-0 pose (1,J,3) and translation (1,3) in the camera frame, with
    the render's world-to-camera transform (4,4), all float32: where stage 1's fit starts."""
    dtype = torch.float32
    shape = (
        torch.as_tensor(character["shape"], dtype=dtype)
        if "shape" in character
        else model.shape_for_height(float(character["height_m"])).to(dtype)
    ).to(device)
    world_to_cam = torch.as_tensor(render_config.world_to_cam(), dtype=dtype, device=device)
    pose_world0 = torch.as_tensor(character["pose_aa"], dtype=dtype, device=device)[None]
    trans_world0 = torch.as_tensor(character["trans"], dtype=dtype, device=device).reshape(1, 3)
    pose_cam0, trans_cam0 = transform_body(model, pose_world0, shape, trans_world0, world_to_cam)
    return shape, pose_cam0, trans_cam0, world_to_cam


def run_mediapipe(ctx: StageContext, settings: dict[str, Any]) -> StageResult:
    fit_settings = fit_settings_from(settings)  # a bad setting fails before any work
    mediapipe_settings = detector_settings(settings)
    inputs = _read_inputs(ctx)
    frames, K, character = inputs["frames"], inputs["K"], inputs["character"]
    render_config = inputs["render_config"]
    ctx.check_cancelled()

    started = time.perf_counter()
    ctx.progress(0.0, "detecting 2D keypoints")
    detector = get_detector(ctx.models, mediapipe_settings)
    detections = detector.detect(
        frames,
        progress=lambda f: ctx.progress(0.4 * f, "detecting 2D keypoints"),
        check_cancelled=ctx.check_cancelled,
    )
    keypoints_2d = detections.keypoints_2d
    detect_seconds = time.perf_counter() - started
    frames_with_body = float((keypoints_2d[:, :NUM_BODY, 2] > 0).any(axis=1).mean())
    if frames_with_body == 0:
        raise StageInputError(f"{ctx.layout.video(ctx.video)}: no person detected in any frame")

    started = time.perf_counter()
    body_model_name = character.get("body_model", "anny")
    model = body_model_for(ctx, body_model_name)
    device = torch.device(ctx.device)
    dtype = torch.float32
    shape, pose_cam0, trans_cam0, world_to_cam = first_frame_body(model, character, render_config, device)
    fit = fit_body(
        model,
        torch.as_tensor(keypoints_2d, dtype=dtype, device=device),
        torch.as_tensor(K, dtype=dtype, device=device),
        pose_cam0[0],
        trans_cam0[0],
        shape,
        fit_settings,
        progress=lambda f: ctx.progress(0.4 + 0.55 * f, "fitting the body model"),
        check_cancelled=ctx.check_cancelled,
        body_3d=torch.as_tensor(detections.body_3d, dtype=dtype, device=device),
        up=world_to_cam[:3, 2],  # the Z-up world's up axis in the camera frame
    )
    pose_global, trans_global = transform_body(model, fit.pose_aa, shape, fit.trans, torch.linalg.inv(world_to_cam))
    fit_seconds = time.perf_counter() - started
    ctx.check_cancelled()

    keypoints_path = fileio.write_npz(
        ctx.layout.hmr_keypoints(ctx.video),
        keypoints_2d=keypoints_2d.astype(np.float32),
        image_size=np.array(frames.shape[1:3], dtype=np.int64),
        # hoiweb extension (readers of the contract's two keys ignore it): MediaPipe's metric 3D body
        # landmarks (T,33,4) x, y, z, visibility, hip-centred.
        body_landmarks_3d=detections.body_3d.astype(np.float32),
    )
    result = {
        "body_model": body_model_name,
        "motion_incam": {"pose_aa": fit.pose_aa.cpu(), "shape": shape.cpu(), "trans": fit.trans.cpu()},
        "motion_global": {"pose_aa": pose_global.cpu(), "shape": shape.cpu(), "trans": trans_global.cpu()},
        "predicted_body_height": body_height(model, shape, body_model_name),
        "keypoints_3d_cam": fit.keypoints_3d.cpu(),
    }
    result_path = fileio.write_torch(ctx.layout.hmr_result(ctx.video), result)
    files = [result_path, keypoints_path]
    if ctx.verbose:
        files.append(write_debug_video(ctx, frames, keypoints_2d, fit.keypoints_3d, K, inputs["fps"]))
    ctx.progress(1.0, "human pose done")
    used = fit.reprojection_px[torch.isfinite(fit.reprojection_px)]
    return StageResult(
        files=files,
        metrics={
            "detect_seconds": detect_seconds,
            "fit_seconds": fit_seconds,
            "frames_with_body": frames_with_body,
            "median_reprojection_px": float(used.median()) if used.numel() else float("nan"),
        },
        info={"fit_losses": fit.losses},
    )


def body_height(model, shape: torch.Tensor, name: str) -> float:
    """Standing height (m) of the fitted shape: rest-pose vertex extent along the model's up axis."""
    if hasattr(model, "standing_height"):  # anny knows its own standing height
        return float(model.standing_height(shape))
    axis = getattr(model, "up_axis", UP_AXIS.get(name, 1))
    with torch.no_grad():
        rest = model.rest_pose(1).to(shape)
        vertices = model.forward(rest, shape, torch.zeros(1, 3, dtype=shape.dtype, device=shape.device)).vertices
    return float(vertices[0, :, axis].max() - vertices[0, :, axis].min())


def write_debug_video(
    ctx: StageContext,
    frames: np.ndarray,
    keypoints_2d: np.ndarray,
    keypoints_3d: torch.Tensor,
    K: np.ndarray,
    fps: float,
) -> Path:
    """Detected keypoints (green, hands cyan) and the fitted body's projected keypoints (red) per frame."""
    import cv2

    from reconstruction.video import write_video

    points = keypoints_3d.cpu().numpy()
    projected = points @ K.T
    projected = projected[..., :2] / np.clip(projected[..., 2:3], 1e-3, None)
    canvas = frames.copy()
    for t in range(len(canvas)):
        image = canvas[t]
        for k, (x, y, c) in enumerate(keypoints_2d[t]):
            if c > 0.3:
                colour = (0, 255, 0) if k < NUM_BODY else (0, 255, 255)
                cv2.circle(image, (int(x), int(y)), 2, colour, -1)
        for x, y in projected[t]:
            if np.isfinite(x) and np.isfinite(y):
                cv2.drawMarker(image, (int(x), int(y)), (255, 0, 0), cv2.MARKER_CROSS, 5, 1)
    return write_video(ctx.layout.hmr_debug_video(ctx.video), canvas, fps)
