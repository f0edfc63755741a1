"""Stage 2 - preprocess: per-frame object/human masks and depth, in the reference's cache layout.

Config section ``preprocess`` (all optional):
- ``mask_backend``: ``classical`` (default, no weights) | ``sam2`` (``sam2_checkpoint``, ``sam2_config``)
- ``depth_backend``: ``static`` (default: known first-frame depth on background, foreground unknown) |
  ``moge`` (``moge_checkpoint``); the reference's ``depth.method: moge`` selects it too.
- ``classical``: ClassicalMaskConfig overrides.

Outputs: ``layout.masks_cache`` (npz, key ``masks`` = pickled {frame: {0: object, 1: human}}) and
``layout.depth_cache`` (torch list of HxW float32 metres, 0 = unknown). Both are computed and
validated in full before either file is written, so a failure leaves earlier caches as they were.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from reconstruction import fileio
from reconstruction.backends import depth_align
from reconstruction.layout import Layout, VideoId
from reconstruction.render_config import RenderConfig
from reconstruction.stages import scene_inputs
from reconstruction.stages.base import StageContext, StageInputError, StageResult

NUMBER = 2
NAME = "preprocess"

logger = logging.getLogger(__name__)

MASK_BACKENDS = ("classical", "sam2")
DEPTH_BACKENDS = ("static", "moge")


def _choose_backends(config: Any) -> tuple[str, str, dict[str, Any]]:
    section = scene_inputs.config_section(config, "preprocess")
    mask_backend = str(section.get("mask_backend", "classical"))
    depth_method = scene_inputs.config_section(config, "depth").get("method")
    # preprocess.depth_backend wins; else the reference's depth.method; never a silent substitute.
    depth_backend = str(section.get("depth_backend") or depth_method or "static")
    if mask_backend not in MASK_BACKENDS:
        raise StageInputError(
            f"preprocess.mask_backend: unknown backend {mask_backend!r} (choose {', '.join(MASK_BACKENDS)})"
        )
    if depth_backend not in DEPTH_BACKENDS:
        raise StageInputError(
            f"preprocess.depth_backend: unknown backend {depth_backend!r} (choose {', '.join(DEPTH_BACKENDS)})"
        )
    return mask_backend, depth_backend, section


def compute_masks(
    ctx: StageContext,
    backend: str,
    section: dict[str, Any],
    frames: np.ndarray,
    first_object: np.ndarray,
    first_human: np.ndarray,
    object_radius_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    if backend == "sam2":
        from reconstruction.backends import sam2_masks

        predictor = sam2_masks.get_predictor(ctx.models, section, ctx.device)
        return sam2_masks.track_masks(frames, first_object, first_human, section, ctx.device, predictor=predictor)

    from reconstruction.backends import classical_masks

    try:
        mask_config = classical_masks.ClassicalMaskConfig.from_section(section)
    except (TypeError, ValueError) as exc:
        raise StageInputError(str(exc)) from exc
    segmenter = ctx.models.get("selfie_segmenter") if mask_config.use_selfie else None
    if mask_config.use_selfie and segmenter is None:
        segmenter = classical_masks.SelfieSegmenter()
        ctx.models["selfie_segmenter"] = segmenter
    track = classical_masks.track_masks(
        frames, first_object, first_human, mask_config, segmenter=segmenter,
        progress=lambda f, msg: ctx.progress(0.1 + 0.6 * f, msg), object_radius_px=object_radius_px,
    )  # fmt: skip
    return track.object_masks, track.human_masks


def object_reach_px(layout: Layout, vid: VideoId, render_config: RenderConfig, K: np.ndarray) -> float | None:
    """The object mesh's projected radius at its frame-0 pose (pixels), or None without a mesh: how far
    a turning object's pixels may lie from its centre (the classical backend's gate)."""
    from reconstruction.backends.classical_masks import projected_radius_px

    if not layout.mesh(vid).exists():
        logger.info("stage 2 %s: no object mesh, the object's reach is not known", vid)
        return None
    mesh = scene_inputs.load_object_mesh(layout.mesh(vid), render_config.obj_scale)
    return projected_radius_px(mesh.vertices, render_config.object_to_cam(), K)


def compute_depth(
    ctx: StageContext,
    backend: str,
    section: dict[str, Any],
    frames: np.ndarray,
    gt_depth: np.ndarray,
    foreground: np.ndarray,
    K: np.ndarray | None = None,
) -> depth_align.DepthAlignment:
    gt = torch.from_numpy(gt_depth)
    fg = torch.from_numpy(foreground)
    if backend == "moge":
        from reconstruction.backends import moge_depth

        estimate = moge_depth.estimate_depth(frames, section, ctx.device, K=K, models=ctx.models)
    else:
        estimate = depth_align.static_depth(gt, fg)
    return depth_align.align_depth(estimate, gt, fg)


def masks_payload(object_masks: np.ndarray, human_masks: np.ndarray) -> np.ndarray:
    """The reference's container: a 0-d object array holding {frame: {0: object, 1: human}}."""
    masks = {t: {0: object_masks[t].copy(), 1: human_masks[t].copy()} for t in range(len(object_masks))}
    return np.array(masks, dtype=object)


