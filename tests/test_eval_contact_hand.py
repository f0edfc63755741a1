"""Hand-joint error restricted to contact frames, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction import keypoints as kp
from reconstruction.eval.evaluate import contact_hand_error


def test_contact_hand_error_uses_only_the_touching_hand_and_frames():
    gt = np.zeros((3, 75, 3))
    pred = np.zeros((3, 75, 3))
    pred[0, kp.LEFT_HAND_SLICE, 0] = 0.01  # left hand 1 cm off in frame 0 (in contact)
    pred[1, kp.RIGHT_HAND_SLICE, 1] = 0.03  # right hand 3 cm off in frame 1 (in contact)
    pred[2, kp.LEFT_HAND_SLICE, 2] = 1.0  # left hand far off in frame 2, but not in contact: ignored
    pred[0, kp.RIGHT_HAND_SLICE, 2] = 1.0  # right hand far off in frame 0, not in contact: ignored
    contact = np.array([[True, False], [False, True], [False, False]])
    # 21 joints at 0.01 and 21 at 0.03 -> mean 0.02
    assert contact_hand_error(pred, gt, contact) == pytest.approx(0.02)
    assert contact_hand_error(pred, gt, np.zeros((3, 2), dtype=bool)) is None
