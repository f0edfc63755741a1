"""The anny body model (NAVER's MakeHuman-derived parametric human) behind the ``BodyModel`` seam.

Conventions (shared with ground truth, fitting and the render config):

- World: metres, Z up. In the zero pose the person stands upright, faces -Y, and the person's LEFT side
  is +X (anny's ``*.L`` bones have positive x).
- Root: anny's bone 0 (``root``), whose head sits at the pelvis centre (the heads of ``pelvis.L/R`` and
  ``spine05`` coincide with it). ``trans`` is the world position of that head: ``joints[:, 0] == trans``
  exactly, whatever the pose or shape.
- Pose: ``pose_aa`` (T, 104, 3) axis-angle per bone, in anny's ``local-ref`` parameterisation: each bone's
  rotation relative to its parent, expressed in world-aligned axes of the zero pose (as SMPL does). Joint 0
  is the global orientation of the root. All zeros = anny's reference pose (standing, arms down at ~45 deg).
- Shape: 6 phenotype values in [0, 1]: gender, age, muscle, weight, height, proportions (anny's order).
- Keypoints: the 75 MediaPipe-order points of ``reconstruction.keypoints``, defined on the skeleton and
  mesh in ``ANNY_KEYPOINT_TABLE`` below.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import roma
import torch

from reconstruction.body.base import BodyOutput
from reconstruction.keypoints import ALL_KEYPOINTS

logger = logging.getLogger(__name__)

PHENOTYPE_LABELS: tuple[str, ...] = ("gender", "age", "muscle", "weight", "height", "proportions")
DEFAULT_SHAPE: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5)

# Keypoint definitions, in reconstruction.keypoints.ALL_KEYPOINTS order. A source is either
# ("bone", label): the posed head of that anny bone (a joint centre), or ("verts", (ids...)): the mean
# of those mesh vertices (surface points: face, heel, toe, finger tips). Vertex ids are for anny 0.6.2's
# default topology (13,718 vertices); they were chosen by geometric rules on the zero-pose mesh
# (see tests/test_body_models.py for the checks that keep them honest):
#   nose = front-most midline head vertex; eyes = front-most vertex of the cornea (eye_front segment);
#   eye inner/outer = most medial/lateral eyelid vertex around the eyeball; ears = lateral-most head vertex
#   2 cm below eye level; mouth corners = lateral-most front vertices of the mouth cavity; heel = 3 rear-most
#   sole vertices of foot.*; foot index = 3 front-most vertices of toe2-3.*; finger tips = 3 vertices of the
#   distal phalanx farthest along the finger.
# The 33 MediaPipe body points left/right_{pinky,index,thumb} are knuckles: pinky/index MCP, thumb IP.
ANNY_KEYPOINT_TABLE: tuple[tuple[str, tuple[str, str | tuple[int, ...]]], ...] = (
    ("nose", ("verts", (297,))),
    ("left_eye_inner", ("verts", (6874,))),
    ("left_eye", ("verts", (13583,))),
    ("left_eye_outer", ("verts", (6970,))),
    ("right_eye_inner", ("verts", (106,))),
    ("right_eye", ("verts", (13655,))),
    ("right_eye_outer", ("verts", (211,))),
    ("left_ear", ("verts", (12006,))),
    ("right_ear", ("verts", (5423,))),
    ("mouth_left", ("verts", (7286,))),
    ("mouth_right", ("verts", (561,))),
    ("left_shoulder", ("bone", "upperarm01.L")),
    ("right_shoulder", ("bone", "upperarm01.R")),
    ("left_elbow", ("bone", "lowerarm01.L")),
    ("right_elbow", ("bone", "lowerarm01.R")),
    ("left_wrist", ("bone", "wrist.L")),
    ("right_wrist", ("bone", "wrist.R")),
    ("left_pinky", ("bone", "finger5-1.L")),
    ("right_pinky", ("bone", "finger5-1.R")),
    ("left_index", ("bone", "finger2-1.L")),
    ("right_index", ("bone", "finger2-1.R")),
    ("left_thumb", ("bone", "finger1-3.L")),
    ("right_thumb", ("bone", "finger1-3.R")),
    ("left_hip", ("bone", "upperleg01.L")),
    ("right_hip", ("bone", "upperleg01.R")),
    ("left_knee", ("bone", "lowerleg01.L")),
    ("right_knee", ("bone", "lowerleg01.R")),
    ("left_ankle", ("bone", "foot.L")),
    ("right_ankle", ("bone", "foot.R")),
    ("left_heel", ("verts", (12783, 12879, 12882))),
    ("right_heel", ("verts", (6202, 6298, 6301))),
    ("left_foot_index", ("verts", (13101, 11596, 11592))),
    ("right_foot_index", ("verts", (6521, 4994, 4990))),
    # left hand (MediaPipe hand order); anny: finger1 = thumb (no metacarpal bone), finger2..5 hang
    # under metacarpal1..4.
    ("left_hand_wrist", ("bone", "wrist.L")),
    ("left_hand_thumb_cmc", ("bone", "finger1-1.L")),
    ("left_hand_thumb_mcp", ("bone", "finger1-2.L")),
    ("left_hand_thumb_ip", ("bone", "finger1-3.L")),
    ("left_hand_thumb_tip", ("verts", (9316, 9384, 9410))),
    ("left_hand_index_mcp", ("bone", "finger2-1.L")),
    ("left_hand_index_pip", ("bone", "finger2-2.L")),
    ("left_hand_index_dip", ("bone", "finger2-3.L")),
    ("left_hand_index_tip", ("verts", (8563, 8566, 8674))),
    ("left_hand_middle_mcp", ("bone", "finger3-1.L")),
    ("left_hand_middle_pip", ("bone", "finger3-2.L")),
    ("left_hand_middle_dip", ("bone", "finger3-3.L")),
    ("left_hand_middle_tip", ("verts", (8755, 8866, 8758))),
    ("left_hand_ring_mcp", ("bone", "finger4-1.L")),
    ("left_hand_ring_pip", ("bone", "finger4-2.L")),
    ("left_hand_ring_dip", ("bone", "finger4-3.L")),
    ("left_hand_ring_tip", ("verts", (8950, 9059, 8947))),
    ("left_hand_pinky_mcp", ("bone", "finger5-1.L")),
    ("left_hand_pinky_pip", ("bone", "finger5-2.L")),
    ("left_hand_pinky_dip", ("bone", "finger5-3.L")),
    ("left_hand_pinky_tip", ("verts", (9139, 9142, 9165))),
    # right hand
    ("right_hand_wrist", ("bone", "wrist.R")),
    ("right_hand_thumb_cmc", ("bone", "finger1-1.R")),
    ("right_hand_thumb_mcp", ("bone", "finger1-2.R")),
    ("right_hand_thumb_ip", ("bone", "finger1-3.R")),
    ("right_hand_thumb_tip", ("verts", (2664, 2732, 2758))),
    ("right_hand_index_mcp", ("bone", "finger2-1.R")),
    ("right_hand_index_pip", ("bone", "finger2-2.R")),
    ("right_hand_index_dip", ("bone", "finger2-3.R")),
    ("right_hand_index_tip", ("verts", (1911, 1914, 2022))),
    ("right_hand_middle_mcp", ("bone", "finger3-1.R")),
    ("right_hand_middle_pip", ("bone", "finger3-2.R")),
    ("right_hand_middle_dip", ("bone", "finger3-3.R")),
    ("right_hand_middle_tip", ("verts", (2103, 2214, 2106))),
    ("right_hand_ring_mcp", ("bone", "finger4-1.R")),
    ("right_hand_ring_pip", ("bone", "finger4-2.R")),
    ("right_hand_ring_dip", ("bone", "finger4-3.R")),
    ("right_hand_ring_tip", ("verts", (2298, 2407, 2295))),
    ("right_hand_pinky_mcp", ("bone", "finger5-1.R")),
    ("right_hand_pinky_pip", ("bone", "finger5-2.R")),
    ("right_hand_pinky_dip", ("bone", "finger5-3.R")),
    ("right_hand_pinky_tip", ("verts", (2487, 2490, 2513))),
)

# Bones whose skinning subtrees make the vertex segments.
_SEGMENT_ROOT_BONES = {"left_hand": "wrist.L", "right_hand": "wrist.R", "left_foot": "foot.L", "right_foot": "foot.R"}
_REST_CACHE_SIZE = 8


@dataclass
class _RestModel:
    vertices: torch.Tensor  # (B, V, 3) rest vertices
    bone_poses: torch.Tensor  # (B, J, 4, 4) rest bone poses
    skin_matrix: torch.Tensor | None = None  # sparse (V, 4J), see AnnyBody._skin_matrix (cached shapes only)


def _build_anny(dtype: torch.dtype):
    """anny's default full-body model (104 bones, local-ref pose parameters), plain LBS, in ``dtype``."""
    import anny  # deferred: importing anny is slow and only this model needs it

    with warnings.catch_warnings():
        # anny warns when it cannot find NVIDIA warp; we skin with plain LBS on purpose.
        warnings.simplefilter("ignore")
        model = anny.Anny(skinning_method="lbs", pose_parameterization="local-ref")
    return model.to(dtype=dtype)


