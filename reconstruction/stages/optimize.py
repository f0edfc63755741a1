"""Stage 4: joint human-object optimisation (the reference's HOIOptimizer), writing ``hoi_data.pkl``.

Reads the stage 1-3 caches (formats in HELPERS.md), labels contacts geometrically, runs the multi-stage
optimiser, smooths with a Savitzky-Golay filter (window 11, order 2) and writes, per video:
``layout.raw_hoi_data`` (contract section 5), ``layout.loss_history`` and ``layout.contact_labels``; for
synthetic scenes with ground truth it also evaluates into ``layout.metrics`` (not a stage output: the
evaluation owns and may rewrite that file). ``run_many`` optimises several videos of the
same length in one batch (``--batch_videos``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch

from reconstruction import fileio
from reconstruction.config import ReconConfig, load_config
from reconstruction.keypoints import ALL_KEYPOINTS
from reconstruction.layout import Layout, VideoId
from reconstruction.optim import geometry
from reconstruction.optim.body_points import PointBody
from reconstruction.optim.contact import ContactLabels, ContactParams, label_contacts, save_contact_labels
from reconstruction.optim.optimizer import HOIOptimizer, OptimizationResult, VideoInputs
from reconstruction.render_config import RenderConfig, load_cam_k, load_pickle, load_render_config
from reconstruction.stages import scene_inputs
from reconstruction.stages.base import StageContext, StageInputError, StageResult

NUMBER = 4
NAME = "optimize"

logger = logging.getLogger(__name__)


@dataclass
class LoadedVideo:
    """One video's inputs plus what the output needs to name (paths, render config)."""

    video: VideoInputs
    render_config: RenderConfig
    render_config_file: Path
    mesh_path: Path
    masks_cache_file: Path
    body_model: str
    fps: float | None


# ---- loading -------------------------------------------------------------------------------------
def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise StageInputError(f"{what} not found: {path} (run the stage that writes it first)")
    return path


