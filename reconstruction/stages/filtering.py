"""Stage 5: accept or reject a stage 4 result (contract section 7), recording every check.

The reference stops at the first failing check; here every check is computed and written to
``layout.filter_report`` with its value, threshold and verdict, and the first failures become the reasons.
A rejected video gets ``layout.invalid_marker``; an accepted one is packaged into ``layout.valid``
(``hoi_data/hoi_data.pkl`` + ``mesh_data/model.obj`` (+ ``model.mtl`` and textures)). A rerun flips
cleanly: the stale marker or package of the other outcome is removed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruction import fileio
from reconstruction.config import ReconConfig, load_config
from reconstruction.layout import Layout, VideoId
from reconstruction.optim.centering import center_at_object
from reconstruction.render_config import load_pickle, load_render_config
from reconstruction.stages.base import StageContext, StageInputError, StageResult

NUMBER = 5
NAME = "filter"

logger = logging.getLogger(__name__)

PASS, FAIL, SKIPPED, TRUNCATE = "pass", "fail", "skipped", "truncate"


@dataclass
class Check:
    name: str
    value: float | None
    threshold: float | str | None
    verdict: str  # pass | fail | skipped | truncate
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# ---- individual checks (pure functions over arrays) ----------------------------------------------------
def check_camera_translation(camera_positions: np.ndarray | None, threshold: float) -> Check:
    """Camera centre of every frame vs the first one (the reference compares first and last)."""
    if camera_positions is None or len(camera_positions) < 2:
        return Check("camera_trans", None, threshold, SKIPPED, "no camera trajectory")
    moved = np.linalg.norm(camera_positions - camera_positions[0], axis=-1)
    solved = np.isfinite(moved)
    if solved.sum() < 2:
        return Check("camera_trans", None, threshold, SKIPPED, "camera motion could not be estimated")
    value = float(moved[solved].max())
    last = int(np.flatnonzero(solved)[-1])
    first_last = float(moved[last])
    return Check(
        "camera_trans", value, threshold, PASS if value < threshold else FAIL,
        f"max camera displacement from frame 0 {value:.3f} m (first-last {first_last:.3f} m)",
        {"first_last": first_last, "frames_solved": int(solved.sum()), "frames": len(moved)},
    )  # fmt: skip


def check_initial_human_position(trans0: np.ndarray, human_t: np.ndarray | None, threshold: float) -> Check:
    if human_t is None:
        return Check("initial_human_position", None, threshold, SKIPPED, "render config has no human_t")
    value = float(np.linalg.norm(np.asarray(trans0)[:2] - np.asarray(human_t)[:2]))
    return Check("initial_human_position", value, threshold, PASS if value <= threshold else FAIL,
                 f"frame-0 root {value:.3f} m (xy) from the render's human_t")  # fmt: skip


def object_mask_error_terms(gt_masks: np.ndarray, rendered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (T,), both one-sided errors:
    ``missed``: mask pixels the rendered object misses / (rendered object pixels + 100), the reference's
    error; ``unsupported``: the fraction of the rendered object's pixels with no mask under them (an
    object the video lost, hid or left while the reconstruction still puts it in view). The latter is a
    plain fraction (+1 only against 0/0): the reference's +100 would let a small object (~100 px at
    320x240) vanish from the masks at an error of 0.5."""
    flat_masks, flat_render = gt_masks.reshape(len(gt_masks), -1), rendered.reshape(len(rendered), -1)
    rendered_pixels = flat_render.sum(1)
    missed = (flat_masks & ~flat_render).sum(1) / (rendered_pixels + 100.0)
    unsupported = (flat_render & ~flat_masks).sum(1) / (rendered_pixels + 1.0)
    return missed, unsupported


def object_mask_errors(gt_masks: np.ndarray, rendered: np.ndarray) -> np.ndarray:
    """Per frame: the larger of the two one-sided mask errors (``object_mask_error_terms``). The reference
    counts only ``missed``, which is 0 where the mask is empty: a lost object passed."""
    return np.maximum(*object_mask_error_terms(gt_masks, rendered))


