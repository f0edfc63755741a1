"""The stage 4 optimiser: ``opt_stage_specs`` run in order over residual variables, all frames at once.

Variables are residuals on top of the stage 1-3 estimates (the reference's names):
- ``human_trans_global`` (B, 1, 3): one offset of the whole trajectory (``xy_only`` keeps the height);
- ``human_trans_res`` (B, T, 3): per-frame root translation;
- ``human_pose_res`` (B, T, J', 3): axis-angle added to the J' optimised body joints (``arm_only``:
  only the arm chains get gradients), fingers and face keep the stage 1 values;
- ``human_hand_pose_res`` (B, T, F, 3): axis-angle added to the F finger joints of both hands (the body
  model's hand joints but the metacarpals, which do not bend in a grip);
- ``obj_t_res`` (B, T, 3) and ``obj_R_res`` (B, T, 3): object translation and rotation (axis-angle,
  left-multiplied in the world frame).
Every stage builds one Adam optimiser over its ``opt_vars`` with per-variable learning rates; variables
not listed keep their current values. Several videos of the same length are stacked along a leading
video dimension B and optimised together (their losses are independent; Adam is per element).

The world is the render's metric Z-up world; the camera is OpenCV (``world_to_cam`` per frame).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import roma
import torch

from reconstruction.config import LossTermConfig, OptimizationConfig, OptStageSpec, OptVarConfig
from reconstruction.keypoints import ALL_KEYPOINTS, LEFT_HAND_SLICE, NUM_BODY, RIGHT_HAND_SLICE
from reconstruction.optim import geometry, losses
from reconstruction.optim.body_points import PointBody
from reconstruction.projection import project

logger = logging.getLogger(__name__)

# Body joints worth optimising (the stage 1 fit already holds fingers/toes/face; their residuals only add
# cost and noise). Names are anny bone labels; SMPL-X uses its first 22 joints.
ANNY_BODY_BONES: tuple[str, ...] = (
    "root", "pelvis.L", "pelvis.R", "upperleg01.L", "upperleg02.L", "lowerleg01.L", "lowerleg02.L", "foot.L",
    "upperleg01.R", "upperleg02.R", "lowerleg01.R", "lowerleg02.R", "foot.R", "spine05", "spine04", "spine03",
    "spine02", "spine01", "clavicle.L", "shoulder01.L", "upperarm01.L", "upperarm02.L", "lowerarm01.L",
    "lowerarm02.L", "wrist.L", "clavicle.R", "shoulder01.R", "upperarm01.R", "upperarm02.R", "lowerarm01.R",
    "lowerarm02.R", "wrist.R", "neck01", "neck02", "neck03", "head",
)  # fmt: skip
ARM_MARKERS = ("clavicle", "shoulder", "upperarm", "lowerarm", "wrist", "_shoulder", "_elbow", "_wrist", "collar")
FOOT_KEYPOINTS = ("left_ankle", "left_heel", "left_foot_index", "right_ankle", "right_heel", "right_foot_index")
HAND_POINTS_PER_HAND = 400  # hand vertices posed per hand (anny: ~1,600; ~1 cm spacing)
GRAPH_WARMUP_ITERS = 3  # eager iterations before an optimiser stage is captured in a CUDA graph
CONTACT_POINTS_PER_HAND = 48  # of those, the ones nearest the object take part in contact (penetration: all)
RIGID_POINTS_PER_HAND = 32  # fixed evenly spread subset for contact_smoothness (same points every frame)
BODY_POINTS = 600  # sparse body cover for depth and penetration
# forearm vertices posed per arm for penetration only (after the sparse cover): a forearm along a held bottle
# went 2.5-3 cm into it between the sparse cover's points (~5 cm apart)
FOREARM_POINTS_PER_ARM = 150
BACK_FACE_COS = 0.5  # contact partners: surfaces facing the camera or up to 30 deg past grazing
PALM_FACING_COS = 0.5  # contact partners: surfaces whose normal is within 60 deg of facing the palm
NEAR_SURFACE_SAMPLES = 128  # object samples that rank hand points by their distance to the surface
CONTACT_SAMPLES = 384  # object samples the contact term compares hands with
DEPTH_OBJECT_SAMPLES = 256  # object samples compared with depth points (per frame)
DEPTH_BODY_POINTS = 300  # body points compared with depth points (per frame)
# verts_tracking weight of frames stage 2 has no object mask for: stage 3 still holds a pose there (held or
# predicted) that is better than none, but the contact and smoothness terms should win over it.
UNTRACKED_FRAME_WEIGHT = 0.25
HUMAN_TERMS = {
    "keypoint_tracking", "human_smoothness", "human_pose_reg", "human_foot_contact", "ground", "contact",
    "contact_smoothness", "penetration", "depth_pointcloud", "hand_grasp",
}  # fmt: skip
OBJECT_TERMS = {
    "verts_tracking", "obj_smoothness", "obj_precontact_reg", "obj_still_reg", "depth_pointcloud", "contact",
    "contact_smoothness", "penetration", "hand_grasp",
}  # fmt: skip
FINGERTIPS = (4, 8, 12, 16, 20)  # thumb, index, middle, ring and pinky tips in a 21-point MediaPipe hand


class OptimizerInputError(ValueError):
    """Inputs that cannot be optimised together (shapes, lengths); the message names the video."""


class OptimizerDivergedError(RuntimeError):
    """An optimiser stage produced non-finite values (a loss term's gradient blew up)."""


def _check_finite(var: dict[str, torch.Tensor], terms_hist: dict[str, torch.Tensor], stage_name: str) -> None:
    """Raise when a stage left non-finite variables (one device sync per stage, not per iteration): a NaN
    pose must fail the stage, not reach hoi_data.pkl."""
    bad_vars = [name for name, value in var.items() if not bool(torch.isfinite(value).all())]
    if bad_vars:
        bad_terms = [t for t, values in terms_hist.items() if t != "total" and not bool(torch.isfinite(values).all())]
        raise OptimizerDivergedError(
            f"{stage_name}: non-finite {', '.join(bad_vars)} after optimisation"
            + (f" (non-finite loss terms: {', '.join(bad_terms)})" if bad_terms else "")
        )


@dataclass
class VideoInputs:
    """One video's stage 1-3 estimates and observations (world frame unless named *_cam)."""

    name: str
    K: torch.Tensor  # (3, 3)
    world_to_cam: torch.Tensor  # (4, 4) or (T, 4, 4)
    image_size: tuple[int, int]  # (H, W)
    body_pose: torch.Tensor  # (T, J, 3) local axis-angle, stage 1 motion_global
    body_shape: torch.Tensor  # (S,)
    body_trans: torch.Tensor  # (T, 3) world
    keypoints_2d: torch.Tensor  # (T, 75, 3) x, y, confidence
    object_vertices: torch.Tensor  # (V, 3) scaled mesh, model frame
    object_faces: torch.Tensor  # (F, 3)
    object_poses_cam: torch.Tensor  # (T, 4, 4) stage 3, object -> camera
    contact: torch.Tensor  # (T, 2) bool, left/right hand
    object_tracked: torch.Tensor | None = None  # (T,) bool frames stage 3 trusts (default all)
    object_pose_first_world: torch.Tensor | None = None  # (4, 4) known frame-0 object pose (render config)
    object_moving: torch.Tensor | None = None  # (T,) bool frames stage 3 shows the object move; None: unknown
    depth: torch.Tensor | None = None  # (T, H, W) metres, 0 = unknown
    object_masks: torch.Tensor | None = None  # (T, H, W) bool
    human_masks: torch.Tensor | None = None  # (T, H, W) bool
    ground_z: float | None = None  # None: estimated from the stage 1 feet

    @property
    def num_frames(self) -> int:
        return int(self.body_pose.shape[0])


@dataclass
class OptimizationResult:
    name: str
    body_pose: torch.Tensor  # (T, J, 3)
    body_shape: torch.Tensor  # (S,)
    body_trans: torch.Tensor  # (T, 3) world
    obj_R: torch.Tensor  # (T, 3, 3) world
    obj_t: torch.Tensor  # (T, 3) world
    obj_pose_cam: torch.Tensor  # (T, 4, 4)
    history: dict[str, Any]  # {"stages": [{"name", "niter", "seconds", "terms": {term: [..]}, "total": [..]}]}
    eval_data: dict[str, float]
    seconds: float
    init_losses: dict[str, float] = field(default_factory=dict)
    final_losses: dict[str, float] = field(default_factory=dict)


def body_cover_ids(segments: dict[str, torch.Tensor], num_vertices: int) -> torch.Tensor:
    """The body vertices posed besides the hands (CPU): the sparse cover (``BODY_POINTS``, first: the depth term
    indexes into it), then ``FOREARM_POINTS_PER_ARM`` of each forearm segment the body model has."""
    forearms = [
        torch.as_tensor(segments[side], device="cpu") for side in ("left_forearm", "right_forearm") if side in segments
    ]
    return torch.cat(
        [geometry.subsample_indices(num_vertices, BODY_POINTS)]
        + [ids[geometry.subsample_indices(ids.shape[0], FOREARM_POINTS_PER_ARM)] for ids in forearms if len(ids)]
    )


_SDF_GRID_CACHE: OrderedDict[str, geometry.SDFGrid] = OrderedDict()
SDF_GRID_CACHE_SIZE = 8


def _object_sdf_grid(vertices: torch.Tensor, faces: torch.Tensor) -> geometry.SDFGrid:
    """hoiweb: ``geometry.mesh_sdf_grid`` of an object mesh (on the CPU), cached by the mesh's content: a stage-4 run
    builds its batch twice (optimisation, then ``evaluate`` of the result), ~1 s per build."""
    vertices = torch.as_tensor(vertices).detach().cpu().float().contiguous()
    faces = torch.as_tensor(faces).detach().cpu().long().contiguous()
    key = hashlib.sha1(vertices.numpy().tobytes() + faces.numpy().tobytes()).hexdigest()
    if key in _SDF_GRID_CACHE:
        _SDF_GRID_CACHE.move_to_end(key)
        return _SDF_GRID_CACHE[key]
    grid = geometry.mesh_sdf_grid(vertices, faces)
    _SDF_GRID_CACHE[key] = grid
    while len(_SDF_GRID_CACHE) > SDF_GRID_CACHE_SIZE:
        _SDF_GRID_CACHE.popitem(last=False)
    return grid


class _Batch:
    """Constant tensors of B stacked videos on the device."""

    def __init__(self, videos: list[VideoInputs], body: Any, config: OptimizationConfig, device: torch.device):
        lengths = {v.num_frames for v in videos}
        if len(lengths) != 1:
            raise OptimizerInputError(f"videos of one batch must have the same length, got {sorted(lengths)}")
        self.num_frames = lengths.pop()
        sizes = {tuple(v.image_size) for v in videos}
        self.image_size = videos[0].image_size
        if len(sizes) != 1:
            raise OptimizerInputError(f"videos of one batch must have the same image size, got {sorted(sizes)}")
        T = self.num_frames
        dtype = torch.float32

        def stack(get: Callable[[VideoInputs], torch.Tensor], what: str) -> torch.Tensor:
            items = []
            for v in videos:
                value = torch.as_tensor(get(v)).to(device=device)
                items.append(value.to(dtype) if value.is_floating_point() else value)
            shapes = {tuple(x.shape) for x in items}
            if len(shapes) != 1:
                raise OptimizerInputError(f"{what}: shapes differ between videos {sorted(shapes)}")
            return torch.stack(items)

        for v in videos:
            if v.body_trans.shape[0] != T or v.object_poses_cam.shape[0] != T or v.keypoints_2d.shape[0] != T:
                raise OptimizerInputError(
                    f"{v.name}: frame counts differ: body {v.body_pose.shape[0]}, trans {v.body_trans.shape[0]}, "
                    f"object poses {v.object_poses_cam.shape[0]}, keypoints {v.keypoints_2d.shape[0]}"
                )
        self.K = stack(lambda v: v.K, "K")  # (B, 3, 3)
        w2c = stack(lambda v: v.world_to_cam if v.world_to_cam.dim() == 3 else v.world_to_cam.expand(T, 4, 4), "cam")
        self.world_to_cam = w2c  # (B, T, 4, 4)
        self.cam_to_world = torch.linalg.inv(w2c)
        self.pose_init = stack(lambda v: v.body_pose, "body_pose")
        self.shape = stack(lambda v: v.body_shape, "body_shape")
        self.trans_init = stack(lambda v: v.body_trans, "body_trans")
        kp = stack(lambda v: v.keypoints_2d, "keypoints_2d")
        self.kp_target, self.kp_conf = kp[..., :2], kp[..., 2].clamp(0.0, 1.0)
        self.hand_mask = torch.arange(len(ALL_KEYPOINTS), device=device) >= NUM_BODY
        self.contact = stack(lambda v: v.contact.bool(), "contact")  # (B, T, 2)
        tracked = stack(
            lambda v: v.object_tracked.bool() if v.object_tracked is not None else torch.ones(T, dtype=torch.bool),
            "object_tracked",
        )
        self.tracked_weight = torch.where(tracked, 1.0, UNTRACKED_FRAME_WEIGHT)  # (B, T) verts_tracking weights
        any_contact = self.contact.any(-1)  # (B, T)
        first = torch.where(
            any_contact.any(-1), any_contact.float().argmax(-1), torch.full_like(any_contact[:, 0], T, dtype=torch.long)
        )
        frames = torch.arange(T, device=device)
        self.precontact = frames[None] < first[:, None]  # (B, T)
        # the first contact frame of each hand's first interval ("duration: start")
        hand_first = torch.where(self.contact.any(1), self.contact.float().argmax(1), -1)  # (B, 2)
        self.contact_start = frames[None, :, None] == hand_first[:, None, :]
        self._still_frames(videos, frames)

        # object: surface samples with normals, tracking vertices, world poses
        samples, normals, track, areas = [], [], [], []
        for v in videos:
            verts = torch.as_tensor(v.object_vertices, dtype=dtype, device=device)
            faces = torch.as_tensor(v.object_faces, dtype=torch.long, device=device)
            pts, nrm = geometry.sample_surface(verts, faces, config.object_surface_samples, seed=config.seed)
            samples.append(pts)
            areas.append(geometry.surface_area(verts, faces))
            normals.append(geometry.outward_normals(pts, nrm))
            track.append(verts[geometry.subsample_indices(verts.shape[0], 256).to(device)])
        if len({t.shape[0] for t in track}) != 1:
            raise OptimizerInputError("object meshes of one batch need at least 256 vertices or the same count")
        self.obj_samples = torch.stack(samples)  # (B, N, 3)
        self._sdf_grids(videos, device)
        # mean spacing of the contact term's samples: sqrt(surface area / samples)
        self.contact_sample_radius = (torch.stack(areas) / CONTACT_SAMPLES).sqrt()  # (B,)
        # known frame-0 poses (render config): where the object rests until a hand reaches it
        rest = [v.object_pose_first_world for v in videos]
        self.has_rest_pose = torch.tensor([r is not None for r in rest], device=device)
        rest_pose = torch.stack([torch.eye(4) if r is None else torch.as_tensor(r, dtype=dtype).cpu() for r in rest])
        self.rest_pose = rest_pose.to(device)  # (B, 4, 4) world
        self.obj_normals = torch.stack(normals)
        self.obj_track_verts = torch.stack(track)  # (B, Nv, 3)
        pose_cam = stack(lambda v: v.object_poses_cam, "object_poses_cam")
        pose_world = self.cam_to_world @ pose_cam
        self.obj_R_init = pose_world[..., :3, :3]
        self.obj_t_init = pose_world[..., :3, 3]
        track_cam = geometry.transform(self.obj_track_verts[:, None], pose_cam[..., :3, :3], pose_cam[..., :3, 3])
        self.obj_track_target = project(track_cam, self.K)  # (B, T, Nv, 2)

        # human point subsets
        segments = getattr(body, "vertex_segments", {})
        num_vertices = int(getattr(body, "num_vertices", 0) or body.faces.max().item() + 1)
        hand_ids = []
        for side in ("left_hand", "right_hand"):
            ids = segments.get(side)
            if ids is None:
                raise OptimizerInputError(f"body model {body.name} has no vertex segment {side!r}")
            ids = torch.as_tensor(ids, device="cpu")
            hand_ids.append(ids[geometry.subsample_indices(ids.shape[0], HAND_POINTS_PER_HAND)])
        self.hand_vertex_ids = torch.stack(hand_ids).to(device)  # (2, H)
        self.rigid_hand_points = geometry.subsample_indices(self.hand_vertex_ids.shape[1], RIGID_POINTS_PER_HAND).to(
            device
        )
        self.body_vertex_ids = body_cover_ids(segments, num_vertices).to(device)
        self.depth_body_points = geometry.subsample_indices(BODY_POINTS, DEPTH_BODY_POINTS).to(device)
        point_ids = torch.cat([self.hand_vertex_ids.flatten(), self.body_vertex_ids])
        # one posing function per distinct body shape (usually one for the whole batch)
        self.one_shape = len(videos) == 1 or bool((self.shape == self.shape[:1]).all())
        shapes = self.shape[:1] if self.one_shape else self.shape
        self.point_bodies = [PointBody(body, point_ids, shape) for shape in shapes]
        self.foot_keypoints = torch.tensor([ALL_KEYPOINTS.index(n) for n in FOOT_KEYPOINTS], device=device)

        # optimised joints
        names = list(body.joint_names)
        if getattr(body, "name", "") == "anny" and all(b in names for b in ANNY_BODY_BONES):
            opt_joints = [names.index(b) for b in ANNY_BODY_BONES]
        else:
            opt_joints = list(range(min(22, len(names))))
        self.opt_joints = torch.tensor(opt_joints, device=device)
        self.arm_joint_mask = torch.tensor(
            [any(m in names[j].lower() for m in ARM_MARKERS) for j in opt_joints], device=device
        )
        # finger joints (human_hand_pose_res): both hands' joints but the metacarpals (rigid in a grip)
        finger_joints = [
            j
            for j in list(body.left_hand_joints) + list(body.right_hand_joints)
            if "metacarpal" not in names[j].lower()
        ]
        self.finger_joints = torch.tensor(finger_joints, dtype=torch.long, device=device)
        self.fingertip_keypoints = torch.tensor(
            [[hand.start + tip for tip in FINGERTIPS] for hand in (LEFT_HAND_SLICE, RIGHT_HAND_SLICE)], device=device
        )  # (2, 5)

        # depth observations, per instance, in the world frame. A depth backend that knows only the
        # background (``static``: the render's frame-0 depth with human and object pixels unknown) gives no
        # point on the human or the object: depth_pointcloud is then inactive (exactly 0), said in the log
        # and in ``inactive_terms`` (loss history, stage info). The background alone constrains nothing
        # here: the pixels where a body or object point could lie behind the wall are the unknown ones.
        self.depth_obj = self.depth_human = None
        self.inactive_terms: dict[str, str] = {}
        if not self.object_motion_known:
            self.inactive_terms["obj_still_reg"] = "no object motion labels"
        if any(v.depth is None for v in videos):
            self.inactive_terms["depth_pointcloud"] = "no depth cache"
        else:
            count = 0
            for spec in config.opt_stage_specs.values():
                if "depth_pointcloud" in spec.loss_cfg:
                    count = max(count, spec.loss_cfg["depth_pointcloud"].num_gt_samples)
            if count:
                depth_obj = self._depth_points(videos, "object_masks", count // 2, device)
                depth_human = self._depth_points(videos, "human_masks", count - count // 2, device)
                # a depth backend that knows only the background (``static``) gives nothing to fit
                if bool(depth_obj[1].any()) or bool(depth_human[1].any()):
                    self.depth_obj, self.depth_human = depth_obj, depth_human
                else:
                    reason = "no depth on the object or the human in any frame (background-only depth)"
                    self.inactive_terms["depth_pointcloud"] = reason
                    logger.warning("%s: depth_pointcloud is inactive (0)", reason)

    def _sdf_grids(self, videos: list[VideoInputs], device: torch.device) -> None:
        """hoiweb: each object's signed distance on a grid in its model frame (penetration): ``sdf_values``
        (B, X, Y, Z), padded to the batch's largest grid with the outside border value, ``sdf_origin`` (B, 3),
        ``sdf_cell`` (B,)."""
        grids = [_object_sdf_grid(v.object_vertices, v.object_faces) for v in videos]
        size = [max(g.values.shape[i] for g in grids) for i in range(3)]
        padded = []
        for g in grids:
            values = g.values.new_full(size, float(g.values.amax()))
            values[: g.values.shape[0], : g.values.shape[1], : g.values.shape[2]] = g.values
            padded.append(values)
        self.sdf_values = torch.stack(padded).to(device)
        self.sdf_origin = torch.stack([g.origin for g in grids]).to(device)
        self.sdf_cell = torch.tensor([g.cell for g in grids], device=device)

    def _still_frames(self, videos: list[VideoInputs], frames: torch.Tensor) -> None:
        """Frames where stage 3 shows the object still (obj_still_reg): ``still_start`` (B, T) before it first
        moves (all frames when it never does), ``object_still`` (B, T) those plus the frames after it last
        moves (put down). A pause between two motions stays free: a hand holds the object there."""
        T = frames.shape[0]
        rows = []
        for v in videos:
            row = torch.ones(T, dtype=torch.bool) if v.object_moving is None else torch.as_tensor(v.object_moving)
            if tuple(row.shape) != (T,):
                raise OptimizerInputError(f"{v.name}: object_moving {tuple(row.shape)} != ({T},)")
            rows.append(row.bool().to(frames.device))
        moving = torch.stack(rows)  # (B, T); unknown: moving throughout, so nothing is held
        ever = moving.any(-1)
        first = torch.where(ever, moving.float().argmax(-1), T)
        last = torch.where(ever, T - 1 - moving.flip(-1).float().argmax(-1), T)
        self.still_start = frames[None] < first[:, None]  # (B, T)
        self.object_still = self.still_start | (frames[None] > last[:, None])
        self.object_motion_known = any(v.object_moving is not None for v in videos)

    def _depth_points(self, videos: list[VideoInputs], mask_attr: str, count: int, device: torch.device):
        points, valid = [], []
        for i, v in enumerate(videos):
            depth = torch.as_tensor(v.depth, dtype=torch.float32, device=device)
            mask = getattr(v, mask_attr)
            mask = torch.ones_like(depth, dtype=torch.bool) if mask is None else torch.as_tensor(mask, device=device)
            cam, ok = geometry.sample_depth_points(depth, mask.bool(), self.K[i], count, seed=i)
            points.append(geometry.apply_homogeneous(cam, self.cam_to_world[i]))
            valid.append(ok)
        return torch.stack(points), torch.stack(valid)


class HOIOptimizer:
    """Runs ``config.opt_stage_specs`` over a batch of videos with one body model on one device."""

    # torch.compile's ``dynamic``: symbolic clip length and batch size, so one compilation (minutes, cached
    # on disk by inductor) serves every video; False would recompile for each new length.
    compile_dynamic: bool | None = True

    def __init__(self, body: Any, config: OptimizationConfig, device: str | torch.device = "cpu"):
        self.body = body
        self.config = config
        self.device = torch.device(device)
        for stage_name, spec in config.opt_stage_specs.items():
            for term in spec.loss_cfg:
                if term not in TERM_FUNCTIONS:
                    raise OptimizerInputError(
                        f"optimization.opt_stage_specs.{stage_name}.loss_cfg.{term}: not implemented"
                    )

    # ------------------------------------------------------------------ variables and forward model
    def _init_variables(self, batch: _Batch) -> dict[str, torch.Tensor]:
        B, T, dev = batch.pose_init.shape[0], batch.num_frames, self.device
        J = batch.opt_joints.shape[0]
        shapes = {
            "human_trans_global": (B, 1, 3),
            "human_trans_res": (B, T, 3),
            "human_pose_res": (B, T, J, 3),
            "human_hand_pose_res": (B, T, batch.finger_joints.shape[0], 3),
            "obj_t_res": (B, T, 3),
            "obj_R_res": (B, T, 3),
        }
        return {name: torch.zeros(shape, device=dev, requires_grad=True) for name, shape in shapes.items()}

    def _human(self, batch: _Batch, var: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        B, T = batch.pose_init.shape[:2]
        pose = batch.pose_init.clone()
        pose[:, :, batch.opt_joints] = pose[:, :, batch.opt_joints] + var["human_pose_res"]
        pose[:, :, batch.finger_joints] = pose[:, :, batch.finger_joints] + var["human_hand_pose_res"]
        trans = batch.trans_init + var["human_trans_global"] + var["human_trans_res"]
        if batch.one_shape:
            posed = [batch.point_bodies[0](pose.reshape(B * T, *pose.shape[2:]), trans.reshape(B * T, 3))]
        else:  # one body shape per video: pose each video's frames with its own rest model
            posed = [batch.point_bodies[b](pose[b], trans[b]) for b in range(B)]
        points = torch.cat([p.points for p in posed]).reshape(B, T, -1, 3)
        keypoints = torch.cat([p.keypoints for p in posed]).reshape(B, T, -1, 3)
        joints = torch.cat([p.joints for p in posed]).reshape(B, T, -1, 3)
        num_hand = batch.hand_vertex_ids.numel()
        return {
            "pose": pose,
            "trans": trans,
            "keypoints": keypoints,
            "joints": joints[:, :, batch.opt_joints],
            "hands": points[:, :, :num_hand].reshape(B, T, 2, -1, 3),  # (B, T, 2, H, 3)
            "body_points": points[:, :, num_hand:],  # (B, T, P, 3)
            "feet": keypoints[:, :, batch.foot_keypoints],
        }

    def _object(self, batch: _Batch, var: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rotation = roma.rotvec_to_rotmat(var["obj_R_res"]) @ batch.obj_R_init
        translation = batch.obj_t_init + var["obj_t_res"]
        return {"R": rotation, "t": translation}

    # ------------------------------------------------------------------ losses
    def _terms(
        self, batch: _Batch, var: dict[str, torch.Tensor], loss_cfg: dict[str, LossTermConfig]
    ) -> dict[str, torch.Tensor]:
        """Unweighted value per term and video (B,)."""
        needs_human = any(t in HUMAN_TERMS for t in loss_cfg)
        needs_object = any(t in OBJECT_TERMS for t in loss_cfg)
        ctx = _TermContext(batch=batch, var=var)
        if needs_human:
            ctx.human = self._human(batch, var)
        if needs_object:
            ctx.obj = self._object(batch, var)
        return {name: TERM_FUNCTIONS[name](ctx, cfg) for name, cfg in loss_cfg.items()}

    # ------------------------------------------------------------------ main loop
    def run(
        self,
        videos: list[VideoInputs],
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        eval_cfg: dict[str, LossTermConfig] | None = None,
    ) -> list[OptimizationResult]:
        if not videos:
            return []
        start = time.perf_counter()
        torch.manual_seed(self.config.seed)
        batch = _Batch(videos, self.body, self.config, self.device)
        for v, ground in zip(videos, self._ground_heights(batch), strict=True):
            v.ground_z = float(ground) if v.ground_z is None else v.ground_z
        batch.ground_z = torch.tensor([v.ground_z for v in videos], device=self.device)
        var = self._init_variables(batch)
        stages = self.config.opt_stage_specs
        total_iters = max(1, sum(spec.niter for spec in stages.values()))
        done = 0
        history: list[list[dict[str, Any]]] = [[] for _ in videos]
        init_losses = final_losses = None
        for stage_name, spec in stages.items():
            stage_start = time.perf_counter()
            terms_hist = self._run_stage(batch, var, stage_name, spec, done, total_iters, progress, should_cancel)
            _check_finite(var, terms_hist, stage_name)
            done += spec.niter
            seconds = time.perf_counter() - stage_start
            for b in range(len(videos)):
                history[b].append(
                    {
                        "name": stage_name,
                        "niter": spec.niter,
                        "seconds": round(seconds, 3),
                        "weights": {t: c.weight for t, c in spec.loss_cfg.items()},
                        "terms": {t: values[:, b].tolist() for t, values in terms_hist.items() if t != "total"},
                        "total": terms_hist["total"][:, b].tolist() if "total" in terms_hist else [],
                    }
                )
            if terms_hist.get("total") is not None and terms_hist["total"].shape[0]:
                if init_losses is None:
                    init_losses = {t: v[0] for t, v in terms_hist.items()}
                final_losses = {t: v[-1] for t, v in terms_hist.items()}
        with torch.no_grad():
            human = self._human(batch, var)
            obj = self._object(batch, var)
            eval_values = self._terms(batch, var, eval_cfg) if eval_cfg else {}
        seconds = time.perf_counter() - start
        results = []
        for b, video in enumerate(videos):
            pose_world = torch.eye(4, device=self.device).repeat(batch.num_frames, 1, 1)
            pose_world[:, :3, :3] = obj["R"][b]
            pose_world[:, :3, 3] = obj["t"][b]
            results.append(
                OptimizationResult(
                    name=video.name,
                    body_pose=human["pose"][b].detach().cpu(),
                    body_shape=batch.shape[b].detach().cpu(),
                    body_trans=human["trans"][b].detach().cpu(),
                    obj_R=obj["R"][b].detach().cpu(),
                    obj_t=obj["t"][b].detach().cpu(),
                    obj_pose_cam=(batch.world_to_cam[b] @ pose_world).detach().cpu(),
                    history={
                        "stages": history[b],
                        "seconds": round(seconds, 3),
                        "batch_size": len(videos),
                        "inactive_terms": self._inactive(batch),
                    },  # fmt: skip
                    eval_data={n: float(eval_cfg[n].weight * v[b]) for n, v in eval_values.items()},
                    seconds=seconds / len(videos),
                    init_losses={t: float(v[b]) for t, v in (init_losses or {}).items()},
                    final_losses={t: float(v[b]) for t, v in (final_losses or {}).items()},
                )
            )
        logger.info("optimised %d video(s), %d frames, in %.1f s", len(videos), batch.num_frames, seconds)
        return results

    def _inactive(self, batch: _Batch) -> dict[str, str]:
        """Configured terms that measure nothing on this batch, with the reason."""
        used = {t for spec in self.config.opt_stage_specs.values() for t in spec.loss_cfg}
        return {t: why for t, why in batch.inactive_terms.items() if t in used}

    @torch.no_grad()
    def evaluate(self, video: VideoInputs, eval_cfg: dict[str, LossTermConfig]) -> dict[str, float]:
        """Weighted value of each ``eval`` metric (the reference's ``eval_data``) on the video's estimates as
        they are (no optimisation): what stage 5 compares with ``eval.<name>.threshold``. keypoint_tracking's
        2D errors are measured in percent of the person's image height (``losses.person_height_px``)."""
        if not eval_cfg:
            return {}
        for name in eval_cfg:
            if name not in TERM_FUNCTIONS:
                raise OptimizerInputError(f"eval.{name}: not implemented")
        batch = _Batch([video], self.body, self.config, self.device)
        ground = self._ground_heights(batch)
        batch.ground_z = torch.tensor([video.ground_z], device=self.device) if video.ground_z is not None else ground
        zero = {k: torch.zeros_like(v) for k, v in self._init_variables(batch).items()}
        values = self._terms(batch, zero, eval_cfg)
        if "keypoint_tracking" in values:
            # In percent of the person's image height, not pixels: a fixed threshold then means the same
            # fit quality at any resolution and camera distance (in px^2 the same ground-truth body scored
            # 5.2 close up, 1.5 farther away, against a threshold of 2).
            height = losses.person_height_px(batch.kp_target, batch.kp_conf, batch.hand_mask)
            values["keypoint_tracking"] = values["keypoint_tracking"] * (100.0 / height) ** 2
        return {name: float(eval_cfg[name].weight * values[name][0]) for name in eval_cfg}

    @torch.no_grad()
    def _ground_heights(self, batch: _Batch) -> torch.Tensor:
        """Ground height per video: a low percentile of the stage 1 feet (the floor they stand on)."""
        zero = {k: torch.zeros_like(v) for k, v in self._init_variables(batch).items()}
        feet = self._human(batch, zero)["feet"][..., 2]  # (B, T, 6)
        lowest = feet.min(-1).values
        return torch.quantile(lowest, 0.1, dim=-1)

    def _run_stage(
        self,
        batch: _Batch,
        var: dict[str, torch.Tensor],
        stage_name: str,
        spec: OptStageSpec,
        done: int,
        total_iters: int,
        progress: Callable[[float, str], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> dict[str, torch.Tensor]:
        groups, masks = [], {}
        for name, opt in spec.opt_vars.items():
            if name not in var:
                raise OptimizerInputError(f"opt_stage_specs.{stage_name}.opt_vars.{name}: unknown variable")
            groups.append({"params": [var[name]], "lr": opt.lr})
            mask = self._grad_mask(batch, name, opt)
            if mask is not None:
                masks[name] = mask
        term_names = list(spec.loss_cfg)
        weights = torch.tensor([spec.loss_cfg[t].weight for t in term_names], device=self.device)
        record = torch.zeros(spec.niter, len(term_names) + 1, batch.pose_init.shape[0], device=self.device)
        if not groups or spec.niter == 0 or not term_names:
            return {}
        use_graph = self.config.cuda_graph and self.device.type == "cuda"
        optimizer = torch.optim.Adam(groups, capturable=use_graph)

        def step_loss() -> tuple[torch.Tensor, torch.Tensor]:
            values = self._terms(batch, var, spec.loss_cfg)
            stacked = torch.stack([values[t] for t in term_names])  # (n_terms, B)
            weighted = stacked * weights[:, None]
            return weighted.sum(), weighted

        # Compiled, the ~1,000 small kernels of an iteration fuse into a few dozen; with the CUDA graph a
        # 120-frame video takes ~2 s on an H100 instead of ~25 s. On the CPU compiling costs more than it saves.
        # A batch of videos is GPU-bound already (16 videos: ~2.7 s each eager) and compiling its graph took
        # over 8 minutes on an H100: batches run eagerly.
        use_compile = self.config.compile and self.device.type == "cuda" and batch.pose_init.shape[0] == 1
        compute = torch.compile(step_loss, dynamic=self.compile_dynamic) if use_compile else step_loss

        def iteration() -> torch.Tensor:
            """One Adam step; no host synchronisation, so it can be captured in a CUDA graph."""
            total, weighted = compute()
            total.backward()
            for name, mask in masks.items():
                if var[name].grad is not None:
                    var[name].grad.mul_(mask)
            optimizer.step()
            return weighted.detach()

        graph, weighted_out = None, None
        side_stream = torch.cuda.Stream(self.device) if use_graph else None
        for it in range(spec.niter):
            if use_graph and it == GRAPH_WARMUP_ITERS:
                graph, weighted_out = self._capture(iteration, optimizer, side_stream, stage_name)
                use_graph = graph is not None  # a failed capture leaves the stage eager
            if graph is not None:
                graph.replay()
                weighted = weighted_out
            elif use_graph:  # warm-up on a side stream, as CUDA graph capture requires
                side_stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side_stream):
                    optimizer.zero_grad(set_to_none=True)
                    weighted = iteration()
                torch.cuda.current_stream(self.device).wait_stream(side_stream)
            else:
                optimizer.zero_grad(set_to_none=True)
                weighted = iteration()
            record[it, :-1] = weighted
            record[it, -1] = weighted.sum(0)
            if it % 25 == 0 or it == spec.niter - 1:
                if should_cancel is not None and should_cancel():
                    from reconstruction.stages.base import StageCancelled

                    raise StageCancelled(f"cancelled during {stage_name} iteration {it}")
                if progress is not None:
                    progress((done + it + 1) / total_iters, f"{stage_name} {it + 1}/{spec.niter}")
        record = record.cpu()
        out = {t: record[:, i] for i, t in enumerate(term_names)}
        out["total"] = record[:, -1]
        return out

    def _capture(
        self,
        iteration: Callable[[], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        side_stream: torch.cuda.Stream,
        stage_name: str,
    ) -> tuple[torch.cuda.CUDAGraph | None, torch.Tensor | None]:
        """Capture one whole iteration (forward, backward, Adam) in a CUDA graph: a replay launches it at
        once instead of ~1,000 small kernels one by one (a single video is launch-bound). Returns
        (None, None) when the iteration cannot be captured; the stage then runs eagerly."""
        torch.cuda.synchronize(self.device)
        optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=side_stream):
                weighted = iteration()
        except RuntimeError as exc:  # e.g. a body model that synchronises with the host
            logger.warning("%s: CUDA graph capture failed, running eagerly: %s", stage_name, exc)
            torch.cuda.synchronize(self.device)
            return None, None
        return graph, weighted

    def _grad_mask(self, batch: _Batch, name: str, opt: OptVarConfig) -> torch.Tensor | None:
        if name == "human_trans_global" and opt.xy_only:
            return torch.tensor([1.0, 1.0, 0.0], device=self.device)
        if name == "human_pose_res" and opt.arm_only:
            return batch.arm_joint_mask.float()[:, None]
        return None


# ---- term adapters: build each term's inputs from the current state ---------------------------------
@dataclass
class _TermContext:
    batch: _Batch
    var: dict[str, torch.Tensor]
    human: dict[str, torch.Tensor] | None = None
    obj: dict[str, torch.Tensor] | None = None
    hand_patches: dict[int, torch.Tensor] = field(default_factory=dict)  # _hand_points_near_object, per count

    def to_cam(self, points_world: torch.Tensor) -> torch.Tensor:
        """(B, T, ..., N, 3) world points -> camera frame with the per-frame extrinsics."""
        w2c = self.batch.world_to_cam
        extra = points_world.dim() - 4
        R, t = w2c[..., :3, :3], w2c[..., :3, 3]
        for _ in range(extra):
            R, t = R.unsqueeze(2), t.unsqueeze(2)
        return geometry.transform(points_world, R, t)

    def object_points(self, subset: int | None = None) -> torch.Tensor:
        samples = self.batch.obj_samples if subset is None else self.batch.obj_samples[:, :subset]
        return geometry.transform(samples[:, None], self.obj["R"], self.obj["t"])  # (B, T, N, 3)

    def object_normals(self, subset: int | None = None) -> torch.Tensor:
        """World-frame outward normals of ``object_points(subset)`` (B, T, N, 3)."""
        normals = self.batch.obj_normals if subset is None else self.batch.obj_normals[:, :subset]
        return normals[:, None] @ self.obj["R"].transpose(-1, -2)


def _t_keypoint_tracking(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    pred = project(ctx.to_cam(ctx.human["keypoints"]), ctx.batch.K)
    beta = 0.1 if cfg.beta is None else cfg.beta
    return losses.keypoint_tracking(pred, ctx.batch.kp_target, ctx.batch.kp_conf, ctx.batch.hand_mask, beta)


def _t_human_smoothness(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    return losses.human_smoothness(ctx.human["joints"], 0.1 if cfg.beta is None else cfg.beta)


def _t_human_pose_reg(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    return losses.human_pose_reg(ctx.var["human_pose_res"])


def _t_human_foot_contact(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    return losses.human_foot_contact(ctx.human["feet"], ctx.batch.ground_z, cfg.foot_height)


def _t_ground(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    return losses.ground(ctx.human["feet"], ctx.batch.ground_z)


def _t_reg(var_name: str) -> Callable[[_TermContext, LossTermConfig], torch.Tensor]:
    def term(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
        return losses.residual_reg(ctx.var[var_name].flatten(1, -2))

    return term


def _t_verts_tracking(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    verts = geometry.transform(ctx.batch.obj_track_verts[:, None], ctx.obj["R"], ctx.obj["t"])
    pred = project(ctx.to_cam(verts), ctx.batch.K)
    return losses.verts_tracking(pred, ctx.batch.obj_track_target, ctx.batch.tracked_weight)


def _t_obj_smoothness(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    return losses.obj_smoothness(ctx.object_points(subset=128), 0.0 if cfg.beta is None else cfg.beta)


def _rest_points(batch: _Batch, subset: int) -> torch.Tensor:
    """The first ``subset`` object samples at the known resting pose (B, subset, 3) (render config)."""
    return geometry.apply_homogeneous(batch.obj_samples[:, :subset], batch.rest_pose)


def _t_obj_precontact_reg(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    batch = ctx.batch
    rest = _rest_points(batch, 128)
    return losses.obj_precontact_reg(ctx.object_points(subset=128), batch.precontact, rest, batch.has_rest_pose)


def _t_obj_still_reg(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    batch = ctx.batch
    return losses.obj_still_reg(
        ctx.object_points(subset=128), batch.object_still, batch.still_start, _rest_points(batch, 128),
        batch.has_rest_pose,
    )  # fmt: skip


def _t_depth_pointcloud(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    batch = ctx.batch
    if batch.depth_obj is None:
        return batch.K.new_zeros(batch.K.shape[0])
    frames = slice(None, None, cfg.interval)
    obj_world = ctx.object_points(subset=DEPTH_OBJECT_SAMPLES)
    human_world = ctx.human["body_points"][:, :, ctx.batch.depth_body_points]
    # one joint z-buffer: a hand in front of the object hides the object's samples there
    both_cam = ctx.to_cam(torch.cat([obj_world, human_world], dim=2))
    visible = geometry.visible_points(both_cam, batch.K, batch.image_size, tol=max(cfg.depth_tol, 0.02))
    n_obj = obj_world.shape[2]
    total = losses.depth_pointcloud(
        obj_world[:, frames], visible[:, frames, :n_obj], batch.depth_obj[0][:, frames], batch.depth_obj[1][:, frames],
        cfg.trim_pct, cfg.depth_tol,
    )  # fmt: skip
    total = total + losses.depth_pointcloud(
        human_world[:, frames], visible[:, frames, n_obj:], batch.depth_human[0][:, frames],
        batch.depth_human[1][:, frames], cfg.trim_pct, cfg.depth_tol,
    )  # fmt: skip
    return total


def _contact_mask(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    return ctx.batch.contact_start if cfg.duration == "start" else ctx.batch.contact


def _hand_points_near_object(ctx: _TermContext, count: int) -> torch.Tensor:
    """Per frame and hand, the ``count`` hand vertices closest to the object's surface (B, T, 2, count, 3):
    a dense patch where the hand can touch, instead of a sparse cover of the whole hand. (Closest to the
    surface, not to the object's origin: a mesh's origin is often its base, and a hand gripping a bottle's
    neck then offered its lowest points, not those inside the bottle.)"""
    if count in ctx.hand_patches:  # one patch per iteration and count
        return ctx.hand_patches[count]
    hands = ctx.human["hands"]
    batch, frames, num_hands, num_points, _ = hands.shape
    with torch.no_grad():
        surface = ctx.object_points(subset=NEAR_SURFACE_SAMPLES)  # (B, T, N, 3)
        gap = torch.cdist(hands.reshape(batch, frames, num_hands * num_points, 3), surface).min(-1).values
        near = gap.reshape(batch, frames, num_hands, num_points).topk(count, dim=-1, largest=False).indices
    ctx.hand_patches[count] = hands.gather(3, near[..., None].expand(*near.shape, 3))
    return ctx.hand_patches[count]


def _t_contact(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    object_cam = ctx.to_cam(ctx.object_points(subset=CONTACT_SAMPLES))
    camera_rotation = ctx.batch.world_to_cam[..., :3, :3]  # (B, T, 3, 3)
    normals_cam = ctx.object_normals(subset=CONTACT_SAMPLES) @ camera_rotation.transpose(-1, -2)
    # partners on surfaces the camera sees or grazes (a hand grips a box's side face); not the back
    facing = ((normals_cam * object_cam).sum(-1) < BACK_FACE_COS * object_cam.norm(dim=-1)).detach()  # (B, T, N)
    return losses.contact(
        ctx.to_cam(_hand_points_near_object(ctx, CONTACT_POINTS_PER_HAND)),
        object_cam,
        _contact_mask(ctx, cfg),
        ctx.batch.K,
        depth_only=cfg.depth_only,
        max_contact_dist=cfg.max_contact_dist,
        contact_px=cfg.contact_px,
        huber_delta=cfg.huber_delta,
        object_facing=facing,
        object_normals_cam=normals_cam,
        sample_radius=ctx.batch.contact_sample_radius,
        palm_normals_cam=geometry.palm_normals(ctx.to_cam(ctx.human["keypoints"])).detach(),
        palm_facing_cos=PALM_FACING_COS,
    )


def _t_hand_grasp(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    tips = ctx.human["keypoints"][:, :, ctx.batch.fingertip_keypoints]  # (B, T, 2, 5, 3) world
    return losses.hand_grasp(
        tips, ctx.object_points(), ctx.object_normals(), _contact_mask(ctx, cfg), tip_gap=cfg.tip_gap,
        max_contact_dist=cfg.max_contact_dist, huber_delta=cfg.huber_delta,
    )  # fmt: skip


def _t_hand_pose_reg(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    return losses.hand_pose_reg(ctx.var["human_hand_pose_res"], 0.0 if cfg.beta is None else cfg.beta)


def _t_contact_smoothness(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    R, t = ctx.obj["R"], ctx.obj["t"]
    hands = ctx.human["hands"][:, :, :, ctx.batch.rigid_hand_points] - t[:, :, None, None, :]
    in_object = hands @ R[:, :, None]  # R^T x for row vectors: x @ R
    return losses.contact_smoothness(in_object, ctx.batch.contact)


def _t_penetration(ctx: _TermContext, cfg: LossTermConfig) -> torch.Tensor:
    # hoiweb: every posed body point (all the optimiser's hand vertices, the sparse body cover and the forearm
    # points, every frame) against the object's exact signed distance (a grid in its model frame). The earlier candidates (the 48
    # hand points nearest 128 sparse samples, the 32 body points nearest the object's origin) against an
    # SDF from 512 samples missed most of what the evaluation finds inside: palm and thumb points farther
    # from a sparse sample than points outside, a forearm along a box, a thumb under a bottle's shoulder
    # (the nearest samples, on the neck's wall inside the body, said "outside").
    batch = ctx.batch
    points = torch.cat([ctx.human["hands"].flatten(2, 3), ctx.human["body_points"]], dim=2)  # (B, T, P, 3)
    local = (points - ctx.obj["t"][:, :, None, :]) @ ctx.obj["R"]  # R^T (x - t) for row vectors
    sdf = losses.grid_signed_distance(local, batch.sdf_values, batch.sdf_origin, batch.sdf_cell)
    return losses.penetration_depth(sdf)


TERM_FUNCTIONS: dict[str, Callable[[_TermContext, LossTermConfig], torch.Tensor]] = {
    "keypoint_tracking": _t_keypoint_tracking,
    "human_smoothness": _t_human_smoothness,
    "human_pose_reg": _t_human_pose_reg,
    "human_foot_contact": _t_human_foot_contact,
    "ground": _t_ground,
    "human_global_init_reg": _t_reg("human_trans_global"),
    "human_traj_reg": _t_reg("human_trans_res"),
    "obj_traj_reg": _t_reg("obj_t_res"),
    "obj_rot_reg": _t_reg("obj_R_res"),
    "verts_tracking": _t_verts_tracking,
    "obj_smoothness": _t_obj_smoothness,
    "obj_precontact_reg": _t_obj_precontact_reg,
    "obj_still_reg": _t_obj_still_reg,
    "depth_pointcloud": _t_depth_pointcloud,
    "contact": _t_contact,
    "contact_smoothness": _t_contact_smoothness,
    "penetration": _t_penetration,
    "hand_grasp": _t_hand_grasp,
    "hand_pose_reg": _t_hand_pose_reg,
}
