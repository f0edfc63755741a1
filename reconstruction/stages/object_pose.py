"""Stage 3 - object pose: per-frame 6-DoF object->camera poses of the known mesh.

Config section ``object_pose`` (typed config): ``backend``: ``mesh_tracker`` (default) | ``import``
(FoundationPose outputs at ``import_dir``; default: the stage-3 cache path itself), ``iterations``
(Levenberg-Marquardt iterations per window); a dict config may also give ``mesh_tracker``
(TrackerConfig overrides). The reference's ``obj_pose_tracking`` keys are accepted and have no effect.
The tracker pins still segments found in the video (``mesh_tracker.use_anchors``, default on): the
start before the object moves, and the final rest on the plane fitted to the first-frame depth; the
held frames between are tracked from both of them (``mesh_tracker.two_way``, default on).
``is_static_obj`` (``ctx.is_static_obj`` or ``pipeline.is_static_obj``) writes the frame-0 pose of the
render config for every frame. Output: ``layout.object_poses`` = pickled float64 (T,4,4), validated
before it is written.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from reconstruction import fileio
from reconstruction.stages import scene_inputs
from reconstruction.stages.base import StageContext, StageInputError, StageResult

NUMBER = 3
NAME = "object_pose"

logger = logging.getLogger(__name__)

BACKENDS = ("mesh_tracker", "import", "foundation_pose")  # foundation_pose = import


def static_poses(initial_pose: np.ndarray, num_frames: int) -> np.ndarray:
    return np.repeat(np.asarray(initial_pose, dtype=np.float64)[None], num_frames, axis=0)


def render_silhouettes(
    vertices: np.ndarray, faces: np.ndarray, poses: np.ndarray, K: np.ndarray, size: tuple[int, int], device: str
) -> np.ndarray:
    """(T,H,W) bool silhouettes of the mesh at ``poses`` (project renderer)."""
    import torch

    from reconstruction.render import Mesh, render

    verts = torch.as_tensor(vertices, dtype=torch.float32)
    rot = torch.as_tensor(poses[:, :3, :3], dtype=torch.float32)
    trans = torch.as_tensor(poses[:, :3, 3], dtype=torch.float32)
    out = render(
        [Mesh(verts @ rot.transpose(1, 2) + trans[:, None], faces, instance_id=2)], K, np.eye(4), size, device=device
    )
    return (out.instance == 2).cpu().numpy()


def still_anchors(
    layout, vid, object_masks: np.ndarray, human_masks: np.ndarray, vertices: np.ndarray, initial_pose: np.ndarray,
    K: np.ndarray, frames: np.ndarray,
):  # fmt: skip
    """When the object is still (static start, final rest) and the plane it stands on, from the video's
    RGB ``frames`` (T,H,W,3, matching the masks) and the first-frame depth (``pose_anchors``)."""
    from reconstruction.backends import pose_anchors
    from reconstruction.backends.mesh_tracker import Anchors

    lab = pose_anchors.rgb_to_lab(frames)
    prefix = pose_anchors.static_prefix(lab, object_masks[0], human_masks)
    suffix = pose_anchors.rest_suffix(lab, object_masks[-1] & ~human_masks[-1], human_masks)
    plane = None
    depth_path = layout.depth_gt(vid)
    if suffix > 0 and depth_path.exists():
        depth = scene_inputs.load_depth_png(depth_path, object_masks.shape[1:])
        points = vertices @ initial_pose[:3, :3].T + initial_pose[:3, 3]
        plane = pose_anchors.fit_support_plane(depth, K, object_masks[0], human_masks[0], points)
    logger.info("%s: still at the start for %d frame(s), at rest at the end for %d, support plane %s",
                vid, prefix, suffix, "found" if plane is not None else "none")  # fmt: skip
    return Anchors(
        static_prefix=prefix, rest_suffix=suffix,
        plane_normal=None if plane is None else plane.normal, plane_offset=0.0 if plane is None else plane.offset,
    )  # fmt: skip


def holding_hand_tracks(
    layout, vid, K: np.ndarray, object_masks: np.ndarray, anchors, info: dict[str, object], rotations: bool = False
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Stage 1's depth track (T,) of the hand(s) holding the object while it moves (``held_hand_depth``) and,
    with ``rotations``, their orientations (H,T,3,3), or None (recorded in ``info``) when no hand is near it
    or stage 1 has not run."""
    from reconstruction.backends import held_hand_depth
    from reconstruction.keypoints import ALL_KEYPOINTS
    from reconstruction.stages.human_pose import load_hmr_result

    path = layout.hmr_result(vid)
    if not path.exists():  # the pipeline runs stage 1 first; a stage-3 call of its own may not have
        logger.warning("%s: no stage-1 result %s: the held-frame depth prior is the line between the still "
                       "depths (object_pose.mesh_tracker.hand_depth_prior)", vid, path)  # fmt: skip
        info["held_depth_prior_hands"] = "no stage-1 result"
        return None, None
    keypoints = load_hmr_result(path).get("keypoints_3d_cam")  # unreadable, malformed or NaN: a clear error
    if keypoints is None:
        raise StageInputError(f"{path}: no keypoints_3d_cam (object_pose.mesh_tracker.hand_depth_prior)")
    keypoints = np.asarray(keypoints, dtype=np.float64)
    expected = (len(object_masks), len(ALL_KEYPOINTS), 3)
    if keypoints.shape != expected or not np.isfinite(keypoints).all():
        raise StageInputError(f"{path}: keypoints_3d_cam {keypoints.shape} is not a finite {expected} array "
                              f"(object_pose.mesh_tracker.hand_depth_prior)")  # fmt: skip
    moving = np.zeros(len(object_masks), dtype=bool)
    moving[anchors.static_prefix : len(object_masks) - anchors.rest_suffix] = True
    depth, hands = held_hand_depth.holding_hand_depth(keypoints, K, object_masks, moving)
    info["held_depth_prior_hands"] = [("left", "right")[side] for side in hands]
    logger.info("%s: held-frame depth prior from stage 1's %s", vid,
                " and ".join(info["held_depth_prior_hands"]) + " hand" if hands else "line (no hand near the object)")  # fmt: skip
    if not rotations or not hands:
        return depth, None
    hand_rotations, turning = held_hand_depth.holding_hand_rotations(keypoints, hands)
    info["held_rotation_prior_hands"] = [("left", "right")[side] for side in turning]
    return depth, hand_rotations