def check_object_mask(errors: np.ndarray, frame_tol: float, total_tol: float, min_frames: int | None) -> list[Check]:
    bad = np.flatnonzero(errors > frame_tol)
    first_bad = int(bad[0]) if bad.size else None
    per_frame = Check("object_mask", float(errors.max()) if errors.size else 0.0, frame_tol, PASS,
                      "worst per-frame mask error", {"errors": np.round(errors, 4).tolist(), "first_bad": first_bad})  # fmt: skip
    if first_bad is not None:
        if min_frames is not None and first_bad >= min_frames:
            per_frame.verdict = TRUNCATE
            per_frame.detail = f"frame {first_bad} exceeds {frame_tol}; truncated to {first_bad} frames"
        else:
            per_frame.verdict = FAIL
            per_frame.detail = f"{bad.size} frame(s) exceed {frame_tol}, first at {first_bad}"
    kept = errors[:first_bad] if per_frame.verdict == TRUNCATE else errors
    mean = float(kept.mean()) if kept.size else 0.0
    total = Check("total_mask", mean, total_tol, PASS if mean <= total_tol else FAIL, "mean mask error over frames")
    return [per_frame, total]


# What each eval metric's value measures (the filter report's detail).
EVAL_UNITS = {
    "keypoint_tracking": "weight x confidence-weighted mean squared 2D keypoint error, in % of the person's image height",
}


def check_eval_metrics(eval_data: dict[str, float], thresholds: dict[str, float | None]) -> list[Check]:
    checks = []
    for name, threshold in thresholds.items():
        if threshold is None:
            continue
        value = eval_data.get(name)
        if value is None:
            checks.append(Check(f"eval/{name}", None, threshold, FAIL, "metric missing from eval_data"))
        else:
            ok = np.isfinite(value) and value <= threshold
            checks.append(
                Check(f"eval/{name}", float(value), threshold, PASS if ok else FAIL, EVAL_UNITS.get(name, ""))
            )
    return checks


def check_initial_penetration(min_distance: float, threshold: float) -> Check:
    return Check("initial_penetration", min_distance, threshold, PASS if min_distance >= threshold else FAIL,
                 "closest human-object vertex distance at frame 0")  # fmt: skip


def check_static_human(vertices: np.ndarray, threshold: float) -> Check:
    """Mean over frames of the largest vertex speed (m/frame)."""
    if len(vertices) < 2:
        return Check("static_human", None, threshold, SKIPPED, "fewer than 2 frames")
    speed = np.linalg.norm(np.diff(vertices, axis=0), axis=-1).max(-1)
    value = float(speed.mean())
    return Check("static_human", value, threshold, PASS if value >= threshold else FAIL, "mean max vertex speed")


def object_is_static(obj_t: np.ndarray, threshold: float) -> tuple[bool, float]:
    extent = float(np.linalg.norm(obj_t.max(0) - obj_t.min(0)))
    return extent < threshold, extent


def check_object_motion(obj_t: np.ndarray, mode: str, threshold: float) -> Check:
    static, extent = object_is_static(obj_t, threshold)
    state = "static" if static else "dynamic"
    if mode == "dynamic_only":
        verdict = FAIL if static else PASS
    elif mode == "static_only":
        verdict = PASS if static else FAIL
    else:
        verdict = PASS
    return Check("filter_object_motion", extent, threshold, verdict, f"object {state} (mode {mode})", {"state": state})


def check_object_on_table(obj_lowest_z: float, table_top_z: float | None, tol: float) -> Check:
    if table_top_z is None:
        return Check("object_initially_on_table", None, tol, SKIPPED, "no table in the scene data")
    value = abs(obj_lowest_z - table_top_z)
    return Check("object_initially_on_table", value, tol, PASS if value <= tol else FAIL,
                 f"object bottom {obj_lowest_z:.3f} m, table top {table_top_z:.3f} m")  # fmt: skip


