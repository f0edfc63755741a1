"""Evaluate one video's stage outputs against its synthetic ground truth.

``evaluate_video(layout, vid)`` returns ``{"video": ..., "stages": {"human_pose": {...}, "object_pose":
{...}, "optimize": {...}}}`` with whatever stage outputs exist (stage 1 ``hmr_result``, stage 3
``object_poses``, stage 4 ``raw_hoi_data`` + ``contact_labels``); ``evaluate_and_save`` also writes it to
``layout.metrics(vid)``. Every figure is in metres, degrees or m/frame (see ``metrics``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruction import fileio
from reconstruction import keypoints as kp
from reconstruction.eval import metrics
from reconstruction.eval.geometry import depth_inside
from reconstruction.layout import Layout, VideoId
from reconstruction.render_config import load_pickle
from reconstruction.stages.scene_inputs import load_object_mesh
from reconstruction.synth.ground_truth import GroundTruth, load_ground_truth

logger = logging.getLogger(__name__)

BODY_INDICES = [kp.index(name) for name in kp.MPJPE_BODY_JOINTS]
FOOT_INDICES = [kp.index(n) for n in ("left_heel", "right_heel", "left_foot_index", "right_foot_index")]
ADD_POINTS = 1000  # model points used for ADD / ADD-S (evenly strided mesh vertices)


class EvaluationError(ValueError):
    """A stage output cannot be compared with the ground truth (shape mismatch, unreadable file)."""


def _to_numpy(value: Any) -> np.ndarray:
    return metrics.as_numpy(value)


def _check_frames(name: str, value: np.ndarray, num_frames: int, path: Path) -> None:
    if value.shape[0] != num_frames:
        raise EvaluationError(f"{path}: {name} has {value.shape[0]} frames, ground truth has {num_frames}")


def contact_hand_error(pred_cam: np.ndarray, gt_cam: np.ndarray, contact: np.ndarray) -> float | None:
    """Mean hand-joint error (m) over the frames where that hand touches the object (``contact`` (T,2) bool,
    left/right); None when no hand is ever in contact."""
    contact = np.asarray(contact, dtype=bool)
    pred = [pred_cam[contact[:, 0], kp.LEFT_HAND_SLICE], pred_cam[contact[:, 1], kp.RIGHT_HAND_SLICE]]
    gt = [gt_cam[contact[:, 0], kp.LEFT_HAND_SLICE], gt_cam[contact[:, 1], kp.RIGHT_HAND_SLICE]]
    if not contact.any():
        return None
    return metrics.hand_joint_error(np.concatenate(pred, axis=0), np.concatenate(gt, axis=0))


def keypoint_metrics(pred_cam: np.ndarray, gt_cam: np.ndarray, contact: np.ndarray | None = None) -> dict[str, float]:
    """Body MPJPE / PA-MPJPE on the 12 MPJPE joints, hand errors (absolute, wrist-relative and, given the
    ground-truth ``contact`` (T,2), during contact only), jitter."""
    body_pred, body_gt = pred_cam[:, BODY_INDICES], gt_cam[:, BODY_INDICES]
    hands_pred = np.concatenate([pred_cam[:, kp.LEFT_HAND_SLICE], pred_cam[:, kp.RIGHT_HAND_SLICE]], axis=0)
    hands_gt = np.concatenate([gt_cam[:, kp.LEFT_HAND_SLICE], gt_cam[:, kp.RIGHT_HAND_SLICE]], axis=0)
    out = {
        "body_mpjpe_m": metrics.mpjpe(body_pred, body_gt),
        "body_pa_mpjpe_m": metrics.pa_mpjpe(body_pred, body_gt),
        "hand_joint_error_m": metrics.hand_joint_error(hands_pred, hands_gt),
        "hand_joint_error_wrist_relative_m": metrics.hand_joint_error(hands_pred, hands_gt, wrist_relative=True),
        "body_accel_jitter_m_per_frame2": metrics.acceleration_jitter(body_pred),
        "body_accel_error_m_per_frame2": metrics.acceleration_error(body_pred, body_gt),
    }
    in_contact = None if contact is None else contact_hand_error(pred_cam, gt_cam, contact)
    if in_contact is not None:
        out["hand_joint_error_contact_m"] = in_contact
    return out


def keypoint_2d_error_px(keypoints_2d: np.ndarray, gt: GroundTruth) -> dict[str, float]:
    """Median / mean pixel error of stage 1's 2D body keypoints (12 MPJPE joints) against the projected
    ground truth, over joints whose true projection lies inside the image."""
    gt_cam = gt.keypoints_3d_cam[:, BODY_INDICES]
    gt_xy = metrics.project_points(gt_cam, gt.K)
    height, width = gt.image_size
    inside = (gt_xy[..., 0] >= 0) & (gt_xy[..., 0] < width) & (gt_xy[..., 1] >= 0) & (gt_xy[..., 1] < height)
    errors = metrics.keypoint_2d_errors(keypoints_2d[:, BODY_INDICES, :2], gt_xy, inside)
    if errors.size == 0:
        return {}
    return {"keypoint_2d_error_median_px": float(np.median(errors)), "keypoint_2d_error_mean_px": float(errors.mean())}


def held_object_errors(pred_poses_cam: np.ndarray, gt_poses_cam: np.ndarray, contact: np.ndarray) -> dict[str, float]:
    """Object translation error while a hand holds it (``contact`` (T,2) ground truth): mean 3D error and mean
    signed camera-depth error (m, > 0: too far). The whole-video medians are decided by the still frames
    (box, 60 frames: median 0.9 cm while the held frames are 8 cm too far on average)."""
    held = np.asarray(contact, dtype=bool).any(axis=1)
    if not held.any():
        return {}
    translation = metrics.object_translation_errors(pred_poses_cam[held], gt_poses_cam[held])
    depth = pred_poses_cam[held, 2, 3] - gt_poses_cam[held, 2, 3]
    return {
        "object_translation_error_held_m": float(translation.mean()),
        "object_depth_bias_held_m": float(depth.mean()),
    }


def object_metrics(pred_poses_cam: np.ndarray, gt: GroundTruth, model_points: np.ndarray) -> dict[str, float]:
    gt_poses = gt.object_poses_cam
    translation = metrics.object_translation_errors(pred_poses_cam, gt_poses)
    # modulo a symmetry that no image can resolve (e.g. a bottle's turn about its axis); ADD-S likewise
    rotation = metrics.object_rotation_errors(pred_poses_cam, gt_poses, gt.extra.get("object_symmetry_axis"))
    return held_object_errors(pred_poses_cam, gt_poses, gt.contact) | {
        "object_translation_error_m": float(translation.mean()),
        "object_translation_error_median_m": float(np.median(translation)),
        "object_rotation_error_deg": float(rotation.mean()),
        "object_rotation_error_median_deg": float(np.median(rotation)),
        "object_add_m": metrics.add(pred_poses_cam, gt_poses, model_points),
        "object_add_s_m": metrics.add_s(pred_poses_cam, gt_poses, model_points),
        "object_accel_jitter_m_per_frame2": metrics.acceleration_jitter(pred_poses_cam[:, :3, 3]),
    }


def _load_mesh(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground truth's object mesh (vertices float64, faces) through the stages' validating loader."""
    mesh = load_object_mesh(Path(path))
    return torch.tensor(mesh.vertices, dtype=torch.float64), torch.tensor(mesh.faces)


