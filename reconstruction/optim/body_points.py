"""Posed body points for the optimiser: only the vertices the losses look at, plus joints and keypoints.

The loss terms need ~1,000 of anny's 13,718 vertices (hand patches, a sparse body cover, the vertices
behind the 75 keypoints). Skinning just those with a dense (V', 4J) matrix is several times cheaper than
the full mesh, forward and backward. The fast path uses the anny wrapper's rest model, skinning weights
and bone-transform chain; any other ``BodyModel`` goes through its public ``forward`` and is indexed.
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch


@dataclass
class PosedPoints:
    points: torch.Tensor  # (N, V', 3) the requested vertices, in the order asked for
    joints: torch.Tensor  # (N, J, 3)
    keypoints: torch.Tensor  # (N, 75, 3)


class PointBody:
    """Pose a fixed subset of a body model's vertices, batched over N poses of one shape."""

    def __init__(self, body, vertex_ids: torch.Tensor):
        self.body = body
        self.vertex_ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=body.faces.device)
        self.fast = all(
            hasattr(body, attr)
            for attr in ("rest_model", "skinning_weights", "_model", "_kp_vert_index", "_kp_bone_index", "_kp_is_bone")
        ) and hasattr(body._model, "get_bone_transforms")
        self._matrix_cache: dict[int, tuple[object, torch.Tensor]] = {}
        if self.fast:
            kp_ids = body._kp_vert_index.flatten()
            self.all_ids, inverse = torch.unique(torch.cat([self.vertex_ids, kp_ids]), return_inverse=True)
            self.request_pos = inverse[: self.vertex_ids.shape[0]]
            self.kp_pos = inverse[self.vertex_ids.shape[0] :].reshape(body._kp_vert_index.shape)

    def _subset_matrix(self, rest) -> torch.Tensor:
        """(V', 4J) skinning matrix of the subset (see AnnyBody._skin_matrix), cached per rest model."""
        cached = self._matrix_cache.get(id(rest))
        if cached is not None and cached[0] is rest:
            return cached[1]
        rest_vertices = rest.vertices[0, self.all_ids]
        homogeneous = torch.cat([rest_vertices, rest_vertices.new_ones(rest_vertices.shape[0], 1)], dim=1)
        weights = self.body.skinning_weights[self.all_ids]
        matrix = (homogeneous[:, :, None] * weights[:, None, :]).reshape(rest_vertices.shape[0], -1)
        if not matrix.requires_grad:
            self._matrix_cache = {id(rest): (rest, matrix)}
        return matrix

    def __call__(self, pose_aa: torch.Tensor, shape: torch.Tensor, trans: torch.Tensor) -> PosedPoints:
        """pose_aa (N, J, 3), shape (S,), trans (N, 3)."""
        if not self.fast:
            out = self.body.forward(pose_aa, shape, trans)
            return PosedPoints(out.vertices[:, self.vertex_ids], out.joints, out.keypoints)
        body = self.body
        rest = body.rest_model(shape)
        if rest.vertices.shape[0] != 1:
            raise ValueError("PointBody poses one shape at a time")
        num, num_joints = pose_aa.shape[:2]
        rotations = roma.rotvec_to_rotmat(pose_aa)
        # the root delta carries the translation (anny's local-ref parameterisation)
        offsets = torch.cat([trans[:, None], trans.new_zeros(num, num_joints - 1, 3)], dim=1)
        deltas = roma.Rigid(rotations, offsets).to_homogeneous()
        transforms, bone_poses = body._model.get_bone_transforms(deltas, rest.bone_poses)
        columns = transforms[..., :3, :].permute(3, 1, 0, 2).reshape(4 * num_joints, 3 * num)
        skinned = (self._subset_matrix(rest) @ columns).reshape(-1, num, 3).permute(1, 0, 2)  # (N, V', 3)
        joints = bone_poses[..., :3, 3]
        from_bones = joints[:, body._kp_bone_index]
        from_verts = (skinned[:, self.kp_pos] * body._kp_vert_weight[None, :, :, None]).sum(dim=2)
        keypoints = torch.where(body._kp_is_bone[None, :, None], from_bones, from_verts)
        return PosedPoints(skinned[:, self.request_pos], joints, keypoints)