# ---- evidence gathering ----------------------------------------------------------------------------------
def estimate_camera_positions(
    frames: np.ndarray,
    background: np.ndarray,
    depth: float | np.ndarray,
    focal: float,
    principal_point: tuple[float, float] | None = None,
    max_points: int = 400,
) -> np.ndarray:
    """Camera centre per frame (T,3), metres, in frame 0's camera coordinates, from the static background.

    Background corners of frame 0 are lifted to 3D with the frame-0 depth (an (H,W) map in metres, or one
    depth for a fronto-parallel background), tracked into every frame by pyramidal Lucas-Kanade (kept when
    the backward track returns within 0.5 px), and each frame's camera pose is solved from those 3D-2D
    matches by RANSAC PnP. Rotation and translation are separate unknowns, so a camera that turns to keep
    looking at the scene while it moves (an orbit, whose image shift the turn cancels) still shows its
    translation. Frames without enough tracks are NaN."""
    import cv2

    num_frames, height, width = frames.shape[:3]
    cx, cy = principal_point if principal_point is not None else (width / 2.0, height / 2.0)
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    gray = np.ascontiguousarray(frames.mean(-1).astype(np.uint8) if frames.ndim == 4 else frames.astype(np.uint8))
    depth_map = np.broadcast_to(np.asarray(depth, dtype=np.float64), (height, width))
    usable = background & np.isfinite(depth_map) & (depth_map > 0.1)
    # Corners at least 8 px inside the image and off the mask borders (their tracks would straddle a moving edge).
    usable = cv2.erode(usable.astype(np.uint8), np.ones((9, 9), np.uint8), borderValue=0) > 0
    positions = np.full((num_frames, 3), np.nan)
    positions[0] = 0.0
    corners = cv2.goodFeaturesToTrack(gray[0], max_points, 0.01, 5, mask=usable.astype(np.uint8) * 255)
    if corners is None or len(corners) < 12:
        return positions
    start = corners.reshape(-1, 2).astype(np.float32)
    z = depth_map[start[:, 1].round().astype(int), start[:, 0].round().astype(int)]
    points = np.stack([(start[:, 0] - cx) / focal * z, (start[:, 1] - cy) / focal * z, z], -1)
    lk = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    for t in range(1, num_frames):  # a few dozen frames, each one LK + one PnP
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(gray[0], gray[t], start, None, **lk)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray[t], gray[0], moved, None, **lk)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (np.linalg.norm(back - start, axis=1) < 0.5)
        if good.sum() < 12:
            continue
        found, rvec, tvec, inliers = cv2.solvePnPRansac(
            points[good], moved[good].astype(np.float64), K, None, reprojectionError=1.0, iterationsCount=200
        )
        if not found or inliers is None or len(inliers) < 12:
            continue
        rotation, _ = cv2.Rodrigues(rvec)
        positions[t] = -rotation.T @ tvec.ravel()
    return positions


def table_top_height(scene_data: list[dict[str, Any]], base_dir: Path | None = None) -> float | None:
    """Highest point of the scene's table (world z), from its mesh placed by ``scale``/``rot``/``pos``.

    A relative mesh ``path`` is resolved against ``base_dir`` (the render config's folder)."""
    import trimesh

    for item in scene_data or []:
        path = str(item.get("path", ""))
        if "table" not in path.lower() and "table" not in str(item.get("name", "")).lower():
            continue
        mesh_path = Path(path)
        if not mesh_path.is_absolute() and base_dir is not None:
            mesh_path = base_dir / mesh_path
        if not mesh_path.exists():
            logger.warning("table mesh %s not found: skipping the on-table check", mesh_path)
            return None
        mesh = trimesh.load(str(mesh_path), force="mesh", process=False)
        scale = np.broadcast_to(np.asarray(item.get("scale", 1.0), dtype=np.float64), (3,))
        rot = np.asarray(item.get("rot", np.eye(3)), dtype=np.float64)
        if rot.shape == (3,):
            from scipy.spatial.transform import Rotation

            rot = Rotation.from_euler("xyz", rot).as_matrix()
        verts = (np.asarray(mesh.vertices) * scale) @ rot.T + np.asarray(item.get("pos", np.zeros(3)))
        return float(verts[:, 2].max())
    return None