def _model_points(vertices: torch.Tensor) -> np.ndarray:
    stride = max(1, vertices.shape[0] // ADD_POINTS)
    return vertices[::stride].numpy()


def body_penetration(
    body_vertices_world: torch.Tensor,
    object_poses_world: torch.Tensor,
    mesh_vertices: torch.Tensor,
    mesh_faces: torch.Tensor,
) -> dict[str, float]:
    """Penetration of body vertices (T,V,3) into the object mesh posed by (T,4,4): per frame, the deepest
    vertex's exact depth inside it (``geometry.depth_inside``; depths are clipped at 0)."""
    rotation, translation = object_poses_world[:, :3, :3], object_poses_world[:, :3, 3]
    local = (body_vertices_world - translation[:, None]) @ rotation  # (T, V, 3) in the mesh frame
    depth = depth_inside(local, mesh_vertices, mesh_faces).amax(-1)  # (T,)
    out = metrics.penetration_depth(-depth[:, None].numpy())
    return {"penetration_max_m": out["max"], "penetration_mean_m": out["mean"], "penetration_frame_ratio": out["ratio"]}


def _contact_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    scores = metrics.contact_scores(pred, gt)
    return {
        f"contact_{hand}_{name}": float(scores[hand][name]) for hand in scores for name in ("precision", "recall", "f1")
    }


def evaluate_human_pose(layout: Layout, vid: VideoId, gt: GroundTruth) -> dict[str, float] | None:
    path = layout.hmr_result(vid)
    if not path.exists():
        return None
    result = torch.load(path, map_location="cpu", weights_only=False)
    if "keypoints_3d_cam" not in result:
        raise EvaluationError(f"{path}: no keypoints_3d_cam")
    pred = _to_numpy(result["keypoints_3d_cam"])
    _check_frames("keypoints_3d_cam", pred, gt.num_frames, path)
    out = keypoint_metrics(pred, gt.keypoints_3d_cam, gt.contact)
    keypoints_path = layout.hmr_keypoints(vid)
    if keypoints_path.exists():
        with np.load(keypoints_path) as data:
            keypoints_2d = np.asarray(data["keypoints_2d"], dtype=np.float64)
        _check_frames("keypoints_2d", keypoints_2d, gt.num_frames, keypoints_path)
        out.update(keypoint_2d_error_px(keypoints_2d, gt))
    if "predicted_body_height" in result:
        out["body_height_error_m"] = abs(float(result["predicted_body_height"]) - gt.height_m)
    return out


def evaluate_object_pose(
    layout: Layout, vid: VideoId, gt: GroundTruth, model_points: np.ndarray
) -> dict[str, float] | None:
    path = layout.object_poses(vid)
    if not path.exists():
        return None
    poses = _to_numpy(load_pickle(path))
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise EvaluationError(f"{path}: expected (T,4,4) object poses, got {poses.shape}")
    _check_frames("object poses", poses, gt.num_frames, path)
    return object_metrics(poses, gt, model_points)


def evaluate_optimize(
    layout: Layout, vid: VideoId, gt: GroundTruth, mesh: tuple[torch.Tensor, torch.Tensor], device: str = "cpu"
) -> dict[str, float] | None:
    path = layout.raw_hoi_data(vid)
    if not path.exists():
        return None
    data = load_pickle(path)
    try:
        human, obj = data["human_data"], data["obj_data"]
    except (KeyError, TypeError) as exc:
        raise EvaluationError(f"{path}: missing human_data/obj_data ({exc})") from exc
    from reconstruction.body import load_body_model

    meta = data.get("meta") or {}
    body_name = human.get("body_model") or meta.get("body_model") or gt.body_model
    body = load_body_model(body_name, device=device)
    poses = torch.as_tensor(_to_numpy(human["poses"]), dtype=torch.float32)
    num_frames = poses.shape[0]
    _check_frames("human_data.poses", poses.numpy(), gt.num_frames, path)
    poses = poses.reshape(num_frames, -1, 3)
    if poses.shape[1] != body.num_joints:
        raise EvaluationError(
            f"{path}: poses has {poses.shape[1]} joints, body model {body_name} has {body.num_joints}"
        )
    shape_key = "betas" if "betas" in human else "shape"
    shape = torch.as_tensor(_to_numpy(human[shape_key]), dtype=torch.float32).reshape(-1, body.num_shape)[0]
    trans = torch.as_tensor(_to_numpy(human["trans"]), dtype=torch.float32).reshape(num_frames, 3)
    with torch.no_grad():
        out = body.forward(poses, shape, trans)
    w2c = torch.as_tensor(gt.world_to_cam, dtype=torch.float64)
    kp_world = out.keypoints.double().cpu()  # the metrics below are numpy
    kp_cam = (kp_world @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]).numpy()
    result = keypoint_metrics(kp_cam, gt.keypoints_3d_cam, gt.contact)
    result["foot_skating_m_per_frame"] = metrics.foot_skating(kp_world[:, FOOT_INDICES].numpy())

    obj_R = _to_numpy(obj["obj_R"]).reshape(num_frames, 3, 3)
    obj_t = _to_numpy(obj["obj_t"]).reshape(num_frames, 3)
    poses_world = np.tile(np.eye(4), (num_frames, 1, 1))
    poses_world[:, :3, :3], poses_world[:, :3, 3] = obj_R, obj_t
    scale = float(np.asarray(obj.get("obj_scale", 1.0)).reshape(-1)[0])
    mesh_vertices, mesh_faces = mesh
    result.update(object_metrics(gt.world_to_cam @ poses_world, gt, _model_points(mesh_vertices)))
    result.update(
        body_penetration(out.vertices.double().cpu(), torch.as_tensor(poses_world), mesh_vertices * scale, mesh_faces)
    )
    contact_path = layout.contact_labels(vid)
    if contact_path.exists():
        frames = np.asarray(json.loads(contact_path.read_text()).get("frames", []), dtype=bool)
        if frames.shape == gt.contact.shape:
            result.update(_contact_metrics(frames, gt.contact))
        else:
            logger.warning(
                "%s: contact frames %s do not match ground truth %s", contact_path, frames.shape, gt.contact.shape
            )
    return result