def run(ctx: StageContext) -> StageResult:
    start = time.perf_counter()
    layout, vid = ctx.layout, ctx.video
    section = scene_inputs.config_section(ctx.config, "object_pose")
    backend = str(section.get("backend", "mesh_tracker"))
    if backend not in BACKENDS:
        raise StageInputError(f"object_pose.backend: unknown backend {backend!r} (choose {', '.join(BACKENDS)})")
    backend = "import" if backend == "foundation_pose" else backend
    is_static = bool(
        ctx.is_static_obj or scene_inputs.config_section(ctx.config, "pipeline").get("is_static_obj", False)
    )

    render_config, K = scene_inputs.load_render_inputs(layout, vid)
    image_size = (render_config.frame_height, render_config.frame_width)
    initial_pose = render_config.object_to_cam()
    masks_path = layout.masks_cache(vid)
    info: dict[str, object] = {"backend": "static" if is_static else backend}
    metrics: dict[str, float] = {}

    if backend == "import" and not is_static:
        from reconstruction.backends.grail_import import import_poses

        source = section.get("import_dir") or section.get("import_path") or layout.object_poses(vid)
        poses = import_poses(source)
        if masks_path.exists():
            num_frames = len(scene_inputs.load_masks_cache(masks_path, image_size))
            if len(poses) != num_frames:
                raise StageInputError(
                    f"{source}: {len(poses)} poses but the video has {num_frames} frames ({masks_path})"
                )
        info["import_path"] = str(source)
        mesh = None
    else:
        mesh = scene_inputs.load_object_mesh(layout.mesh(vid), render_config.obj_scale)
        masks = scene_inputs.load_masks_cache(masks_path, image_size)
        object_masks, human_masks = scene_inputs.masks_to_tensors(masks)
        num_frames = len(object_masks)
        if is_static:
            poses = static_poses(initial_pose, num_frames)
        else:
            from reconstruction.backends import mesh_tracker

            if not object_masks[0].any():
                raise StageInputError(f"{masks_path}: object mask of frame 0 is empty, nothing to track")
            depth = scene_inputs.load_depth_cache(layout.depth_cache(vid), num_frames, image_size).numpy()
            try:
                tracker_config = mesh_tracker.TrackerConfig.from_section(section)
            except (TypeError, ValueError) as exc:
                raise StageInputError(str(exc)) from exc
            anchors, frames = None, None
            if tracker_config.use_anchors or tracker_config.weight_colour > 0:
                frames, _ = scene_inputs.load_frames(layout.video(vid))
                if frames.shape[:3] != object_masks.shape:
                    logger.warning("%s: video %s does not match the masks %s: no still segments, no colour",
                                   vid, frames.shape[:3], object_masks.shape)  # fmt: skip
                    frames = None
            if tracker_config.use_anchors and frames is not None:
                anchors = still_anchors(layout, vid, object_masks, human_masks, mesh.vertices, initial_pose, K,
                                        frames)  # fmt: skip
            hand_depth, hand_rotation = None, None
            if anchors is not None and (tracker_config.hand_depth_prior or tracker_config.hand_rotation_prior):
                hand_depth, hand_rotation = holding_hand_tracks(
                    layout, vid, K, object_masks, anchors, info, tracker_config.hand_rotation_prior
                )
                hand_depth = hand_depth if tracker_config.hand_depth_prior else None
            result = mesh_tracker.track_object(
                mesh.vertices, mesh.faces, K, initial_pose, object_masks, human_masks, depth,
                tracker_config, ctx.device, progress=lambda f, msg: ctx.progress(0.05 + 0.9 * f, msg),
                check_cancelled=ctx.check_cancelled, anchors=anchors,
                images=frames if tracker_config.weight_colour > 0 else None, hand_depth=hand_depth,
                hand_rotation=hand_rotation,
            )  # fmt: skip
            if anchors is not None:
                info["static_prefix_frames"] = anchors.static_prefix
                info["rest_suffix_frames"] = anchors.rest_suffix
                info["support_plane"] = anchors.plane_normal is not None
            poses = result.poses
            metrics["contour_rms_px_median"] = float(np.median(result.contour_px[1:])) if num_frames > 1 else 0.0
            metrics["contour_rms_px_max"] = float(result.contour_px.max())

    poses = scene_inputs.validate_object_poses(poses, f"object poses computed for {vid}")
    ctx.check_cancelled()
    files = [fileio.write_pickle(layout.object_poses(vid), poses.astype(np.float64))]
    if ctx.verbose:
        from reconstruction.backends import debug_video

        frames, fps = scene_inputs.load_frames(layout.video(vid))
        if mesh is None:
            mesh = scene_inputs.load_object_mesh(layout.mesh(vid), render_config.obj_scale)
        count = min(len(frames), len(poses))
        silhouettes = render_silhouettes(mesh.vertices, mesh.faces, poses[:count], K, image_size, ctx.device)
        files.append(
            debug_video.write_pose_video(layout.object_pose_debug_video(vid), frames[:count], silhouettes, fps)
        )
    travel = np.linalg.norm(poses[:, :3, 3] - poses[:1, :3, 3], axis=1)
    metrics["object_travel_m_max"] = float(travel.max())
    ctx.progress(1.0, "done")
    seconds = time.perf_counter() - start
    logger.info("stage 3 %s: %d poses in %.1f s (%s)", vid, len(poses), seconds, info["backend"])
    info["num_frames"] = len(poses)
    return StageResult(files=files, seconds=seconds, metrics=metrics, info=info)