def load_masks(path: Path, num_frames: int, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2 masks cache -> object masks, human masks, each (T, H, W) bool (validated by scene_inputs)."""
    obj, human = scene_inputs.masks_to_tensors(scene_inputs.load_masks_cache(path, image_size))
    if obj.shape[0] != num_frames:
        raise StageInputError(f"{path}: masks of {obj.shape[0]} frames for a video of {num_frames}")
    return obj, human


def load_depth(path: Path, num_frames: int, image_size: tuple[int, int]) -> torch.Tensor | None:
    """Stage 2 depth cache -> (T, H, W) metres, or None when stage 2 wrote none; NaN/Inf refused."""
    return scene_inputs.load_depth_cache(path, num_frames, image_size) if path.exists() else None


def load_video(layout: Layout, vid: VideoId, config: ReconConfig) -> LoadedVideo:
    """Every stage 1-3 output of one video, checked at the edge (errors name the file)."""
    hmr_file = _require(layout.hmr_result(vid), "stage 1 result")
    hmr = torch.load(hmr_file, map_location="cpu", weights_only=False)
    try:
        motion = hmr["motion_global"]
        pose = torch.as_tensor(np.asarray(motion["pose_aa"]), dtype=torch.float32)
        shape = torch.as_tensor(np.asarray(motion["shape"]), dtype=torch.float32).reshape(-1)
        trans = torch.as_tensor(np.asarray(motion["trans"]), dtype=torch.float32)
    except (KeyError, TypeError) as exc:
        raise StageInputError(f"{hmr_file}: missing motion_global pose_aa/shape/trans ({exc})") from exc
    num_frames = pose.shape[0]
    kp_file = _require(layout.hmr_keypoints(vid), "stage 1 keypoints")
    with np.load(kp_file) as data:
        keypoints = torch.as_tensor(data["keypoints_2d"], dtype=torch.float32)
    if keypoints.shape != (num_frames, len(ALL_KEYPOINTS), 3):
        raise StageInputError(f"{kp_file}: keypoints_2d {tuple(keypoints.shape)} != ({num_frames}, 75, 3)")
    rc_file = _require(layout.render_config(vid), "render config")
    render_config = load_render_config(rc_file)
    image_size = (render_config.frame_height, render_config.frame_width)
    K = load_cam_k(layout.cam_k(vid)) if layout.cam_k(vid).exists() else render_config.intrinsics()
    poses_file = _require(layout.object_poses(vid), "stage 3 object poses")
    object_poses = np.asarray(load_pickle(poses_file), dtype=np.float64)
    if object_poses.shape != (num_frames, 4, 4):
        raise StageInputError(f"{poses_file}: object poses {object_poses.shape} != ({num_frames}, 4, 4)")
    mesh_path = layout.mesh(vid)
    mesh = scene_inputs.load_object_mesh(mesh_path, render_config.obj_scale)
    obj_masks, human_masks = load_masks(layout.masks_cache(vid), num_frames, image_size)
    depth = load_depth(layout.depth_cache(vid), num_frames, image_size)
    video = VideoInputs(
        name=str(vid),
        K=torch.as_tensor(K, dtype=torch.float32),
        world_to_cam=torch.as_tensor(render_config.world_to_cam(), dtype=torch.float32),
        image_size=image_size,
        body_pose=pose,
        body_shape=shape,
        body_trans=trans,
        keypoints_2d=keypoints,
        object_vertices=torch.as_tensor(mesh.vertices, dtype=torch.float32),
        object_faces=torch.as_tensor(mesh.faces),
        object_poses_cam=torch.as_tensor(object_poses, dtype=torch.float32),
        contact=torch.zeros(num_frames, 2, dtype=torch.bool),
        object_tracked=torch.as_tensor(obj_masks.reshape(num_frames, -1).any(1)),
        object_pose_first_world=torch.as_tensor(first_object_pose_world(render_config), dtype=torch.float32),
        depth=depth,
        object_masks=torch.as_tensor(obj_masks),
        human_masks=torch.as_tensor(human_masks),
    )
    return LoadedVideo(
        video=video,
        render_config=render_config,
        render_config_file=rc_file,
        mesh_path=mesh_path,
        masks_cache_file=layout.masks_cache(vid),
        body_model=str(hmr.get("body_model", config.human_model.body_model)),
        fps=float(hmr["fps"]) if "fps" in hmr else None,
    )


def first_object_pose_world(render_config: RenderConfig) -> np.ndarray:
    """The object's frame-0 pose in the render world (4, 4), as the render config gives it (the mesh is
    loaded already scaled by ``obj_scale``)."""
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(render_config.obj_R, dtype=np.float64).reshape(3, 3)
    pose[:3, 3] = np.asarray(render_config.obj_t, dtype=np.float64).reshape(3)
    return pose


# ---- contact labels ---------------------------------------------------------------------------------
@torch.no_grad()
def initial_contact_labels(body: Any, video: VideoInputs, config: ReconConfig, is_static_obj: bool) -> ContactLabels:
    """Contact labels from the stage 1-3 estimates: hands from the stage 1 body, object from stage 3.
    Computed on the body model's device (the stage 1-3 inputs are loaded on the CPU)."""
    device = body.faces.device
    hand_ids = torch.stack(
        [
            torch.as_tensor(body.vertex_segments[s])[geometry.subsample_indices(len(body.vertex_segments[s]), 48)]
            for s in ("left_hand", "right_hand")
        ]
    )
    posed = PointBody(body, hand_ids.flatten(), video.body_shape.to(device))(
        video.body_pose.to(device), video.body_trans.to(device)
    )
    hands = posed.points.reshape(video.num_frames, 2, -1, 3)
    feet = posed.keypoints[:, [ALL_KEYPOINTS.index(n) for n in ("left_heel", "left_foot_index")]]
    feet = torch.stack(
        [feet, posed.keypoints[:, [ALL_KEYPOINTS.index(n) for n in ("right_heel", "right_foot_index")]]], 1
    )
    samples, _ = geometry.sample_surface(
        video.object_vertices.to(device, torch.float32), video.object_faces.to(device, torch.long), 512, seed=0
    )
    world_to_cam = video.world_to_cam.to(device)
    obj_world = torch.linalg.inv(world_to_cam) @ video.object_poses_cam.to(device, world_to_cam.dtype)
    object_points = geometry.transform(samples[None], obj_world[:, :3, :3], obj_world[:, :3, 3])
    ground = float(torch.quantile(feet[..., 2].amin((1, 2)), 0.1))
    params = ContactParams.from_config(config.section("optimization").get("contact_labelling"))
    static = is_static_obj or config.pipeline.is_static_obj
    return label_contacts(
        hands,
        object_points,
        feet,
        ground_z=ground,
        params=params,
        is_static_obj=static,
        world_to_cam=world_to_cam,
    )


