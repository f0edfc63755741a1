"""Config loading and strict validation (reconstruction.config)."""

from __future__ import annotations

import pytest
import yaml

from reconstruction.config import CONFIG_DIR, ConfigError, ReconConfig, load_config
from reconstruction.layout import Layout

# The key set of the reference's manip/pickup configs (re-typed from the contract + its published YAML
# layout): every one of these keys must load unchanged.
REFERENCE_STYLE_YAML = """
paths:
  results_dir: "results"
  video_dir: "generation/videos_kling"
  hmr_dir: "generation/hmr_smplx"
  hmr_cache_dir: "generation/hmr_smplx_cache"
  foundation_pose_dir: "generation/foundation_pose"
  foundation_pose_output_dir: "generation/foundation_pose_output"
  recon_cache_dir: "generation/4dhoi_recon_cache"
  depth_gt_dir: "generation/depth_maps"
  output_dir: "generation/4dhoi_recon_smplx"
  vis_scenepic_dir: "generation/vis_html"
human_model:
  body_model: "g1_smplx"
  static_cam: true
  smplx_model_path: "a/SMPLX_NEUTRAL.npz"
  smplx_shape_params_path: "data/x"
  soma_model_path: "b/mhr_model.pt"
  soma_shape_params_path: "data/y"
  g1_smplx_dir: "data/g1_smplx"
obj_pose_tracking:
  foundation_pose_debug: 2
  crop_image: false
  interpolation_factor: 1
  foundationpose_root: "/workspace/fp"
  nvdiffrast_root: "/workspace/nv"
  pytorch3d_root: "/workspace/p3d"
  track_refine_iter: 2
  smooth_window: 9
  smooth_polyorder: 3
  require_mycpp: false
optimization:
  log_dir: "logs"
  exp_name: "static_cam"
  use_global: False
  cache_list: [contact_labels]
  dct_cfg: {enable: false, coeff_ratio: 0.15}
  vis_cfg: {vis_init: true, enable: true, render_video: true, extra_views: ["top"], export_mesh: false,
            vis_html: true, vis_contact: true}
  opt_stage_specs:
    human_global_traj_opt:
      opt_vars:
        human_trans_global: {lr: 0.01, xy_only: true}
        human_pose_res: {lr: 0.0001, arm_only: true}
      niter: 1000
      loss_cfg:
        contact: {weight: 100000.0, duration: "start", threshold: 1.0}
        human_smoothness: {weight: 300.0, beta: 0.1}
        human_traj_reg: {weight: 10.0}
        obj_rot_reg: {weight: 10.0}
        verts_tracking: {weight: 0.1, threshold: 0.1}
        depth_pointcloud: {weight: 100.0, duration: "all", interval: 1, num_gt_samples: 3000, trim_pct: 0.2,
                           depth_tol: 0.02}
  eval:
    keypoint_tracking: {weight: 0.1, beta: 0.1, threshold: 2.0}
    contact: {weight: 100000.0, duration: "all", threshold: 5.0, max_contact_dist: 0.15}
filtering:
  camera_trans_thr: 0.1
  object_mask_tol: 0.5
  total_mask_tol: 0.3
  human_static_thr: 0
  min_frames: null
  filter_object_motion: "dynamic_only"
  object_static_thr: 0.02
post_processing:
  center_at_object: true
  compute_contact_points_nframes_before_inter_start: 48
pipeline:
  skip_step1: false
  skip_step6: false
  skip_done: false
  verbose: false
  vis_valid_only: false
  is_static_obj: false
"""


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    config = load_config(path)
    assert isinstance(config, ReconConfig)
    assert config.optimization.opt_stage_specs, "every shipped config optimises something"
    again = load_config(config.to_yaml())
    assert again.raw == config.raw
    assert again == config


def test_default_config_is_manip_anny():
    config = load_config()
    assert config.human_model.body_model == "anny"
    assert list(config.optimization.opt_stage_specs) == ["init_opt", "contact_opt", "refine_opt"]
    init = config.optimization.opt_stage_specs["init_opt"]
    assert init.niter == 400
    assert init.loss_cfg["depth_pointcloud"].num_gt_samples == 3000
    assert init.loss_cfg["depth_pointcloud"].trim_pct == pytest.approx(0.2)
    contact = config.optimization.opt_stage_specs["contact_opt"].loss_cfg["contact"]
    assert contact.depth_only is True and contact.max_contact_dist == pytest.approx(0.15)
    refine = config.optimization.opt_stage_specs["refine_opt"]
    assert refine.loss_cfg["contact"].depth_only is False and refine.niter == 100
    assert config.post_processing.savgol_window == 1  # the smoothness terms smooth; savgol would break contact
    assert config.filtering.filter_object_motion == "dynamic_only"
    assert config.eval_metrics["keypoint_tracking"].threshold == pytest.approx(2.0)
    # paths feed the layout directly
    Layout.create("/tmp/r", config.layout_paths())


