"""A generator scene (no render) as stage 1's fit sees it: ground-truth camera-frame keypoints, their exact 2D
(confidence 0.9) and the frame-0 pose the render config gives (shared by the fit_body tests)."""

from __future__ import annotations

import torch

from reconstruction.stages.fit_body import transform_body


def scene_keypoints(category: str, num_frames: int, seed: int) -> dict:
    from reconstruction.body import load_body_model
    from reconstruction.synth.scene import SceneConfig, build_scene

    body = load_body_model("anny", device="cpu")
    scene = build_scene(SceneConfig(category=category, num_frames=num_frames, seed=seed, ik_steps=30), body)
    world_to_cam = torch.as_tensor(scene.world_to_cam[0], dtype=torch.float32)
    points = scene.keypoints_world @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    K = torch.as_tensor(scene.K, dtype=torch.float32)
    uv = points[..., :2] / points[..., 2:3] * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]
    keypoints_2d = torch.cat([uv, torch.full_like(uv[..., :1], 0.9)], -1)
    pose0, trans0 = transform_body(body, scene.pose_aa[:1], scene.shape, scene.trans[:1], world_to_cam)
    return {
        "body": body, "scene": scene, "points": points, "keypoints_2d": keypoints_2d, "K": K,
        "pose0": pose0[0], "trans0": trans0[0], "up": world_to_cam[:3, 2],
    }  # fmt: skip
