"""2D body and hand keypoints from MediaPipe 0.10.14's legacy solutions (models ship in the wheel).

Output: (T, 75, 3) = x_px, y_px, confidence in ``reconstruction.keypoints`` order (33 body, 21 left hand,
21 right hand); confidence 0 where nothing was detected.

Handedness: MediaPipe Hands labels a hand assuming a mirrored selfie image, so on an ordinary (unmirrored)
camera image its "Left" is the person's right hand (seen on a full-frame anny render, 2026-11-24). The label
is weak on small rendered hands, though: on upscaled wrist crops of a synthetic box scene only 1 of 3
labels of the left hand was right. So the label is only a fallback: each detected hand is assigned to the
pose model's left or right wrist by distance, which also stays correct when the person turns around
(``tests/test_stage1_pipeline.py`` checks the slots against ground truth). Hands far from both pose wrists
are dropped as false detections.

Hands are small in a full-body frame, so after the full-frame pass, a wrist the pose model sees but with no
hand found gets a second, static pass on an upscaled crop around that wrist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reconstruction.keypoints import LEFT_HAND_SLICE, NUM_BODY, NUM_HAND, RIGHT_HAND_SLICE, index

logger = logging.getLogger(__name__)

LEFT_WRIST = index("left_wrist")
RIGHT_WRIST = index("right_wrist")
LEFT_ELBOW = index("left_elbow")
RIGHT_ELBOW = index("right_elbow")
# MediaPipe's label on an unmirrored image names the other hand (see the module docstring).
LABEL_TO_SIDE = {"Left": "right", "Right": "left"}


@dataclass(frozen=True)
class MediaPipePoseSettings:
    model_complexity: int = 1  # 1 = pose_landmark_full, the only landmark model the wheel ships
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    hand_min_detection_confidence: float = 0.5
    # A hand whose wrist lies farther than this (times the forearm length, or 12% of the image diagonal
    # when the forearm is not seen) from the pose wrist it would belong to is not that hand.
    hand_max_wrist_dist: float = 1.0
    hand_crop: bool = True  # second pass on wrist crops when the full frame found no hand there
    hand_crop_size: int = 256  # crop side after upscaling, pixels


@dataclass
class PoseDetections:
    keypoints_2d: np.ndarray  # (T, 75, 3) x_px, y_px, confidence (0 = not detected)
    # (T, 33, 4) MediaPipe's metric 3D body landmarks (x right, y down, z away from the camera, origin
    # between the hips) + visibility; a learned depth cue the 2D points lack. Zeros where not detected.
    body_3d: np.ndarray


class MediaPipePoseDetector:
    """Pose (tracking mode) + Hands on whole videos. Build once per process, reuse across videos."""

    def __init__(self, settings: MediaPipePoseSettings | None = None) -> None:
        try:
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - mediapipe is a declared dependency
            raise RuntimeError("human_pose.backend=mediapipe needs the 'mediapipe==0.10.14' package") from exc
        self.settings = settings or MediaPipePoseSettings()
        s = self.settings
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=False,
            model_complexity=s.model_complexity,
            smooth_landmarks=True,
            enable_segmentation=False,
            min_detection_confidence=s.min_detection_confidence,
            min_tracking_confidence=s.min_tracking_confidence,
        )
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=False,
            max_num_hands=2,
            model_complexity=1,
            min_detection_confidence=s.hand_min_detection_confidence,
            min_tracking_confidence=s.min_tracking_confidence,
        )
        self._hands_static = mp.solutions.hands.Hands(
            static_image_mode=True,
            max_num_hands=1,
            model_complexity=1,
            min_detection_confidence=s.hand_min_detection_confidence,
        )

    def close(self) -> None:
        for solution in (self._pose, self._hands, self._hands_static):
            solution.close()

    def detect(
        self,
        frames: np.ndarray,
        progress: Callable[[float], None] | None = None,
        check_cancelled: Callable[[], None] | None = None,
    ) -> PoseDetections:
        """frames (T, H, W, 3) uint8 RGB -> detections (keypoints (T, 75, 3) float32 and 3D body landmarks)."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T,H,W,3) uint8 RGB, got {frames.shape} {frames.dtype}")
        # Tracking mode keeps state between frames: a new video must not inherit the last one's.
        self._pose.reset()
        self._hands.reset()
        num_frames, height, width = frames.shape[:3]
        keypoints = np.zeros((num_frames, NUM_BODY + 2 * NUM_HAND, 3), dtype=np.float32)
        body_3d = np.zeros((num_frames, NUM_BODY, 4), dtype=np.float32)
        for t in range(num_frames):
            if check_cancelled is not None and t % 8 == 0:
                check_cancelled()
            frame = np.ascontiguousarray(frames[t])
            body, world = self._detect_body(frame)
            if body is not None:
                keypoints[t, :NUM_BODY] = body
                body_3d[t] = world
            hands = self._detect_hands(self._hands, frame, offset=(0.0, 0.0), scale=1.0)
            left, right = assign_hands(
                hands, keypoints[t, :NUM_BODY], self.settings.hand_max_wrist_dist, (height, width)
            )
            if self.settings.hand_crop and body is not None:
                if left is None:
                    left = self._hand_from_crop(frame, keypoints[t, :NUM_BODY], "left")
                if right is None:
                    right = self._hand_from_crop(frame, keypoints[t, :NUM_BODY], "right")
            if left is not None:
                keypoints[t, LEFT_HAND_SLICE] = left
            if right is not None:
                keypoints[t, RIGHT_HAND_SLICE] = right
            if progress is not None:
                progress((t + 1) / num_frames)
        return PoseDetections(keypoints_2d=keypoints, body_3d=body_3d)

    # ---- pieces -----------------------------------------------------------------------------------
    def _detect_body(self, frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        result = self._pose.process(frame)
        if result.pose_landmarks is None:
            return None, None
        height, width = frame.shape[:2]
        landmarks = result.pose_landmarks.landmark
        body = np.array([[lm.x * width, lm.y * height, lm.visibility] for lm in landmarks], dtype=np.float32)
        # Landmarks extrapolated outside the image are guesses: keep them but trust them less.
        outside = (body[:, 0] < 0) | (body[:, 0] >= width) | (body[:, 1] < 0) | (body[:, 1] >= height)
        body[outside, 2] *= 0.25
        world = np.array(
            [[lm.x, lm.y, lm.z, lm.visibility] for lm in result.pose_world_landmarks.landmark], dtype=np.float32
        )
        return body, world

    @staticmethod
    def _detect_hands(
        solution, image: np.ndarray, offset: tuple[float, float], scale: float
    ) -> list[tuple[np.ndarray, str, float]]:
        """-> [(landmarks (21,3) x_px, y_px, score in the full frame, side by label, score)]."""
        result = solution.process(image)
        if not result.multi_hand_landmarks:
            return []
        height, width = image.shape[:2]
        hands = []
        for landmarks, handedness in zip(result.multi_hand_landmarks, result.multi_handedness, strict=True):
            label = handedness.classification[0]
            points = np.array([[lm.x * width, lm.y * height] for lm in landmarks.landmark], dtype=np.float32)
            points = points / scale + np.asarray(offset, dtype=np.float32)
            score = float(label.score)
            hand = np.concatenate([points, np.full((NUM_HAND, 1), score, dtype=np.float32)], axis=1)
            hands.append((hand, LABEL_TO_SIDE[label.label], score))
        return hands

    def _hand_from_crop(self, frame: np.ndarray, body: np.ndarray, side: str) -> np.ndarray | None:
        wrist_i, elbow_i = (LEFT_WRIST, LEFT_ELBOW) if side == "left" else (RIGHT_WRIST, RIGHT_ELBOW)
        if body[wrist_i, 2] < 0.3:
            return None
        import cv2

        height, width = frame.shape[:2]
        wrist, elbow = body[wrist_i, :2], body[elbow_i, :2]
        forearm = float(np.linalg.norm(wrist - elbow))
        # The hand extends from the wrist away from the elbow; centre the crop a little past the wrist.
        direction = (wrist - elbow) / max(forearm, 1e-6)
        centre = wrist + 0.4 * forearm * direction
        half = max(1.2 * forearm, 0.05 * np.hypot(height, width), 16.0)
        x0, y0 = int(round(centre[0] - half)), int(round(centre[1] - half))
        x1, y1 = int(round(centre[0] + half)), int(round(centre[1] + half))
        pad = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
        crop = np.pad(frame, pad, mode="edge")[y0 + pad[0][0] : y1 + pad[0][0], x0 + pad[1][0] : x1 + pad[1][0]]
        if crop.size == 0:
            return None
        size = self.settings.hand_crop_size
        scale = size / crop.shape[0]
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
        hands = self._detect_hands(self._hands_static, np.ascontiguousarray(crop), offset=(x0, y0), scale=scale)
        left, right = assign_hands(hands, body, self.settings.hand_max_wrist_dist, (height, width))
        return left if side == "left" else right


def assign_hands(
    hands: list[tuple[np.ndarray, str, float]],
    body: np.ndarray,
    max_wrist_dist: float,
    image_size: tuple[int, int],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Give each detected hand to the left or right slot; returns (left (21,3) | None, right | None).

    With the pose wrists visible, the assignment minimising the summed hand-wrist to pose-wrist distance
    wins (both hands, or one hand to its nearer wrist); a hand too far from its wrist is dropped. Without a
    usable pose wrist, MediaPipe's (un-mirrored) label decides.
    """
    if not hands:
        return None, None
    diag = float(np.hypot(*image_size))
    pose_wrists = {"left": body[LEFT_WRIST], "right": body[RIGHT_WRIST]}
    elbows = {"left": body[LEFT_ELBOW], "right": body[RIGHT_ELBOW]}

    def limit(side: str) -> float:
        wrist, elbow = pose_wrists[side], elbows[side]
        if wrist[2] >= 0.3 and elbow[2] >= 0.3:
            return max_wrist_dist * max(float(np.linalg.norm(wrist[:2] - elbow[:2])), 0.03 * diag)
        return 0.12 * diag

    def cost(hand: np.ndarray, side: str) -> float:
        wrist = pose_wrists[side]
        if wrist[2] < 0.3:
            return np.inf
        return float(np.linalg.norm(hand[0, :2] - wrist[:2]))

    # Keep the two most confident hands.
    hands = sorted(hands, key=lambda h: -h[2])[:2]
    slots: dict[str, np.ndarray | None] = {"left": None, "right": None}
    usable_pose = pose_wrists["left"][2] >= 0.3 or pose_wrists["right"][2] >= 0.3
    if usable_pose:
        if len(hands) == 2:
            straight = cost(hands[0][0], "left") + cost(hands[1][0], "right")
            crossed = cost(hands[0][0], "right") + cost(hands[1][0], "left")
            order = ("left", "right") if straight <= crossed else ("right", "left")
            if not np.isfinite(min(straight, crossed)):
                order = _by_label(hands)
            pairs = list(zip(hands, order, strict=True))
        else:
            hand = hands[0]
            costs = {side: cost(hand[0], side) for side in ("left", "right")}
            side = min(costs, key=costs.get) if np.isfinite(min(costs.values())) else hand[1]
            pairs = [(hand, side)]
        for hand, side in pairs:
            if cost(hand[0], side) <= limit(side) or pose_wrists[side][2] < 0.3:
                slots[side] = hand[0]
    else:
        for hand, side in zip(hands, _by_label(hands), strict=False):
            slots[side] = hand[0]
    return slots["left"], slots["right"]


def _by_label(hands: list[tuple[np.ndarray, str, float]]) -> tuple[str, ...]:
    """Sides from MediaPipe's labels; two hands with the same label: the more confident keeps it."""
    if len(hands) == 1:
        return (hands[0][1],)
    first = hands[0][1]
    return (first, "left" if first == "right" else "right")


def get_detector(models: dict, settings: MediaPipePoseSettings | None = None) -> MediaPipePoseDetector:
    """The process-wide detector cached in ``ctx.models`` (MediaPipe graphs take ~1 s to build)."""
    settings = settings or MediaPipePoseSettings()
    key = f"mediapipe_pose:{settings}"
    if key not in models:
        logger.info("building MediaPipe pose and hands graphs")
        models[key] = MediaPipePoseDetector(settings)
    return models[key]