def test_reference_key_set_loads_unchanged():
    config = load_config(REFERENCE_STYLE_YAML)
    stage = config.optimization.opt_stage_specs["human_global_traj_opt"]
    assert stage.opt_vars["human_trans_global"].xy_only is True
    assert stage.opt_vars["human_pose_res"].arm_only is True
    assert stage.loss_cfg["contact"].duration == "start"
    assert config.human_model.body_model == "g1_smplx"
    assert config.obj_pose_tracking.smooth_window == 9


def test_unknown_key_names_path_and_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config().merge({"optimization": {"opt_stage_specs": {"init_opt": {"loss_cfg": {"human_smoothnes": {}}}}}})
    message = str(err.value)
    assert message.startswith("optimization.opt_stage_specs.init_opt.loss_cfg.human_smoothnes")
    assert "'human_smoothness'" in message
    with pytest.raises(ConfigError, match=r"^filtering\.camera_trans_th: unknown key; did you mean 'camera_trans_thr'"):
        load_config().merge({"filtering": {"camera_trans_th": 0.2}})
    with pytest.raises(ConfigError, match=r"^optimization.opt_stage_specs.init_opt.opt_vars.obj_t_re: .*'obj_t_res'"):
        load_config().merge({"optimization": {"opt_stage_specs": {"init_opt": {"opt_vars": {"obj_t_re": {"lr": 1}}}}}})
    with pytest.raises(ConfigError, match=r"^postprocessing: unknown key; did you mean 'post_processing'"):
        load_config().merge({"postprocessing": {}})


def test_wrong_type_and_bad_choice():
    with pytest.raises(ConfigError, match=r"^optimization.opt_stage_specs.init_opt.niter: expected an integer"):
        load_config().merge({"optimization": {"opt_stage_specs": {"init_opt": {"niter": "many"}}}})
    with pytest.raises(ConfigError, match=r"^pipeline.verbose: expected true/false"):
        load_config().merge({"pipeline": {"verbose": "yes please"}})
    with pytest.raises(ConfigError, match=r"^filtering.filter_object_motion: .*did you mean 'static_only'"):
        load_config().merge({"filtering": {"filter_object_motion": "static"}})
    # PyYAML reads 1e-3 as text; it is still a number for a float field
    config = load_config().merge(
        {"optimization": {"opt_stage_specs": {"init_opt": {"opt_vars": {"obj_t_res": {"lr": "1e-3"}}}}}}
    )
    assert config.optimization.opt_stage_specs["init_opt"].opt_vars["obj_t_res"].lr == pytest.approx(1e-3)


def test_negative_weight_rejected():
    with pytest.raises(
        ConfigError, match=r"^optimization.opt_stage_specs.contact_opt.loss_cfg.contact.weight: must be >= 0"
    ):
        load_config().merge(
            {"optimization": {"opt_stage_specs": {"contact_opt": {"loss_cfg": {"contact": {"weight": -5}}}}}}
        )
    with pytest.raises(ConfigError, match=r"^optimization.eval.contact.threshold: must be >= 0"):
        load_config().merge({"optimization": {"eval": {"contact": {"threshold": -1.0}}}})


def test_missing_required_section_and_bad_sources(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "manip_anny.yaml").read_text())
    del raw["human_model"]
    with pytest.raises(ConfigError, match=r"^human_model: required section missing"):
        load_config(raw)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("paths: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_merge_section_and_yaml_round_trip(tmp_path):
    base = load_config()
    merged = base.merge({"optimization": {"opt_stage_specs": {"init_opt": {"niter": 7}}}})
    assert merged.optimization.opt_stage_specs["init_opt"].niter == 7
    assert base.optimization.opt_stage_specs["init_opt"].niter == 400  # the original is untouched
    assert merged.optimization.opt_stage_specs["contact_opt"].niter == 200
    section = merged.section("filtering")
    section["camera_trans_thr"] = 99.0  # a copy: the config does not change
    assert merged.filtering.camera_trans_thr == pytest.approx(0.1)
    path = tmp_path / "c.yaml"
    path.write_text(merged.to_yaml())
    assert load_config(path).raw == merged.raw
    with pytest.raises(ConfigError, match="did you mean 'filtering'"):
        merged.section("filtring")