# ---- smoothing and export ----------------------------------------------------------------------------
def savgol(values: np.ndarray, window: int, order: int) -> np.ndarray:
    """Savitzky-Golay along frames (axis 0); the window shrinks to the longest odd length <= T."""
    from scipy.signal import savgol_filter

    num_frames = values.shape[0]
    window = min(window, num_frames if num_frames % 2 else num_frames - 1)
    if window <= order or window < 3:
        return values.copy()
    return savgol_filter(values, window, order, axis=0, mode="interp")


def smooth_result(
    result: OptimizationResult, window: int, order: int, object_window: int | None = None
) -> OptimizationResult:
    """Smooth poses, translation, object rotation (re-orthonormalised) and translation. ``object_window``
    (default ``window``) for the object: a carried object accelerates faster than the body, and window 11
    at 30 fps lags it by centimetres."""
    T = result.body_pose.shape[0]
    object_window = window if object_window is None else object_window
    pose = savgol(result.body_pose.reshape(T, -1).numpy(), window, order).reshape(result.body_pose.shape)
    trans = savgol(result.body_trans.numpy(), window, order)
    rot = savgol(result.obj_R.reshape(T, 9).numpy(), object_window, order).reshape(T, 3, 3)
    rot = roma.special_procrustes(torch.as_tensor(rot, dtype=torch.float32))
    obj_t = torch.as_tensor(savgol(result.obj_t.numpy(), object_window, order), dtype=torch.float32)
    return replace(
        result,
        body_pose=torch.as_tensor(pose, dtype=torch.float32),
        body_trans=torch.as_tensor(trans, dtype=torch.float32),
        obj_R=rot,
        obj_t=obj_t,
    )


def object_pose_world(result: OptimizationResult) -> torch.Tensor:
    pose = torch.eye(4).repeat(result.obj_R.shape[0], 1, 1)
    pose[:, :3, :3] = result.obj_R
    pose[:, :3, 3] = result.obj_t
    return pose


# MANO's hand joint order (index, middle, pinky, ring, thumb; each proximal to distal) in anny bone names:
# finger1 is the thumb, finger2..5 index..pinky (MakeHuman skeleton). anny's four metacarpals have no MANO
# counterpart and stay in ``poses`` only.
MANO_ORDER_ANNY_FINGERS = ("finger2", "finger3", "finger5", "finger4", "finger1")


def contract_hand_joints(body: Any, side: str) -> list[int]:
    """The 15 joints (MANO order) whose axis-angles make the contract's (T, 45) ``<side>_hand_pose``.

    SMPL-X style models list exactly those 15 joints; anny's 19 hand joints are mapped by name (the values
    are anny's local rotations in anny's bone frames, not MANO's; ``poses`` keeps the full model pose)."""
    joints = list(body.left_hand_joints if side == "left" else body.right_hand_joints)
    if len(joints) == 15:
        return joints
    suffix = ".L" if side == "left" else ".R"
    names = list(body.joint_names)
    wanted = [f"{finger}-{k}{suffix}" for finger in MANO_ORDER_ANNY_FINGERS for k in (1, 2, 3)]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise StageInputError(f"body model {body.name}: no MANO-style hand joints ({', '.join(missing[:3])} missing)")
    return [names.index(n) for n in wanted]


