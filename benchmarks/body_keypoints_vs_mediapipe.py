"""How well the body model's 75 keypoints agree with what MediaPipe detects on a render of that body.

Renders anny (skin, shirt, trousers, shoes coloured by skinning segments) in a few poses and views with the
project's renderer, runs MediaPipe Pose (33 landmarks) and Hands (21 per hand), and compares the detections
with the projected model keypoints. A keypoint definition that sits where MediaPipe's does gives small,
unbiased offsets; a systematic offset (e.g. hips) shows up as a large mean dx/dy.

Usage: python benchmarks/body_keypoints_vs_mediapipe.py [--out DIR] [--size 640]
Prints a markdown table of per-keypoint offsets (pixels and fraction of torso height); with --out writes
overlay PNGs (green = model keypoint, red = MediaPipe).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from reconstruction.body import load_body_model
from reconstruction.keypoints import ALL_KEYPOINTS, BODY_LANDMARKS, HAND_LANDMARKS, NUM_BODY
from reconstruction.render import Mesh, render
from reconstruction.render.scene import look_at_world_to_cam, project_points

SKIN, SHIRT, TROUSERS, SHOES, HAIR = (
    (0.87, 0.69, 0.57),
    (0.2, 0.35, 0.7),
    (0.25, 0.25, 0.3),
    (0.1, 0.1, 0.1),
    (0.2, 0.13, 0.08),
)


def body_colours(body) -> torch.Tensor:
    """Per-vertex clothing colours from the dominant skinning bone."""
    names = body.joint_names
    dominant = body.skinning_weights.argmax(dim=1)
    colours = torch.tensor(SKIN).repeat(body.num_vertices, 1)

    def paint(prefixes, colour):
        ids = [i for i, n in enumerate(names) if n.startswith(prefixes)]
        colours[torch.isin(dominant, torch.tensor(ids))] = torch.tensor(colour)

    paint(("root", "pelvis", "upperleg", "lowerleg"), TROUSERS)
    paint(("spine", "clavicle", "shoulder", "upperarm"), SHIRT)
    paint(("foot", "toe"), SHOES)
    return colours


def scenes(body):
    """(label, pose (1,J,3), camera yaw in degrees) of the test views."""
    zero = body.rest_pose(1)
    arms_out = zero.clone()
    arms_out[0, body.joint_index("upperarm01.L")] = torch.tensor([0.0, -0.5, 0.0])
    arms_out[0, body.joint_index("upperarm01.R")] = torch.tensor([0.0, 0.5, 0.0])
    reach = zero.clone()
    reach[0, body.joint_index("upperarm01.R")] = torch.tensor([1.0, 0.3, 0.0])
    reach[0, body.joint_index("lowerarm01.R")] = torch.tensor([0.6, 0.0, 0.0])
    reach[0, body.joint_index("upperleg01.L")] = torch.tensor([-0.3, 0.0, 0.0])
    reach[0, body.joint_index("lowerleg01.L")] = torch.tensor([0.5, 0.0, 0.0])
    return [("zero", zero, 0.0), ("arms_out", arms_out, 0.0), ("arms_out_yaw30", arms_out, 30.0),
            ("reach", reach, -25.0), ("zero_yaw-40", zero, -40.0)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--size", type=int, default=640, help="image height (width = 3/4 of it)")
    args = parser.parse_args()
    import mediapipe as mp

    body = load_body_model("anny")
    shape = body.default_shape()
    colours = body_colours(body)
    height, width = args.size, args.size * 3 // 4
    focal = 1.2 * height
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    pose_model = mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=1
    )  # the "full" model ships in the wheel; "heavy" would download
    hands_model = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2)
    offsets: dict[str, list[np.ndarray]] = {name: [] for name in ALL_KEYPOINTS}
    torso_sizes = []
    root_z = body.root_height_standing(shape)
    for label, pose, yaw in scenes(body):
        out = body.forward(pose, shape, torch.tensor([[0.0, 0.0, root_z]]))
        yaw_rad = math.radians(yaw)
        eye = (3.2 * math.sin(yaw_rad), -3.2 * math.cos(yaw_rad), 1.0)
        world_to_cam = look_at_world_to_cam(eye, (0.0, 0.0, 0.9))
        image = render([Mesh(out.vertices[0], body.faces, colours)], K, world_to_cam, (height, width),
                       background=(0.93, 0.93, 0.9)).rgb[0]  # fmt: skip
        rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        projected = project_points(out.keypoints[0].numpy(), K, world_to_cam)[:, :2]
        detected = np.full((len(ALL_KEYPOINTS), 2), np.nan)
        result = pose_model.process(rgb)
        if result.pose_landmarks:
            for k, lm in enumerate(result.pose_landmarks.landmark):
                if lm.visibility > 0.5:
                    detected[k] = (lm.x * width, lm.y * height)
        hands = hands_model.process(rgb)
        for hand in hands.multi_hand_landmarks or []:
            points = np.array([(lm.x * width, lm.y * height) for lm in hand.landmark])
            # assign the detection to the model hand whose wrist it is nearest to
            left_wrist, right_wrist = projected[NUM_BODY], projected[NUM_BODY + len(HAND_LANDMARKS)]
            start = (
                NUM_BODY
                if np.linalg.norm(points[0] - left_wrist) < np.linalg.norm(points[0] - right_wrist)
                else NUM_BODY + len(HAND_LANDMARKS)
            )
            detected[start : start + len(HAND_LANDMARKS)] = points
        shoulders = projected[[11, 12]].mean(0)
        hips = projected[[23, 24]].mean(0)
        torso_sizes.append(np.linalg.norm(shoulders - hips))
        for k, name in enumerate(ALL_KEYPOINTS):
            if not np.isnan(detected[k, 0]):
                offsets[name].append((detected[k] - projected[k]) / torso_sizes[-1])
        if args.out:
            import PIL.Image
            import PIL.ImageDraw

            args.out.mkdir(parents=True, exist_ok=True)
            canvas = PIL.Image.fromarray(rgb)
            draw = PIL.ImageDraw.Draw(canvas)
            for (x, y), (dx, dy) in zip(projected, detected, strict=True):
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(0, 200, 0))
                if not np.isnan(dx):
                    draw.ellipse((dx - 2, dy - 2, dx + 2, dy + 2), fill=(230, 0, 0))
                    draw.line((x, y, dx, dy), fill=(230, 0, 0))
            canvas.save(args.out / f"{label}.png")
        found = int((~np.isnan(detected[:, 0])).sum())
        print(f"<!-- {label}: {found}/75 keypoints detected -->")

    torso = float(np.mean(torso_sizes))
    print(
        f"\nOffsets MediaPipe - model, mean torso height {torso:.0f} px ({height}x{width} renders, anny default body)"
    )
    print("| keypoint | n | mean dx (px) | mean dy (px) | mean abs error (px) | error / torso |")
    print("|---|---:|---:|---:|---:|---:|")
    groups = list(BODY_LANDMARKS) + ["left_hand_*", "right_hand_*"]
    for name in groups:
        if name.endswith("*"):
            values = [v for n in ALL_KEYPOINTS if n.startswith(name[:-1]) for v in offsets[n]]
        else:
            values = offsets[name]
        if not values:
            print(f"| {name} | 0 | | | | |")
            continue
        arr = np.array(values) * torso
        err = np.linalg.norm(arr, axis=1)
        print(
            f"| {name} | {len(arr)} | {arr[:, 0].mean():+.1f} | {arr[:, 1].mean():+.1f} | {err.mean():.1f} | {err.mean() / torso:.3f} |"
        )


if __name__ == "__main__":
    main()