def _object_mesh(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from reconstruction.stages.scene_inputs import load_object_mesh

    mesh = load_object_mesh(path)
    return torch.as_tensor(mesh.vertices, dtype=torch.float32), torch.as_tensor(mesh.faces)


@dataclass
class FilterInputs:
    hoi_data: dict[str, Any]
    gt_object_masks: np.ndarray  # (T, H, W) bool (stage 2 masks)
    background: np.ndarray  # (H, W) bool, background in every frame
    frames: np.ndarray | None  # (T, H, W, 3) uint8 video, None when unavailable
    human_t: np.ndarray | None
    object_vertices: torch.Tensor  # (V, 3) scaled
    object_faces: torch.Tensor
    K: np.ndarray
    world_to_cam: np.ndarray
    image_size: tuple[int, int]
    scene_data: list[dict[str, Any]]
    background_depth: float | np.ndarray  # frame-0 depth (H,W) in metres, or one depth for all pixels
    scene_dir: Path | None = None  # relative scene_data mesh paths are relative to this folder


def run_checks(
    inputs: FilterInputs, config: ReconConfig, body: Any, device: str = "cpu"
) -> tuple[list[Check], int | None]:
    """Every check of contract section 7 (none short-circuited) -> (checks, truncate_to or None)."""
    from reconstruction.render import Mesh, render

    filt = config.filtering
    hoi = inputs.hoi_data
    human, obj = hoi["human_data"], hoi["obj_data"]
    T = int(np.asarray(obj["obj_t"]).shape[0])
    checks: list[Check] = []

    camera = (
        estimate_camera_positions(
            inputs.frames,
            inputs.background,
            inputs.background_depth,
            float(inputs.K[0, 0]),
            principal_point=(float(inputs.K[0, 2]), float(inputs.K[1, 2])),
        )  # fmt: skip
        if inputs.frames is not None
        else None
    )
    checks.append(check_camera_translation(camera, filt.camera_trans_thr))
    checks.append(check_initial_human_position(np.asarray(human["trans"])[0], inputs.human_t, filt.human_init_pos_thr))

    # posed meshes
    obj_R = torch.as_tensor(np.asarray(obj["obj_R"]), dtype=torch.float32)
    obj_t = torch.as_tensor(np.asarray(obj["obj_t"]), dtype=torch.float32)
    obj_world = inputs.object_vertices[None].float() @ obj_R.transpose(1, 2) + obj_t[:, None]
    rendered = render([Mesh(obj_world, inputs.object_faces, instance_id=2, smooth=False)], inputs.K,
                      inputs.world_to_cam, inputs.image_size, device=device)  # fmt: skip
    missed, unsupported = object_mask_error_terms(inputs.gt_object_masks, rendered.mask(2).cpu().numpy())
    mask_checks = check_object_mask(np.maximum(missed, unsupported), filt.object_mask_tol, filt.total_mask_tol,
                                    filt.min_frames)  # fmt: skip
    mask_checks[0].data["missed"] = np.round(missed, 4).tolist()
    mask_checks[0].data["unsupported"] = np.round(unsupported, 4).tolist()
    checks.extend(mask_checks)

    thresholds = {name: metric.threshold for name, metric in config.eval_metrics.items()}
    checks.extend(check_eval_metrics(hoi.get("eval_data", {}), thresholds))

    pose = torch.as_tensor(np.asarray(human["poses"]), dtype=torch.float32).reshape(T, -1, 3)
    with torch.no_grad():
        verts = body.forward(pose, torch.as_tensor(np.asarray(human["shape"]), dtype=torch.float32),
                             torch.as_tensor(np.asarray(human["trans"]), dtype=torch.float32)).vertices.cpu()  # fmt: skip
    min_dist = float(torch.cdist(verts[0], obj_world[0]).min())
    checks.append(check_initial_penetration(min_dist, filt.init_penetration_thr))
    checks.append(check_static_human(verts.numpy(), filt.human_static_thr))
    checks.append(
        check_object_on_table(
            float(obj_world[0, :, 2].min()),
            table_top_height(inputs.scene_data, inputs.scene_dir),
            filt.table_height_tol,
        )
    )
    checks.append(check_object_motion(obj_t.numpy(), filt.filter_object_motion, filt.object_static_thr))
    truncate = next((c.data["first_bad"] for c in checks if c.verdict == TRUNCATE), None)
    return checks, truncate


# ---- outputs ---------------------------------------------------------------------------------------------
def truncate_hoi_data(hoi: dict[str, Any], length: int) -> dict[str, Any]:
    """Cut every per-frame array of hoi_data to the first ``length`` frames."""
    T = int(np.asarray(hoi["obj_data"]["obj_t"]).shape[0])
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in hoi.items()}
    for section in ("human_data", "obj_data"):
        for key, value in out[section].items():
            if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == T:
                out[section][key] = value[:length]
    meta = out["meta"]
    meta["contact_frames"] = np.asarray(meta.get("contact_frames", np.zeros((T, 2), bool)))[:length]
    meta["inter_end_idx"] = min(int(meta.get("inter_end_idx", length - 1)), length - 1)
    meta["num_frames"] = length
    meta["truncated_from"] = T
    return out


