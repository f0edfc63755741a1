"""``post_processing.center_at_object``: express a hoi_data dict in a world centred on the object.

The world is shifted horizontally (Z-up: the ground height is kept) so that the object's frame-0 position
is at x = y = 0. Everything posed in the world moves with it (human ``trans`` and ``joints``, ``obj_t``,
static scene objects' ``pos``); the camera follows (``meta.world_to_cam``), so every camera-frame value
(``obj_R_cam``, ``obj_t_cam``, projections) is unchanged. ``meta.center_offset`` records the shift:
render-world position = centred position + offset; ``uncenter`` undoes it (what consumers that compare
with the render config, e.g. stage 5's initial-position check, need).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


def object_center_offset(hoi: dict[str, Any]) -> np.ndarray:
    """(3,) shift that puts the object's frame-0 position at the horizontal origin."""
    obj_t = np.asarray(hoi["obj_data"]["obj_t"], dtype=np.float64).reshape(-1, 3)
    return np.array([obj_t[0, 0], obj_t[0, 1], 0.0])


def _shift(hoi: dict[str, Any], offset: np.ndarray) -> dict[str, Any]:
    """World positions minus ``offset``; the camera keeps seeing the same image."""
    out = copy.deepcopy(hoi)
    human, obj, meta = out["human_data"], out["obj_data"], out.setdefault("meta", {})
    for container, key in ((human, "trans"), (human, "joints"), (obj, "obj_t")):
        if key in container:
            value = np.asarray(container[key])
            container[key] = (value - offset).astype(value.dtype)
    for item in out.get("scene_data") or []:
        if isinstance(item, dict) and "pos" in item:
            item["pos"] = (np.asarray(item["pos"], dtype=np.float64) - offset).tolist()
    if "world_to_cam" in meta:
        w2c = np.asarray(meta["world_to_cam"])
        shift = np.eye(4)
        shift[:3, 3] = offset  # centred -> render world, then the render camera
        meta["world_to_cam"] = (w2c.astype(np.float64) @ shift).astype(w2c.dtype)
    return out


def center_at_object(hoi: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``hoi`` centred on the object's frame-0 position (idempotent: a centred dict is kept)."""
    if "center_offset" in (hoi.get("meta") or {}):
        return copy.deepcopy(hoi)
    offset = object_center_offset(hoi)
    out = _shift(hoi, offset)
    out["meta"]["center_offset"] = offset.astype(np.float32)
    return out


def uncenter(hoi: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``hoi`` back in the render world (unchanged when it was never centred)."""
    meta = hoi.get("meta") or {}
    if "center_offset" not in meta:
        return copy.deepcopy(hoi)
    offset = np.asarray(meta["center_offset"], dtype=np.float64)
    out = _shift(hoi, -offset)
    del out["meta"]["center_offset"]
    return out
