"""Keypoint conventions shared by stage 1, the body models, ground truth and evaluation.

2D detections and 3D ground-truth joints use MediaPipe's numbering: 33 body landmarks, then 21 per hand
(left hand first). ``ALL_KEYPOINTS`` is that concatenation (75 points).
"""

from __future__ import annotations

BODY_LANDMARKS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)  # fmt: skip

HAND_LANDMARKS: tuple[str, ...] = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
    "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip",
    "ring_dip", "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip

ALL_KEYPOINTS: tuple[str, ...] = (
    BODY_LANDMARKS + tuple(f"left_hand_{n}" for n in HAND_LANDMARKS) + tuple(f"right_hand_{n}" for n in HAND_LANDMARKS)
)
NUM_BODY = len(BODY_LANDMARKS)  # 33
NUM_HAND = len(HAND_LANDMARKS)  # 21
LEFT_HAND_SLICE = slice(NUM_BODY, NUM_BODY + NUM_HAND)
RIGHT_HAND_SLICE = slice(NUM_BODY + NUM_HAND, NUM_BODY + 2 * NUM_HAND)

# Joints used for body MPJPE (well-defined on any body model).
MPJPE_BODY_JOINTS: tuple[str, ...] = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip


def index(name: str) -> int:
    return ALL_KEYPOINTS.index(name)