def write_valid_package(layout: Layout, vid: VideoId, hoi: dict[str, Any], mesh_path: Path) -> Path:
    """Build ``layout.valid(vid)`` in a temporary folder beside it, then swap it in."""
    target = layout.valid(vid)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fileio.write_pickle(staging / "hoi_data" / "hoi_data.pkl", hoi)
        mesh_dir = staging / "mesh_data"
        mesh_dir.mkdir(parents=True)
        text = mesh_path.read_text()
        mtl_names = re.findall(r"^mtllib\s+(.+)$", text, flags=re.M)
        if mtl_names:
            mtl = mesh_path.parent / mtl_names[0].strip()
            if mtl.exists():
                mtl_text = mtl.read_text()
                (mesh_dir / "model.mtl").write_text(mtl_text)
                for texture in re.findall(r"^\s*map_\w+\s+(.+)$", mtl_text, flags=re.M):
                    source = mesh_path.parent / texture.strip()
                    if source.exists() and source.parent == mesh_path.parent:
                        shutil.copy2(source, mesh_dir / source.name)
            text = re.sub(r"^mtllib\s+.+$", "mtllib model.mtl", text, flags=re.M)
        (mesh_dir / "model.obj").write_text(text)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def first_frame_depth(layout: Layout, vid: VideoId, image_size: tuple[int, int]) -> np.ndarray | float:
    """Frame-0 depth (H,W) metres for lifting background tracks: the stage-2 cache's first map (aligned to
    the render's depth), else the render's first-frame depth PNG, else a 3 m fronto-parallel guess."""
    from reconstruction.stages.scene_inputs import load_depth_png

    depth_file = layout.depth_cache(vid)
    if depth_file.exists():
        depth0 = np.asarray(torch.load(depth_file, map_location="cpu", weights_only=True)[0], dtype=np.float64)
        if depth0.shape == tuple(image_size) and np.isfinite(depth0).all():
            return depth0
        logger.warning("%s: first depth map has shape %s, expected %s: not used", depth_file, depth0.shape, image_size)
    if layout.depth_gt(vid).exists():
        return load_depth_png(layout.depth_gt(vid), image_size).astype(np.float64)
    logger.warning("%s: no first-frame depth: camera motion measured against a plane 3 m away", vid)
    return 3.0


