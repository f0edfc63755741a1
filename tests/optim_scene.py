"""A constructed HOI scene for the optimiser tests: anny waving its right arm while holding a box.

Ground truth comes from the real body model; the "stage 1-3 estimates" are the truth plus known errors.
"""

from __future__ import annotations

import math

import torch

from reconstruction.optim import geometry
from reconstruction.optim.optimizer import VideoInputs
from reconstruction.projection import project

K = torch.tensor([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
# camera 3 m in front of the body (anny faces -Y), 1 m high, looking along +Y
WORLD_TO_CAM = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.0], [0.0, 1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]])


BOX_SIZE = 0.12


def box_mesh(size: float = BOX_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32)
    faces = torch.tensor(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    )  # fmt: skip
    return corners * size / 2, faces


def make_scene(body, num_frames: int = 12, name: str = "Synthetic/box/v0", contact_from: int | None = None):
    """-> (ground-truth dict, VideoInputs with perturbed stage 1-3 estimates).

    The box rests where the hand will grab it until ``contact_from`` (default T // 3), then moves with
    the hand."""
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
    contact_from = T // 3 if contact_from is None else contact_from
    obj_world[:contact_from] = obj_world[contact_from]
    obj_cam = WORLD_TO_CAM @ obj_world
    kp_cam = geometry.apply_homogeneous(out.keypoints, WORLD_TO_CAM)
    kp2d = project(kp_cam, K)
    keypoints = torch.cat([kp2d, torch.ones(T, kp2d.shape[1], 1)], -1)
    gt = {"pose": pose, "trans": trans, "shape": shape, "keypoints_world": out.keypoints, "obj_world": obj_world,
          "contact_from": contact_from}  # fmt: skip

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
        contact=torch.tensor([[False, t >= contact_from] for t in range(T)]),
        ground_z=0.0,
    )
    return gt, video


def write_scene_caches(
    results_dir, body, num_frames: int = 12, name: str = "Synthetic/box/v0", variant: str = "normal"
):
    """Write a constructed scene in the contract's layout: render inputs + stage 1-3 caches.

    Stage 1 = perturbed body, stage 2 = rendered masks (+ static depth: background only),
    stage 3 = perturbed object poses. ``variant``: "normal" | "static_object" (the box never moves) |
    "camera_shake" (the render camera of the last frame differs: only the render config is affected).
    Returns (layout, vid, gt dict, VideoInputs)."""
    import numpy as np

    from reconstruction import fileio
    from reconstruction.layout import Layout, VideoId
    from reconstruction.render import Mesh, render
    from reconstruction.render_config import BLENDER_TO_OPENCV, RenderConfig, save_cam_k, save_render_config

    layout = Layout.create(results_dir)
    vid = VideoId.parse(name)
    gt, video = make_scene(body, num_frames, name)
    if variant == "static_object":
        gt["obj_world"] = gt["obj_world"][:1].repeat(num_frames, 1, 1)
        obj_cam = WORLD_TO_CAM @ gt["obj_world"]
        video.object_poses_cam = obj_cam.clone()
        video.object_poses_cam[:, :3, 3] += torch.tensor([0.01, 0.0, 0.02])
    T = num_frames
    cam_to_world = torch.linalg.inv(WORLD_TO_CAM).double().numpy()
    obj0 = gt["obj_world"][0].double().numpy()
    with torch.no_grad():
        out = body.forward(gt["pose"], gt["shape"], gt["trans"])
    rc = RenderConfig(
        obj_R=obj0[:3, :3], obj_t=obj0[:3, 3], obj_scale=1.0,
        cam_R=cam_to_world[:3, :3] @ BLENDER_TO_OPENCV, cam_t=cam_to_world[:3, 3],
        frame_height=240, frame_width=320, focal_length=300.0,
        human_R=np.eye(3), human_t=gt["trans"][0].double().numpy(),
    )  # fmt: skip
    save_render_config(layout.render_config(vid), rc)
    save_cam_k(layout.cam_k(vid), K.double().numpy())
    verts, faces = box_mesh()
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces.tolist()]
    mesh_path = layout.mesh(vid)
    fileio.write_text(mesh_path, "\n".join(lines) + "\n")
    obj_verts = geometry.transform(verts[None], gt["obj_world"][:, :3, :3], gt["obj_world"][:, :3, 3])
    rendered = render(
        [Mesh(out.vertices, body.faces, instance_id=1), Mesh(obj_verts, faces, instance_id=2, smooth=False)],
        K, WORLD_TO_CAM, (240, 320),
    )  # fmt: skip
    masks = {t: {0: rendered.mask(2)[t].numpy(), 1: rendered.mask(1)[t].numpy()} for t in range(T)}
    fileio.write_npz(layout.masks_cache(vid), masks=np.array(masks, dtype=object))
    depth = torch.where(rendered.instance == 0, rendered.depth, 0.0)  # "static": foreground unknown
    fileio.write_torch(layout.depth_cache(vid), [d for d in depth])
    fileio.write_torch(
        layout.hmr_result(vid),
        {
            "body_model": "anny",
            "motion_global": {"pose_aa": video.body_pose, "shape": video.body_shape, "trans": video.body_trans},
            "motion_incam": {"pose_aa": video.body_pose, "shape": video.body_shape, "trans": video.body_trans},
            "predicted_body_height": 1.7,
            "keypoints_3d_cam": geometry.apply_homogeneous(out.keypoints, WORLD_TO_CAM),
            "fps": 30.0,
        },
    )
    fileio.write_npz(
        layout.hmr_keypoints(vid), keypoints_2d=video.keypoints_2d.numpy(), image_size=np.array([240, 320])
    )
    fileio.write_pickle(layout.object_poses(vid), video.object_poses_cam.double().numpy())
    gt["rendered"] = rendered
    return layout, vid, gt, video
