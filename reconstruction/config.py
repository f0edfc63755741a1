"""Typed, strictly validated reconstruction config (the reference's YAML layout, contract section 6).

``load_config`` accepts a path, a YAML string, a dict or ``None`` (the default ``configs/manip_anny.yaml``)
and returns a frozen ``ReconConfig``. Every section is a dataclass; the schema below IS the list of valid
keys. The reference pipeline ignores unknown keys; we reject them (and wrong types, negative weights) with
a ``ConfigError`` naming the key path and the nearest valid key, so a typo never silently drops a loss.

Every key of the reference's own manip/loco/pickup YAML files is accepted unchanged. Where the reference
has two homes for a setting (``optimization.eval`` vs top-level ``eval``; ``optimization.vis_cfg`` vs
``visualization``), both are accepted and ``ReconConfig.eval_metrics`` / ``.vis`` merge them (top level wins).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "manip_anny.yaml"

# Loss terms of the reference (grail/optimization/loss_terms.py) plus hoiweb's contact_smoothness,
# obj_still_reg (the object held where stage 3 sees it still, touched or not), hand_grasp (fingertips rest on
# the gripped surface) and hand_pose_reg (the fingers' residual stays small and smooth).
LOSS_NAMES: tuple[str, ...] = (
    "keypoint_tracking", "ground", "human_global_init_reg", "human_smoothness", "human_traj_reg",
    "human_pose_reg", "human_foot_contact", "verts_tracking", "obj_smoothness", "obj_traj_reg",
    "obj_rot_reg", "depth_pointcloud", "contact", "contact_smoothness", "penetration", "obj_precontact_reg",
    "obj_still_reg", "hand_grasp", "hand_pose_reg",
)  # fmt: skip

# Residual variables on top of the stage 1-3 estimates.
OPT_VAR_NAMES: tuple[str, ...] = (
    "human_trans_global", "human_trans_res", "human_pose_res", "human_hand_pose_res", "obj_t_res", "obj_R_res",
)  # fmt: skip


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the key path (``optimization.opt_stage_specs...``)."""