class AnnyBody:
    """anny as a ``BodyModel``: batched over frames, differentiable wrt pose, shape and translation."""

    name = "anny"

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, _model=None):
        self.dtype = dtype
        self._model = _model if _model is not None else _build_anny(dtype)
        self._model = self._model.to(device=device)
        self._rest_cache: OrderedDict[tuple, _RestModel] = OrderedDict()
        model = self._model
        self.joint_names: list[str] = list(model.bone_labels)
        self.parents: list[int] = [int(p) for p in model.bone_parents]
        self.faces: torch.Tensor = model.faces.to(device=self.device, dtype=torch.long)
        self.num_shape = len(model.phenotype_labels)
        if tuple(model.phenotype_labels) != PHENOTYPE_LABELS:
            raise RuntimeError(f"anny phenotype labels changed: {model.phenotype_labels} != {PHENOTYPE_LABELS}")
        ref = model.reference_bone_orientations
        if ref is not None and not torch.allclose(ref[0], torch.eye(3, dtype=ref.dtype, device=ref.device)):
            # The root delta is then the root's world pose; a non-identity reference would conjugate it.
            raise RuntimeError("anny's root reference orientation is not the identity; trans would not be the root")
        self.num_vertices = int(model.template_vertices.shape[0])
        self._name_to_index = {n: i for i, n in enumerate(self.joint_names)}

        # Skinning weights (V, J), the dense form anny builds for plain LBS.
        self.skinning_weights: torch.Tensor = model.dense_vertex_bone_weights
        self.vertex_segments = {seg: self._subtree_vertices(bone) for seg, bone in _SEGMENT_ROOT_BONES.items()}
        self.left_hand_joints = [i for i in self.subtree("wrist.L") if i != self.joint_index("wrist.L")]
        self.right_hand_joints = [i for i in self.subtree("wrist.R") if i != self.joint_index("wrist.R")]
        self._build_keypoint_regressor()

    # ------------------------------------------------------------------ skeleton helpers
    @property
    def device(self) -> torch.device:
        return self._model.template_vertices.device

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def joint_index(self, name: str) -> int:
        """Index of an anny bone by label (e.g. ``"wrist.L"``)."""
        try:
            return self._name_to_index[name]
        except KeyError:
            raise KeyError(f"anny has no bone {name!r}; bones: {self.joint_names}") from None

    def subtree(self, name: str) -> list[int]:
        """Indices of a bone and all its descendants (sorted)."""
        members = {self.joint_index(name)}
        for i, parent in enumerate(self.parents):  # parents precede children in anny's order
            if parent in members:
                members.add(i)
        return sorted(members)

    def _subtree_vertices(self, bone: str) -> torch.Tensor:
        weight = self.skinning_weights[:, self.subtree(bone)].sum(dim=1)
        return torch.nonzero(weight >= 0.5).flatten()

    # ------------------------------------------------------------------ keypoints
    def _build_keypoint_regressor(self) -> None:
        names = [name for name, _ in ANNY_KEYPOINT_TABLE]
        if tuple(names) != ALL_KEYPOINTS:
            raise RuntimeError("ANNY_KEYPOINT_TABLE is not in reconstruction.keypoints.ALL_KEYPOINTS order")
        width = max(len(src) if kind == "verts" else 1 for _, (kind, src) in ANNY_KEYPOINT_TABLE)
        bone_index = torch.zeros(len(names), dtype=torch.long)
        is_bone = torch.zeros(len(names), dtype=torch.bool)
        vert_index = torch.zeros(len(names), width, dtype=torch.long)
        vert_weight = torch.zeros(len(names), width, dtype=self.dtype)
        for k, (_, (kind, src)) in enumerate(ANNY_KEYPOINT_TABLE):
            if kind == "bone":
                is_bone[k] = True
                bone_index[k] = self.joint_index(src)
            else:
                ids = torch.as_tensor(src, dtype=torch.long)
                if int(ids.max()) >= self.num_vertices:
                    raise RuntimeError(f"keypoint {names[k]}: vertex id out of range for this anny topology")
                vert_index[k, : len(ids)] = ids
                vert_weight[k, : len(ids)] = 1.0 / len(ids)
        self._kp_is_bone = is_bone.to(self.device)
        self._kp_bone_index = bone_index.to(self.device)
        self._kp_vert_index = vert_index.to(self.device)
        self._kp_vert_weight = vert_weight.to(self.device)

    def keypoints_from(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """(T, 75, 3) MediaPipe-order keypoints from posed vertices (T, V, 3) and bone heads (T, J, 3)."""
        from_bones = joints[:, self._kp_bone_index]
        from_verts = (vertices[:, self._kp_vert_index] * self._kp_vert_weight[None, :, :, None]).sum(dim=2)
        return torch.where(self._kp_is_bone[None, :, None], from_bones, from_verts)

    # ------------------------------------------------------------------ shape
    def _as_shape_batch(self, shape: torch.Tensor) -> torch.Tensor:
        shape = torch.as_tensor(shape, dtype=self.dtype, device=self.device)
        if shape.dim() == 1:
            shape = shape[None]
        if shape.dim() != 2 or shape.shape[1] != self.num_shape:
            raise ValueError(
                f"anny shape must be ({self.num_shape},) or (T, {self.num_shape}), got {tuple(shape.shape)}"
            )
        if shape.shape[0] > 1 and (
            shape.stride(0) == 0 or (not shape.requires_grad and bool((shape == shape[:1]).all()))
        ):
            shape = shape[:1]  # one body for all frames (an expanded or repeated row): one rest model
        return shape

    def _compute_rest(self, shape_batch: torch.Tensor) -> _RestModel:
        model = self._model
        empty = shape_batch.new_zeros(shape_batch.shape[0], 0)
        coeffs = model._get_phenotype_blendshape_coefficients(shape_batch, empty, empty)
        rest = model.get_rest_model(coeffs)
        return _RestModel(rest["rest_vertices"], rest["rest_bone_poses"])

    def rest_model(self, shape: torch.Tensor) -> _RestModel:
        """Rest vertices (B, V, 3) and rest bone poses (B, J, 4, 4) of a shape (S,) or (T, S).

        Shapes without gradient are cached with their sparse skinning matrix (the rest model is a
        blendshape sum plus 104 Procrustes fits; the matrix makes skinning one sparse matmul)."""
        shape_batch = self._as_shape_batch(shape)
        if shape_batch.requires_grad:
            return self._compute_rest(shape_batch)
        key = tuple(shape_batch.flatten().tolist())
        cached = self._rest_cache.get(key)
        if cached is None:
            # Plain no-grad tensors even inside an inference_mode block: a cached inference tensor would
            # break a later autograd caller (e.g. the optimiser after the scene generator in one process).
            with torch.inference_mode(False), torch.no_grad():
                cached = self._compute_rest(shape_batch.clone())
                if cached.vertices.shape[0] == 1:
                    cached.skin_matrix = self._skin_matrix(cached.vertices[0]).to_sparse().coalesce()
            self._rest_cache[key] = cached
            if len(self._rest_cache) > _REST_CACHE_SIZE:
                self._rest_cache.popitem(last=False)
        else:
            self._rest_cache.move_to_end(key)
        return cached

    def _skin_matrix(self, rest_vertices: torch.Tensor) -> torch.Tensor:
        """(V, 4J) matrix M with M[v, k*J + j] = w_vj * [x_v, 1]_k, so that the skinned vertex
        v' = sum_jk w_vj A_j[:, k] [x_v, 1]_k is one matmul of M with the stacked transform columns."""
        homogeneous = torch.cat([rest_vertices, rest_vertices.new_ones(rest_vertices.shape[0], 1)], dim=1)
        return (homogeneous[:, :, None] * self.skinning_weights[:, None, :]).reshape(rest_vertices.shape[0], -1)

    def _skin(self, rest: _RestModel, transforms: torch.Tensor) -> torch.Tensor:
        """Linear blend skinning of the rest vertices by bone transforms (T, J, 4, 4) -> (T, V, 3)."""
        num_frames, num_joints = transforms.shape[:2]
        if rest.vertices.shape[0] == 1:
            # (4J, 3T) transform columns; one (sparse) matmul skins every frame at once, never building the
            # (T, V, 3, 4) per-vertex blended transforms that dominate the naive LBS cost.
            columns = transforms[..., :3, :].permute(3, 1, 0, 2).reshape(4 * num_joints, 3 * num_frames)
            if rest.skin_matrix is not None:
                skinned = torch.sparse.mm(rest.skin_matrix, columns)
            else:  # shape under optimisation: dense matrix, differentiable wrt the rest vertices
                skinned = self._skin_matrix(rest.vertices[0]) @ columns
            return skinned.reshape(-1, num_frames, 3).permute(1, 0, 2)
        # One body per frame: blend the transforms per vertex.
        blend = torch.einsum("vj,tjik->tvik", self.skinning_weights, transforms[..., :3, :])
        return (blend[..., :3] * rest.vertices[:, :, None, :]).sum(-1) + blend[..., 3]

    # ------------------------------------------------------------------ forward
    def forward(self, pose_aa: torch.Tensor, shape: torch.Tensor, trans: torch.Tensor) -> BodyOutput:
        """pose_aa (T, 104, 3), shape (6,) or (T, 6), trans (T, 3) -> vertices, bone heads, keypoints."""
        num_joints = self.num_joints
        if pose_aa.dim() != 3 or pose_aa.shape[1:] != (num_joints, 3):
            raise ValueError(f"anny pose_aa must be (T, {num_joints}, 3), got {tuple(pose_aa.shape)}")
        num_frames = pose_aa.shape[0]
        if trans.shape != (num_frames, 3):
            raise ValueError(f"anny trans must be ({num_frames}, 3), got {tuple(trans.shape)}")
        pose_aa = pose_aa.to(device=self.device, dtype=self.dtype)
        trans = trans.to(device=self.device, dtype=self.dtype)
        rest = self.rest_model(shape)
        if rest.vertices.shape[0] not in (1, num_frames):
            raise ValueError(f"anny shape has {rest.vertices.shape[0]} rows for {num_frames} frames")
        return self._posed(pose_aa, trans, rest)

    __call__ = forward

    def _posed(self, pose_aa: torch.Tensor, trans: torch.Tensor, rest: _RestModel) -> BodyOutput:
        num_frames, num_joints = pose_aa.shape[:2]
        rotations = roma.rotvec_to_rotmat(pose_aa)  # (T, J, 3, 3)
        # Only the root delta carries a translation: in local-ref its delta is its world pose.
        offsets = torch.cat([trans[:, None], trans.new_zeros(num_frames, num_joints - 1, 3)], dim=1)
        deltas = roma.Rigid(rotations, offsets).to_homogeneous()
        transforms, bone_poses = self._model.get_bone_transforms(deltas, rest.bone_poses)
        vertices = self._skin(rest, transforms)
        joints = bone_poses[..., :3, 3]
        return BodyOutput(vertices=vertices, joints=joints, keypoints=self.keypoints_from(vertices, joints))

    # ------------------------------------------------------------------ protocol helpers
    def rest_pose(self, num_frames: int = 1) -> torch.Tensor:
        """(T, 104, 3) zeros: anny's reference pose, standing upright facing -Y."""
        return torch.zeros(num_frames, self.num_joints, 3, dtype=self.dtype, device=self.device)

    def default_shape(self) -> torch.Tensor:
        return torch.tensor(DEFAULT_SHAPE, dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def standing_extent(self, shape: torch.Tensor) -> tuple[float, float]:
        """(min z, max z) of the zero-pose mesh with the root at the origin, in metres."""
        zero = torch.zeros(1, 3, dtype=self.dtype, device=self.device)
        # Uncached rest model: height searches try many shapes that should not evict the working ones.
        rest = self._compute_rest(self._as_shape_batch(shape)[:1])
        z = self._posed(self.rest_pose(1), zero, rest).vertices[0, :, 2]
        return float(z.min()), float(z.max())

    def standing_height(self, shape: torch.Tensor) -> float:
        """Standing height (max z - min z of the zero-pose mesh), metres."""
        low, high = self.standing_extent(shape)
        return high - low

    def root_height_standing(self, shape: torch.Tensor) -> float:
        """Height of the root above the soles in the zero pose: ``trans.z`` that puts the feet on z = 0."""
        return -self.standing_extent(shape)[0]

    def shape_for_height(self, height_m: float, base_shape: torch.Tensor | None = None) -> torch.Tensor:
        """A shape (6,) whose standing height is ``height_m``: ``base_shape`` (default all 0.5) with its
        ``height`` phenotype solved by bisection (standing height grows monotonically with it)."""
        shape = self.default_shape() if base_shape is None else torch.as_tensor(base_shape, dtype=self.dtype).clone()
        shape = shape.to(self.device)
        slot = PHENOTYPE_LABELS.index("height")

        def height_at(value: float) -> float:
            trial = shape.clone()
            trial[slot] = value
            return self.standing_height(trial)

        low, high = 0.0, 1.0
        h_low, h_high = height_at(low), height_at(high)
        if not h_low - 1e-4 <= height_m <= h_high + 1e-4:
            raise ValueError(
                f"height {height_m:.3f} m is outside what anny reaches for this body ({h_low:.3f}-{h_high:.3f} m)"
            )
        for _ in range(30):  # 2^-30 of the phenotype range: far below a millimetre
            mid = 0.5 * (low + high)
            if height_at(mid) < height_m:
                low = mid
            else:
                high = mid
        shape[slot] = 0.5 * (low + high)
        return shape

    def to(self, device: str | torch.device) -> AnnyBody:
        """This model on ``device`` (a copy when the device differs; the original is left where it was)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return AnnyBody(device=device, dtype=self.dtype, _model=copy.deepcopy(self._model))
