"""SMPL-X (PyPI ``smplx`` 0.1.28, licensed model files) behind the ``BodyModel`` seam.

The engine's world is Z-up; SMPL-X's own frame is Y-up and faces +Z. This wrapper makes both body models
interchangeable:

- Zero pose stands upright in the Z-up world, facing -Y, the person's left side at +X (as anny).
- ``pose_aa`` (T, 55, 3) in SMPL-X's joint order: global orient, 21 body joints, jaw, left eye, right eye,
  15 left-hand joints, 15 right-hand joints. Joint 0 is the root rotation in WORLD axes, applied on top of
  the standing pose; the other joints are SMPL-X's usual parent-relative rotations. SMPL-X's native
  ``global_orient`` (Y-up frame) is ``native_global_orient(pose_aa[:, 0])``.
- ``trans`` is the world position of the root joint (the pelvis): ``joints[:, 0] == trans``. SMPL-X's native
  ``transl`` differs by the shaped rest pelvis; see ``native_transl``.
- ``shape`` = betas (``num_betas``, default 10); expressions are zero.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import roma
import torch

from reconstruction.body.base import BodyOutput, StandingHeightMixin
from reconstruction.body.solve import solve_monotonic
from reconstruction.keypoints import ALL_KEYPOINTS

logger = logging.getLogger(__name__)

SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw",
    "left_eye_smplhf", "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2", "left_middle3",
    "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2", "right_middle3",
    "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1", "right_ring2", "right_ring3",
    "right_thumb1", "right_thumb2", "right_thumb3",
)  # fmt: skip
NUM_SMPLX_VERTICES = 10475

# Keypoints in reconstruction.keypoints.ALL_KEYPOINTS order. Sources: ("joint", SMPL-X joint name),
# ("vertex", id) (smplx.vertex_ids' OpenPose/COCO vertices: nose, eyes, ears, toes, heels, finger tips), or
# ("landmark", i): the i-th of SMPL-X's 51 static face landmarks (iBUG-68 points 17..67, barycentric on the
# mesh; eye corners 36/39/42/45 -> 19/22/25/28, mouth corners 48/54 -> 31/37).
SMPLX_KEYPOINT_TABLE: tuple[tuple[str, tuple[str, str | int]], ...] = (
    ("nose", ("vertex", 9120)),
    ("left_eye_inner", ("landmark", 25)),
    ("left_eye", ("vertex", 9448)),
    ("left_eye_outer", ("landmark", 28)),
    ("right_eye_inner", ("landmark", 22)),
    ("right_eye", ("vertex", 9929)),
    ("right_eye_outer", ("landmark", 19)),
    ("left_ear", ("vertex", 6)),
    ("right_ear", ("vertex", 616)),
    ("mouth_left", ("landmark", 37)),
    ("mouth_right", ("landmark", 31)),
    ("left_shoulder", ("joint", "left_shoulder")),
    ("right_shoulder", ("joint", "right_shoulder")),
    ("left_elbow", ("joint", "left_elbow")),
    ("right_elbow", ("joint", "right_elbow")),
    ("left_wrist", ("joint", "left_wrist")),
    ("right_wrist", ("joint", "right_wrist")),
    ("left_pinky", ("joint", "left_pinky1")),
    ("right_pinky", ("joint", "right_pinky1")),
    ("left_index", ("joint", "left_index1")),
    ("right_index", ("joint", "right_index1")),
    ("left_thumb", ("joint", "left_thumb2")),
    ("right_thumb", ("joint", "right_thumb2")),
    ("left_hip", ("joint", "left_hip")),
    ("right_hip", ("joint", "right_hip")),
    ("left_knee", ("joint", "left_knee")),
    ("right_knee", ("joint", "right_knee")),
    ("left_ankle", ("joint", "left_ankle")),
    ("right_ankle", ("joint", "right_ankle")),
    ("left_heel", ("vertex", 8846)),
    ("right_heel", ("vertex", 8635)),
    ("left_foot_index", ("vertex", 5770)),
    ("right_foot_index", ("vertex", 8463)),
    ("left_hand_wrist", ("joint", "left_wrist")),
    ("left_hand_thumb_cmc", ("joint", "left_thumb1")),
    ("left_hand_thumb_mcp", ("joint", "left_thumb2")),
    ("left_hand_thumb_ip", ("joint", "left_thumb3")),
    ("left_hand_thumb_tip", ("vertex", 5361)),
    ("left_hand_index_mcp", ("joint", "left_index1")),
    ("left_hand_index_pip", ("joint", "left_index2")),
    ("left_hand_index_dip", ("joint", "left_index3")),
    ("left_hand_index_tip", ("vertex", 4933)),
    ("left_hand_middle_mcp", ("joint", "left_middle1")),
    ("left_hand_middle_pip", ("joint", "left_middle2")),
    ("left_hand_middle_dip", ("joint", "left_middle3")),
    ("left_hand_middle_tip", ("vertex", 5058)),
    ("left_hand_ring_mcp", ("joint", "left_ring1")),
    ("left_hand_ring_pip", ("joint", "left_ring2")),
    ("left_hand_ring_dip", ("joint", "left_ring3")),
    ("left_hand_ring_tip", ("vertex", 5169)),
    ("left_hand_pinky_mcp", ("joint", "left_pinky1")),
    ("left_hand_pinky_pip", ("joint", "left_pinky2")),
    ("left_hand_pinky_dip", ("joint", "left_pinky3")),
    ("left_hand_pinky_tip", ("vertex", 5286)),
    ("right_hand_wrist", ("joint", "right_wrist")),
    ("right_hand_thumb_cmc", ("joint", "right_thumb1")),
    ("right_hand_thumb_mcp", ("joint", "right_thumb2")),
    ("right_hand_thumb_ip", ("joint", "right_thumb3")),
    ("right_hand_thumb_tip", ("vertex", 8079)),
    ("right_hand_index_mcp", ("joint", "right_index1")),
    ("right_hand_index_pip", ("joint", "right_index2")),
    ("right_hand_index_dip", ("joint", "right_index3")),
    ("right_hand_index_tip", ("vertex", 7669)),
    ("right_hand_middle_mcp", ("joint", "right_middle1")),
    ("right_hand_middle_pip", ("joint", "right_middle2")),
    ("right_hand_middle_dip", ("joint", "right_middle3")),
    ("right_hand_middle_tip", ("vertex", 7794)),
    ("right_hand_ring_mcp", ("joint", "right_ring1")),
    ("right_hand_ring_pip", ("joint", "right_ring2")),
    ("right_hand_ring_dip", ("joint", "right_ring3")),
    ("right_hand_ring_tip", ("vertex", 7905)),
    ("right_hand_pinky_mcp", ("joint", "right_pinky1")),
    ("right_hand_pinky_pip", ("joint", "right_pinky2")),
    ("right_hand_pinky_dip", ("joint", "right_pinky3")),
    ("right_hand_pinky_tip", ("vertex", 8022)),
)

# SMPL-X's Y-up frame -> the engine's Z-up world: +90 deg about x (y -> z, z -> -y).
_Y_UP_TO_Z_UP = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))
_SEGMENT_JOINTS = {
    "left_hand": ("left_wrist", "left_"),
    "right_hand": ("right_wrist", "right_"),
    "left_foot": ("left_ankle", None),
    "right_foot": ("right_ankle", None),
}


def find_smplx_file(model_dir: str | os.PathLike, gender: str = "neutral") -> tuple[Path, str]:
    """The SMPL-X model file of ``gender`` in ``model_dir`` (``SMPLX_<GENDER>.npz`` or ``.pkl``, also under a
    ``smplx/`` subfolder) and its extension; a clear error naming ``SMPLX_MODEL_DIR`` when absent."""
    from reconstruction.body import SMPLX_MODEL_DIR_ENV, BodyModelError

    model_dir = Path(model_dir)
    if model_dir.is_file():
        return model_dir, model_dir.suffix.lstrip(".")
    names = [f"SMPLX_{gender.upper()}.npz", f"SMPLX_{gender.upper()}.pkl"]
    for folder in (model_dir, model_dir / "smplx"):
        for name in names:
            if (folder / name).is_file():
                return folder / name, name.rsplit(".", 1)[1]
    raise BodyModelError(
        f"no SMPL-X model file ({' or '.join(names)}) in {model_dir} (from {SMPLX_MODEL_DIR_ENV} or model_dir)"
    )


class SmplxBody(StandingHeightMixin):
    """SMPL-X as a ``BodyModel``: batched over frames, differentiable wrt pose, betas and translation."""

    name = "smplx"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        gender: str = "neutral",
        num_betas: int = 10,
        dtype: torch.dtype = torch.float32,
    ):
        import smplx  # optional dependency: only this model needs it

        from reconstruction.body import BodyModelError

        path, ext = find_smplx_file(model_dir, gender)
        try:
            layer = smplx.SMPLXLayer(
                model_path=str(path), gender=gender, num_betas=num_betas, use_pca=False, ext=ext, dtype=dtype
            )
        except (KeyError, AttributeError, ValueError) as error:
            raise BodyModelError(f"{path} is not a valid SMPL-X model file: {error!r}") from error
        self.model_path = path
        self.gender = gender
        self.dtype = dtype
        self._layer = layer.to(device)
        num_vertices = int(layer.v_template.shape[0])
        if num_vertices != NUM_SMPLX_VERTICES or layer.J_regressor.shape[0] != len(SMPLX_JOINT_NAMES):
            raise BodyModelError(
                f"{path}: expected SMPL-X with {NUM_SMPLX_VERTICES} vertices and {len(SMPLX_JOINT_NAMES)} joints, "
                f"got {num_vertices} and {layer.J_regressor.shape[0]}"
            )
        self.num_vertices = num_vertices
        self.joint_names = list(SMPLX_JOINT_NAMES)
        self.parents = [int(p) for p in layer.parents.tolist()]
        self.num_shape = int(layer.num_betas)
        self.faces = layer.faces_tensor.to(device=self.device, dtype=torch.long)
        self._up = torch.tensor(_Y_UP_TO_Z_UP, dtype=dtype, device=self.device)
        self.left_hand_joints = list(range(25, 40))
        self.right_hand_joints = list(range(40, 55))
        self.vertex_segments = {seg: self._segment_vertices(seg) for seg in _SEGMENT_JOINTS}
        for side in ("left", "right"):  # the lower arm: skinned to the elbow joint
            weight = self._layer.lbs_weights[:, self.joint_index(f"{side}_elbow")]
            self.vertex_segments[f"{side}_forearm"] = torch.nonzero(weight >= 0.5).flatten()
        self._build_keypoint_regressor()
        logger.info("SMPL-X (%s) loaded from %s on %s", gender, path, self.device)

    @property
    def device(self) -> torch.device:
        return self._layer.v_template.device

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def joint_index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"SMPL-X has no joint {name!r}") from None

    def _segment_vertices(self, segment: str) -> torch.Tensor:
        root, finger_prefix = _SEGMENT_JOINTS[segment]
        joints = [self.joint_index(root)]
        if finger_prefix is not None:
            joints += self.left_hand_joints if finger_prefix == "left_" else self.right_hand_joints
        else:
            joints.append(self.joint_index(root.replace("ankle", "foot")))
        weight = self._layer.lbs_weights[:, joints].sum(dim=1)
        return torch.nonzero(weight >= 0.5).flatten()

    def _build_keypoint_regressor(self) -> None:
        if tuple(name for name, _ in SMPLX_KEYPOINT_TABLE) != ALL_KEYPOINTS:
            raise RuntimeError("SMPLX_KEYPOINT_TABLE is not in reconstruction.keypoints.ALL_KEYPOINTS order")
        count = len(SMPLX_KEYPOINT_TABLE)
        is_joint = torch.zeros(count, dtype=torch.bool)
        joint_index = torch.zeros(count, dtype=torch.long)
        vert_index = torch.zeros(count, 3, dtype=torch.long)
        vert_weight = torch.zeros(count, 3, dtype=self.dtype)
        faces = self._layer.faces_tensor.cpu()
        lmk_faces = self._layer.lmk_faces_idx.cpu()
        lmk_bary = self._layer.lmk_bary_coords.cpu()
        for k, (_, (kind, src)) in enumerate(SMPLX_KEYPOINT_TABLE):
            if kind == "joint":
                is_joint[k] = True
                joint_index[k] = self.joint_index(src)
            elif kind == "vertex":
                vert_index[k, 0] = src
                vert_weight[k, 0] = 1.0
            else:  # landmark: barycentric point of a face
                vert_index[k] = faces[lmk_faces[src]]
                vert_weight[k] = lmk_bary[src].to(self.dtype)
        self._kp_is_joint = is_joint.to(self.device)
        self._kp_joint_index = joint_index.to(self.device)
        self._kp_vert_index = vert_index.to(self.device)
        self._kp_vert_weight = vert_weight.to(self.device)

    def keypoints_from(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        from_joints = joints[:, self._kp_joint_index]
        from_verts = (vertices[:, self._kp_vert_index] * self._kp_vert_weight[None, :, :, None]).sum(dim=2)
        return torch.where(self._kp_is_joint[None, :, None], from_joints, from_verts)

    def _betas(self, shape: torch.Tensor, num_frames: int) -> torch.Tensor:
        betas = torch.as_tensor(shape, dtype=self.dtype, device=self.device)
        if betas.dim() == 1:
            betas = betas[None]
        if betas.dim() != 2 or betas.shape[1] != self.num_shape or betas.shape[0] not in (1, num_frames):
            raise ValueError(
                f"SMPL-X shape must be ({self.num_shape},) or (T, {self.num_shape}), got {tuple(betas.shape)}"
            )
        return betas.expand(num_frames, -1)

    def _native_lbs(self, rotations: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SMPL-X's LBS with rotation matrices (T, 55, 3, 3), zero expression: vertices and joints."""
        from smplx.lbs import lbs

        layer = self._layer
        shape_components = torch.cat([betas, betas.new_zeros(betas.shape[0], layer.num_expression_coeffs)], dim=1)
        shapedirs = torch.cat([layer.shapedirs, layer.expr_dirs], dim=-1)
        return lbs(
            shape_components, rotations, layer.v_template, shapedirs, layer.posedirs, layer.J_regressor,
            layer.parents, layer.lbs_weights, pose2rot=False,
        )  # fmt: skip

    def forward(
        self,
        pose_aa: torch.Tensor,
        shape: torch.Tensor,
        trans: torch.Tensor,
        vertex_ids: torch.Tensor | None = None,
    ) -> BodyOutput:
        """pose_aa (T, 55, 3), shape (B,) or (T, B), trans (T, 3) -> vertices, 55 joints, keypoints (world).
        ``vertex_ids`` (N,): return only those vertices (SMPL-X skins them all anyway)."""
        if pose_aa.dim() != 3 or pose_aa.shape[1:] != (self.num_joints, 3):
            raise ValueError(f"SMPL-X pose_aa must be (T, {self.num_joints}, 3), got {tuple(pose_aa.shape)}")
        num_frames = pose_aa.shape[0]
        if trans.shape != (num_frames, 3):
            raise ValueError(f"SMPL-X trans must be ({num_frames}, 3), got {tuple(trans.shape)}")
        pose_aa = pose_aa.to(device=self.device, dtype=self.dtype)
        trans = trans.to(device=self.device, dtype=self.dtype)
        rotations = roma.rotvec_to_rotmat(pose_aa)
        # World root rotation on top of the Y-up -> Z-up change, so zero pose stands in the Z-up world.
        root = rotations[:, :1] @ self._up
        rotations = torch.cat([root, rotations[:, 1:]], dim=1)
        vertices, joints = self._native_lbs(rotations, self._betas(shape, num_frames))
        # LBS keeps the pelvis at its shaped rest position; move it to trans.
        offset = trans[:, None] - joints[:, :1]
        vertices = vertices + offset
        joints = joints + offset
        keypoints = self.keypoints_from(vertices, joints)
        if vertex_ids is not None:
            vertices = vertices[:, torch.as_tensor(vertex_ids, dtype=torch.long, device=self.device)]
        return BodyOutput(vertices=vertices, joints=joints, keypoints=keypoints)

    __call__ = forward

    def bind(self, shape: torch.Tensor, vertex_ids: torch.Tensor | None = None):
        """``forward`` for one fixed shape (S,) and vertex subset (SMPL-X's forward needs no host sync)."""
        shape = torch.as_tensor(shape, dtype=self.dtype, device=self.device).detach()
        if vertex_ids is not None:
            vertex_ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=self.device)
        return lambda pose_aa, trans: self.forward(pose_aa, shape, trans, vertex_ids=vertex_ids)

    def rest_pose(self, num_frames: int = 1) -> torch.Tensor:
        """(T, 55, 3) zeros: standing upright (T-pose arms) in the Z-up world."""
        return torch.zeros(num_frames, self.num_joints, 3, dtype=self.dtype, device=self.device)

    def default_shape(self) -> torch.Tensor:
        return torch.zeros(self.num_shape, dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def standing_extent(self, shape: torch.Tensor) -> tuple[float, float]:
        zero = torch.zeros(1, 3, dtype=self.dtype, device=self.device)
        z = self.forward(self.rest_pose(1), shape, zero).vertices[0, :, 2]
        return float(z.min()), float(z.max())

    def shape_for_height(self, height_m: float, base_shape: torch.Tensor | None = None) -> torch.Tensor:
        """Betas whose standing height is ``height_m``: ``base_shape`` (default zeros) with beta 0 solved by
        in [-5, 5] (the first SMPL-X component is mostly body size)."""
        betas = self.default_shape() if base_shape is None else torch.as_tensor(base_shape, dtype=self.dtype).clone()
        betas = betas.to(self.device)

        def height_at(value: float) -> float:
            trial = betas.clone()
            trial[0] = value
            return self.standing_height(trial)

        try:
            value, _, _ = solve_monotonic(height_at, height_m, -5.0, 5.0)
        except ValueError as error:
            raise ValueError(f"this SMPL-X cannot stand {height_m:.3f} m tall: {error}") from None
        betas[0] = value
        return betas

    def native_global_orient(self, root_aa: torch.Tensor) -> torch.Tensor:
        """SMPL-X's own global_orient (axis-angle, Y-up frame) for world root rotations ``root_aa`` (T, 3),
        when the Y-up frame is mapped to the world by the fixed +90 deg x rotation."""
        world = roma.rotvec_to_rotmat(root_aa.to(self._up))
        return roma.rotmat_to_rotvec(self._up.T @ world @ self._up)

    @torch.no_grad()
    def native_transl(self, shape: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """SMPL-X's own ``transl`` (Y-up frame, mapped to the world by the fixed +90 deg x rotation) for root
        positions ``trans`` (T, 3): the root in that frame minus the shaped rest pelvis."""
        betas = self._betas(shape, 1)
        pelvis = self._layer.J_regressor[0] @ (
            self._layer.v_template + torch.einsum("bl,vcl->bvc", betas, self._layer.shapedirs)[0]
        )
        return trans.to(self._up) @ self._up - pelvis

    def to(self, device: str | torch.device) -> SmplxBody:
        """This model on ``device`` (a new instance when the device differs)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return SmplxBody(self.model_path, device=device, gender=self.gender, num_betas=self.num_shape, dtype=self.dtype)