def build_hoi_data(
    result: OptimizationResult,
    loaded: LoadedVideo,
    body: Any,
    labels: ContactLabels,
    config: ReconConfig,
    eval_data: dict[str, float],
) -> dict[str, Any]:
    """The contract's hoi_data.pkl dict (section 5) from a (smoothed) result."""
    T = result.body_pose.shape[0]
    pose = result.body_pose.numpy().astype(np.float32)
    w2c = loaded.video.world_to_cam.numpy().astype(np.float64)
    obj_world = object_pose_world(result).numpy().astype(np.float64)
    obj_cam = w2c @ obj_world
    intervals = np.flatnonzero(labels.hands.any(1))
    inter_start = int(intervals[0]) if intervals.size else 0
    inter_end = int(intervals[-1]) if intervals.size else T - 1
    human_data: dict[str, Any] = {
        "poses": pose.reshape(T, -1),
        "trans": result.body_trans.numpy().astype(np.float32),
        # contract: (T, 45) MANO-style (15 joints x axis-angle); see contract_hand_joints for the mapping
        "left_hand_pose": pose[:, contract_hand_joints(body, "left")].reshape(T, -1),
        "right_hand_pose": pose[:, contract_hand_joints(body, "right")].reshape(T, -1),
        "hand_pose_joint_names": [body.joint_names[j] for j in contract_hand_joints(body, "right")],
        "betas": result.body_shape.numpy().astype(np.float32),
        "shape": result.body_shape.numpy().astype(np.float32),
        "body_model": loaded.body_model,
        "num_joints": int(pose.shape[1]),
    }
    if config.post_processing.save_joints:
        with torch.no_grad():
            out = body.forward(result.body_pose, result.body_shape, result.body_trans)
        human_data["joints"] = out.keypoints.numpy().astype(np.float32)
    return {
        "human_data": human_data,
        "obj_data": {
            "obj_R": obj_world[:, :3, :3].astype(np.float32),
            "obj_t": obj_world[:, :3, 3].astype(np.float32),
            "obj_scale": float(loaded.render_config.obj_scale),
            "obj_R_cam": obj_cam[:, :3, :3].astype(np.float32),
            "obj_t_cam": obj_cam[:, :3, 3].astype(np.float32),
            "obj_z_cam": obj_cam[:, 2, 3].astype(np.float32),
        },
        "meta": {
            "inter_start_idx": inter_start,
            "inter_end_idx": inter_end,
            "obj_path": str(loaded.mesh_path),
            "masks_cache_file": str(loaded.masks_cache_file),
            "render_config_file": str(loaded.render_config_file),
            "optimization_config": config.section("optimization"),
            "contact_frame": labels.contact_frame,
            "contact_hand": labels.contact_hand,
            "contact_frames": labels.hands.astype(bool),
            "contact_intervals": [(i.hand, i.start, i.end) for i in labels.intervals],
            "fps": loaded.fps,
            "num_frames": T,
            "image_size": tuple(loaded.video.image_size),
            "world_to_cam": w2c.astype(np.float32),
            "K": loaded.video.K.numpy().astype(np.float32),
        },
        "eval_data": {k: float(v) for k, v in eval_data.items()},
        "scene_data": list(loaded.render_config.scene_data),
    }


# ---- stage entry points ------------------------------------------------------------------------------
def _config(ctx: StageContext) -> ReconConfig:
    return load_config(ctx.config)


def run(ctx: StageContext) -> StageResult:
    return run_many([ctx])[0]


