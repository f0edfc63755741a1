"""The web's narrow view of the engine: config validation and layout, never torch.

``reconstruction.config`` must stay importable without torch (a test checks that the web process never
imports torch); stage execution happens only in ``workers``.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """An invalid config; ``errors`` lists one message per problem (each naming the key path)."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def parse_yaml(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError([f"YAML syntax error{where}: {getattr(exc, 'problem', None) or exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(["the config must be a YAML mapping with sections such as paths, human_model, optimization"])
    return data


def validate_config_text(text: str) -> dict[str, Any]:
    """Parse and validate a config with the engine's schema; returns the validated dict (``ReconConfig.raw``)."""
    data = parse_yaml(text)
    from reconstruction.config import load_config  # the engine's schema (torch-free)

    try:
        config = load_config(data)
    except (ValueError, KeyError, TypeError) as exc:
        errors = getattr(exc, "errors", None)
        raise ConfigError([str(e) for e in errors] if errors else [str(exc)]) from exc
    raw = getattr(config, "raw", data)
    return _jsonable(raw)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def default_config_text() -> str:
    path = Path(settings.DEFAULT_CONFIG_PATH)
    if not path.exists():
        raise FileNotFoundError(f"default config not found: {path} (setting HOIWEB_DEFAULT_CONFIG)")
    return path.read_text()


def config_diff(text: str, base: str | None = None) -> str:
    """Unified diff of ``text`` against the default config (empty when identical)."""
    if base is None:
        try:
            base = default_config_text()
        except FileNotFoundError:
            return ""
    lines = difflib.unified_diff(
        base.splitlines(keepends=True), text.splitlines(keepends=True), "default.yaml", "this config.yaml", n=2
    )
    return "".join(lines)


def flatten_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """{"a": {"b": 1}} -> {"a.b": 1.0}; non-numeric leaves are dropped."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, int | float) and not isinstance(data, bool) and prefix:
        out[prefix] = float(data)
    return out


def gt_metrics_from_report(data: Any) -> dict[str, float]:
    """Flat ground-truth metrics from ``metrics.json`` (``{"stages": {"optimize": {"mpjpe": ..}}}`` -> ``optimize.mpjpe``)."""
    if not isinstance(data, dict):
        return {}
    return flatten_numbers(data["stages"] if isinstance(data.get("stages"), dict) else data)
