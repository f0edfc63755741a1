"""Config settings must reach the stage that reads them (end-to-end seam between config.py and stage 3)."""

from __future__ import annotations

import copy

import pytest

from reconstruction.backends.mesh_tracker import TrackerConfig
from reconstruction.config import load_config
from reconstruction.stages import scene_inputs


def test_mesh_tracker_settings_are_reachable_through_the_config():
    # Stage 3 builds its tracker from ``obj_pose_tracking.mesh_tracker``; the validated config must accept
    # that key, or the tracker's iteration count etc. cannot be set at all.
    raw = copy.deepcopy(load_config(None).raw)
    raw["obj_pose_tracking"]["mesh_tracker"] = {"iterations": 5, "window": 2}
    config = load_config(raw)
    tracker = TrackerConfig.from_section(scene_inputs.config_section(config, "obj_pose_tracking"))
    assert (tracker.iterations, tracker.window) == (5, 2)


@pytest.mark.xfail(
    strict=True,
    reason="known bug (e2e report): stage 3 reads obj_pose_tracking.backend/import_path, which the config validator rejects",
)
def test_stage3_backend_setting_is_reachable_through_the_config():
    # Stage 3 documents and reads ``obj_pose_tracking.backend`` / ``import_path``; the validator rejects
    # both, while the typed section it does accept (``object_pose.backend/import_dir/iterations``) is read
    # by no stage. One of the two must go; until then the FoundationPose import cannot be selected.
    raw = copy.deepcopy(load_config(None).raw)
    raw["obj_pose_tracking"]["backend"] = "foundation_pose"
    raw["obj_pose_tracking"]["import_path"] = "/data/poses"
    section = scene_inputs.config_section(load_config(raw), "obj_pose_tracking")
    assert (section["backend"], section["import_path"]) == ("foundation_pose", "/data/poses")