def _meta(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def _nonneg(default: Any) -> Any:
    return field(default=default, metadata=_meta(min=0.0))


# ---- sections ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathsConfig:
    results_dir: str = "results"
    video_dir: str = "generation/videos_kling"
    mesh_dir: str = "generation/mesh"
    foundation_pose_dir: str = "generation/foundation_pose"
    depth_gt_dir: str = "generation/depth_maps"
    hmr_dir: str = "generation/hmr"
    hmr_cache_dir: str = "generation/hmr4d_cache"
    recon_cache_dir: str = "generation/4dhoi_recon_cache"
    foundation_pose_output_dir: str = "generation/foundation_pose_output"
    output_dir: str = "generation/4dhoi_recon"
    valid_dir: str = "generation/4dhoi_recon_smplx_valid"
    vis_scenepic_dir: str = "generation/vis_html"
    ground_truth_dir: str = "generation/ground_truth"


@dataclass(frozen=True)
class PipelineConfig:
    skip_step1: bool = False
    skip_step2: bool = False
    skip_step3: bool = False
    skip_step4: bool = False
    skip_step5: bool = False
    skip_step6: bool = False
    skip_done: bool = False
    verbose: bool = False
    vis_valid_only: bool = False
    is_static_obj: bool = False


@dataclass(frozen=True)
class HumanModelConfig:
    body_model: Literal["anny", "smplx", "soma", "g1_smplx"] = "anny"
    static_cam: bool = True
    smplx_model_path: str | None = None
    smplx_shape_params_path: str | None = None
    soma_model_path: str | None = None
    soma_shape_params_path: str | None = None
    g1_smplx_dir: str | None = None


@dataclass(frozen=True)
class ObjPoseTrackingConfig:
    foundation_pose_debug: int = 2
    crop_image: bool = False
    interpolation_factor: int = field(default=1, metadata=_meta(min=1))
    foundationpose_root: str | None = None
    nvdiffrast_root: str | None = None
    pytorch3d_root: str | None = None
    track_refine_iter: int = _nonneg(2)
    smooth_window: int = _nonneg(9)
    smooth_polyorder: int = _nonneg(3)
    require_mycpp: bool = False


@dataclass(frozen=True)
class OptVarConfig:
    lr: float = field(default=1e-3, metadata=_meta(min=0.0))
    xy_only: bool = False  # human_trans_global: keep the height fixed
    arm_only: bool = False  # human_pose_res: only the arm chains move


@dataclass(frozen=True)
class LossTermConfig:
    """One loss term's options (also used for ``eval`` metrics, which add ``threshold``)."""

    weight: float = _nonneg(1.0)
    beta: float | None = field(default=None, metadata=_meta(min=0.0))
    duration: Literal["all", "start", "contact", "precontact"] = "all"
    interval: int = field(default=1, metadata=_meta(min=1))
    num_gt_samples: int = field(default=3000, metadata=_meta(min=1))
    trim_pct: float = field(default=0.2, metadata=_meta(min=0.0, max=0.99))
    depth_tol: float = _nonneg(0.02)
    depth_only: bool = False
    max_contact_dist: float = _nonneg(0.15)
    contact_px: float = _nonneg(20.0)  # contact: screen-space radius around the contact body part
    huber_delta: float = field(default=0.01, metadata=_meta(min=0.0))
    foot_height: float = _nonneg(0.05)  # human_foot_contact: feet below this height may not slide
    tip_gap: float = _nonneg(0.003)  # hand_grasp: wanted distance (m) of the fingertip keypoints to the surface
    threshold: float | None = field(default=None, metadata=_meta(min=0.0))


@dataclass(frozen=True)
class OptStageSpec:
    opt_vars: dict[str, OptVarConfig] = field(default_factory=dict, metadata=_meta(keys=OPT_VAR_NAMES))
    niter: int = _nonneg(100)
    loss_cfg: dict[str, LossTermConfig] = field(default_factory=dict, metadata=_meta(keys=LOSS_NAMES))


@dataclass(frozen=True)
class VisualizationConfig:
    vis_init: bool = True
    enable: bool = True
    render_video: bool = True
    extra_views: list[str] = field(default_factory=lambda: ["top"])
    export_mesh: bool = False
    vis_html: bool = True
    vis_contact: bool = True


@dataclass(frozen=True)
class DctConfig:
    enable: bool = False
    coeff_ratio: float = field(default=0.15, metadata=_meta(min=0.0, max=1.0))


@dataclass(frozen=True)
class PreEvalConfig:
    min_frames: int | None = field(default=None, metadata=_meta(min=1))


@dataclass(frozen=True)
class ContactLabellingConfig:
    """hoiweb: contact labels from stages 1-3 (no external service)."""

    method: Literal["geometric"] = "geometric"
    near_dist: float = _nonneg(0.03)  # hand-object distance that starts a contact (m)
    far_dist: float = _nonneg(0.05)  # distance that ends one (hysteresis)
    motion_speed: float = _nonneg(0.004)  # object speed counted as moving (m/frame)
    coupling_dist: float = _nonneg(0.25)  # a moving object is "carried" by a hand this close
    min_interval: int = field(default=3, metadata=_meta(min=1))  # frames; shorter intervals are dropped
    max_gap: int = _nonneg(2)  # gaps up to this many frames are closed
    foot_height: float = _nonneg(0.05)
    # view-depth gap between hand and object that costs nothing (stage 1's monocular arm depth; m)
    depth_slack: float = _nonneg(0.5)
    # hand speed against the object (m/frame, image plane) above which an interval's ends are reach / release
    approach_speed: float = _nonneg(0.008)
    # frames of contact kept before / after the object's motion in an interval over which it moves
    still_contact_frames: int = _nonneg(3)


@dataclass(frozen=True)
class OptimizationConfig:
    log_dir: str = "logs"
    exp_name: str = "static_cam"
    use_global: bool = False
    cache_list: list[str] = field(default_factory=list)
    dct_cfg: DctConfig = field(default_factory=DctConfig)
    vis_cfg: VisualizationConfig = field(default_factory=VisualizationConfig)
    opt_stage_specs: dict[str, OptStageSpec] = field(default_factory=dict)
    eval: dict[str, LossTermConfig] = field(default_factory=dict, metadata=_meta(keys=LOSS_NAMES))
    pre_eval: PreEvalConfig = field(default_factory=PreEvalConfig)
    # hoiweb extensions
    contact_labelling: ContactLabellingConfig = field(default_factory=ContactLabellingConfig)
    compile: bool = True  # torch.compile the loss of single-video runs on CUDA (not on the CPU, not batches)
    cuda_graph: bool = True  # on CUDA, capture each optimiser iteration in a CUDA graph (launch-bound otherwise)
    object_surface_samples: int = field(default=1000, metadata=_meta(min=16))
    seed: int = 0


@dataclass(frozen=True)
class DepthConfig:
    method: Literal["moge", "vggt", "static", "gt"] = "moge"
    align_to_gt: bool = True
    min_valid_pixels: int = _nonneg(100)
    gt_min_depth: float = _nonneg(0.1)
    gt_max_depth: float = _nonneg(65.0)


@dataclass(frozen=True)
class FilteringConfig:
    camera_trans_thr: float = _nonneg(0.1)
    object_mask_tol: float = _nonneg(0.5)
    total_mask_tol: float = _nonneg(0.3)
    human_static_thr: float = _nonneg(0.01)
    min_frames: int | None = field(default=None, metadata=_meta(min=1))
    filter_object_motion: Literal["all", "static_only", "dynamic_only", "none"] = "all"
    object_static_thr: float = _nonneg(0.02)
    # hoiweb: thresholds the reference hard-codes
    human_init_pos_thr: float = _nonneg(0.5)
    init_penetration_thr: float = _nonneg(0.02)
    table_height_tol: float = _nonneg(0.05)


@dataclass(frozen=True)
class PostProcessingConfig:
    # the exported result in a world centred on the object (reconstruction/optim/centering.py). Stage 4's
    # raw hoi_data.pkl stays in the render world, which stages 5-6 and the evaluation compare with the
    # render config; the centring belongs to the accepted export (stage 5's valid copy).
    center_at_object: bool = True
    compute_contact_points_nframes_before_inter_start: int = _nonneg(48)
    save_joints: bool = False
    savgol_window: int = field(default=11, metadata=_meta(min=1))
    savgol_order: int = _nonneg(2)
    # hoiweb: Savitzky-Golay window of the object's trajectory (None: ``savgol_window``)
    savgol_window_object: int | None = field(default=None, metadata=_meta(min=1))


class _LazyFieldNames:
    """The field names of a settings dataclass in an engine module, read on first use (those modules
    import torch or OpenCV, which loading a config must not)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _names(self) -> tuple[str, ...]:
        import importlib

        return tuple(f.name for f in dataclasses.fields(getattr(importlib.import_module(self.module), self.name)))

    def __contains__(self, key: object) -> bool:
        return key in self._names()

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self._names())


@dataclass(frozen=True)
class HumanPoseConfig:
    """hoiweb stage 1 backend."""

    backend: Literal["mediapipe", "import"] = "mediapipe"
    import_dir: str | None = None
    min_detection_confidence: float = field(default=0.5, metadata=_meta(min=0.0, max=1.0))
    model_complexity: int = field(default=1, metadata=_meta(min=0, max=2))
    # the body fit's settings (stages/fit_body.py FitSettings fields), e.g. ``fit: {iterations: 100}``
    fit: dict[str, Any] = field(
        default_factory=dict, metadata=_meta(keys=_LazyFieldNames("reconstruction.stages.fit_body", "FitSettings"))
    )


@dataclass(frozen=True)
class PreprocessConfig:
    """hoiweb stage 2 backends."""

    mask_backend: Literal["classical", "sam2"] = "classical"
    depth_backend: Literal["static", "moge"] = "static"
    sam2_checkpoint: str | None = None
    sam2_model_cfg: str | None = None
    moge_checkpoint: str | None = None
    # the classical mask backend's settings (backends/classical_masks.py ClassicalMaskConfig fields)
    classical: dict[str, Any] = field(
        default_factory=dict,
        metadata=_meta(keys=_LazyFieldNames("reconstruction.backends.classical_masks", "ClassicalMaskConfig")),
    )


@dataclass(frozen=True)
class ObjectPoseConfig:
    """hoiweb stage 3 backend."""

    backend: Literal["mesh_tracker", "import"] = "mesh_tracker"
    import_dir: str | None = None
    iterations: int = field(default=50, metadata=_meta(min=1))
    mesh_tracker: dict[str, Any] = field(default_factory=dict)  # TrackerConfig fields (backends/mesh_tracker.py)


@dataclass(frozen=True)
class ReconConfig:
    paths: PathsConfig
    human_model: HumanModelConfig
    optimization: OptimizationConfig
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    obj_pose_tracking: ObjPoseTrackingConfig = field(default_factory=ObjPoseTrackingConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    filtering: FilteringConfig = field(default_factory=FilteringConfig)
    post_processing: PostProcessingConfig = field(default_factory=PostProcessingConfig)
    visualization: VisualizationConfig | None = None
    eval: dict[str, LossTermConfig] = field(default_factory=dict, metadata=_meta(keys=LOSS_NAMES))
    geometry_backend: Literal["moge", "vggt"] = "moge"
    camera_mode: Literal["fixed", "dynamic"] = "fixed"
    human_pose: HumanPoseConfig = field(default_factory=HumanPoseConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    object_pose: ObjectPoseConfig = field(default_factory=ObjectPoseConfig)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    REQUIRED: typing.ClassVar[tuple[str, ...]] = ("paths", "human_model", "optimization")

    # ---- access ---------------------------------------------------------------------------------
    def section(self, name: str) -> dict[str, Any]:
        """A deep copy of one section of the validated dict (``{}`` for an absent optional one)."""
        if name not in _field_names(ReconConfig) or name == "raw":
            raise ConfigError(f"{name}: unknown section{_suggest(name, _field_names(ReconConfig))}")
        value = self.raw.get(name)
        return copy.deepcopy(value) if isinstance(value, dict) else ({} if value is None else value)

    @property
    def eval_metrics(self) -> dict[str, LossTermConfig]:
        """Metrics stage 5 compares with thresholds: ``optimization.eval`` updated by top-level ``eval``."""
        return {**self.optimization.eval, **self.eval}

    @property
    def vis(self) -> VisualizationConfig:
        return self.visualization if self.visualization is not None else self.optimization.vis_cfg

    def layout_paths(self) -> dict[str, str]:
        """The ``paths`` entries that ``reconstruction.layout.Layout.create`` takes (not results_dir)."""
        return {k: v for k, v in self.raw.get("paths", {}).items() if k != "results_dir"}

    # ---- transforms -----------------------------------------------------------------------------
    def merge(self, overrides: dict[str, Any] | None) -> ReconConfig:
        """A new config: ``overrides`` deep-merged over this one, validated again."""
        return load_config(_deep_merge(self.raw, overrides or {}))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False, default_flow_style=False)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)


# ---- loading ---------------------------------------------------------------------------------------
def load_config(source: str | Path | dict[str, Any] | ReconConfig | None = None) -> ReconConfig:
    """Load and validate a config from a path, YAML text, a dict, or ``None`` (the default file)."""
    if isinstance(source, ReconConfig):
        return source
    if source is None:
        source = DEFAULT_CONFIG
    origin = "config"
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        text, origin = _read_source(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{origin}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the config must be a mapping of sections, got {type(data).__name__}")
    missing = [name for name in ReconConfig.REQUIRED if name not in data]
    if missing:
        raise ConfigError(f"{missing[0]}: required section missing ({origin})")
    try:
        config = _build(ReconConfig, data, "")
    except ConfigError as exc:
        if origin != "config":
            raise ConfigError(f"{exc} (in {origin})") from None
        raise
    return dataclasses.replace(config, raw=_to_plain(config))


def _read_source(source: str | Path) -> tuple[str, str]:
    if isinstance(source, Path):
        if not source.exists():
            raise ConfigError(f"config file not found: {source}")
        return source.read_text(), str(source)
    # A string is a path when it looks like one; YAML text has a newline or a "key:" in it.
    if "\n" not in source and ":" not in source.split("/")[-1]:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config file not found: {source}")
        return path.read_text(), str(path)
    return source, "config text"


# ---- generic validation ----------------------------------------------------------------------------
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_HINTS: dict[type, dict[str, Any]] = {}


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _suggest(name: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "raw"}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{_join(path, key)}: unknown key{_suggest(key, fields)}")
    hints = _hints(cls)
    kwargs = {}
    for name, spec in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], _join(path, name), spec.metadata)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path, meta)
    if origin is Literal:
        if value not in args:
            close = _suggest(str(value), [str(a) for a in args])
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}{close}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, path)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        allowed = meta.get("keys")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{_join(path, str(key))}: keys must be strings")
            if allowed is not None and key not in allowed:
                raise ConfigError(f"{_join(path, key)}: unknown key{_suggest(key, allowed)}")
            out[key] = _coerce(item, args[1], _join(path, key), {})
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        return _check_range(value, path, meta)
    if tp is float:
        # PyYAML reads "1e-3" (no dot) as a string; accept numeric text for float fields.
        if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
        return _check_range(float(value), path, meta)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"config schema: unsupported type {tp!r} at {path}")  # a bug in this module


def _check_range(value: float, path: str, meta: typing.Mapping[str, Any]) -> Any:
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{path}: must be finite, got {value!r}")
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{path}: must be >= {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{path}: must be <= {high:g}, got {value!r}")
    return value


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "raw"}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