def run(ctx: StageContext) -> StageResult:
    start = time.perf_counter()
    layout, vid = ctx.layout, ctx.video
    mask_backend, depth_backend, section = _choose_backends(ctx.config)

    render_config, K = scene_inputs.load_render_inputs(layout, vid)
    video_path = layout.video(vid)
    frames, fps = scene_inputs.load_frames(video_path)
    image_size = frames.shape[1:3]
    scene_inputs.check_image_size(render_config, image_size, video_path)
    first_object = scene_inputs.load_mask_png(layout.first_object_mask(vid), image_size, "first-frame object mask")
    first_human = scene_inputs.load_mask_png(layout.first_human_mask(vid), image_size, "first-frame human mask")
    if not first_object.any():
        raise StageInputError(f"{layout.first_object_mask(vid)}: first-frame object mask is empty")
    gt_depth = scene_inputs.load_depth_png(layout.depth_gt(vid), image_size)
    ctx.progress(0.1, f"loaded {len(frames)} frames")
    ctx.check_cancelled()

    reach = object_reach_px(layout, vid, render_config, K) if mask_backend == "classical" else None
    object_masks, human_masks = compute_masks(ctx, mask_backend, section, frames, first_object, first_human, reach)
    ctx.check_cancelled()
    ctx.progress(0.75, "depth")
    alignment = compute_depth(ctx, depth_backend, section, frames, gt_depth, object_masks | human_masks, K)
    if not torch.isfinite(alignment.depth).all():
        raise StageInputError(f"depth backend {depth_backend!r} produced non-finite depth for {vid}")
    ctx.check_cancelled()

    masks_path = fileio.write_npz(layout.masks_cache(vid), masks=masks_payload(object_masks, human_masks))
    depth_path = fileio.write_torch(layout.depth_cache(vid), [d.clone() for d in alignment.depth])
    files = [masks_path, depth_path]
    if ctx.verbose:
        from reconstruction.backends import debug_video

        files.append(
            debug_video.write_masks_video(layout.masks_debug_video(vid), frames, object_masks, human_masks, fps)
        )
        files.append(debug_video.write_depth_video(layout.depth_debug_video(vid), alignment.depth.numpy(), fps))
    ctx.progress(1.0, "done")
    seconds = time.perf_counter() - start
    metrics = {
        "object_area_frac_mean": float(object_masks.mean()),
        "human_area_frac_mean": float(human_masks.mean()),
        "object_visible_frames": float((object_masks.reshape(len(frames), -1).any(axis=1)).sum()),
        "depth_known_frac_mean": float((alignment.depth > 0).float().mean()),
        "depth_aligned_frames": float(alignment.aligned.sum()),
    }
    logger.info(
        "stage 2 %s: %d frames in %.1f s (%s masks, %s depth)", vid, len(frames), seconds, mask_backend, depth_backend
    )
    return StageResult(
        files=files, seconds=seconds, metrics=metrics,
        info={"mask_backend": mask_backend, "depth_backend": depth_backend, "num_frames": len(frames)},
    )  # fmt: skip
