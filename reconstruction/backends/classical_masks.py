"""Mask backend ``classical`` (default, no weights): object and human masks for a static camera.

How a frame is split:
1. Foreground = CIE Lab colour difference against a background model. The model is frame 0 with the
   first-frame human/object masks cut out; those holes are filled as later frames reveal background.
2. Where the background is still unknown, a three-class colour model (background / object / human
   Lab histograms learned on frame 0) and MediaPipe selfie segmentation decide, and what the flow carries
   from the last frame's foreground stays foreground unless its colour is clearly the background's
   (``keep_foreground_margin``); but on the spot the
   object stood on at frame 0, a colour matching the known background around it (normalised
   convolution, ``fill_sigma_px``) is background, whatever the histograms say (a revealed table spot
   whose wood shares bins with skin was called human until the end of the video).
3. Object vs human inside the foreground: the colour model plus a spatial prior, the previous object
   mask carried to this frame by dense optical flow (DIS). The prior keeps the object's occluded part
   alive while a hand covers it, so the object reappears when the hand moves on.
4. Human = the non-object foreground united with the selfie segmentation where the background is
   unknown; morphological clean-up, small blobs dropped.
   Rigid carry (``rigid_carry``): where the object has enough pixels whose colour is surely its own
   (object vs human log-odds above ``sure_margin``) in the last frame and in this one, the mask is
   carried by one 2-D rigid motion fitted to those (trimmed ICP) instead of the dense flow, which on
   black-on-black follows the static trousers. Sure pixels are then decided by colour; ambiguous ones
   by shape: object iff inside the carried mask or the frame-0 mask under the composed motions (no
   pull from mere nearness, which let an ambiguous region grow into the object frame after frame).
   Ambiguous bands up to 2 ``gap_close_px`` wide between object parts (across a bar) join it. A hidden object has
   no sure pixels, so no shape is carried onto what covers it. A face turned from the light is the object's
   colour darker, which the Lab histograms may call surely human: inside the carried shape, a pixel whose
   chromaticity (unchanged by shading) is surely the object's is the object's (``shade_chroma_margin``); and
   where the carried shape reaches beyond the carried frame-0 mask, an ambiguous pixel whose chromaticity is
   surely the person's is not (``foreign_chroma_margin``: a sleeve beside a like-coloured object).
   In and around the frame-0 person (``unchanged_band_px``), away from the object, pixels that look as they
   did at frame 0 keep frame 0's label: behind the person the background is unknown and colour alone lost
   legs the colour of the floor and the outline's blended pixels.
5. Object shape: the object mask is kept inside the frame-0 mask's ellipse (grown by ``size_gate``,
   mean-shift centred), its outline pixels re-decided by the nearest local colour (object interior,
   human interior, known background), and until the object first moves (``pose_anchors`` still test
   on its outline band) it is the frame-0 mask minus the pixels that changed. With the rigid carry, a
   turning object (a drill seen end-on, then from the side) also keeps the pixels near its carried
   shape and its sure pixels within the mesh's projected radius (``object_radius_px``).

Everything per pixel is vectorised (numpy/OpenCV); only the flow tracking walks frame by frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from reconstruction.backends import pose_anchors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassicalMaskConfig:
    diff_threshold: float = 7.0  # Lab distance (L in [0,100]) above which a pixel differs from background
    chroma_weight: float = 1.0  # weight of a*, b* against L* in the background difference
    colour_bins: int = 16  # histogram bins per Lab channel
    prior_weight: float = 3.0  # log-odds bonus for object pixels carried by flow from the previous frame
    spatial_weight: float = 2.0  # log-odds for "nearer the carried object than the carried human"
    object_margin: float = 0.0  # object iff log P(c|obj) + prior > log P(c|human) + margin
    search_radius_frac: float = 0.03  # object may appear this far (x image diagonal) from its prior
    selfie_threshold: float = 0.8  # person probability that marks unknown-background pixels foreground
    selfie_union_threshold: float = 0.95  # ... that makes them human on its own
    use_selfie: bool = True
    kernel_px: int = 3  # morphological clean-up kernel
    min_blob_frac: float = 2e-4  # drop blobs smaller than this fraction of the image
    size_gate: float = 1.3  # object pixels lie within its frame-0 ellipse grown this much (0: off)
    refine_boundary: bool = True  # outline pixels go to the nearest local colour (object/human/background)
    snap_still: bool = True  # frames where the object has not moved yet reuse the frame-0 mask
    still_colour_threshold: float = 8.0  # Lab distance: a frame-0 object pixel covered by something else
    fill_sigma_px: float = 4.0  # unknown background guessed from known background this near (0: off)
    rigid_carry: bool = True  # carry the object mask by a 2-D rigid motion fitted to its sure-colour pixels
    sure_margin: float = 2.0  # log-odds object vs human above which a pixel's colour is surely the object's
    rigid_min_pixels: int = 20  # fewer sure pixels (before or now) than this: carry by the dense flow
    reach_scale: float = 1.2  # the mesh's projected radius at frame 0 grown this much (depth changes)
    gap_close_px: int = 5  # ambiguous bands up to twice this across the object (between its parts) join it
    unchanged_band_px: int = 3  # frame-0 person grown by this: pixels unchanged since frame 0 keep its label (0: off)
    # Unknown background (behind the frame-0 person): a pixel the flow carries from the last frame's person or
    # object stays foreground unless its colour is the background's by more than this log-odds (None: off). A
    # hand or a held drill moving over the legs changes the pixels there, and skin or a shaded part reads as the
    # table's colour: they fell through as background, holes in both masks (drill seed 0: human IoU 0.915 ->
    # 0.931; bottle seed 1: 0.881 -> 0.918; at 3.0 the bottle's human lost 0.012).
    keep_foreground_margin: float | None = 2.0
    # Shading (with the rigid carry): a face turned away from the light is the object's colour darker, which the
    # Lab histograms, learned on frame 0's lit faces, may call surely human (a drill's shaded yellow barrel reads
    # as olive skin). Inside the carried shape (grown by ``kernel_px``), a pixel whose chromaticity (R, G over
    # R+G+B, which shading leaves alone) is the object's by more than this log-odds (frame-0 histograms) is the
    # object's whatever its Lab colour says (None: off). Drill seed 1: object IoU 0.822 -> 0.891.
    shade_chroma_margin: float | None = 2.0
    # The other way round (with the rigid carry): the carried shape beyond the frame-0 mask under the composed
    # motions (grown by a pixel) is what earlier frames added; there, a pixel that Lab finds ambiguous and whose
    # chromaticity is the person's by more than this log-odds is not the object's (None: off). A blue sleeve
    # beside a blue bottle rode along in the carried shape and grew for 30 frames (bottle seed 2: object IoU
    # mean 0.818 -> 0.880, worst frame 0.59 -> 0.75). Only regions of ``min_blob_frac`` of the image or more: a
    # lone outline pixel's chromaticity is a blend (changing those tipped the mug's stage-3 rotation).
    foreign_chroma_margin: float | None = 2.0
    chroma_bins: int = 32  # chromaticity histogram bins per axis (r, g)
    chroma_min_sum: float = 60.0  # R+G+B (0-765) below which a pixel is too dark for its chromaticity to count

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ClassicalMaskConfig:
        values = dict(section.get("classical") or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown key(s) in preprocess.classical: {', '.join(sorted(unknown))}")
        return cls(**values)


# ---- colour ---------------------------------------------------------------------------------------
def rgb_to_lab(frames: np.ndarray) -> np.ndarray:
    """uint8 (...,H,W,3) RGB -> float32 Lab (L in [0,100]); all frames in one OpenCV call."""
    shape = frames.shape
    flat = frames.reshape(-1, shape[-2], 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(shape)


def colour_bins(lab: np.ndarray, bins: int) -> np.ndarray:
    """Lab -> flat histogram bin index per pixel (int32)."""
    scaled = np.stack([lab[..., 0] / 100.0, (lab[..., 1] + 128.0) / 256.0, (lab[..., 2] + 128.0) / 256.0], axis=-1)
    q = np.clip((scaled * bins).astype(np.int32), 0, bins - 1)
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


class ColourModel:
    """A class's Lab colour distribution: the frame-0 histogram mixed with a running one.

    New shades appear as the object turns (a side face, shading); the running part learns them from
    confidently labelled pixels while the frame-0 part keeps the model anchored.
    """

    def __init__(self, first_samples: np.ndarray, bins: int, anchor: float = 0.4, rate: float = 0.3) -> None:
        self.bins, self.anchor, self.rate = bins, anchor, rate
        self.first = self._distribution(first_samples)
        self.recent = self.first.copy()
        self.table = self._log_table()

    def _distribution(self, samples: np.ndarray) -> np.ndarray:
        hist = np.bincount(samples.ravel(), minlength=self.bins**3).astype(np.float64)
        return hist / max(hist.sum(), 1.0)

    def _log_table(self) -> np.ndarray:
        mixed = self.anchor * self.first + (1 - self.anchor) * self.recent
        hist = ndimage.gaussian_filter(mixed.reshape((self.bins,) * 3), sigma=0.8, mode="nearest")
        return np.log(hist.ravel() / max(hist.sum(), 1e-12) + 1e-6).astype(np.float32)

    def update(self, samples: np.ndarray, min_samples: int = 30) -> None:
        if samples.size < min_samples:
            return
        self.recent = (1 - self.rate) * self.recent + self.rate * self._distribution(samples)
        self.table = self._log_table()


def colour_log_likelihood(samples: np.ndarray, bins: int) -> np.ndarray:
    """log P(colour | class), a table over the bins^3 colour bins, from the class's pixel bins.

    The histogram is blurred so nearby shades (shading, compression) count too.
    """
    hist = np.bincount(samples.ravel(), minlength=bins**3).astype(np.float64).reshape(bins, bins, bins)
    hist = ndimage.gaussian_filter(hist, sigma=0.8, mode="nearest")
    hist = hist / max(hist.sum(), 1.0) + 1e-6
    return np.log(hist.ravel()).astype(np.float32)


def chromaticity_bins(frame: np.ndarray, bins: int, min_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H,W,3) RGB -> flat (r, g) chromaticity bin per pixel, r = R/(R+G+B), g = G/(R+G+B): a
    surface's own colour, which shading (R, G, B scaled alike) leaves alone; and where R+G+B >= ``min_sum``
    (darker pixels' chromaticity is noise)."""
    total = frame.astype(np.float32).sum(-1)
    rg = frame[..., :2].astype(np.float32) / np.maximum(total, 1.0)[..., None]
    q = np.clip((rg * bins).astype(np.int32), 0, bins - 1)
    return q[..., 0] * bins + q[..., 1], total >= min_sum


