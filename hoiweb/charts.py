"""Plotly figure specs (plain dicts, rendered by the locally served plotly.min.js) from a run's files.

Each chart is optional: a missing or unreadable file yields a note instead of a figure, never an error page.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LAYOUT = {
    "margin": {"l": 50, "r": 10, "t": 30, "b": 40},
    "height": 280,
    "font": {"family": "system-ui, sans-serif", "size": 11},
    "legend": {"orientation": "h", "y": -0.3},
    "paper_bgcolor": "#ffffff",
    "plot_bgcolor": "#fbfbfc",
}


def _series_dict(obj: Any) -> dict[str, list[float]]:
    return {
        str(k): [float(x) for x in v]
        for k, v in obj.items()
        if isinstance(v, list) and v and all(isinstance(x, int | float) for x in v)
    }


def loss_curves(path: Path) -> list[dict]:
    """One figure per optimisation stage, one trace per loss term (log scale)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    stages: list[tuple[str, dict[str, list[float]]]] = []
    if isinstance(data, dict) and isinstance(data.get("stages"), list):
        data = data["stages"]
    if isinstance(data, dict):
        for name, value in data.items():
            if isinstance(value, dict):
                inner = value.get("losses", value) if isinstance(value.get("losses"), dict) else value
                stages.append((str(name), _series_dict(inner)))
    elif isinstance(data, list):
        for i, entry in enumerate(data):
            if isinstance(entry, dict):
                # the optimiser's format: {"name", "niter", "terms": {term: [..]}, "total": [..]}
                losses = entry.get("terms") or entry.get("losses") or entry.get("history") or {}
                if isinstance(losses, dict):
                    series = _series_dict(losses)
                    if isinstance(entry.get("total"), list) and entry["total"]:
                        series.update(_series_dict({"total": entry["total"]}))
                    stages.append((str(entry.get("name", f"stage {i}")), series))
    figures = []
    for name, series in stages:
        if not series:
            continue
        traces = [{"type": "scatter", "mode": "lines", "name": k, "y": v} for k, v in sorted(series.items())]
        figures.append({
            "title": f"Loss · {name}",
            "data": traces,
            "layout": {**LAYOUT, "title": {"text": f"Loss · {name}", "font": {"size": 12}}, "height": 300,
                       "margin": {"l": 50, "r": 10, "t": 30, "b": 40},
                       "legend": {"orientation": "v", "x": 1.02, "y": 1, "font": {"size": 10}},
                       "yaxis": {"type": "log", "exponentformat": "power"}, "xaxis": {"title": {"text": "iteration"}}},
        })  # fmt: skip
    return figures


def contact_timeline(path: Path, fps: float | None) -> dict | None:
    """Per-frame contact per hand as a step chart (0/1), from contact_labels.json."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    hands: dict[str, list[float]] = {}
    if isinstance(data, dict):
        # the optimiser's format: "frames" = (T, 2) booleans, left then right hand
        per_frame = data.get("frames") or data.get("per_frame") or data.get("contact")
        if (
            isinstance(per_frame, list)
            and per_frame
            and isinstance(per_frame[0], list | tuple)
            and len(per_frame[0]) == 2
        ):
            hands = {
                "left hand": [float(bool(f[0])) for f in per_frame],
                "right hand": [float(bool(f[1])) for f in per_frame],
            }
        else:
            source = (
                per_frame if isinstance(per_frame, dict) else {k: v for k, v in data.items() if k in ("left", "right")}
            )
            for key, value in source.items():
                if isinstance(value, list) and value and all(isinstance(x, bool | int | float) for x in value):
                    label = "left hand" if "left" in key.lower() else "right hand" if "right" in key.lower() else key
                    hands[label] = [float(bool(x)) for x in value]
    if not hands:
        return None
    traces = []
    for offset, (name, values) in enumerate(sorted(hands.items())):
        x = [i / fps for i in range(len(values))] if fps else list(range(len(values)))
        traces.append({"type": "scatter", "mode": "lines", "line": {"shape": "hv"}, "name": name, "x": x,
                       "y": [v * 0.8 + offset for v in values]})  # fmt: skip
    return {
        "title": "Contact per hand",
        "data": traces,
        "layout": {**LAYOUT, "title": {"text": "Contact per hand", "font": {"size": 12}},
                   "margin": {"l": 80, "r": 10, "t": 30, "b": 40},
                   "xaxis": {"title": {"text": "seconds" if fps else "frame"}},
                   "yaxis": {"tickvals": [0.4 + i for i in range(len(hands))], "ticktext": sorted(hands)}},
    }  # fmt: skip


def object_speed(hoi_data_path: Path, contact_path: Path, fps: float | None) -> dict | None:
    """Object speed (m/s): from ``obj_data.obj_t`` of hoi_data.pkl (NumPy-only unpickler), else from the
    contact labels' ``object_speed`` (metres/frame)."""
    rate = fps or 30.0
    speed = x = None
    if hoi_data_path.exists():
        from hoiweb.uploads import RestrictedUnpickler

        try:
            data = RestrictedUnpickler(io.BytesIO(hoi_data_path.read_bytes())).load()
            obj_t = np.asarray(data["obj_data"]["obj_t"], dtype=np.float64).reshape(-1, 3)
            if len(obj_t) >= 2:
                speed = np.linalg.norm(np.diff(obj_t, axis=0), axis=1) * rate
                x = (np.arange(1, len(obj_t)) / rate).tolist()
        except Exception as exc:  # noqa: BLE001 - a chart, not a validator
            log.info("object speed from %s unavailable: %s", hoi_data_path, exc)
    if speed is None and contact_path.exists():
        labels = json.loads(contact_path.read_text())
        per_frame = labels.get("object_speed") if isinstance(labels, dict) else None
        if isinstance(per_frame, list) and len(per_frame) >= 2:
            speed = np.asarray(per_frame, dtype=np.float64) * rate
            x = (np.arange(len(speed)) / rate).tolist()
    if speed is None:
        return None
    return {
        "title": "Object speed",
        "data": [{"type": "scatter", "mode": "lines", "name": "object speed", "x": x, "y": speed.round(5).tolist()}],
        "layout": {
            **LAYOUT,
            "title": {"text": "Object speed (m/s)", "font": {"size": 12}},
            "xaxis": {"title": {"text": "seconds"}},
        },
    }