def load_filter_inputs(layout: Layout, vid: VideoId) -> tuple[FilterInputs, Path]:
    from reconstruction.stages.optimize import load_masks

    hoi_file = layout.raw_hoi_data(vid)
    if not hoi_file.exists():
        raise StageInputError(f"stage 4 result not found: {hoi_file} (run stage 4 first)")
    hoi = load_pickle(hoi_file)
    meta = hoi.get("meta", {})
    rc = load_render_config(layout.render_config(vid))
    T = int(np.asarray(hoi["obj_data"]["obj_t"]).shape[0])
    image_size = (rc.frame_height, rc.frame_width)
    mesh_path = Path(meta.get("obj_path") or layout.mesh(vid))
    verts, faces = _object_mesh(mesh_path)
    obj_masks, human_masks = load_masks(layout.masks_cache(vid), T, image_size)
    frames = None
    if layout.video(vid).exists():
        from reconstruction.video import read_video

        frames, _ = read_video(layout.video(vid))
        frames = frames[:T]
    background = ~(obj_masks.any(0) | human_masks.any(0))
    background_depth = first_frame_depth(layout, vid, image_size)
    K = np.asarray(meta["K"]) if "K" in meta else rc.intrinsics()
    w2c = np.asarray(meta["world_to_cam"]) if "world_to_cam" in meta else rc.world_to_cam()
    return (
        FilterInputs(
            hoi_data=hoi,
            gt_object_masks=obj_masks,
            background=background,
            frames=frames,
            human_t=rc.human_t,
            object_vertices=verts * float(hoi["obj_data"].get("obj_scale", 1.0)),
            object_faces=faces,
            K=K,
            world_to_cam=w2c,
            image_size=image_size,
            scene_data=list(hoi.get("scene_data") or rc.scene_data),
            background_depth=background_depth,
            scene_dir=layout.render_config(vid).parent,
        ),  # fmt: skip
        mesh_path,
    )


def run(ctx: StageContext) -> StageResult:
    from reconstruction.body import load_body_model

    start = time.perf_counter()
    config = load_config(ctx.config)
    layout, vid = ctx.layout, ctx.video
    inputs, mesh_path = load_filter_inputs(layout, vid)
    body_name = inputs.hoi_data["human_data"].get("body_model", config.human_model.body_model)
    body = ctx.models.get(("body", body_name, ctx.device)) or load_body_model(body_name, device="cpu")
    ctx.progress(0.2, "running filter checks")
    checks, truncate = run_checks(inputs, config, body, device=ctx.device)
    failed = [c for c in checks if c.verdict == FAIL]
    valid = not failed
    report = {
        "video": str(vid),
        "verdict": "valid" if valid else "invalid",
        "reasons": [f"{c.name}: {c.detail or ''} (value {c.value}, threshold {c.threshold})".strip() for c in failed],
        "first_failure": failed[0].name if failed else None,
        "truncated_to": truncate,
        "checks": [asdict(c) for c in checks],
    }
    files = [fileio.write_json(layout.filter_report(vid), report)]
    if valid:
        hoi = truncate_hoi_data(inputs.hoi_data, truncate) if truncate is not None else inputs.hoi_data
        if config.post_processing.center_at_object:  # the export only: stage 4's raw result stays in the render world
            hoi = center_at_object(hoi)
        files.append(write_valid_package(layout, vid, hoi, mesh_path))
        if layout.invalid_marker(vid).exists():
            layout.invalid_marker(vid).unlink()
    else:
        files.append(fileio.write_json(layout.invalid_marker(vid), {"video": str(vid), "reasons": report["reasons"],
                                                                     "failed_checks": [c.name for c in failed]}))  # fmt: skip
        if layout.valid(vid).exists():
            shutil.rmtree(layout.valid(vid))
    ctx.progress(1.0, report["verdict"])
    logger.info("%s: %s%s", vid, report["verdict"], f" ({'; '.join(report['reasons'])})" if failed else "")
    metrics = {f"filter/{c.name}": float(c.value) for c in checks if c.value is not None}
    metrics["filter/valid"] = float(valid)
    return StageResult(files=files, seconds=time.perf_counter() - start, metrics=metrics,
                       info={"verdict": report["verdict"], "reasons": report["reasons"], "truncated_to": truncate})  # fmt: skip