def run_many(contexts: list[StageContext]) -> list[StageResult]:
    """Optimise several videos; those of equal length and image size share one batch."""
    from reconstruction.body import load_body_model

    if not contexts:
        return []
    start = time.perf_counter()
    config = _config(contexts[0])
    device = contexts[0].device
    body = contexts[0].models.get(("body", config.human_model.body_model, device))
    if body is None:
        body = load_body_model(config.human_model.body_model, device=device)
        contexts[0].models[("body", config.human_model.body_model, device)] = body
    loaded = []
    for ctx in contexts:
        ctx.progress(0.0, "loading stage 1-3 outputs")
        item = load_video(ctx.layout, ctx.video, config)
        if item.body_model != body.name:
            raise StageInputError(
                f"{ctx.layout.hmr_result(ctx.video)}: stage 1 used body model {item.body_model!r} but "
                f"human_model.body_model is {body.name!r}"
            )
        labels = initial_contact_labels(body, item.video, config, ctx.is_static_obj)
        item.video.contact = torch.as_tensor(labels.hands)
        item.video.object_moving = torch.as_tensor(labels.object_moving)  # obj_still_reg: still start and end
        loaded.append((ctx, item, labels))

    groups: dict[tuple, list[int]] = {}
    for i, (_, item, _) in enumerate(loaded):
        groups.setdefault((item.video.num_frames, tuple(item.video.image_size)), []).append(i)
    results: list[StageResult | None] = [None] * len(contexts)
    optimizer = HOIOptimizer(body, config.optimization, device=device)
    for indices in groups.values():
        lead = contexts[indices[0]]
        optimised = optimizer.run(
            [loaded[i][1].video for i in indices],
            progress=lambda f, m, lead=lead: lead.progress(0.05 + 0.85 * f, m),
            should_cancel=lead.should_cancel,
        )
        for i, result in zip(indices, optimised, strict=True):
            results[i] = _finish(loaded[i], result, body, config, optimizer, time.perf_counter() - start)
    return [r for r in results if r is not None]


def _finish(entry, result: OptimizationResult, body, config: ReconConfig, optimizer: HOIOptimizer, elapsed: float):
    ctx, item, labels = entry
    ctx.check_cancelled()
    pp = config.post_processing
    smoothed = smooth_result(result, pp.savgol_window, pp.savgol_order, pp.savgol_window_object)
    # eval_data: the configured metrics evaluated on the exported (smoothed) trajectories
    final_inputs = replace(
        item.video,
        body_pose=smoothed.body_pose,
        body_trans=smoothed.body_trans,
        object_poses_cam=item.video.world_to_cam @ object_pose_world(smoothed),
    )
    eval_data = optimizer.evaluate(final_inputs, config.eval_metrics)
    hoi_data = build_hoi_data(smoothed, item, body, labels, config, eval_data)
    layout, vid = ctx.layout, ctx.video
    files = [
        fileio.write_pickle(layout.raw_hoi_data(vid), hoi_data),
        save_contact_labels(layout.contact_labels(vid), labels),
        fileio.write_json(layout.loss_history(vid), result.history),
    ]
    metrics = {f"eval/{k}": float(v) for k, v in eval_data.items()}
    if layout.ground_truth(vid).exists():  # synthetic scene: accuracy of every stage against the truth
        from reconstruction.eval.evaluate import evaluate_and_save

        # metrics.json belongs to the evaluation (``python -m reconstruction.eval`` and the worker rewrite
        # it), not to the reconstruction: it is not a stage output, so re-evaluating never makes stage 4
        # (or stage 5, which hashes stage 4's outputs) look stale. The figures also go into the manifest.
        report = evaluate_and_save(layout, vid, device=str(ctx.device))
        for stage_name, figures in report.get("stages", {}).items():
            metrics.update({f"gt/{stage_name}/{k}": float(v) for k, v in figures.items()})
    ctx.progress(1.0, "optimisation done")
    logger.info("%s: stage 4 done (%.1f s optimising)", vid, result.seconds)
    return StageResult(
        files=files,
        seconds=elapsed,
        metrics=metrics,
        info={
            "contact_hand": labels.contact_hand,
            "contact_frame": labels.contact_frame,
            "optimizer_seconds": result.seconds,
            "inactive_terms": result.history.get("inactive_terms", {}),
            "final_losses": result.final_losses,
        },
    )


run_batch = run_many  # the pipeline's name for batched stage 4 (--batch_videos)