def hand_distance(path: Path, fps: float | None) -> dict | None:
    """Closest hand-object distance per hand (m), from the contact labels."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    rows = data.get("hand_distance") if isinstance(data, dict) else None
    if not isinstance(rows, list) or len(rows) < 2 or not isinstance(rows[0], list):
        return None
    values = np.asarray(rows, dtype=np.float64)
    x = [i / fps for i in range(len(values))] if fps else list(range(len(values)))
    traces = [{"type": "scatter", "mode": "lines", "name": f"{hand} hand", "x": x, "y": values[:, h].round(5).tolist()}
              for h, hand in enumerate(("left", "right")[: values.shape[1]])]  # fmt: skip
    return {
        "title": "Hand-object distance",
        "data": traces,
        "layout": {**LAYOUT, "title": {"text": "Hand-object distance (m)", "font": {"size": 12}},
                   "xaxis": {"title": {"text": "seconds" if fps else "frame"}}},
    }  # fmt: skip


def per_frame_errors(metrics_path: Path, fps: float | None) -> dict | None:
    """Per-frame error series from metrics.json (keypoint error, MPJPE, ...): every list of numbers found."""
    if not metrics_path.exists():
        return None
    data = json.loads(metrics_path.read_text())
    series: dict[str, list[float]] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif (
            isinstance(obj, list)
            and len(obj) > 1
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in obj)
        ):
            series[prefix] = [float(x) for x in obj]

    walk(data, "")
    if not series:
        return None
    keypoint_first = sorted(series, key=lambda k: (0 if "keypoint" in k or "mpjpe" in k else 1, k))
    traces = []
    for name in keypoint_first[:8]:
        values = series[name]
        x = [i / fps for i in range(len(values))] if fps else list(range(len(values)))
        traces.append({"type": "scatter", "mode": "lines", "name": name, "x": x, "y": values})
    return {
        "title": "Per-frame error",
        "data": traces,
        "layout": {**LAYOUT, "title": {"text": "Per-frame error (keypoints, ground truth)", "font": {"size": 12}},
                   "xaxis": {"title": {"text": "seconds" if fps else "frame"}}},
    }  # fmt: skip


def run_charts(run) -> list[dict]:
    paths = run.artefact_paths()
    fps = run.video.fps
    charts: list[dict] = []
    for builder in (
        lambda: loss_curves(paths["loss_history"]),
        lambda: [contact_timeline(paths["contact_labels"], fps)],
        lambda: [object_speed(paths["hoi_data"], paths["contact_labels"], fps)],
        lambda: [hand_distance(paths["contact_labels"], fps)],
        lambda: [per_frame_errors(paths["metrics"], fps)],
    ):
        try:
            charts.extend(c for c in builder() if c)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("chart failed for run %s: %s", run.pk, exc)
    for i, chart in enumerate(charts):
        chart["id"] = f"chart-{i}"
    return charts
