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

from reconstruction.body.base import BodyOutput, StandingHeightMixin
from reconstruction.body.solve import solve_monotonic
from reconstruction.keypoints import ALL_KEYPOINTS

logger = logging.getLogger(__name__)

PHENOTYPE_LABELS: tuple[str, ...] = ("gender", "age", "muscle", "weight", "height", "proportions")
DEFAULT_SHAPE: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5)

# Keypoint definitions, in reconstruction.keypoints.ALL_KEYPOINTS order. A source is one of
#   ("bone", label): the posed head of that anny bone (a joint centre);
#   ("verts", (ids...)): the mean of those mesh vertices (surface points: face, toes, finger tips);
#   ("coco", label): anny's own COCO keypoint regressor (vertex weights shipped in anny/data/keypoints),
#       used where 2D detectors' conventions differ from the bone heads. Checked with
#       benchmarks/body_keypoints_vs_mediapipe.py: against MediaPipe Pose on renders, the COCO shoulders,
#       elbows, hips, ankles, heels and ears are 30-60 % closer than the bone heads / single vertices
#       (e.g. ankle 7.6 -> 3 px, hip 6 -> 3.5 px at a 105 px torso); knees and wrists are better as bones.
# Vertex ids are for anny 0.6.2's default topology (13,718 vertices); they were chosen by geometric rules
# on the zero-pose mesh (tests/test_body_models.py keeps them honest):
#   nose = front-most midline head vertex; eyes = front-most vertex of the cornea (eye_front segment);
#   eye inner/outer = most medial/lateral eyelid vertex around the eyeball; mouth corners = lateral-most
#   front vertices of the mouth cavity; foot index = 3 front-most vertices of toe2-3.*; finger tips = 3
#   vertices of the distal phalanx farthest along the finger.
# MediaPipe's body left/right_{pinky,index,thumb} are knuckles ("pinky #1", "index #1", "thumb #2"): the
# pinky, index and thumb MCP (MediaPipe places them loosely, 3-8 px from any knuckle in the benchmark).
# The hand wrist and the body wrist are both the wrist bone head, so body and hand fits agree.
ANNY_KEYPOINT_TABLE: tuple[tuple[str, tuple[str, str | tuple[int, ...]]], ...] = (
    ("nose", ("verts", (297,))),
    ("left_eye_inner", ("verts", (6874,))),
    ("left_eye", ("verts", (13583,))),
    ("left_eye_outer", ("verts", (6970,))),
    ("right_eye_inner", ("verts", (106,))),
    ("right_eye", ("verts", (13655,))),
    ("right_eye_outer", ("verts", (211,))),
    ("left_ear", ("coco", "left_ear")),
    ("right_ear", ("coco", "right_ear")),
    ("mouth_left", ("verts", (7286,))),
    ("mouth_right", ("verts", (561,))),
    ("left_shoulder", ("coco", "left_shoulder")),
    ("right_shoulder", ("coco", "right_shoulder")),
    ("left_elbow", ("coco", "left_elbow")),
    ("right_elbow", ("coco", "right_elbow")),
    ("left_wrist", ("bone", "wrist.L")),
    ("right_wrist", ("bone", "wrist.R")),
    ("left_pinky", ("bone", "finger5-1.L")),
    ("right_pinky", ("bone", "finger5-1.R")),
    ("left_index", ("bone", "finger2-1.L")),
    ("right_index", ("bone", "finger2-1.R")),
    ("left_thumb", ("bone", "finger1-2.L")),
    ("right_thumb", ("bone", "finger1-2.R")),
    ("left_hip", ("coco", "left_hip")),
    ("right_hip", ("coco", "right_hip")),
    ("left_knee", ("bone", "lowerleg01.L")),
    ("right_knee", ("bone", "lowerleg01.R")),
    ("left_ankle", ("coco", "left_ankle")),
    ("right_ankle", ("coco", "right_ankle")),
    ("left_heel", ("coco", "left_heel")),
    ("right_heel", ("coco", "right_heel")),
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
    """What forward kinematics and skinning need of one body shape (B = 1, or one row per frame)."""

    vertices: torch.Tensor  # (B, V, 3) rest vertices
    heads: torch.Tensor  # (B, J, 3) rest bone heads h_c
    offsets: torch.Tensor  # (B, J, 3) reference-pose head offsets from the parent head, o_c (root: 0)
    rest_to_reference: torch.Tensor  # (B, J, 3, 3) U_c R_c^T: rest -> reference bone orientation
    skin_matrix: torch.Tensor | None = None  # sparse CSR (V, 4J), see AnnyBody._skin_matrix (cached shapes only)
    skin_matrix_t: torch.Tensor | None = None  # its transpose, CSR too (for the backward pass)
    keypoint_skin: torch.Tensor | None = None  # dense (75, 4J) = keypoint regressor @ skin matrix


class _SparseMatmul(torch.autograd.Function):
    """M @ X for a constant sparse CSR matrix M, with the backward M^T @ G using a prebuilt CSR transpose
    (torch.sparse.mm would transpose and coalesce a COO matrix on every backward: ~3x slower)."""

    @staticmethod
    def forward(ctx, columns: torch.Tensor, matrix: torch.Tensor, matrix_t: torch.Tensor) -> torch.Tensor:
        ctx.matrix_t = matrix_t
        return matrix @ columns

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.matrix_t @ grad, None, None


def _to_csr(matrix: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta": matmul with a dense matrix is stable
        return matrix.to_sparse_csr()


def _load_coco_regressor(model) -> dict[str, torch.Tensor]:
    """anny's own COCO keypoint regressor (``anny/data/keypoints/coco.pth``): label -> (V,) vertex weights
    summing to 1, restricted to this topology's vertices."""
    import anny.paths

    path = anny.paths.get_anny_root_dir() / "data" / "keypoints" / "coco.pth"
    data = torch.load(path, weights_only=True, map_location="cpu")
    kept = model.base_mesh_vertex_indices.cpu()
    weights = {label: w[kept].double() for label, w in data.items()}
    for label, w in weights.items():
        if abs(float(w.sum()) - 1.0) > 1e-3:
            raise RuntimeError(f"{path}: weights of {label!r} do not sum to 1 on this topology")
    return weights


def _build_anny(dtype: torch.dtype):
    """anny's default full-body model (104 bones, local-ref pose parameters), plain LBS, in ``dtype``."""
    import anny  # deferred: importing anny is slow and only this model needs it

    with warnings.catch_warnings():
        # anny warns when it cannot find NVIDIA warp; we skin with plain LBS on purpose.
        warnings.simplefilter("ignore")
        model = anny.Anny(skinning_method="lbs", pose_parameterization="local-ref")
    return model.to(dtype=dtype)


class AnnyBody(StandingHeightMixin):
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
        self._build_kinematic_levels()

        # Skinning weights (V, J), the dense form anny builds for plain LBS.
        self.skinning_weights: torch.Tensor = model.dense_vertex_bone_weights
        self.vertex_segments = {seg: self._subtree_vertices(bone) for seg, bone in _SEGMENT_ROOT_BONES.items()}
        for side, suffix in (("left", "L"), ("right", "R")):  # the lower arm without the hand
            arm = self._subtree_vertices(f"lowerarm01.{suffix}")
            hand = self.vertex_segments[f"{side}_hand"]
            self.vertex_segments[f"{side}_forearm"] = arm[~torch.isin(arm, hand)]
        self.left_hand_joints = [i for i in self.subtree("wrist.L") if i != self.joint_index("wrist.L")]
        self.right_hand_joints = [i for i in self.subtree("wrist.R") if i != self.joint_index("wrist.R")]
        self._build_keypoint_regressor()
        logger.debug("anny body model on %s: %d vertices, %d bones", self.device, self.num_vertices, self.num_joints)

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

    def _build_kinematic_levels(self) -> None:
        """Bones grouped by depth; each level lists its bones and their parents' slots in the level above."""
        device = self.device
        self._parent_index = torch.tensor([0] + self.parents[1:], dtype=torch.long, device=device)
        depth = [0] * self.num_joints
        for i in range(1, self.num_joints):  # parents precede children in anny's order
            depth[i] = depth[self.parents[i]] + 1
        levels = [[0]]
        for d in range(1, max(depth) + 1):
            levels.append([i for i in range(self.num_joints) if depth[i] == d])
        self._fk_levels = []
        for above, members in zip(levels[:-1], levels[1:], strict=True):
            slot = [above.index(self.parents[i]) for i in members]
            self._fk_levels.append(
                (torch.tensor(members, device=device), torch.tensor(slot, dtype=torch.long, device=device))
            )
        order = [i for level in levels for i in level]
        self._fk_inverse_order = torch.argsort(torch.tensor(order, device=device))

    def _subtree_vertices(self, bone: str) -> torch.Tensor:
        weight = self.skinning_weights[:, self.subtree(bone)].sum(dim=1)
        return torch.nonzero(weight >= 0.5).flatten()

    # ------------------------------------------------------------------ keypoints
    def _build_keypoint_regressor(self) -> None:
        """Keypoints = bone heads where the table says "bone", else rows of a sparse (75, V) regressor."""
        names = [name for name, _ in ANNY_KEYPOINT_TABLE]
        if tuple(names) != ALL_KEYPOINTS:
            raise RuntimeError("ANNY_KEYPOINT_TABLE is not in reconstruction.keypoints.ALL_KEYPOINTS order")
        bone_index = torch.zeros(len(names), dtype=torch.long)
        is_bone = torch.zeros(len(names), dtype=torch.bool)
        regressor = torch.zeros(len(names), self.num_vertices, dtype=self.dtype)
        coco = None
        for k, (_, (kind, src)) in enumerate(ANNY_KEYPOINT_TABLE):
            if kind == "bone":
                is_bone[k] = True
                bone_index[k] = self.joint_index(src)
            elif kind == "verts":
                ids = torch.as_tensor(src, dtype=torch.long)
                if int(ids.max()) >= self.num_vertices:
                    raise RuntimeError(f"keypoint {names[k]}: vertex id out of range for this anny topology")
                regressor[k, ids] = 1.0 / len(ids)
            elif kind == "coco":
                coco = _load_coco_regressor(self._model) if coco is None else coco
                regressor[k] = coco[src].to(self.dtype)
            else:
                raise RuntimeError(f"keypoint {names[k]}: unknown source kind {kind!r}")
        self.keypoint_regressor = regressor.to(self.device)  # dense (75, V), rows of bone keypoints are 0
        self._kp_is_bone = is_bone.to(self.device)
        self._kp_bone_index = bone_index.to(self.device)

    def keypoints_from(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """(T, 75, 3) MediaPipe-order keypoints from posed vertices (T, V, 3) and bone heads (T, J, 3)."""
        from_verts = torch.einsum("kv,tvd->tkd", self.keypoint_regressor, vertices)
        return self._merge_keypoints(from_verts, joints)

    def _merge_keypoints(self, from_verts: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        from_bones = joints[:, self._kp_bone_index]
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
        rest_poses = rest["rest_bone_poses"]
        rest_rotations, heads = rest_poses[..., :3, :3], rest_poses[..., :3, 3]
        reference = model.reference_bone_orientations
        reference = rest_rotations if reference is None else reference.expand_as(rest_rotations)
        rest_to_reference = reference @ rest_rotations.transpose(-1, -2)
        # anny's local-ref chain: a child's reference head sits at o_c = A_p (h_c - h_p) from its parent's,
        # A_p = U_p R_p^T being the parent's rest -> reference rotation (the root's taken as identity).
        parent_rotation = torch.cat(
            [torch.eye(3, dtype=heads.dtype, device=heads.device).expand_as(rest_to_reference[:, :1]),
             rest_to_reference[:, 1:]], dim=1,
        )[:, self._parent_index]  # fmt: skip
        offsets = (parent_rotation @ (heads - heads[:, self._parent_index])[..., None])[..., 0]
        return _RestModel(rest["rest_vertices"], heads, offsets, rest_to_reference)

    def rest_model(self, shape: torch.Tensor) -> _RestModel:
        """The rest model (vertices, bone heads, reference offsets and orientations) of a shape (S,) or (T, S).

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
                    dense = self._skin_matrix(cached.vertices[0])
                    cached.skin_matrix = _to_csr(dense)
                    cached.skin_matrix_t = _to_csr(dense.t().contiguous())
                    cached.keypoint_skin = self.keypoint_regressor @ dense
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

    def _skin(self, rest: _RestModel, transforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Linear blend skinning by bone transforms (T, J, 3, 4) -> vertices (T, V, 3) and, when cheap, the
        vertex-regressed keypoints (T, 75, 3) (else None)."""
        num_frames, num_joints = transforms.shape[:2]
        if rest.vertices.shape[0] == 1:
            # (4J, 3T) transform columns; one (sparse) matmul skins every frame at once, never building the
            # (T, V, 3, 4) per-vertex blended transforms that dominate the naive LBS cost. LBS is linear in
            # these columns, so regressed keypoints come from the (75, 4J) product of regressor and skin
            # matrix without touching the vertices (their backward would otherwise cost a (V, 3T) product).
            columns = transforms.permute(3, 1, 0, 2).reshape(4 * num_joints, 3 * num_frames)
            if rest.skin_matrix is not None:
                skinned = _SparseMatmul.apply(columns, rest.skin_matrix, rest.skin_matrix_t)
                regressed = rest.keypoint_skin @ columns
            else:  # shape under optimisation: dense matrix, differentiable wrt the rest vertices
                skin_matrix = self._skin_matrix(rest.vertices[0])
                skinned = skin_matrix @ columns
                regressed = (self.keypoint_regressor @ skin_matrix) @ columns
            vertices = skinned.reshape(-1, num_frames, 3).permute(1, 0, 2)
            return vertices, regressed.reshape(-1, num_frames, 3).permute(1, 0, 2)
        # One body per frame: blend the transforms per vertex.
        blend = torch.einsum("vj,tjik->tvik", self.skinning_weights, transforms)
        return (blend[..., :3] * rest.vertices[:, :, None, :]).sum(-1) + blend[..., 3], None

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pose_aa: torch.Tensor,
        shape: torch.Tensor,
        trans: torch.Tensor,
        vertex_ids: torch.Tensor | None = None,
    ) -> BodyOutput:
        """pose_aa (T, 104, 3), shape (6,) or (T, 6), trans (T, 3) -> vertices, bone heads, keypoints.

        ``vertex_ids`` (N,): skin only those vertices (``vertices`` is then (T, N, 3), in that order); joints
        and keypoints are unchanged. Much cheaper when a loss looks at a few hundred vertices."""
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
        if vertex_ids is not None:
            vertex_ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=self.device)
            if vertex_ids.dim() != 1 or (len(vertex_ids) and int(vertex_ids.max()) >= self.num_vertices):
                raise ValueError(f"anny vertex_ids must be a 1-D index into {self.num_vertices} vertices")
        return self._posed(pose_aa, trans, rest, vertex_ids)

    __call__ = forward

    def bind(self, shape: torch.Tensor, vertex_ids: torch.Tensor | None = None):
        """``forward`` for one fixed shape (S,) and vertex subset, with no host synchronisation per call."""
        rest = self.rest_model(torch.as_tensor(shape, dtype=self.dtype, device=self.device).detach())
        if rest.vertices.shape[0] != 1:
            raise ValueError("bind takes one shape vector (S,)")
        if vertex_ids is not None:
            vertex_ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=self.device)
            if vertex_ids.dim() != 1 or (len(vertex_ids) and int(vertex_ids.max()) >= self.num_vertices):
                raise ValueError(f"anny vertex_ids must be a 1-D index into {self.num_vertices} vertices")
        num_joints = self.num_joints

        def pose(pose_aa: torch.Tensor, trans: torch.Tensor) -> BodyOutput:
            if pose_aa.dim() != 3 or pose_aa.shape[1:] != (num_joints, 3) or trans.shape != (pose_aa.shape[0], 3):
                raise ValueError(f"anny pose_aa (T, {num_joints}, 3) and trans (T, 3) expected")
            return self._posed(pose_aa.to(self.dtype), trans.to(self.dtype), rest, vertex_ids)

        return pose

    def _posed(
        self, pose_aa: torch.Tensor, trans: torch.Tensor, rest: _RestModel, vertex_ids: torch.Tensor | None = None
    ) -> BodyOutput:
        transforms, joints = self._forward_kinematics(roma.rotvec_to_rotmat(pose_aa), trans, rest)
        if vertex_ids is not None:
            return self._posed_subset(transforms, joints, rest, vertex_ids)
        return BodyOutput(*self._posed_full(transforms, joints, rest))

    def _posed_subset(
        self, transforms: torch.Tensor, joints: torch.Tensor, rest: _RestModel, vertex_ids: torch.Tensor
    ) -> BodyOutput:
        """Skin only ``vertex_ids`` with a dense (N, 4J) slice of the skinning matrix; keypoints from the
        (75, 4J) regressor product when the shape is cached, else from a full skin (per-frame shapes)."""
        num_frames, num_joints = transforms.shape[:2]
        if rest.vertices.shape[0] != 1:
            out = BodyOutput(*self._posed_full(transforms, joints, rest))
            return BodyOutput(out.vertices[:, vertex_ids], out.joints, out.keypoints)
        columns = transforms.permute(3, 1, 0, 2).reshape(4 * num_joints, 3 * num_frames)
        rest_subset = rest.vertices[0, vertex_ids]
        homogeneous = torch.cat([rest_subset, rest_subset.new_ones(rest_subset.shape[0], 1)], dim=1)
        weights = self.skinning_weights[vertex_ids]
        subset_matrix = (homogeneous[:, :, None] * weights[:, None, :]).reshape(len(vertex_ids), -1)
        vertices = (subset_matrix @ columns).reshape(-1, num_frames, 3).permute(1, 0, 2)
        keypoint_skin = rest.keypoint_skin
        if keypoint_skin is None:  # shape under optimisation
            keypoint_skin = self.keypoint_regressor @ self._skin_matrix(rest.vertices[0])
        regressed = (keypoint_skin @ columns).reshape(-1, num_frames, 3).permute(1, 0, 2)
        return BodyOutput(vertices=vertices, joints=joints, keypoints=self._merge_keypoints(regressed, joints))

    def _posed_full(self, transforms, joints, rest) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        vertices, regressed = self._skin(rest, transforms)
        keypoints = (
            self.keypoints_from(vertices, joints) if regressed is None else self._merge_keypoints(regressed, joints)
        )
        return vertices, joints, keypoints

    def _forward_kinematics(
        self, rotations: torch.Tensor, trans: torch.Tensor, rest: _RestModel
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """anny's local-ref kinematics, (T, J, 3, 3) rotations -> skinning transforms (T, J, 3, 4) and bone
        heads (T, J, 3).

        With world-aligned deltas D_c the world rotation of each bone's frame is G_c = G_p D_c (root: D_0) and
        its head w_c = w_p + G_p o_c (root: trans), one batched matmul per depth level; the skinning transform
        is then [G_c A_c | w_c - G_c A_c h_c] with A_c the rest -> reference rotation. Equal to
        ``anny.Anny.get_bone_transforms`` with identity root reference (checked in the tests), ~3x cheaper
        than its 4x4 broadcast products for forward + backward."""
        offsets = rest.offsets[:, :, :, None]
        level_rotations = [rotations[:, :1]]
        level_heads = [trans[:, None]]
        for members, parent_slot in self._fk_levels:
            parent_rotations = level_rotations[-1][:, parent_slot]
            level_rotations.append(parent_rotations @ rotations[:, members])
            level_heads.append(level_heads[-1][:, parent_slot] + (parent_rotations @ offsets[:, members])[..., 0])
        world_rotations = torch.cat(level_rotations, dim=1)[:, self._fk_inverse_order]
        heads = torch.cat(level_heads, dim=1)[:, self._fk_inverse_order]
        skin_rotations = world_rotations @ rest.rest_to_reference
        skin_translations = heads - (skin_rotations @ rest.heads[:, :, :, None])[..., 0]
        return torch.cat([skin_rotations, skin_translations[..., None]], dim=-1), heads

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

    def shape_for_height(self, height_m: float, base_shape: torch.Tensor | None = None) -> torch.Tensor:
        """A shape (6,) whose standing height is ``height_m``: ``base_shape`` (default all 0.5) with its
        ``height`` phenotype solved for (standing height grows monotonically with it)."""
        shape = self.default_shape() if base_shape is None else torch.as_tensor(base_shape, dtype=self.dtype).clone()
        shape = shape.to(self.device)
        slot = PHENOTYPE_LABELS.index("height")

        def height_at(value: float) -> float:
            trial = shape.clone()
            trial[slot] = value
            return self.standing_height(trial)

        try:
            value, _, _ = solve_monotonic(height_at, height_m, 0.0, 1.0)
        except ValueError as error:
            raise ValueError(f"anny cannot stand {height_m:.3f} m tall with this body: {error}") from None
        shape[slot] = value
        return shape

    def to(self, device: str | torch.device) -> AnnyBody:
        """This model on ``device`` (a copy when the device differs; the original is left where it was)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return AnnyBody(device=device, dtype=self.dtype, _model=copy.deepcopy(self._model))
