"""The camera depth of the hand(s) that hold the object, from stage 1, for stage 3's held-frame prior.

A held object's depth is barely observable in its silhouette: at 3 m, carrying a 10 cm mug 20 cm towards
the camera grows its outline by about a pixel. Between the still start and the final rest the tracker
therefore leans on a depth prior, which was the straight line between the two still depths; on the
synthetic carries the object left that line by up to 20 cm (brought towards the body), and the tracked
object ended 4-10 cm too far. Stage 1's hands follow the carry: their absolute depth is off by a few
centimetres, but that error changes slowly, so their motion *relative to the grasp and release frames*
is what the prior takes (``mesh_tracker.track_object``: the hand's departure from its own straight line
between the two anchors is added to the object's line).

The same holds for the held object's rotation (``holding_hand_rotations``): a grasped object turns with
the hand, so the hand's turn away from its own slerp between the anchors is the object's. On the seed-4
mug (CPU) the carried mug was pitched 24 deg off the slerp between its still poses for 25 frames; stage
1's right hand said so within 7 deg, and the slerp alone held the tracker 15-25 deg off.
"""

from __future__ import annotations

import cv2
import numpy as np
import roma
import torch

from reconstruction import keypoints as kp
from reconstruction.projection import project

HAND_SLICES = (kp.LEFT_HAND_SLICE, kp.RIGHT_HAND_SLICE)


def hand_object_distance(keypoints_3d_cam: np.ndarray, K: np.ndarray, object_masks: np.ndarray) -> np.ndarray:
    """(T,2) image distance from each hand (left, right) to the object mask, in hand lengths: the nearest
    of the hand's 21 projected keypoints to a mask pixel, over the hand's wrist-to-middle-tip length in
    pixels (so the figure does not depend on the resolution or the person's distance). Frames with an
    empty object mask give inf."""
    num_frames, height, width = object_masks.shape
    out = np.full((num_frames, 2), np.inf)
    middle_tip = kp.HAND_LANDMARKS.index("middle_tip")
    K_t = torch.as_tensor(np.asarray(K, dtype=np.float64))
    pixels_all = project(torch.as_tensor(keypoints_3d_cam, dtype=torch.float64), K_t).numpy()  # (T, 75, 2)
    for t in range(num_frames):
        if not object_masks[t].any():
            continue
        # distance (px) of every pixel to the nearest object pixel
        distance = cv2.distanceTransform((~object_masks[t]).astype(np.uint8), cv2.DIST_L2, 5)
        for side, hand in enumerate(HAND_SLICES):
            pixels = pixels_all[t, hand]
            length = max(float(np.linalg.norm(pixels[middle_tip] - pixels[0])), 1.0)
            cols = np.clip(np.round(pixels[:, 0]).astype(int), 0, width - 1)
            rows = np.clip(np.round(pixels[:, 1]).astype(int), 0, height - 1)
            outside = (pixels[:, 0] < 0) | (pixels[:, 0] >= width) | (pixels[:, 1] < 0) | (pixels[:, 1] >= height)
            nearest = np.where(outside, np.inf, distance[rows, cols]).min()
            out[t, side] = nearest / length
    return out


def holding_hands(distance: np.ndarray, moving: np.ndarray, near: float = 1.0, share: float = 0.5) -> list[int]:
    """Hands (0 left, 1 right) within ``near`` hand lengths of the object mask in at least ``share`` of the
    ``moving`` frames (T,) bool (the frames between the still start and the final rest)."""
    if not moving.any():
        return []
    close = (distance[moving] <= near).mean(0)
    return [side for side in (0, 1) if close[side] >= share]


