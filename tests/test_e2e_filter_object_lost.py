"""Stage 5 must reject a video whose object is lost (issue 5, "Filters"): seen end to end on the synthetic
``object_lost`` variant (box, 30 frames, 320x240, 2026-11-24): the object's visible fraction drops to 0.22
for frames 9-23, yet ``object_mask`` reported error 0.0 on those frames and passed: the reference's error
counts only mask pixels the render misses. The error is now two-sided: rendered object pixels with no mask
under them count too."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.stages import filtering


def test_object_mask_check_fails_when_the_object_vanishes_from_the_masks():
    frames, height, width = 10, 40, 60
    rendered = np.zeros((frames, height, width), dtype=bool)
    rendered[:, 10:30, 20:40] = True  # the reconstruction keeps the object in view (400 px)
    masks = rendered.copy()
    masks[3:8] = False  # the segmentation lost the object in half the frames
    errors = filtering.object_mask_errors(masks, rendered)
    checks = filtering.check_object_mask(errors, frame_tol=0.5, total_tol=0.3, min_frames=None)
    # The reference's one-sided error (mask pixels the render misses) is 0 where the mask is empty, so
    # nothing fails; a lost object must fail the mask check (e.g. by also counting rendered pixels with no
    # mask support).
    assert any(check.verdict == filtering.FAIL for check in checks), [(c.name, c.value) for c in checks]
    per_frame, total = checks
    assert per_frame.verdict == total.verdict == filtering.FAIL
    assert per_frame.data["first_bad"] == 3
    assert errors[3:8] == pytest.approx(400 / 401)  # the whole render unsupported by a mask
    assert errors[:3] == pytest.approx(0.0) and errors[8:] == pytest.approx(0.0)


def test_object_mask_check_passes_a_partly_occluded_object_and_fails_one_out_of_its_masks():
    frames, height, width = 6, 40, 60
    rendered = np.zeros((frames, height, width), dtype=bool)
    rendered[:, 10:30, 20:40] = True
    masks = rendered.copy()
    masks[:, 10:30, 20:25] = False  # a hand covers a quarter of the object: visible, only partly
    checks = filtering.check_object_mask(filtering.object_mask_errors(masks, rendered), 0.5, 0.3, None)
    assert [c.verdict for c in checks] == [filtering.PASS, filtering.PASS]
    shifted = np.roll(masks, 15, axis=2)  # the segmentation follows something else
    checks = filtering.check_object_mask(filtering.object_mask_errors(shifted, rendered), 0.5, 0.3, None)
    assert checks[0].verdict == filtering.FAIL