def chromaticity_log_odds(
    frame: np.ndarray, object_region: np.ndarray, human_region: np.ndarray, bins: int, min_sum: float
) -> np.ndarray:
    """log P(chromaticity | object) - log P(chromaticity | human), a table over the bins^2 chromaticity
    bins, from the regions' bright enough pixels in ``frame``; the histograms are blurred by a bin."""

    chroma, bright = chromaticity_bins(frame, bins, min_sum)

    def log_histogram(region: np.ndarray) -> np.ndarray:
        hist = np.bincount(chroma[region & bright], minlength=bins * bins).astype(np.float64).reshape(bins, bins)
        hist = ndimage.gaussian_filter(hist, sigma=1.0, mode="nearest")
        return np.log(hist.ravel() / max(hist.sum(), 1.0) + 1e-6)

    return (log_histogram(object_region) - log_histogram(human_region)).astype(np.float32)


# ---- person segmentation --------------------------------------------------------------------------
class SelfieSegmenter:
    """MediaPipe selfie segmentation (the model ships in the mediapipe wheel)."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T,H,W,3) RGB -> float32 (T,H,W) person probability."""
        return np.stack([self._model.process(np.ascontiguousarray(f)).segmentation_mask for f in frames]).astype(
            np.float32
        )

    def close(self) -> None:
        self._model.close()