def evaluate_masks(layout: Layout, vid: VideoId, gt_instance: np.ndarray) -> dict[str, float] | None:
    """Stage 2 mask IoU (median and mean over frames) against ground-truth instance maps (T,H,W) (1 human,
    2 object, as rendered by the synthetic scene). The ground truth stores no per-frame masks, so the
    caller renders them (see benchmarks/e2e_accuracy.py)."""
    path = layout.masks_cache(vid)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=True) as data:
        masks = data["masks"].item()
    frames = sorted(masks)
    if len(frames) != len(gt_instance):
        raise EvaluationError(f"{path}: {len(frames)} mask frames, ground truth has {len(gt_instance)}")
    out = {}
    for key, name, instance_id in ((0, "object", 2), (1, "human", 1)):
        pred = np.stack([np.asarray(masks[f][key], dtype=bool) for f in frames])
        if pred.shape != gt_instance.shape:
            raise EvaluationError(f"{path}: {name} masks {pred.shape}, ground truth {gt_instance.shape}")
        iou = metrics.mask_iou(pred, gt_instance == instance_id)
        iou = iou[np.isfinite(iou)]
        if iou.size:
            out[f"{name}_mask_iou_median"] = float(np.median(iou))
            out[f"{name}_mask_iou_mean"] = float(iou.mean())
    return out