def smooth(track: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing over time (edges: the kernel renormalised over the frames that exist)."""
    if sigma_frames <= 0 or len(track) < 2:
        return track.copy()
    radius = int(np.ceil(3 * sigma_frames))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_frames) ** 2)
    index = np.arange(len(track))[:, None] + offsets[None]
    valid = (index >= 0) & (index < len(track))
    weights = kernel[None] * valid
    values = track[np.clip(index, 0, len(track) - 1)]
    return (weights * values).sum(1) / weights.sum(1)


def holding_hand_depth(
    keypoints_3d_cam: np.ndarray,
    K: np.ndarray,
    object_masks: np.ndarray,
    moving: np.ndarray,
    near: float = 1.0,
    sigma_frames: float = 2.0,
) -> tuple[np.ndarray | None, list[int]]:
    """(T,) camera depth (m) of the holding hands' keypoint centre, averaged over the hands that hold the
    object (``holding_hands``) and smoothed over ``sigma_frames``; None when no hand is near the object
    while it moves. Also returns the hands used."""
    distance = hand_object_distance(keypoints_3d_cam, K, object_masks)
    hands = holding_hands(distance, np.asarray(moving, dtype=bool), near)
    if not hands:
        return None, hands
    depth = np.mean([keypoints_3d_cam[:, HAND_SLICES[side], 2].mean(1) for side in hands], axis=0)
    return smooth(depth, sigma_frames), hands


def palm_normals(keypoints_3d_cam: np.ndarray, side: int) -> np.ndarray:
    """(T,3) unnormalised palm normal of one hand (0 left, 1 right): the cross product of the index and pinky
    knuckles about the wrist (its length is twice the palm triangle's area)."""
    hand = np.asarray(keypoints_3d_cam, dtype=np.float64)[:, HAND_SLICES[side]]
    names = kp.HAND_LANDMARKS
    wrist = hand[:, names.index("wrist")]
    return np.cross(hand[:, names.index("index_mcp")] - wrist, hand[:, names.index("pinky_mcp")] - wrist)


def hand_rotations(keypoints_3d_cam: np.ndarray, side: int) -> np.ndarray:
    """(T,3,3) camera-frame orientation of one hand (0 left, 1 right) from its keypoints: x from the wrist
    to the middle finger's knuckle, z the palm's normal (index and pinky knuckles about the wrist), y = z x x.
    Only its change over time is used, so the choice of axes does not matter."""
    hand = np.asarray(keypoints_3d_cam, dtype=np.float64)[:, HAND_SLICES[side]]
    x = hand[:, kp.HAND_LANDMARKS.index("middle_mcp")] - hand[:, kp.HAND_LANDMARKS.index("wrist")]
    z = palm_normals(keypoints_3d_cam, side)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    y = np.cross(z, x)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-9)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def smooth_rotations(rotations: np.ndarray, sigma_frames: float) -> np.ndarray:
    """(T,3,3) rotations smoothed over time: quaternions (signs made consistent frame to frame) smoothed
    like ``smooth`` and normalised."""
    quats = roma.rotmat_to_unitquat(torch.as_tensor(rotations, dtype=torch.float64)).numpy()
    for t in range(1, len(quats)):
        if quats[t] @ quats[t - 1] < 0:
            quats[t] = -quats[t]
    quats = np.stack([smooth(quats[:, i], sigma_frames) for i in range(4)], axis=1)
    quats = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    return roma.unitquat_to_rotmat(torch.as_tensor(quats)).numpy()


def holding_hand_rotations(
    keypoints_3d_cam: np.ndarray, hands: list[int], sigma_frames: float = 2.0, min_palm_m2: float = 1e-5
) -> tuple[np.ndarray | None, list[int]]:
    """(H,T,3,3) orientations (``hand_rotations``) of those of the holding hands ``hands`` whose palm spans a
    triangle (wrist, index and pinky knuckles: twice its area over ``min_palm_m2``, a real hand's ~2e-3) in
    every frame, smoothed over ``sigma_frames``, and those hands; None when no hand qualifies."""
    kept = [side for side in hands if np.linalg.norm(palm_normals(keypoints_3d_cam, side), axis=1).min() > min_palm_m2]
    if not kept:
        return None, kept
    return np.stack([smooth_rotations(hand_rotations(keypoints_3d_cam, side), sigma_frames) for side in kept]), kept