# ---- morphology -----------------------------------------------------------------------------------
def _disk(radius: int) -> np.ndarray:
    size = 2 * max(radius, 0) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def clean_mask(mask: np.ndarray, kernel_px: int, min_blob: int) -> np.ndarray:
    """Open then close with a small disk, drop blobs below ``min_blob`` pixels, fill small holes."""
    kernel = _disk(kernel_px // 2 + 1)
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    return large_components(m, min_blob)


def large_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """The connected components (8-connected) of ``mask`` with at least ``min_pixels`` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels]


def keep_components_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Connected components of ``mask`` that overlap ``seed`` (temporal consistency of the object)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    touched = np.zeros(count, dtype=bool)
    touched[np.unique(labels[seed & mask])] = True
    touched[0] = False
    return touched[labels] if touched.any() else mask


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Pixel distance to the nearest pixel of ``mask`` (large everywhere when it is empty)."""
    if not mask.any():
        return np.full(mask.shape, 1e4, dtype=np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)


def warp_with_flow(mask: np.ndarray, flow_to_prev: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Carry a mask of frame t-1 to frame t with the flow t -> t-1 (backward warping)."""
    map_x = grid[0] + flow_to_prev[..., 0]
    map_y = grid[1] + flow_to_prev[..., 1]
    warped = cv2.remap(mask.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderValue=0.0)
    return warped > 0.5


@dataclass(frozen=True)
class ShapeGate:
    """The frame-0 object mask's extent as an ellipse: inverse covariance of its pixel coordinates (y, x)
    and the largest squared Mahalanobis radius of its pixels."""

    inverse_covariance: np.ndarray
    radius2: float

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> ShapeGate | None:
        ys, xs = np.nonzero(mask)
        if len(ys) < 3:
            return None
        points = np.stack([ys, xs], axis=1).astype(np.float64)
        centred = points - points.mean(0)
        # +1 px^2: a one-pixel-wide mask still has a usable ellipse.
        inverse = np.linalg.inv(np.cov(centred.T) + np.eye(2))
        return cls(inverse, float(np.einsum("ni,ij,nj->n", centred, inverse, centred).max()))


def gate_to_size(mask: np.ndarray, seed: np.ndarray, gate: ShapeGate, scale: float, steps: int = 3) -> np.ndarray:
    """Keep the part of ``mask`` inside the frame-0 ellipse grown by ``scale``, centred first on ``seed``'s
    centroid, then on the centroid of the kept pixels (mean shift): a rigid object's mask cannot outgrow
    its shape, so a same-coloured region beside it (a sleeve next to a bottle) is cut off."""
    ys, xs = np.nonzero(seed)
    centre = np.array([ys.mean(), xs.mean()])
    points = np.stack(np.nonzero(mask), axis=1).astype(np.float64)
    keep = np.zeros(len(points), dtype=bool)
    for _ in range(steps):
        offset = points - centre
        keep = np.einsum("ni,ij,nj->n", offset, gate.inverse_covariance, offset) <= gate.radius2 * scale**2
        if not keep.any():
            break
        centre = points[keep].mean(0)
    out = np.zeros_like(mask)
    kept = points[keep].astype(np.int64)
    out[kept[:, 0], kept[:, 1]] = True
    return out


def _local_mean(lab: np.ndarray, mask: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution: the mean Lab colour of ``mask`` pixels near each pixel, and its support."""
    weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    total = cv2.GaussianBlur(lab * mask[..., None].astype(np.float32), (0, 0), sigma)
    return total / np.maximum(weight, 1e-6)[..., None], weight


def refine_boundary(
    lab: np.ndarray, obj: np.ndarray, human: np.ndarray, background_lab: np.ndarray, background_known: np.ndarray,
    band_px: int = 2, sigma: float = 3.0,
) -> np.ndarray:  # fmt: skip
    """Re-decide the object's outline pixels by nearest local colour: object interior nearby, human
    interior nearby, or the known background at that pixel. Compressed video blends colours over a
    pixel or two at every edge, which a global threshold turns into a halo (or a bite) on a small object."""
    inner = cv2.erode(obj.astype(np.uint8), _disk(band_px)).astype(bool)
    band = cv2.dilate(obj.astype(np.uint8), _disk(band_px)).astype(bool) & ~inner
    if not inner.any() or not band.any():
        return obj
    object_mean, object_support = _local_mean(lab, inner, sigma)
    human_core = cv2.erode(human.astype(np.uint8), _disk(1)).astype(bool)
    human_mean, human_support = _local_mean(lab, human_core, sigma)
    far = np.float32(1e6)
    d_object = np.where(object_support > 1e-3, np.linalg.norm(lab - object_mean, axis=-1), far)
    d_human = np.where(human_support > 1e-3, np.linalg.norm(lab - human_mean, axis=-1), far)
    d_background = np.where(background_known, np.linalg.norm(lab - background_lab, axis=-1), far)
    decided = band & (np.minimum(d_human, d_background) < far)  # only where a rival colour is known
    out = obj.copy()
    out[decided] = (d_object < np.minimum(d_human, d_background))[decided]
    return out | inner


def background_guess(
    background_lab: np.ndarray, background_known: np.ndarray, spot: np.ndarray, sigma: float,
    min_support: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The background under ``spot`` (where the object stood at frame 0) guessed as the mean colour of
    the known background around it (normalised convolution), and where that guess has support.

    Only the object's spot: it is small, so its surroundings predict it; the person's frame-0 region is
    large, and a person the colour of the wall beside them must not be guessed away."""
    guess, support = _local_mean(background_lab, background_known, sigma)
    return guess, spot & ~background_known & (support > min_support)


# ---- rigid carry ----------------------------------------------------------------------------------
def _nearest_lookup(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest ``mask`` pixel and that pixel's (x, y), per image pixel."""
    distance, labels = cv2.distanceTransformWithLabels(
        (~mask).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    ys, xs = np.nonzero(mask)
    lookup = np.zeros((labels.max() + 1, 2), dtype=np.float32)
    lookup[labels[ys, xs]] = np.stack([xs, ys], axis=1)
    return distance, lookup[labels]


def _rigid_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 rotation+translation taking ``source`` (N,2) onto ``target`` (N,2), least squares (Kabsch)."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((source - source_mean).T @ (target - target_mean))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, d]) @ u.T
    return np.concatenate([rotation, (target_mean - rotation @ source_mean)[:, None]], axis=1)


def _apply(motion: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ motion[:, :2].T + motion[:, 2]


def rigid_motion(
    source: np.ndarray, target: np.ndarray, initial_shift: np.ndarray, max_distance: float, iterations: int = 10
) -> np.ndarray | None:
    """2-D rigid motion (2x3) carrying the ``source`` pixels (last frame's sure object pixels) onto the
    ``target`` ones (this frame's), by trimmed ICP from source to target: the target may hold extra
    pixels (a part the mask missed, a side turning into view), which must not drag the fit, and source
    pixels now covered (by a hand) fall out as the outliers. None without a fit."""
    # Work in the box around both sets (the distance transform is the cost), then shift back.
    ys, xs = np.nonzero(source | target)
    pad = int(np.ceil(max_distance)) + 2
    y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    y1, x1 = min(ys.max() + pad + 1, source.shape[0]), min(xs.max() + pad + 1, source.shape[1])
    source, target = source[y0:y1, x0:x1], target[y0:y1, x0:x1]
    height, width = source.shape
    source_points = np.stack(np.nonzero(source)[::-1], axis=1).astype(np.float64)
    target_distance, target_nearest = _nearest_lookup(target)
    motion = np.array([[1.0, 0.0, initial_shift[0]], [0.0, 1.0, initial_shift[1]]])
    limit = max_distance
    for _ in range(iterations):
        moved = _apply(motion, source_points)
        cols = np.clip(np.rint(moved[:, 0]).astype(np.int64), 0, width - 1)
        rows = np.clip(np.rint(moved[:, 1]).astype(np.int64), 0, height - 1)
        distance = target_distance[rows, cols]
        keep = distance <= min(limit, max(float(np.percentile(distance, 80)), 1.5))
        if keep.sum() < 3:
            return None
        # The nearest target pixel plus the sub-pixel offset lost by rounding the moved point.
        matched = target_nearest[rows, cols][keep] + moved[keep] - np.stack([cols, rows], axis=1)[keep]
        motion = _rigid_fit(source_points[keep], matched)
        limit = max(limit * 0.6, 3.0)
    # Back to image coordinates: x_image = x_crop + offset on both sides.
    offset = np.array([x0, y0], dtype=np.float64)
    motion[:, 2] += offset - motion[:, :2] @ offset
    return motion


def between(mask: np.ndarray, reach: int) -> np.ndarray:
    """Pixels with ``mask`` pixels within ``reach`` on both sides, vertically or horizontally: a band
    across a thin bar (a closing would need the bar wider than its disk)."""
    m = mask.astype(np.uint8)
    column, row = np.ones((reach + 1, 1), np.uint8), np.ones((1, reach + 1), np.uint8)
    below, above = cv2.dilate(m, column, anchor=(0, 0)), cv2.dilate(m, column, anchor=(0, reach))
    right, left = cv2.dilate(m, row, anchor=(0, 0)), cv2.dilate(m, row, anchor=(reach, 0))
    return ((below & above) | (right & left)).astype(bool)


def _compose(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The 2x3 motion ``first`` then ``second``."""
    return second @ np.vstack([first, [0.0, 0.0, 1.0]])


def warp_rigid(mask: np.ndarray, motion: np.ndarray) -> np.ndarray:
    height, width = mask.shape
    return cv2.warpAffine(mask.astype(np.float32), motion, (width, height), flags=cv2.INTER_LINEAR) > 0.5


def projected_radius_px(vertices: np.ndarray, object_to_cam: np.ndarray, K: np.ndarray) -> float:
    """How far (pixels) the object can reach from its centre in any orientation at its frame-0 depth:
    the mesh's largest vertex distance from its centroid, seen at the centroid's depth."""
    centroid = vertices.mean(0)
    radius = float(np.linalg.norm(vertices - centroid, axis=1).max())
    depth = float((object_to_cam[:3, :3] @ centroid + object_to_cam[:3, 3])[2])
    return float(K[0, 0]) * radius / max(depth, 1e-6)


# ---- the tracker ----------------------------------------------------------------------------------
@dataclass
class MaskTrack:
    object_masks: np.ndarray  # (T,H,W) bool
    human_masks: np.ndarray  # (T,H,W) bool
    background_known: np.ndarray  # (H,W) bool at the end of the video


def track_masks(
    frames: np.ndarray,
    first_object: np.ndarray,
    first_human: np.ndarray,
    config: ClassicalMaskConfig = ClassicalMaskConfig(),
    segmenter: SelfieSegmenter | None = None,
    progress: Any = None,
    object_radius_px: float | None = None,
) -> MaskTrack:
    """Track object and human masks through ``frames`` (T,H,W,3) uint8 from the frame-0 masks."""
    num_frames, height, width, _ = frames.shape
    lab = rgb_to_lab(frames)
    bins = colour_bins(lab, config.colour_bins)
    first_object = first_object & ~first_human  # a pixel belongs to one instance; the occluder wins
    first_fg = first_object | first_human
    # Pixels on the frame-0 outline are mixed colours: leave them out of every colour model.
    core_background = ~cv2.dilate(first_fg.astype(np.uint8), _disk(2)).astype(bool)
    core_object = cv2.erode(first_object.astype(np.uint8), _disk(1)).astype(bool)
    core_human = cv2.erode(first_human.astype(np.uint8), _disk(1)).astype(bool)
    log_bg = colour_log_likelihood(bins[0][core_background], config.colour_bins)
    object_region = core_object if core_object.any() else first_object
    human_region = core_human if core_human.any() else first_human
    object_colours = ColourModel(bins[0][object_region], config.colour_bins)
    human_colours = ColourModel(bins[0][human_region], config.colour_bins)
    chroma_odds = None
    if config.shade_chroma_margin is not None or config.foreign_chroma_margin is not None:
        chroma_odds = chromaticity_log_odds(
            frames[0], object_region, human_region, config.chroma_bins, config.chroma_min_sum
        )

    person_prob = None
    if config.use_selfie:
        own = segmenter is None
        segmenter = segmenter or SelfieSegmenter()
        try:
            person_prob = segmenter(frames)
        finally:
            if own:
                segmenter.close()

    # H.264 stores colour at half resolution: chroma differences bleed a pixel past every edge,
    # luma ones do not, so chroma counts less in the background difference.
    chroma_weights = np.array([1.0, config.chroma_weight, config.chroma_weight], dtype=np.float32)
    background_lab = lab[0].copy()
    background_known = core_background.copy()
    grid = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    flow_engine = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    diagonal = float(np.hypot(height, width))
    search = _disk(max(int(round(config.search_radius_frac * diagonal)), 1))
    min_blob = max(int(config.min_blob_frac * height * width), 4)

    object_masks = np.zeros((num_frames, height, width), dtype=bool)
    human_masks = np.zeros_like(object_masks)
    object_masks[0], human_masks[0] = first_object, first_human
    # The object prior: its visible mask plus the part a hand hides, carried along by the flow.
    object_prior = first_object.copy()
    # While the object has not moved since frame 0 its mask is the frame-0 one minus what now covers it.
    still = config.snap_still
    shape_gate = ShapeGate.from_mask(first_object)
    anchor_config = pose_anchors.AnchorConfig(colour_threshold=config.still_colour_threshold)
    object_spot = cv2.dilate(first_object.astype(np.uint8), _disk(2)).astype(bool) & ~first_human
    fill_guess = None
    if config.fill_sigma_px > 0:
        fill_guess = background_guess(background_lab, background_known, object_spot, config.fill_sigma_px)
    # The last frame's object pixels whose colour is surely the object's: the rigid carry's anchor.
    sure_previous = first_object & (object_colours.table[bins[0]] - human_colours.table[bins[0]] > config.sure_margin)
    carry_reach = 2.0 * max(config.search_radius_frac * diagonal, 1.0)  # pixels: how far it may move per frame
    # The frame-0 masks are exact. Behind the person the background is unknown, so colour models decide
    # there, and they call legs the floor's colour background; the outline's pixels are blends that no model
    # knows. While those pixels look as they did at frame 0, they keep frame 0's label.
    person_region = None
    if config.unchanged_band_px > 0:
        person_region = cv2.dilate(first_human.astype(np.uint8), _disk(config.unchanged_band_px)).astype(bool)
    template_motion: np.ndarray | None = np.eye(2, 3)  # frame 0 -> this frame, while every step had a fit
    # The same, refitted every frame to the frame-0 sure pixels: composed frame-to-frame fits drift (a tenth of a
    # pixel a frame, or a bad fit's jump: bottle seed 2, 6 px in 50 frames), which the carried shape's memory
    # absorbs, but the test for what lies beyond the frame-0 shape needs that shape where the object is.
    anchored_motion: np.ndarray | None = np.eye(2, 3)
    sure_first = sure_previous.copy()
    for t in range(1, num_frames):
        flow = flow_engine.calc(gray[t], gray[t - 1], None)

        difference = np.linalg.norm((lab[t] - background_lab) * chroma_weights, axis=-1)
        fg_known = difference > config.diff_threshold
        # Unknown background: the colour model says foreground, or the person segmenter does.
        log_obj, log_hum = object_colours.table[bins[t]], human_colours.table[bins[t]]
        fg_colour = np.maximum(log_obj, log_hum) > log_bg[bins[t]]
        if config.keep_foreground_margin is not None:
            # Before the revealed-spot rule below, which must still win: a spot the object or hand has left.
            carried_fg = warp_with_flow(human_masks[t - 1] | object_masks[t - 1], flow, grid)
            fg_colour |= carried_fg & (log_bg[bins[t]] - np.maximum(log_obj, log_hum) < config.keep_foreground_margin)
        if fill_guess is not None:
            # The spot the object stood on, once revealed, matches the table around it, although the
            # class histograms may call its colour human (skin and wood share bins): background wins.
            like_surroundings = np.linalg.norm((lab[t] - fill_guess[0]) * chroma_weights, axis=-1)
            fg_colour &= ~(fill_guess[1] & (like_surroundings < config.diff_threshold))
        if person_prob is not None:
            fg_colour |= person_prob[t] > config.selfie_threshold
        foreground = np.where(background_known, fg_known, fg_colour)

        margin = log_obj - log_hum  # object vs human colour log-odds
        sure_now = foreground & (margin > config.sure_margin)
        sure_now &= _distance_to(object_masks[t - 1] | object_prior) <= carry_reach  # (a big disk's dilation is slow)
        motion = None
        if (config.rigid_carry and sure_previous.sum() >= config.rigid_min_pixels
                and sure_now.sum() >= config.rigid_min_pixels):  # fmt: skip
            # Dense flow on black-on-black follows whatever is behind (static trousers); the object's
            # sure-colour pixels move with the whole rigid object, its ambiguous parts included.
            shift = -np.median(flow[sure_now], axis=0)
            motion = rigid_motion(sure_previous, sure_now, shift, carry_reach)
        anchored_shape = None  # the frame-0 mask under ``anchored_motion``
        if motion is not None:
            carried_object = warp_rigid(object_masks[t - 1], motion)
            object_prior = warp_rigid(object_prior, motion)
            carried_shape = carried_object
            if template_motion is not None:
                # The frame-0 mask carried by all motions so far: ambiguous parts dropped once (a
                # resampled edge, a frame where colour said human) come back.
                template_motion = _compose(motion, template_motion)
                carried_shape = carried_object | warp_rigid(first_object, template_motion)
            if anchored_motion is not None and config.foreign_chroma_margin is not None:
                anchored_motion = _compose(motion, anchored_motion)
                refit = rigid_motion(warp_rigid(sure_first, anchored_motion), sure_now, np.zeros(2), carry_reach)
                anchored_motion = anchored_motion if refit is None else _compose(refit, anchored_motion)
                anchored_shape = warp_rigid(first_object, anchored_motion)
        else:
            template_motion = anchored_motion = None
            carried_object = warp_with_flow(object_masks[t - 1], flow, grid)
            object_prior = warp_with_flow(object_prior, flow, grid)

        # Colour decides where it is clear; shades neither model knows (a face turning into view)
        # go to whichever instance, carried by the flow, is nearer.
        carried_human = warp_with_flow(human_masks[t - 1], flow, grid)
        nearer_object = np.clip((_distance_to(carried_human) - _distance_to(carried_object)) / config.kernel_px, -1, 1)
        object_score = margin + config.prior_weight * carried_object + config.spatial_weight * nearer_object
        object_vote = object_score > config.object_margin
        foreign = np.zeros_like(first_object)  # ambiguous pixels the carried shape must not claim
        if motion is not None:
            # Colour decides where it is sure; where it is not (black drill parts over black trousers),
            # the rigidly carried shape does: no pull from mere nearness, which let such parts grow.
            object_vote = np.where(np.abs(margin) > config.sure_margin, margin > 0, carried_shape)
            if chroma_odds is not None:
                chroma, bright = chromaticity_bins(frames[t], config.chroma_bins, config.chroma_min_sum)
                if config.shade_chroma_margin is not None:
                    # A shaded face: "surely human" by Lab, surely the object's by its chromaticity, and
                    # where the object's carried shape is.
                    shaded = (
                        bright & (chroma_odds[chroma] > config.shade_chroma_margin) & (margin < -config.sure_margin)
                    )
                    near_shape = cv2.dilate(carried_shape.astype(np.uint8), _disk(config.kernel_px)).astype(bool)
                    object_vote |= shaded & near_shape
                if config.foreign_chroma_margin is not None and anchored_shape is not None:
                    # The carried shape beyond the frame-0 shape is what earlier frames added; where its
                    # Lab colour is ambiguous and its chromaticity surely the person's (a blue sleeve beside
                    # a blue bottle), only the carry's memory holds it there, and it grew frame after frame.
                    near_template = cv2.dilate(anchored_shape.astype(np.uint8), _disk(1)).astype(bool)  # resampling
                    foreign = (bright & (chroma_odds[chroma] < -config.foreign_chroma_margin)
                               & (np.abs(margin) <= config.sure_margin) & ~near_template)  # fmt: skip
                    # Only a region the object claims (a sleeve, hundreds of pixels): a lone outline pixel's
                    # chromaticity is a blend.
                    object_vote &= ~large_components(foreign & object_vote & foreground, min_blob)
        near_prior = cv2.dilate((object_prior | carried_object).astype(np.uint8), search).astype(bool)
        obj = foreground & near_prior & object_vote
        voted = obj
        obj = clean_mask(obj, config.kernel_px, min_blob)
        obj = keep_components_touching(
            obj, cv2.dilate(carried_object.astype(np.uint8), search).astype(bool) | object_prior
        )

        if shape_gate is not None and config.size_gate > 0 and obj.any():
            gated = gate_to_size(obj, carried_object if carried_object.any() else obj, shape_gate, config.size_gate)
            if motion is not None:
                # A turning object's outline leaves its frame-0 ellipse (a drill seen end-on, then from the
                # side): the carried shape follows it, and sure-coloured pixels within the mesh's
                # projected reach of that shape's centre are kept.
                gated |= obj & cv2.dilate(carried_shape.astype(np.uint8), _disk(config.kernel_px)).astype(bool)
                if object_radius_px is not None and carried_shape.any():
                    ys, xs = np.nonzero(carried_shape)
                    reach = np.hypot(grid[1] - ys.mean(), grid[0] - xs.mean()) <= object_radius_px * config.reach_scale
                    # From before the clean-up: a sure band cut off by ambiguous ones is a small blob.
                    gated |= voted & reach & (margin > config.sure_margin)
            obj = gated

        if motion is not None and config.gap_close_px > 0 and obj.any():
            # A rigid object's parts stay joined: an ambiguous-colour gap between sure parts (a black
            # band across a yellow handle, over black trousers) is the object's.
            obj |= between(obj, 2 * config.gap_close_px) & foreground & (np.abs(margin) <= config.sure_margin)
        if config.refine_boundary and obj.any():
            obj = refine_boundary(lab[t], obj, human_masks[t - 1] & ~obj, background_lab, background_known)
        # whatever joined it since the vote (a closed gap, an outline pixel of a like colour)
        obj &= ~large_components(foreign & obj, min_blob)
        human = foreground & ~obj
        if person_prob is not None:
            # The segmenter's mask is coarse (256x144 model): trust it alone only where it is sure.
            human |= ~background_known & (person_prob[t] > config.selfie_union_threshold) & ~obj
        human = clean_mask(human, config.kernel_px, min_blob) & ~obj
        if person_region is not None:
            unchanged = np.linalg.norm((lab[t] - lab[0]) * chroma_weights, axis=-1) < config.still_colour_threshold
            unchanged = cv2.erode(unchanged.astype(np.uint8), _disk(1)).astype(bool)  # and its neighbours
            # not beside the object: there its own rules decide (black parts over black trousers look unchanged)
            snap = (
                person_region & unchanged & ~cv2.dilate(obj.astype(np.uint8), _disk(2 * config.kernel_px)).astype(bool)
            )
            human = np.where(snap, first_human, human) & ~obj
        if still:
            verdict = pose_anchors.unchanged_frames(lab[[0, t]], 0, first_object, np.stack([first_human, human]),
                                                    anchor_config)[1]  # fmt: skip
            still = verdict == 1
            if still:
                changed = np.linalg.norm(lab[t] - lab[0], axis=-1) > config.still_colour_threshold
                # What now covers the object is left to the human decision above: claiming it for the
                # human here would hide a real move from the next frame's (and stage 3's) still test.
                obj = first_object & ~changed
                human = human & ~obj

        object_masks[t], human_masks[t] = obj, human
        sure_previous = obj & (margin > config.sure_margin)
        # Learn new shades only from pixels the background difference confirms (known background):
        # learning from colour-decided pixels would let a mistake teach itself (drift).
        confident = _disk(2)
        object_core = cv2.erode(obj.astype(np.uint8), confident).astype(bool) & background_known & fg_known
        human_core = cv2.erode(human.astype(np.uint8), confident).astype(bool) & background_known & fg_known
        object_colours.update(bins[t][object_core])
        human_colours.update(bins[t][human_core])
        # Keep the occluded object part only while something (the human) still covers it.
        object_prior = obj | (object_prior & human)
        # Background revealed: unknown pixels confidently neither human nor object join the model.
        revealed = ~background_known & ~foreground & ~cv2.dilate((obj | human).astype(np.uint8), _disk(2)).astype(bool)
        if revealed.any():
            background_lab[revealed] = lab[t][revealed]
            background_known |= revealed
            if config.fill_sigma_px > 0:
                fill_guess = background_guess(background_lab, background_known, object_spot, config.fill_sigma_px)
        if progress is not None:
            progress(t / max(num_frames - 1, 1), f"masks frame {t + 1}/{num_frames}")
    return MaskTrack(object_masks=object_masks, human_masks=human_masks, background_known=background_known)