def evaluate_video(layout: Layout, vid: VideoId, device: str = "cpu") -> dict[str, Any]:
    """All metrics of one video's available stage outputs against its ground truth."""
    gt_path = layout.ground_truth(vid)
    gt = load_ground_truth(gt_path)
    # A results dir may have been copied or its videos renamed: the video's own mesh is the same object.
    mesh_path = Path(gt.object_mesh_path)
    mesh = _load_mesh(mesh_path if mesh_path.exists() else layout.mesh(vid))
    stages: dict[str, dict[str, float]] = {}
    for name, evaluate in (
        ("human_pose", lambda: evaluate_human_pose(layout, vid, gt)),
        ("object_pose", lambda: evaluate_object_pose(layout, vid, gt, _model_points(mesh[0]))),
        ("optimize", lambda: evaluate_optimize(layout, vid, gt, mesh, device)),
    ):
        figures = evaluate()
        if figures is not None:
            stages[name] = {key: float(value) for key, value in figures.items()}
    return {
        "video": str(vid),
        "variant": gt.variant,
        "category": gt.category,
        "num_frames": gt.num_frames,
        "stages": stages,
    }


def evaluate_and_save(layout: Layout, vid: VideoId, device: str = "cpu") -> dict[str, Any]:
    report = evaluate_video(layout, vid, device)
    fileio.write_json(layout.metrics(vid), report)
    return report


def videos_with_ground_truth(layout: Layout, dataset: str | None = None, category: str | None = None) -> list[VideoId]:
    return [vid for vid in layout.list_videos(dataset, category) if layout.ground_truth(vid).exists()]
