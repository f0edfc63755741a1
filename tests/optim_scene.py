"""A constructed HOI scene for the optimiser tests: anny waving its right arm while holding a box.

Ground truth comes from the real body model; the "stage 1-3 estimates" are the truth plus known errors.
"""

from __future__ import annotations

import math

import torch

from reconstruction.optim import geometry, losses
from reconstruction.optim.optimizer import VideoInputs

K = torch.tensor([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
# camera 3 m in front of the body (anny faces -Y), 1 m high, looking along +Y
WORLD_TO_CAM = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.0], [0.0, 1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]]
)


BOX_SIZE = 0.12


def box_mesh(size: float = BOX_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32)
    faces = torch.tensor(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    )  # fmt: skip
    return corners * size / 2, faces


def make_scene(body, num_frames: int = 12, name: str = "Synthetic/box/v0"):
    """-> (ground-truth dict, VideoInputs with perturbed stage 1-3 estimates)."""
    T = num_frames
    J = body.num_joints
    shape = body.default_shape()
    pose = torch.zeros(T, J, 3)
    phase = torch.linspace(0, math.pi, T)
    pose[:, body.joint_index("upperarm01.R"), 0] = -0.6 * torch.sin(phase)
    pose[:, body.joint_index("lowerarm01.R"), 0] = -0.5 * torch.sin(phase)
    trans = torch.zeros(T, 3)
    trans[:, 2] = body.root_height_standing(shape)
    trans[:, 0] = torch.linspace(0.0, 0.1, T)
    with torch.no_grad():
        out = body.forward(pose, shape, trans)
    # the box sits against the right palm, moving with it (contact in every frame)
    # the box's front face (towards the body) is 2 mm from the front-most point of the right hand
    hand_points = out.vertices[:, body.vertex_segments["right_hand"]]
    verts, faces = box_mesh(BOX_SIZE)
    obj_world = torch.eye(4).repeat(T, 1, 1)
    obj_world[:, :3, 3] = hand_points.mean(1)
    obj_world[:, 1, 3] = hand_points[..., 1].min(1).values - BOX_SIZE / 2 - 0.002
    obj_cam = WORLD_TO_CAM @ obj_world
    kp_cam = geometry.apply_homogeneous(out.keypoints, WORLD_TO_CAM)
    kp2d = losses.project(kp_cam, K)
    keypoints = torch.cat([kp2d, torch.ones(T, kp2d.shape[1], 1)], -1)
    gt = {"pose": pose, "trans": trans, "shape": shape, "keypoints_world": out.keypoints, "obj_world": obj_world}

    generator = torch.Generator().manual_seed(0)
    noisy_pose = pose.clone()
    for bone in ("upperarm01.R", "lowerarm01.R", "upperarm01.L", "spine03", "upperleg01.L"):
        noisy_pose[:, body.joint_index(bone)] += 0.15 * torch.randn(T, 3, generator=generator)
    noisy_trans = trans + torch.tensor([0.06, 0.0, -0.03])
    noisy_obj = obj_cam.clone()
    noisy_obj[:, :3, 3] += torch.tensor([0.03, -0.02, 0.05]) + 0.01 * torch.randn(T, 3, generator=generator)
    video = VideoInputs(
        name=name,
        K=K,
        world_to_cam=WORLD_TO_CAM,
        image_size=(240, 320),
        body_pose=noisy_pose,
        body_shape=shape,
        body_trans=noisy_trans,
        keypoints_2d=keypoints,
        object_vertices=verts,
        object_faces=faces,
        object_poses_cam=noisy_obj,
        contact=torch.tensor([[False, True]] * T),
        ground_z=0.0,
    )
    return gt, video
