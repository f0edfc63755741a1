"""Config settings must reach the stage that reads them (end-to-end seam between config.py and stage 3)."""

from __future__ import annotations

import copy

import pytest

from reconstruction.backends.mesh_tracker import TrackerConfig
from reconstruction.config import ConfigError, load_config
from reconstruction.stages import scene_inputs


def test_mesh_tracker_settings_are_reachable_through_the_config():
    # Stage 3 builds its tracker from ``object_pose.mesh_tracker`` (and ``object_pose.iterations``); the
    # validated config must accept that key, or the tracker's settings cannot be set at all.
    raw = copy.deepcopy(load_config(None).raw)
    raw["object_pose"]["mesh_tracker"] = {"window": 2}
    raw["object_pose"]["iterations"] = 5
    config = load_config(raw)
    tracker = TrackerConfig.from_section(scene_inputs.config_section(config, "object_pose"))
    assert (tracker.iterations, tracker.window) == (5, 2)


def test_stage3_import_backend_is_reachable_through_the_config():
    # The FoundationPose import is selected in the section stage 3 reads: object_pose.backend / import_dir.
    raw = copy.deepcopy(load_config(None).raw)
    raw["object_pose"]["backend"] = "import"
    raw["object_pose"]["import_dir"] = "/data/poses"
    section = scene_inputs.config_section(load_config(raw), "object_pose")
    assert (section["backend"], section["import_dir"]) == ("import", "/data/poses")


def test_tracker_keys_in_the_wrong_section_are_rejected():
    raw = copy.deepcopy(load_config(None).raw)
    raw["obj_pose_tracking"]["mesh_tracker"] = {"window": 2}
    with pytest.raises(ConfigError, match="obj_pose_tracking.mesh_tracker"):
        load_config(raw)
