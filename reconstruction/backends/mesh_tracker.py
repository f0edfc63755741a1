"""Object pose backend ``mesh_tracker`` (default): model-based 6-DoF tracking of the known mesh.

Per frame, the pose is a residual (rotation vector about the object's centroid + translation) on top
of a warm start extrapolated from the frames already solved. Short windows of frames are optimised
together with Adam. No rasteriser gradient is needed: the project renderer, run without gradient at
the current estimate, says which surface points are visible (its z-buffer, face ids and barycentrics
give exact visible surface points in the model frame); the losses then act on those points projected
with the pose being optimised:

- contour: points on the rendered silhouette's outline should sit on the object mask's outline
  (signed distance of the mask, bilinear); points over the human mask are skipped (the hand may hide
  the true outline);
- interior: visible points should land on "object or human" pixels (distance transform), so points
  hidden by the hand cost nothing;
- coverage: every outline pixel of the object mask (away from the hand) should have a model outline
  point nearby (one-sided chamfer, nearest neighbour found without gradient);
- depth: visible points against the per-frame depth where it is known inside the object mask;
- colour (with the video frames): visible points should show the colour (chromaticity) they showed in
  frame 0, whose pose is known; a Cauchy weight drops the points a hand hides;
- smoothness: second differences of centroid (in pixels) and rotation over the window and the two
  frames solved before it.

With ``Anchors`` (stage 3 finds them from the pixels, ``pose_anchors``): frames before the object first
moves keep the frame-0 pose; the final still frames share one pose fitted on the support plane (3 DoF:
slide and turn, all those frames' evidence summed; 16 start turns, the best 4 refined fully, the colour
ruling out turns that show surface frame 0 did not see, then the silhouette deciding); the held frames between are
tracked with soft priors on the centroid depth and the rotation, interpolated between those two poses,
once forward from the start and once backward from the rest; each frame takes the two passes'
inverse-variance blend (drift grows with the frames since a pass's anchor and with its outline misfit).
At 3 m a pixel of silhouette error is centimetres of depth, so the anchors carry most of the accuracy.

The image evidence is built per frame when a window needs it and only the last ``evidence_cache_frames``
frames are kept (``EvidenceSource``), so memory does not grow with the video's length.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import cv2
import numpy as np
import roma
import torch
import torch.nn.functional as F

from reconstruction.projection import project

logger = logging.getLogger(__name__)

MIN_DEPTH_M, MAX_DEPTH_M = 0.05, 100.0  # object centres outside this range mean the track is lost


@dataclass(frozen=True)
class TrackerConfig:
    window: int = 4  # frames solved together
    iterations: int = 15  # Levenberg-Marquardt iterations per window
    visibility_refresh: int = 3  # re-render the visible points every this many iterations
    contour_samples: int = 300  # model outline points per frame
    interior_samples: int = 300  # visible model points per frame
    mask_contour_samples: int = 300  # object-mask outline pixels per frame (coverage term)
    weight_contour: float = 1.0
    weight_interior: float = 1.0
    weight_coverage: float = 0.5
    weight_depth: float = 1.0
    weight_smooth_translation: float = 0.05  # per px^2 of centroid acceleration
    weight_smooth_rotation: float = 20.0  # per rad^2 of angular acceleration
    depth_scale_m: float = 0.01  # depth residuals are measured in units of this
    coarse_steps: int = 2  # centroid/area alignment passes before Levenberg-Marquardt
    max_step_rad: float = 0.04  # trust region per iteration
    max_step_m: float = 0.01
    robust_px: float = 1.5  # Charbonnier knee for pixel residuals
    human_margin_px: int = 3  # outline evidence this close to the human mask is not trusted
    # Scale of the soft depth prior while held (between rest anchors). A carried object is brought
    # 10-15 cm towards the body and lifted, off the line between the two still depths; with the carry
    # tracked from both anchors (two_way) the prior only has to stop silhouette-scale drift.
    depth_prior_m: float = 0.1
    rotation_prior_rad: float = 0.35  # scale of the soft rotation prior while held
    rest_iterations: int = 30  # Levenberg-Marquardt iterations of the on-plane resting pose
    # Turns about the plane normal tried as starts of the resting pose. Each start is refined for
    # rest_iterations // 4 steps of at most max_step_rad (7 x 0.04 rad = 16 deg) before the costs are
    # compared, so with starts 45 deg apart a true turn of 16-29 deg from both neighbours was reached by
    # none, and on noisy masks a mirror turn won (a box put down turned by 26 deg rested 88 deg off);
    # 22.5 deg apart, every turn is within 11.25 deg of a start.
    rest_yaw_candidates: int = 16
    rest_frames: int = 6  # at most this many frames of the final rest segment are fitted together
    # Appearance (needs the video frames): each visible model point should show the colour it showed in
    # frame 0 (known pose). The silhouette does not see a turn about a symmetry axis (a mug's handle in
    # front of its body), barely sees a small object's pitch, and follows a hand the mask swallowed. At
    # weight 1 a striped cylinder's turn was not followed at all (smoothness held it); 5 and 10 gave the
    # similar held-frame errors on the benchmark videos (mug, box).
    weight_colour: float = 5.0  # 0: silhouette and depth only
    colour_scale: float = 10.0  # colour units (lightness 0-100, chromaticity x 100) per unit residual
    colour_blur_px: float = 1.0  # Gaussian blur of the colour images (smoother colour gradients)
    # Weight of lightness against chromaticity: shading follows the light, not the object (a turned
    # cylinder keeps its bright side towards the light), so lightness held the mug's turn back.
    colour_lightness_weight: float = 0.0
    # Cost (of at most 1) of a visible point never seen at the reference pose: without it, a pose that
    # shows unseen surface (a mirror turn, the hidden back) would be judged on what little it shares.
    colour_unknown_cost: float = 0.5
    # weight_colour is scaled by this in the resting pose's fit. On the mug's stage-2 rest masks the
    # colour term let a turn 27 deg off win over the silhouette's (2.7 deg off): the turned-away side
    # has no frame-0 colour, and mask noise decides between nearly equal costs.
    rest_colour_factor: float = 0.0
    # Resting-pose hypotheses refined fully and compared (``choose_rest_hypothesis``): the best few
    # distinct turns of the short two-frame fits, ranked by ``rest_scores`` (by the fits' own costs the
    # true turn came 7th of 16 on a mug's GPU-rendered masks).
    rest_hypotheses: int = 4
    # A resting hypothesis whose colour cost (weight_colour, against frame 0) is over this times the
    # lowest is ruled out (a mirror turn of the mug draws the same outline but shows its unseen back);
    # 0: off. On the mug's GPU-rendered rest masks the front turns' costs were within 1.13x of the lowest,
    # the mirror turns' 1.9x; the box's 180 deg turn (seed 0) 8.7x.
    rest_colour_gate: float = 1.25
    # A candidate the colour gate rules out comes back when its silhouette cost is lower than the best
    # allowed one's by more than this fraction (0: off). The colour cost counts never-seen surface
    # (``colour_unknown_cost``), so a larger true turn that shows more of it is penalised: on the seed-2
    # box the true turn (30.7 deg, silhouette 19.5) sat at 1.69x the lowest colour cost, and a 16.6 deg
    # turn with a clearly worse outline (25.0) won. Mirror turns draw nearly the same outline.
    rest_silhouette_override: float = 0.15
    # Resting hypotheses within this relative silhouette cost of the best count as the same look, of
    # which the smallest turn is kept (a symmetric bottle). A mug's handle turned ~30
    # deg towards the camera or away from it looks nearly the same and its colours do not differ: on the
    # seed-0 mug the true turn cost 2.1% more than the one 56 deg off, on the GPU-rendered one a turn 43
    # deg off 4.3% more than the true one; the smaller turn decides within this margin.
    rest_same_cost: float = 0.03
    # Of those same looks, the one whose colour cost is lower than the smallest turn's by more than this
    # fraction wins (0: off). On the seed-0 mug with the session-7 masks, turns 29.7 / 1.0 / 26.7 deg had
    # silhouette costs 8.004 / 8.163 / 7.982 (the same look) and colour costs 7.25 / 7.73 / 7.09: the
    # smallest turn rested 25 deg off, the clearest colour within 2 deg. A bottle's turns share colours.
    rest_colour_tiebreak: float = 0.05
    # Frames whose image evidence is kept (``EvidenceSource``, ~10 MB each at 640x480); the others are
    # rebuilt when asked for again. 64 holds a 60-frame video whole (each frame built once).
    evidence_cache_frames: int = 64
    colour_samples: int = 1000  # visible points per frame with the colour term (every pixel of a small object)
    use_anchors: bool = True  # static start / final rest segments from image evidence (pose_anchors)
    two_way: bool = True  # held frames between two still segments: tracked from both ends, combined
    # Held-frame depth prior from stage 1's holding hand(s) (``held_hand_depth``): the hand's departure
    # from its own straight line between the grasp and release frames is added to the object's line.
    hand_depth_prior: bool = True
    # Held-frame rotation prior from the same hand(s) (``held_hand_depth.holding_hand_rotations``): the
    # hands' turn away from their own slerp between the grasp and release frames turns the object's slerp.
    # Without it the slerp held the seed-4 mug, carried pitched 24 deg off it, 15-25 deg off the truth
    # (the colour saw the pitch, the slerp prior outweighed it).
    hand_rotation_prior: bool = True
    seed: int = 0

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> TrackerConfig:
        values = dict(section.get("mesh_tracker") or {})
        if "iterations" in section:  # object_pose.iterations of the typed config
            values.setdefault("iterations", int(section["iterations"]))
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown key(s) in object_pose.mesh_tracker: {', '.join(sorted(unknown))}")
        return cls(**values)


# ---- image evidence -------------------------------------------------------------------------------
@dataclass
class FrameEvidence:
    """Image evidence of some frames (a window, ``EvidenceSource.take``): (W,...) tensors on the
    tracker's device (W = T below)."""

    signed_distance: torch.Tensor  # (T,1,H,W) px, object mask: > 0 outside, <= 0 inside
    signed_gradient: torch.Tensor  # (T,2,H,W) d/dx, d/dy of signed_distance
    outside_distance: torch.Tensor  # (T,1,H,W) px to the nearest object-or-human pixel
    outside_gradient: torch.Tensor  # (T,2,H,W)
    near_human: torch.Tensor  # (T,1,H,W) 1 within human_margin_px of the human mask
    human_masks: torch.Tensor  # (T,H,W) bool
    contour_pixels: torch.Tensor  # (T,M,2) object-mask outline pixel centres (x, y), away from the human
    contour_valid: torch.Tensor  # (T,M) bool
    object_masks: torch.Tensor  # (T,1,H,W) float
    depth: torch.Tensor | None  # (T,1,H,W) metres, 0 = unknown
    has_object: torch.Tensor  # (T,) bool, object mask non-empty
    # With the video frames: blurred colour images (``_colour_arrays``) in a crop around every frame's
    # object mask (float32).
    colour: torch.Tensor | None = None  # (T,3,h,w)
    colour_gradient: torch.Tensor | None = None  # (T,6,h,w): d/dx of the 3 channels, then d/dy
    colour_origin: tuple[int, int] = (0, 0)  # (left, top) of the crop in the image
    reference: Appearance | None = None  # the object's surface colours seen at a known pose (frame 0)


@dataclass
class Appearance:
    """Model-frame surface points with the colour (``_colour_arrays``) they showed at a known pose."""

    points: torch.Tensor  # (N,3)
    colours: torch.Tensor  # (N,3)
    radius: float  # a visible point takes the colour of the nearest reference point closer than this (m)


def colour_box(object_masks: np.ndarray, margin_px: int = 24) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the box around all frames' object masks, grown by ``margin_px``."""
    ys, xs = np.nonzero(object_masks.any(0))
    if len(ys) == 0:
        return None
    height, width = object_masks.shape[1:]
    top, left = max(int(ys.min()) - margin_px, 0), max(int(xs.min()) - margin_px, 0)
    bottom, right = min(int(ys.max()) + margin_px + 1, height), min(int(xs.max()) + margin_px + 1, width)
    return left, top, right, bottom


def _colour_arrays(
    images: np.ndarray, box: tuple[int, int, int, int], config: TrackerConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Blurred colour (Lab lightness, 100 r/(r+g+b), 100 g/(r+g+b)) of uint8 (T,H,W,3) frames in ``box``
    and its gradients: (T,3,h,w), (T,6,h,w) float32. Frame by frame, so any subset gives the same values."""
    left, top, right, bottom = box
    crop = np.ascontiguousarray(images[:, top:bottom, left:right]).astype(np.float32) / 255.0
    lab = cv2.cvtColor(crop.reshape(-1, right - left, 3), cv2.COLOR_RGB2Lab).reshape(crop.shape)
    # Chromaticity instead of Lab a, b: shading scales r, g, b together and keeps it (on the mug, a/b of
    # its shaded red changed enough that the body's shading outweighed the handle).
    total = crop.sum(-1, keepdims=True) + 0.05
    lab = np.concatenate([lab[..., :1], 100.0 * crop[..., :2] / total], axis=-1)
    if config.colour_blur_px > 0:
        lab = np.stack([cv2.GaussianBlur(frame, (0, 0), config.colour_blur_px) for frame in lab])
    lab = lab.transpose(0, 3, 1, 2)  # (T,3,h,w)
    d_dy, d_dx = np.gradient(lab, axis=(2, 3))
    return np.ascontiguousarray(lab, dtype=np.float32), np.concatenate([d_dx, d_dy], axis=1).astype(np.float32)


class EvidenceSource:
    """A video's image evidence (``FrameEvidence``), built frame by frame when a window asks for it
    (``take``) and kept, as float32 (exactly what the float64 tracker reads), for the
    ``evidence_cache_frames`` frames used last: memory is bounded however long the video (a frame's
    distance images, gradients, masks, depth and colour crop are ~10 MB at 640x480; before, every frame
    was kept, ~23 MB each in float64). Only the object-mask outline samples (a few KB) are kept for every
    frame; they are drawn up front, in frame order, from the one seeded generator as before."""

    def __init__(
        self, object_masks: np.ndarray, human_masks: np.ndarray, depth: np.ndarray | None, config: TrackerConfig,
        device: str, dtype: torch.dtype = torch.float32, images: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        self.object_masks, self.human_masks = object_masks, human_masks
        self.depth = None if depth is None else np.asarray(depth)
        self.config, self.device, self.dtype = config, device, dtype
        self.num_frames = object_masks.shape[0]
        self.size = tuple(object_masks.shape[1:])
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * config.human_margin_px + 1,) * 2)
        self.images, self.box = None, None
        if images is not None and config.weight_colour > 0:
            images = np.asarray(images)
            if images.shape[:3] != object_masks.shape or images.ndim != 4 or images.shape[3] != 3:
                logger.warning("video frames %s do not match the masks %s: no colour term", images.shape,
                               object_masks.shape)  # fmt: skip
            else:
                self.box = colour_box(object_masks)
                self.images = images if self.box is not None else None
        self.reference: Appearance | None = None
        self.reverse = False
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        rng = np.random.default_rng(config.seed)
        samples = config.mask_contour_samples
        contour = np.zeros((self.num_frames, samples, 2), dtype=np.float32)
        contour_valid = np.zeros((self.num_frames, samples), dtype=bool)
        for t in range(self.num_frames):
            obj = object_masks[t].astype(np.uint8)
            if not obj.any():
                continue
            near_human = cv2.dilate(human_masks[t].astype(np.uint8), self.kernel)
            outline = (obj > 0) & (cv2.erode(obj, np.ones((3, 3), np.uint8)) == 0) & (near_human == 0)
            ys, xs = np.nonzero(outline)
            if len(xs):
                pick = rng.choice(len(xs), size=min(samples, len(xs)), replace=False)
                contour[t, : len(pick)] = np.stack([xs[pick], ys[pick]], axis=1) + 0.5
                contour_valid[t, : len(pick)] = True
        self.contour_pixels, self.contour_valid = contour, contour_valid
        self.has_object = object_masks.reshape(self.num_frames, -1).any(1)

    @property
    def has_colour(self) -> bool:
        return self.images is not None

    def reversed(self) -> EvidenceSource:
        """The same evidence (and cache) with the frames in reverse order."""
        view = copy.copy(self)
        view.reverse = not self.reverse
        return view

    def indices(self, frames: slice | torch.Tensor | np.ndarray | list[int] | int) -> list[int]:
        """The video frame numbers of ``frames`` (this view's order)."""
        if isinstance(frames, slice):
            ids = list(range(*frames.indices(self.num_frames)))
        elif isinstance(frames, int):
            ids = [frames]
        else:
            ids = [int(i) for i in (frames.tolist() if hasattr(frames, "tolist") else frames)]
        return [self.num_frames - 1 - i if self.reverse else i for i in ids]

    def _frame(self, t: int) -> dict[str, np.ndarray]:
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        obj = self.object_masks[t].astype(np.uint8)
        height, width = self.size
        signed = np.zeros((height, width), dtype=np.float32)
        outside = np.zeros((height, width), dtype=np.float32)
        if obj.any():  # else nothing to align to: contour/coverage terms vanish, interior uses the human only
            # Zero level through the centres of the mask's inner outline pixels: the model outline points
            # are lifted from the centres of the rendered silhouette's inner outline pixels, so they match.
            signed = cv2.distanceTransform(1 - obj, cv2.DIST_L2, 5) - cv2.distanceTransform(obj, cv2.DIST_L2, 5)
            signed += obj
            allowed = (self.object_masks[t] | self.human_masks[t]).astype(np.uint8)
            outside = cv2.distanceTransform(1 - allowed, cv2.DIST_L2, 5)
        d_dy, d_dx = np.gradient(signed)
        o_dy, o_dx = np.gradient(outside)
        frame = {
            "signed_distance": signed[None], "signed_gradient": np.stack([d_dx, d_dy]).astype(np.float32),
            "outside_distance": outside[None], "outside_gradient": np.stack([o_dx, o_dy]).astype(np.float32),
            "near_human": cv2.dilate(self.human_masks[t].astype(np.uint8), self.kernel)[None].astype(bool),
            "object_masks": obj[None].astype(bool), "human_masks": self.human_masks[t],
        }  # fmt: skip
        if self.depth is not None:
            frame["depth"] = self.depth[t][None]
        if self.images is not None:
            lab, gradient = _colour_arrays(self.images[t : t + 1], self.box, self.config)
            frame["colour"], frame["colour_gradient"] = lab[0], gradient[0]
        self._cache[t] = frame
        while len(self._cache) > max(self.config.evidence_cache_frames, 1):
            self._cache.popitem(last=False)
        return frame

    def take(self, frames: slice | torch.Tensor | np.ndarray | list[int] | int) -> FrameEvidence:
        """The evidence of ``frames`` (this view's order) as (W,...) tensors on the device."""
        ids = self.indices(frames)
        arrays = [self._frame(t) for t in ids]

        def stacked(name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
            value = torch.from_numpy(np.stack([a[name] for a in arrays]))
            return value.to(device=self.device, dtype=dtype or value.dtype)

        colour = self.images is not None
        return FrameEvidence(
            signed_distance=stacked("signed_distance", self.dtype),
            signed_gradient=stacked("signed_gradient", self.dtype),
            outside_distance=stacked("outside_distance", self.dtype),
            outside_gradient=stacked("outside_gradient", self.dtype),
            near_human=stacked("near_human", self.dtype),
            human_masks=stacked("human_masks"),
            contour_pixels=torch.from_numpy(self.contour_pixels[ids]).to(device=self.device, dtype=self.dtype),
            contour_valid=torch.from_numpy(self.contour_valid[ids]).to(self.device),
            object_masks=stacked("object_masks", self.dtype),
            depth=None if self.depth is None else stacked("depth", self.dtype),
            has_object=torch.from_numpy(self.has_object[ids]).to(self.device),
            colour=stacked("colour") if colour else None,
            colour_gradient=stacked("colour_gradient") if colour else None,
            colour_origin=self.box[:2] if colour else (0, 0),
            reference=self.reference,
        )

    def cached_bytes(self) -> int:
        """Bytes of per-frame image evidence held now (the cache; the caller's masks, depth and frames
        are not counted)."""
        return sum(a.nbytes for frame in self._cache.values() for a in frame.values())

    def kept_bytes(self) -> int:
        """Bytes kept for every frame of the video (the outline samples)."""
        return self.contour_pixels.nbytes + self.contour_valid.nbytes + self.has_object.nbytes


# ---- geometry -------------------------------------------------------------------------------------
def sample_image(
    image: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Sample (T,1,H,W) at (T,N,2) pixel coords -> (T,N); outside the image reads the border."""
    height, width = size
    grid = torch.stack([pixels[..., 0] / width * 2 - 1, pixels[..., 1] / height * 2 - 1], dim=-1)[:, :, None]
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)[:, 0, :, 0]


def sample_channels(image: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Sample (T,C,h,w) at (T,N,2) pixel coords (of that image) -> (T,N,C), bilinear, border padding."""
    height, width = size
    grid = torch.stack([pixels[..., 0] / width * 2 - 1, pixels[..., 1] / height * 2 - 1], dim=-1)[:, :, None]
    out = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


def transform(poses: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(W,4,4) poses applied to (N,3) or (W,N,3) points -> (W,N,3)."""
    return points @ poses[:, :3, :3].transpose(1, 2) + poses[:, None, :3, 3]


@dataclass
class VisiblePoints:
    """Model-frame surface points seen at a pose estimate, per frame (padded, with validity)."""

    contour: torch.Tensor  # (W,Nc,3) points on the rendered silhouette's outline
    contour_valid: torch.Tensor  # (W,Nc) bool
    interior: torch.Tensor  # (W,Ni,3) visible points anywhere on the silhouette
    interior_valid: torch.Tensor  # (W,Ni) bool
    interior_colour: torch.Tensor | None = None  # (W,Ni,3) colour at the reference pose (Appearance)
    interior_colour_valid: torch.Tensor | None = None  # (W,Ni) bool: the point was seen at the reference pose


def _pick(candidates: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random subset of the (W,P) bool candidate pixels: (W,count) flat indices and validity."""
    scores = torch.rand(candidates.shape, generator=generator, device="cpu").to(candidates.device)
    scores = torch.where(candidates, scores, torch.full_like(scores, -1.0))
    top = scores.topk(min(count, candidates.shape[1]), dim=1)
    return top.indices, top.values >= 0


@dataclass
class CropRender:
    """The renderer's face ids and barycentrics inside the window's bounding box of the object."""

    face_id: torch.Tensor  # (W,h,w) -1 = nothing
    barycentrics: torch.Tensor  # (W,h,w,3)
    top: int
    left: int

    def full_silhouette(self, size: tuple[int, int]) -> torch.Tensor:
        """(W,H,W) bool silhouette in the full image."""
        out = torch.zeros((self.face_id.shape[0], *size), dtype=torch.bool, device=self.face_id.device)
        h, w = self.face_id.shape[1:]
        out[:, self.top : self.top + h, self.left : self.left + w] = self.face_id >= 0
        return out


@torch.no_grad()
def render_crop(
    poses: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, K: np.ndarray, size: tuple[int, int], pad: int = 4
) -> CropRender:
    """Rasterise only the box around the projected mesh (shifted principal point): the object covers
    a few percent of the frame, so this is many times cheaper than a full-frame render."""
    from reconstruction.render import Mesh, render

    cam = transform(poses, vertices)
    K_t = torch.as_tensor(K, dtype=cam.dtype, device=cam.device)
    in_front = cam[..., 2] > 1e-3
    pixels = project(cam, K_t)[in_front] if bool(in_front.any()) else torch.zeros(1, 2, device=cam.device)
    height, width = size
    left = int(max(0, min(width - 1, float(pixels[:, 0].min()) - pad)))
    top = int(max(0, min(height - 1, float(pixels[:, 1].min()) - pad)))
    right = int(max(left + 1, min(width, float(pixels[:, 0].max()) + pad + 1)))
    bottom = int(max(top + 1, min(height, float(pixels[:, 1].max()) + pad + 1)))
    K_crop = np.array(K, dtype=np.float64, copy=True)
    K_crop[0, 2] -= left
    K_crop[1, 2] -= top
    out = render(
        [Mesh(cam.float(), faces, instance_id=2)], K_crop, np.eye(4), (bottom - top, right - left),
        device=cam.device, return_barycentrics=True,
    )  # fmt: skip
    return CropRender(out.face_id, out.barycentrics, top, left)


@torch.no_grad()
def visible_points(
    poses: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: np.ndarray,
    size: tuple[int, int],
    config: TrackerConfig,
    generator: torch.Generator,
) -> VisiblePoints:
    """Render the mesh at ``poses`` and lift sampled silhouette pixels back to model-frame points."""
    crop = render_crop(poses, vertices, faces, K, size)
    num = poses.shape[0]
    silhouette = crop.face_id >= 0  # (W,h,w)
    eroded = -F.max_pool2d(-silhouette.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0.5
    outline = (silhouette & ~eroded).reshape(num, -1)
    face_id = crop.face_id.reshape(num, -1)
    bary = crop.barycentrics.reshape(num, -1, 3)

    def lift(indices: torch.Tensor) -> torch.Tensor:
        f = torch.gather(face_id, 1, indices).clamp(min=0)
        b = torch.gather(bary, 1, indices[..., None].expand(-1, -1, 3))
        corners = vertices[faces[f]]  # (W,N,3,3)
        return (b[..., None] * corners).sum(-2)

    contour_idx, contour_ok = _pick(outline, config.contour_samples, generator)
    interior_idx, interior_ok = _pick(silhouette.reshape(num, -1), config.interior_samples, generator)
    return VisiblePoints(lift(contour_idx), contour_ok, lift(interior_idx), interior_ok)


def points_with_colour(
    poses: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor], evidence: FrameEvidence, K: np.ndarray,
    size: tuple[int, int], config: TrackerConfig, generator: torch.Generator, dtype: torch.dtype,
) -> VisiblePoints:  # fmt: skip
    """``visible_points`` in ``dtype``, each interior point with its reference colour where it has one
    (then ``colour_samples`` interior points: the colour evidence is a few pixels of a handle or a band)."""
    reference = evidence.reference if evidence.colour is not None and config.weight_colour > 0 else None
    if reference is not None and config.colour_samples > config.interior_samples:
        config = replace(config, interior_samples=config.colour_samples)
    points = visible_points(poses.float(), *mesh, K, size, config, generator)
    points = VisiblePoints(*(p.to(dtype) if p.is_floating_point() else p for p in (
        points.contour, points.contour_valid, points.interior, points.interior_valid)))  # fmt: skip
    if reference is None:
        return points
    distance, nearest = torch.cdist(points.interior, reference.points.to(dtype)[None]).min(dim=2)
    points.interior_colour = reference.colours.to(dtype)[nearest]
    points.interior_colour_valid = points.interior_valid & (distance < reference.radius)
    return points


@torch.no_grad()
def reference_appearance(
    pose: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor], evidence: FrameEvidence, frame: int, K: np.ndarray,
    size: tuple[int, int], max_points: int = 4000, seed: int = 0,
) -> Appearance | None:  # fmt: skip
    """The colours of the surface points seen at ``pose`` in ``frame`` (object mask, not the human, and
    not the silhouette's outline pixels, whose colour is mixed with what lies behind)."""
    if evidence.colour is None:
        return None
    crop = render_crop(pose[None].float(), *mesh, K, size)
    silhouette = crop.face_id[0] >= 0
    inner = -F.max_pool2d(-silhouette.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0.5
    ys, xs = torch.nonzero(inner, as_tuple=True)
    gy, gx = ys + crop.top, xs + crop.left
    left, top = evidence.colour_origin
    height, width = evidence.colour.shape[-2:]
    keep = (
        (evidence.object_masks[frame, 0, gy, gx] > 0.5)
        & ~evidence.human_masks[frame, gy, gx]
        & (gx >= left) & (gx < left + width) & (gy >= top) & (gy < top + height)
    )  # fmt: skip
    if int(keep.sum()) < 10:
        return None
    ys, xs, gy, gx = ys[keep], xs[keep], gy[keep], gx[keep]
    vertices, faces = mesh
    corners = vertices[faces[crop.face_id[0, ys, xs]]]  # (N,3,3)
    points = (crop.barycentrics[0, ys, xs][..., None] * corners).sum(-2)
    colours = evidence.colour[frame, :, gy - top, gx - left].T
    # Match radius: a pixel's footprint on the object at this pose (K in pixels, depth in metres).
    cam = points @ pose[:3, :3].float().T + pose[:3, 3].float()
    radius = 1.5 * float(cam[:, 2].median()) / float(K[0][0])
    if len(points) > max_points:  # bounded matching cost; sparser points need a wider radius
        pick = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:max_points]
        radius *= (len(points) / max_points) ** 0.5
        points, colours = points[pick.to(points.device)], colours[pick.to(points.device)]
    return Appearance(points=points, colours=colours, radius=radius)


# ---- Gauss-Newton on a window of frames -----------------------------------------------------------
def _skew(v: torch.Tensor) -> torch.Tensor:
    """(...,3) -> (...,3,3) cross-product matrices."""
    zero = torch.zeros_like(v[..., 0])
    return torch.stack(
        [
            torch.stack([zero, -v[..., 2], v[..., 1]], -1),
            torch.stack([v[..., 2], zero, -v[..., 0]], -1),
            torch.stack([-v[..., 1], v[..., 0], zero], -1),
        ],
        -2,
    )


def _projection_jacobian(points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """d(pixel)/d(camera point): (...,N,2,3)."""
    x, y, z = points_cam.unbind(-1)
    z = z.clamp(min=1e-4)
    zero = torch.zeros_like(z)
    fx, fy = K[0, 0], K[1, 1]
    row_u = torch.stack([fx / z, zero, -fx * x / z**2], -1)
    row_v = torch.stack([zero, fy / z, -fy * y / z**2], -1)
    return torch.stack([row_u, row_v], -2)


def _point_jacobian(points_cam: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """d(camera point)/d(rotvec about the centre, translation) at zero residual: (W,N,3,6)."""
    lever = points_cam - centres[:, None]
    eye = torch.eye(3, dtype=points_cam.dtype, device=points_cam.device).expand(*lever.shape[:-1], 3, 3)
    return torch.cat([-_skew(lever), eye], -1)


def _cap_norm(vectors: torch.Tensor, limit: float) -> torch.Tensor:
    """Scale (N,3) vectors down to at most ``limit`` in norm."""
    norm = vectors.norm(dim=-1, keepdim=True)
    return vectors * (limit / norm.clamp(min=limit))


def _irls(residual: torch.Tensor, knee: float) -> torch.Tensor:
    """Square-root IRLS weights of the Charbonnier cost."""
    return (1 + (residual / knee) ** 2) ** -0.25


@dataclass
class NormalEquations:
    """Per-frame data blocks: H (W,6,6) = J^T J, g (W,6) = J^T r, cost (W,) = sum r^2 (weighted)."""

    hessian: torch.Tensor
    gradient: torch.Tensor
    cost: torch.Tensor


def _accumulate(
    residual: torch.Tensor, jacobian: torch.Tensor | None, weight: torch.Tensor, eq: NormalEquations
) -> None:
    """Add residuals (W,N) with jacobians (W,N,6) (None: cost only) and weights (W,N) to ``eq``."""
    wr = residual * weight
    eq.cost += (wr**2).sum(1)
    if jacobian is not None:
        wj = jacobian * weight[..., None]
        eq.hessian += wj.transpose(1, 2) @ wj
        eq.gradient += (wj.transpose(1, 2) @ wr[..., None])[..., 0]


def data_terms(
    rotations: torch.Tensor, centres: torch.Tensor, centroid: torch.Tensor, points: VisiblePoints,
    evidence: FrameEvidence, frames: slice, K: torch.Tensor, size: tuple[int, int], config: TrackerConfig,
    with_jacobian: bool = True,
) -> NormalEquations:  # fmt: skip
    """Linearise every image term of every frame of the window at the current poses."""
    num = rotations.shape[0]
    dtype, device = rotations.dtype, rotations.device
    eq = NormalEquations(
        torch.zeros(num, 6, 6, dtype=dtype, device=device),
        torch.zeros(num, 6, dtype=dtype, device=device),
        torch.zeros(num, dtype=dtype, device=device),
    )
    has_object = evidence.has_object[frames].to(dtype)

    def cam(model_points: torch.Tensor) -> torch.Tensor:
        return (model_points - centroid) @ rotations.transpose(1, 2) + centres[:, None]

    def image_term(
        image: torch.Tensor, grad: torch.Tensor, cam_points: torch.Tensor, valid: torch.Tensor, weight: float,
        inside_only: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        pixels = project(cam_points, K)
        value = sample_image(image[frames], pixels, size)
        norm = valid.sum(1, keepdim=True).clamp(min=1)
        if inside_only is not None:
            # Where an occluder may hide the outline, only "inside the object mask" is evidence: an
            # occluder never makes object pixels appear, so a model outline inside the mask is wrong.
            valid = valid * torch.where(inside_only, (value < 0).to(dtype), torch.ones_like(value))
        w = valid * _irls(value, config.robust_px) * (weight / norm) ** 0.5
        jac = None
        if with_jacobian:
            image_grad = torch.stack(
                [sample_image(grad[frames, :1], pixels, size), sample_image(grad[frames, 1:], pixels, size)], -1
            )  # (W,N,2)
            d_pixel = _projection_jacobian(cam_points, K) @ _point_jacobian(cam_points, centres)  # (W,N,2,6)
            jac = (image_grad[..., None, :] @ d_pixel)[..., 0, :]
        _accumulate(value, jac, w, eq)

    contour_cam = cam(points.contour)
    hidden = sample_image(evidence.near_human[frames], project(contour_cam, K), size, mode="nearest") > 0.5
    contour_valid = points.contour_valid.to(dtype) * has_object[:, None]
    image_term(
        evidence.signed_distance, evidence.signed_gradient, contour_cam, contour_valid, config.weight_contour, hidden
    )
    interior_cam = cam(points.interior)
    interior_px = project(interior_cam, K)  # the colour and depth terms sample the images there
    image_term(
        evidence.outside_distance,
        evidence.outside_gradient,
        interior_cam,
        points.interior_valid.to(dtype),
        config.weight_interior,
    )

    # Coverage: each object outline pixel against its nearest model outline point (ICP-style matching).
    contour_px = project(contour_cam, K)
    far = torch.where(points.contour_valid[..., None], contour_px, torch.full_like(contour_px, 1e5))
    nearest = torch.cdist(evidence.contour_pixels[frames], far).argmin(dim=2)  # (W,M)
    matched_cam = torch.gather(contour_cam, 1, nearest[..., None].expand(-1, -1, 3))
    gap = project(matched_cam, K) - evidence.contour_pixels[frames]  # (W,M,2)
    valid = evidence.contour_valid[frames].to(dtype) * points.contour_valid.any(1, keepdim=True).to(dtype)
    w = (
        valid
        * _irls(gap.norm(dim=-1), config.robust_px)
        * (config.weight_coverage / valid.sum(1, keepdim=True).clamp(min=1)) ** 0.5
    )
    d_pixel = _projection_jacobian(matched_cam, K) @ _point_jacobian(matched_cam, centres) if with_jacobian else None
    for axis in range(2):
        _accumulate(gap[..., axis], None if d_pixel is None else d_pixel[..., axis, :], w, eq)

    if evidence.colour is not None and points.interior_colour is not None and config.weight_colour > 0:
        # Appearance: each point seen at the reference pose should show the colour it showed there. A
        # Cauchy weight lets the points an occluder hides (a hand inside the object mask) go.
        origin = torch.tensor(evidence.colour_origin, dtype=dtype, device=device)
        local = interior_px - origin
        crop_size = tuple(evidence.colour.shape[-2:])
        observed = sample_channels(evidence.colour[frames], local, crop_size).to(dtype)  # (W,N,3)
        channel_weight = torch.tensor([config.colour_lightness_weight, 1.0, 1.0], dtype=dtype, device=device)
        residual = (observed - points.interior_colour) * channel_weight / config.colour_scale
        inside = (local >= 0).all(-1) & (local[..., 0] < crop_size[1]) & (local[..., 1] < crop_size[0])
        row = interior_px[..., 1].long().clamp(0, size[0] - 1)
        col = interior_px[..., 0].long().clamp(0, size[1] - 1)
        on_human = evidence.human_masks[frames][torch.arange(num, device=device)[:, None], row, col]
        seen = (points.interior_valid & inside & ~on_human).to(dtype) * has_object[:, None]
        usable = seen * points.interior_colour_valid.to(dtype)
        count = seen.sum(1).clamp(min=1)
        eq.cost += config.weight_colour * config.colour_unknown_cost * (seen - usable).sum(1) / count
        w = usable * (1 + (residual**2).sum(-1)) ** -0.5 * (config.weight_colour / count[:, None]) ** 0.5
        jac = None
        if with_jacobian:
            gradient = sample_channels(evidence.colour_gradient[frames], local, crop_size).to(dtype)  # (W,N,6)
            image_grad = torch.stack([gradient[..., :3], gradient[..., 3:]], -1)  # (W,N,3,2)
            image_grad = image_grad * (channel_weight / config.colour_scale)[:, None]
            d_pixel = _projection_jacobian(interior_cam, K) @ _point_jacobian(interior_cam, centres)  # (W,N,2,6)
            jac = image_grad @ d_pixel  # (W,N,3,6)
        for channel in range(3):
            _accumulate(residual[..., channel], None if jac is None else jac[..., channel, :], w, eq)

    if evidence.depth is not None:
        observed = sample_image(evidence.depth[frames], interior_px, size, mode="nearest")
        in_mask = sample_image(evidence.object_masks[frames], interior_px, size, mode="nearest") > 0.5
        usable = ((observed > 0) & in_mask & points.interior_valid).to(dtype)
        residual = (interior_cam[..., 2] - observed) / config.depth_scale_m
        w = usable * _irls(residual, 1.0) * (config.weight_depth / usable.sum(1, keepdim=True).clamp(min=1)) ** 0.5
        jac = _point_jacobian(interior_cam, centres)[..., 2, :] / config.depth_scale_m if with_jacobian else None
        _accumulate(residual, jac, w, eq)
    return eq


def smoothness_terms(
    rotations: torch.Tensor, centres: torch.Tensor, history_rot: torch.Tensor, history_centre: torch.Tensor,
    K: torch.Tensor, config: TrackerConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Second differences over [history, window]: full (6W,6W) normal matrix, (6W,) gradient, cost."""
    num, hist = rotations.shape[0], history_rot.shape[0]
    length = num + hist
    dtype, device = rotations.dtype, rotations.device
    hessian = torch.zeros(6 * num, 6 * num, dtype=dtype, device=device)
    gradient = torch.zeros(6 * num, dtype=dtype, device=device)
    if length < 3:
        return hessian, gradient, torch.zeros((), dtype=dtype, device=device)
    all_rot = torch.cat([history_rot, rotations])
    all_centre = torch.cat([history_centre, centres])
    second = torch.zeros(length - 2, length, dtype=dtype, device=device)
    idx = torch.arange(length - 2, device=device)
    second[idx, idx], second[idx, idx + 1], second[idx, idx + 2] = 1.0, -2.0, 1.0
    d_window = second[:, hist:]  # only window frames move
    pixels_per_m = K[0, 0].to(dtype) / all_centre[:, 2].mean().clamp(min=0.1)
    accel = (second @ all_centre) * pixels_per_m  # (L-2,3)
    rel = roma.rotmat_to_rotvec(all_rot[1:] @ all_rot[:-1].transpose(1, 2))
    # Angular acceleration as a second difference of frame-to-frame rotation vectors, first order in
    # the left-multiplied residual rotvecs: rel_t' ~ rel_t + w_t - w_(t-1).
    angular = rel[1:] - rel[:-1]
    blocks = (
        (slice(3, 6), accel, pixels_per_m, config.weight_smooth_translation),
        (slice(0, 3), angular, 1.0, config.weight_smooth_rotation),
    )
    cost = torch.zeros((), dtype=dtype, device=device)
    for part, value, unit, weight in blocks:
        jac = d_window * unit * weight**0.5  # (L-2, W) per coordinate
        value = value * weight**0.5
        coupling = jac.T @ jac  # (W,W)
        grad = jac.T @ value  # (W,3)
        for a in range(3):
            rows = torch.arange(num, device=device) * 6 + part.start + a
            hessian[rows[:, None], rows[None, :]] += coupling
            gradient[rows] += grad[:, a]
        cost = cost + (value**2).sum()
    return hessian, gradient, cost


@dataclass
class TrackResult:
    poses: np.ndarray  # (T,4,4) float64 object->camera
    contour_px: np.ndarray  # (T,) RMS signed distance of the model outline to the mask outline (px)


def mesh_centroid(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted surface centroid (rotations are parametrised about it)."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return vertices.mean(0)
    return (area[:, None] * tri.mean(1)).sum(0) / area.sum()


def _poses(rotations: torch.Tensor, centres: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    pose = torch.zeros(rotations.shape[0], 4, 4, dtype=rotations.dtype, device=rotations.device)
    pose[:, :3, :3] = rotations
    pose[:, :3, 3] = centres - rotations @ centroid
    pose[:, 3, 3] = 1
    return pose


@torch.no_grad()
def coarse_align(
    rotations: torch.Tensor, centres: torch.Tensor, centroid: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor],
    object_masks: torch.Tensor, human_masks: torch.Tensor, K: np.ndarray, size: tuple[int, int],
    min_pixels: int = 20, scale_depth: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Move each frame's centre so the unoccluded predicted silhouette matches the mask's centroid and area.

    Silhouette energies only see a few pixels around the outline; a jump larger than that (fast motion,
    small objects) needs this global 2D moment match first. Returns the new (W,3) centres.
    """
    poses = _poses(rotations, centres, centroid).float()
    predicted = render_crop(poses, mesh[0], mesh[1], K, size).full_silhouette(size) & ~human_masks
    observed = object_masks
    height, width = size
    ys = torch.arange(height, dtype=centres.dtype, device=centres.device)[:, None] + 0.5
    xs = torch.arange(width, dtype=centres.dtype, device=centres.device)[None] + 0.5

    def moments(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weight = mask.to(centres.dtype)
        area = weight.sum((1, 2))
        cx = (weight * xs).sum((1, 2)) / area.clamp(min=1)
        cy = (weight * ys).sum((1, 2)) / area.clamp(min=1)
        return area, cx, cy

    area_p, cx_p, cy_p = moments(predicted)
    area_o, cx_o, cy_o = moments(observed)
    usable = (area_p >= min_pixels) & (area_o >= min_pixels)
    K_t = torch.as_tensor(K, dtype=centres.dtype, device=centres.device)
    depth_ratio = torch.where(
        usable & scale_depth, (area_p / area_o.clamp(min=1)).sqrt().clamp(0.95, 1.05), torch.ones_like(area_p)
    )
    new_z = centres[:, 2] * depth_ratio
    centre_px = project(centres[:, None], K_t)[:, 0]
    target_u = centre_px[:, 0] + torch.where(usable, cx_o - cx_p, torch.zeros_like(cx_o))
    target_v = centre_px[:, 1] + torch.where(usable, cy_o - cy_p, torch.zeros_like(cy_o))
    new_x = (target_u - K_t[0, 2]) / K_t[0, 0] * new_z
    new_y = (target_v - K_t[1, 2]) / K_t[1, 1] * new_z
    return torch.stack([new_x, new_y, new_z], dim=1)


def solve_window(
    rotations: torch.Tensor, centres: torch.Tensor, history: tuple[torch.Tensor, torch.Tensor], centroid: torch.Tensor,
    mesh: tuple[torch.Tensor, torch.Tensor], evidence: FrameEvidence, frames: slice, K: np.ndarray,
    size: tuple[int, int], config: TrackerConfig, generator: torch.Generator,
    prior: HeldPrior | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Levenberg-Marquardt over the window's 6W pose residuals (left-multiplied, about the centroid).

    ``prior``: soft expected centroid depth and rotation of the window's frames (scales
    ``config.depth_prior_m`` and ``config.rotation_prior_rad``): silhouette scale says little about
    depth at a few metres, and a symmetric object's turn about its axis not at all."""
    K_t = torch.as_tensor(K, dtype=rotations.dtype, device=rotations.device)
    num = rotations.shape[0]
    for _ in range(config.coarse_steps):
        centres = coarse_align(
            rotations,
            centres,
            centroid,
            mesh,
            evidence.object_masks[frames, 0] > 0.5,
            evidence.human_masks[frames],
            K,
            size,
            scale_depth=prior is None,
        )
    damping = torch.full((num,), 0.1, dtype=rotations.dtype, device=rotations.device)
    points = None

    def total(rot: torch.Tensor, cen: torch.Tensor, with_jacobian: bool) -> tuple[NormalEquations, tuple]:
        eq = data_terms(rot, cen, centroid, points, evidence, frames, K_t, size, config, with_jacobian)
        if prior is not None:
            residual = (cen[:, 2] - prior.depth) / config.depth_prior_m
            eq.cost += residual**2
            eq.gradient[:, 5] += residual / config.depth_prior_m
            eq.hessian[:, 5, 5] += 1.0 / config.depth_prior_m**2
            # Left-multiplied residual w: rotvec(exp(w) R R_p^T) ~ rotvec(R R_p^T) + w to first order.
            turn = roma.rotmat_to_rotvec(rot @ prior.rotation.transpose(1, 2)) / config.rotation_prior_rad
            eq.cost += (turn**2).sum(1)
            eq.gradient[:, :3] += turn / config.rotation_prior_rad
            eq.hessian[:, :3, :3] += torch.eye(3, dtype=rot.dtype, device=rot.device) / config.rotation_prior_rad**2
        smooth = smoothness_terms(rot, cen, history[0], history[1], K_t, config)
        return eq, smooth

    for iteration in range(config.iterations):
        if iteration % config.visibility_refresh == 0:
            points = points_with_colour(
                _poses(rotations, centres, centroid), mesh, evidence, K, size, config, generator, rotations.dtype
            )
        eq, (smooth_h, smooth_g, _) = total(rotations, centres, True)
        hessian = torch.block_diag(*eq.hessian) + smooth_h
        gradient = eq.gradient.reshape(-1) + smooth_g
        # Per-frame Levenberg damping: each frame keeps its step only if its own image cost drops, so a
        # frame far from its solution does not hold back the others (smoothness couples them weakly).
        scale = damping.repeat_interleave(6) * (hessian.diagonal() + 1e-6)
        step = -torch.linalg.solve(hessian + torch.diag(scale), gradient).reshape(num, 6)
        # Trust region: the distance-transform linearisation only holds for small moves, and rotation is
        # the weakly observed part; cap each step instead of trusting a far Gauss-Newton jump.
        step = torch.cat([_cap_norm(step[:, :3], config.max_step_rad), _cap_norm(step[:, 3:], config.max_step_m)], 1)
        new_rot = roma.rotvec_to_rotmat(step[:, :3]) @ rotations
        new_centre = centres + step[:, 3:]
        new_eq, _ = total(new_rot, new_centre, False)
        better = new_eq.cost < eq.cost
        rotations = torch.where(better[:, None, None], new_rot, rotations)
        centres = torch.where(better[:, None], new_centre, centres)
        damping = torch.where(better, (damping / 3).clamp(min=1e-6), damping * 4)
        if step.abs().max() < 1e-7 or bool((damping > 1e6).all()):
            break
    return rotations, centres


# ---- the resting pose on the support plane ------------------------------------------------------------
@dataclass
class Anchors:
    """Image evidence of when the object is still (see ``pose_anchors``)."""

    static_prefix: int  # frames 0..static_prefix-1 show the object at the frame-0 pose
    rest_suffix: int  # the last rest_suffix frames show it still, where it was put down
    plane_normal: np.ndarray | None = None  # support plane at frame 0 (camera frame), None: unknown
    plane_offset: float = 0.0


@dataclass
class HeldPrior:
    """Soft expectations while the object is held: centroid depth (T,) and rotation (T,3,3)."""

    depth: torch.Tensor
    rotation: torch.Tensor


def _plane_basis(normal: torch.Tensor) -> torch.Tensor:
    """(6,3) step basis: turn about the normal (through the centroid), slide along the plane."""
    helper = torch.zeros_like(normal)
    helper[int(torch.argmin(normal.abs()))] = 1.0
    e1 = torch.linalg.cross(normal, helper)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(normal, e1)
    basis = torch.zeros(6, 3, dtype=normal.dtype, device=normal.device)
    basis[:3, 0], basis[3:, 1], basis[3:, 2] = normal, e1, e2
    return basis


def solve_rest_pose(
    rotation: torch.Tensor, centre: torch.Tensor, centroid: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor],
    evidence: FrameEvidence, frame_ids: slice | torch.Tensor, K: np.ndarray, size: tuple[int, int],
    config: TrackerConfig, generator: torch.Generator, normal: torch.Tensor, iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, float]:  # fmt: skip
    """One pose shared by the frames ``frame_ids`` (a slice reads the images in place; an index tensor
    copies them at every step), moved only on the support plane (3 DoF): the image terms of all those
    frames summed (averaging out mask noise), depth fixed by the plane."""
    K_t = torch.as_tensor(K, dtype=rotation.dtype, device=rotation.device)
    num = evidence.has_object[frame_ids].shape[0]
    basis = _plane_basis(normal)
    slide = basis[3:, 1:]  # (3,2) in-plane directions

    def expand(rot: torch.Tensor, cen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rot.expand(num, 3, 3), cen.expand(num, 3)

    for _ in range(config.coarse_steps):
        moved = coarse_align(
            *expand(rotation, centre), centroid, mesh, evidence.object_masks[frame_ids, 0] > 0.5,
            evidence.human_masks[frame_ids], K, size, scale_depth=False,
        ).mean(0)  # fmt: skip
        # Keep the move on the plane: pixel shifts are along the plane at the object's distance.
        centre = centre + slide @ (slide.T @ (moved - centre))
    damping, points, cost = 0.1, None, float("inf")
    for iteration in range(iterations):
        rot, cen = expand(rotation, centre)
        if iteration % config.visibility_refresh == 0 or points is None:
            points = points_with_colour(_poses(rot, cen, centroid), mesh, evidence, K, size, config, generator,
                                        rotation.dtype)  # fmt: skip
        eq = data_terms(rot, cen, centroid, points, evidence, frame_ids, K_t, size, config, True)
        hessian = basis.T @ eq.hessian.sum(0) @ basis
        gradient = basis.T @ eq.gradient.sum(0)
        cost = float(eq.cost.sum())
        # Ridge on top of Levenberg damping: a direction the images do not see (a bottle's turn about
        # its axis) must not wander with the mask noise.
        ridge = 1e-3 * hessian.diagonal().max() + 1e-9
        reduced = -torch.linalg.solve(hessian + damping * torch.diag(hessian.diagonal()) + ridge * torch.eye(3,
                                      dtype=hessian.dtype, device=hessian.device), gradient)  # fmt: skip
        step = basis @ reduced
        step = torch.cat(
            [_cap_norm(step[None, :3], config.max_step_rad)[0], _cap_norm(step[None, 3:], config.max_step_m)[0]]
        )
        new_rotation = roma.rotvec_to_rotmat(step[:3]) @ rotation
        new_centre = centre + step[3:]
        new_cost = float(data_terms(*expand(new_rotation, new_centre), centroid, points, evidence, frame_ids, K_t,
                                    size, config, False).cost.sum())  # fmt: skip
        if new_cost < cost:
            rotation, centre, cost, damping = new_rotation, new_centre, new_cost, max(damping / 3, 1e-6)
        else:
            damping *= 4
        if float(step.abs().max()) < 1e-7 or damping > 1e6:
            break
    return rotation, centre, cost


def _turn_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle (deg) between two rotation matrices."""
    return float(torch.rad2deg(roma.rotmat_to_rotvec(a @ b.T).norm()))


@torch.no_grad()
def rest_scores(
    rotations: torch.Tensor, centres: torch.Tensor, centroid: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor],
    evidence: FrameEvidence, K: np.ndarray, size: tuple[int, int], config: TrackerConfig, sample_factor: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Silhouette cost (contour, interior, coverage terms) and colour cost (``weight_colour``) of N
    candidate poses (N,3,3), (N,3), each summed over all the frames of ``evidence``: (N,), (N,).

    Every candidate is judged with the same seeded draw of ``sample_factor`` times the usual points, so
    their costs differ by the pose, not by which points the tracker's running generator happened to pick.
    One candidate at a time: the images are read in place (indexing frames would copy them)."""
    config = replace(
        config, contour_samples=config.contour_samples * sample_factor,
        interior_samples=config.interior_samples * sample_factor, colour_samples=config.colour_samples * sample_factor,
    )  # fmt: skip
    frames = evidence.has_object.shape[0]
    K_t = torch.as_tensor(K, dtype=rotations.dtype, device=rotations.device)
    with_colour = evidence.colour is not None and evidence.reference is not None and config.weight_colour > 0
    silhouette = torch.zeros(len(rotations), dtype=rotations.dtype, device=rotations.device)
    colour = torch.zeros_like(silhouette)
    for index, (rotation, centre) in enumerate(zip(rotations, centres, strict=True)):
        rot, cen = rotation.expand(frames, 3, 3), centre.expand(frames, 3)
        generator = torch.Generator().manual_seed(config.seed)
        points = points_with_colour(_poses(rot, cen, centroid), mesh, evidence, K, size, config, generator, rot.dtype)
        shape_cost = data_terms(rot, cen, centroid, points, evidence, slice(None), K_t, size,
                                replace(config, weight_colour=0.0, weight_depth=0.0), False).cost.sum()  # fmt: skip
        silhouette[index] = shape_cost
        if with_colour:
            colour[index] = data_terms(rot, cen, centroid, points, evidence, slice(None), K_t, size,
                                       replace(config, weight_depth=0.0), False).cost.sum() - shape_cost  # fmt: skip
    return silhouette, colour


def _colour_allowed(colour: torch.Tensor, config: TrackerConfig) -> torch.Tensor:
    """(N,) bool: candidates whose colour cost is within ``rest_colour_gate`` times the lowest."""
    if config.rest_colour_gate <= 0 or not bool((colour > 0).any()):
        return torch.ones_like(colour, dtype=torch.bool)
    return colour <= colour.min() * config.rest_colour_gate


def pick_rest_hypothesis(
    silhouette: torch.Tensor, colour: torch.Tensor, turns: torch.Tensor, config: TrackerConfig
) -> int:
    """The decision of ``choose_rest_hypothesis`` from the candidates' (N,) silhouette and colour costs and
    turns from frame 0 (deg)."""
    silhouette, colour, turns = silhouette.cpu(), colour.cpu(), turns.cpu().to(silhouette.dtype)
    allowed = _colour_allowed(colour, config)
    if config.rest_silhouette_override > 0:
        allowed_best = torch.where(allowed, silhouette, torch.full_like(silhouette, float("inf"))).min()
        allowed = allowed | (silhouette < allowed_best * (1 - config.rest_silhouette_override))
    best = int(torch.where(allowed, silhouette, torch.full_like(silhouette, float("inf"))).argmin())
    # "The best one's silhouette": the same cost within mask noise (rest_same_cost). Comparing the
    # outlines as well (IoU >= 0.97) let a mug turned 17 deg the wrong way look the same as the true one.
    same = allowed & (silhouette <= silhouette[best] * (1 + config.rest_same_cost))
    choice = int(torch.where(same, turns, torch.full_like(turns, float("inf"))).argmin())
    if config.rest_colour_tiebreak > 0 and bool((colour > 0).any()):
        # Of the same looks, one whose colours clearly agree better with frame 0 than the smallest turn's
        # wins (a mug's handle turned 27 deg towards the camera or 1 deg: nearly the same outline).
        clearest = int(torch.where(same, colour, torch.full_like(colour, float("inf"))).argmin())
        if colour[clearest] < colour[choice] * (1 - config.rest_colour_tiebreak):
            choice = clearest
    return choice


def choose_rest_hypothesis(
    rotations: torch.Tensor, centres: torch.Tensor, rotation0: torch.Tensor, centroid: torch.Tensor,
    mesh: tuple[torch.Tensor, torch.Tensor], evidence: FrameEvidence, K: np.ndarray, size: tuple[int, int],
    config: TrackerConfig,
) -> int:  # fmt: skip
    """Index of the resting pose among N refined candidates (N,3,3), (N,3), judged on all the frames of
    ``evidence``.

    The colour vets: a candidate whose surface colours disagree with frame 0's much more than another
    candidate's (over ``rest_colour_gate`` times the lowest colour cost: the mug's mirror turn shows its
    never-seen back) is out, unless its silhouette is clearly the better (``rest_silhouette_override``). Of
    the rest, the silhouette decides (the colour's fine optimum was 27 deg off on the mug's rest masks), and
    of those with the best one's silhouette cost (within ``rest_same_cost``) the smallest turn from frame 0
    is kept (a bottle looks the same at any turn; mask noise should not pick one), unless another of them
    shows frame 0's colours clearly better (``rest_colour_tiebreak``; ``pick_rest_hypothesis``)."""
    silhouette, colour = rest_scores(rotations, centres, centroid, mesh, evidence, K, size, config)
    turns = torch.tensor([_turn_deg(r, rotation0) for r in rotations], dtype=silhouette.dtype)
    choice = pick_rest_hypothesis(silhouette, colour, turns, config)
    logger.info(
        "resting pose: %d hypotheses, turns %s deg, silhouette costs %s, colour costs %s: turn %.1f deg",
        len(rotations), [round(float(t), 1) for t in turns], [round(float(c), 3) for c in silhouette],
        [round(float(c), 3) for c in colour], float(turns[choice]),
    )  # fmt: skip
    return choice


def fit_rest_pose(
    rotation0: torch.Tensor, centre0: torch.Tensor, centroid: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor],
    evidence: EvidenceSource, frame_ids: torch.Tensor, K: np.ndarray, size: tuple[int, int], config: TrackerConfig,
    generator: torch.Generator, normal: torch.Tensor, offset: float, expected: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The resting pose of the final still frames: the frame-0 pose turned about the plane normal and
    slid along the plane (an object put down stands on the same face). Starts: several turns, the
    centroid on the ray through the mask's centre at its frame-0 height above the plane.

    ``expected``: the resting rotation the holding hand predicts (``hand_turn``); of the hypotheses that
    look the same, the one nearest it is kept instead of the smallest turn from frame 0."""
    dtype = rotation0.dtype
    # The rest frames' evidence, taken once; below, slices of it (read in place).
    evidence, frame_ids = evidence.take(frame_ids), slice(None)
    K_t = torch.as_tensor(K, dtype=dtype, device=rotation0.device)
    height = float(centre0 @ normal + offset)
    masks = evidence.object_masks[frame_ids, 0]
    best_frame = int(masks.sum((1, 2)).argmax())
    ys, xs = torch.nonzero(masks[best_frame] > 0.5, as_tuple=True)
    pixel = torch.stack([xs.to(dtype).mean() + 0.5, ys.to(dtype).mean() + 0.5])
    ray = torch.linalg.solve(K_t, torch.cat([pixel, torch.ones(1, dtype=dtype, device=pixel.device)]))
    denominator = float(ray @ normal)
    if abs(denominator) < 1e-6:
        raise ValueError("the camera ray runs along the support plane")
    centre = ray * (height - offset) / denominator
    # Refinement of the resting pose: silhouette only (rest_colour_factor); the colour term only vets.
    fit_config = replace(config, weight_colour=config.weight_colour * config.rest_colour_factor)
    candidates = []
    # The turns are told apart on the last two frames (the hand is gone by then).
    candidate_ids = slice(-2, None)
    for k in range(config.rest_yaw_candidates):
        angle = 2 * np.pi * k / config.rest_yaw_candidates
        angle = angle - 2 * np.pi if angle > np.pi else angle
        start = roma.rotvec_to_rotmat(normal * angle) @ rotation0
        rot, cen, cost = solve_rest_pose(
            start, centre, centroid, mesh, evidence, candidate_ids, K, size, fit_config, generator, normal,
            max(config.rest_iterations // 4, 1),
        )  # fmt: skip
        candidates.append((cost, rot, cen))
        logger.debug("rest turn start %.1f deg: cost %.4f", np.degrees(angle), cost)
    # The short two-frame fits' own costs (each on its own random points) do not rank the turns: a mug's
    # handle turned towards the camera or away from it (mirror turns) draws nearly the same outline, and
    # on GPU-rendered masks the true turn came 7th of 16. They are ranked on all the rest frames with one
    # seeded draw of points (``rest_scores``: colour vets, then silhouette), and the best few distinct
    # ones are refined fully and compared (``choose_rest_hypothesis``).
    short_rot = torch.stack([c[1] for c in candidates])
    short_cen = torch.stack([c[2] for c in candidates])
    silhouette, colour = rest_scores(short_rot, short_cen, centroid, mesh, evidence, K, size, config, 1)
    ranking = silhouette + torch.where(_colour_allowed(colour, config), 0.0, float(silhouette.max()) + 1.0)
    hypotheses: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index in ranking.argsort().tolist():
        if len(hypotheses) == config.rest_hypotheses:
            break
        if all(_turn_deg(short_rot[index], other) > 8.0 for other, _ in hypotheses):
            hypotheses.append((short_rot[index], short_cen[index]))
    refined = [
        solve_rest_pose(rot, cen, centroid, mesh, evidence, frame_ids, K, size, fit_config, generator, normal,
                        config.rest_iterations)[:2]
        for rot, cen in hypotheses
    ]  # fmt: skip
    rotations = torch.stack([r for r, _ in refined])
    centres = torch.stack([c for _, c in refined])
    reference = rotation0 if expected is None else expected
    choice = choose_rest_hypothesis(rotations, centres, reference, centroid, mesh, evidence, K, size, config)
    rot, cen = rotations[choice], centres[choice]
    return rot, cen


# ---- tracking ------------------------------------------------------------------------------------
def _track_frames(
    rotations: torch.Tensor, centres: torch.Tensor, contour_px: np.ndarray, begin: int, end: int,
    centroid: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor], evidence: FrameEvidence, K: np.ndarray,
    size: tuple[int, int], config: TrackerConfig, generator: torch.Generator, prior: HeldPrior | None,
    report: Callable[[int], None],
) -> None:  # fmt: skip
    """Track frames begin..end-1 in windows, each warm-started from the frames solved before it."""
    dtype, device = rotations.dtype, rotations.device
    start = begin
    while start < end:
        stop = min(start + config.window, end)
        frames = slice(start, stop)
        steps = torch.arange(1, stop - start + 1, device=device, dtype=dtype)[:, None]
        # Warm start: constant velocity from the last two solved frames (rotation and centroid).
        if start >= 2:
            rel = roma.rotmat_to_rotvec(rotations[start - 1] @ rotations[start - 2].T)
            vel = centres[start - 1] - centres[start - 2]
        else:
            rel = vel = torch.zeros(3, dtype=dtype, device=device)
        window_rot = roma.rotvec_to_rotmat(steps * rel) @ rotations[start - 1]
        window_centre = centres[start - 1] + steps * vel
        if prior is not None:
            window_centre = window_centre * (prior.depth[frames] / window_centre[:, 2].clamp(min=1e-3))[:, None]
        history = (rotations[max(start - 2, 0) : start], centres[max(start - 2, 0) : start])
        window = evidence.take(frames)
        window_rot, window_centre = solve_window(
            window_rot, window_centre, history, centroid, mesh, window, slice(None), K, size, config, generator,
            None if prior is None else HeldPrior(prior.depth[frames], prior.rotation[frames]),
        )  # fmt: skip
        # A frame whose object left the viewing frustum's plausible depths has lost track: hold the
        # last good pose instead of letting the next window extrapolate from nonsense.
        lost = (
            (window_centre[:, 2] < MIN_DEPTH_M)
            | (window_centre[:, 2] > MAX_DEPTH_M)
            | ~torch.isfinite(window_centre).all(1)
        )
        if bool(lost.any()):
            logger.warning(
                "object track lost in %d frame(s) of %d-%d: holding the last pose", int(lost.sum()), start, stop - 1
            )
            hold_rot, hold_centre = rotations[start - 1], centres[start - 1]
            for index in range(len(lost)):
                if lost[index]:
                    window_rot[index], window_centre[index] = hold_rot, hold_centre
                hold_rot, hold_centre = window_rot[index], window_centre[index]
        rotations[frames], centres[frames] = window_rot, window_centre
        contour_px[frames] = contour_rms(window_rot, window_centre, centroid, mesh, window, slice(None), K, size,
                                         config, generator)  # fmt: skip
        report(stop)
        start = stop


def _track_two_way(
    rotations: torch.Tensor, centres: torch.Tensor, contour_px: np.ndarray, begin: int, end: int,
    centroid: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor], evidence: FrameEvidence, K: np.ndarray,
    size: tuple[int, int], config: TrackerConfig, generator: torch.Generator, prior: HeldPrior,
    report: Callable[[int], None],
) -> None:  # fmt: skip
    """Held frames begin..end-1 between two known poses (frame begin-1 and frame end): tracked forward
    from the first and backward from the second, then combined per frame.

    A one-way track only meets the far anchor through the soft prior, and its drift grows with every
    frame since its anchor (a fast turn or a hand-bloated mask late in the carry can lose it outright).
    Each pass's drift variance is taken to grow linearly with the frames since its anchor and to scale
    with its own outline misfit, so the frames near either still segment take that side's track and a
    pass that lost the object (a large contour RMS) gives way to the other."""
    num_frames = rotations.shape[0]
    rot_b, cen_b = torch.flip(rotations, [0]).clone(), torch.flip(centres, [0]).clone()
    contour_b = np.zeros(num_frames)
    _track_frames(
        rotations, centres, contour_px, begin, end, centroid, mesh, evidence, K, size, config, generator, prior,
        lambda stop: report(begin + (stop - begin) // 2),
    )  # fmt: skip
    backward_prior = HeldPrior(torch.flip(prior.depth, [0]), torch.flip(prior.rotation, [0]))
    _track_frames(
        rot_b, cen_b, contour_b, num_frames - end, num_frames - begin, centroid, mesh, evidence.reversed(),
        K, size, config, generator, backward_prior,
        lambda stop: report((begin + end) // 2 + (stop - (num_frames - end)) // 2),
    )  # fmt: skip
    rot_b, cen_b, contour_b = torch.flip(rot_b, [0]), torch.flip(cen_b, [0]), contour_b[::-1]
    held = torch.arange(begin, end, device=rotations.device)
    t = held.to(rotations.dtype)
    misfit = torch.as_tensor(np.stack([contour_px[begin:end], contour_b[begin:end]]), dtype=t.dtype, device=t.device)
    variance = torch.stack([t - (begin - 1), end - t]) * (misfit**2 + config.robust_px**2)
    backward_weight = variance[0] / variance.sum(0)  # inverse-variance weight of the backward pass
    turn = roma.rotmat_to_rotvec(rot_b[held] @ rotations[held].transpose(1, 2))
    rotations[held] = roma.rotvec_to_rotmat(backward_weight[:, None] * turn) @ rotations[held]
    centres[held] = centres[held] + backward_weight[:, None] * (cen_b[held] - centres[held])
    contour_px[begin:end] = contour_rms_frames(
        rotations, centres, begin, end, centroid, mesh, evidence, K, size, config, generator
    )


def contour_rms(
    rotations: torch.Tensor, centres: torch.Tensor, centroid: torch.Tensor, mesh: tuple[torch.Tensor, torch.Tensor],
    evidence: FrameEvidence, frames: slice | torch.Tensor, K: np.ndarray, size: tuple[int, int],
    config: TrackerConfig, generator: torch.Generator,
) -> np.ndarray:  # fmt: skip
    """RMS signed distance (px) of the model outline to the mask outline, per frame."""
    dtype = rotations.dtype
    points = visible_points(_poses(rotations, centres, centroid).float(), *mesh, K, size, config, generator)
    cam = (points.contour.to(dtype) - centroid) @ rotations.transpose(1, 2) + centres[:, None]
    K_t = torch.as_tensor(K, dtype=dtype, device=cam.device)
    signed = sample_image(evidence.signed_distance[frames], project(cam, K_t), size)
    valid = points.contour_valid.to(dtype)
    return ((signed**2 * valid).sum(1) / valid.sum(1).clamp(min=1)).sqrt().cpu().numpy()


def contour_rms_frames(
    rotations: torch.Tensor, centres: torch.Tensor, begin: int, end: int, centroid: torch.Tensor,
    mesh: tuple[torch.Tensor, torch.Tensor], evidence: EvidenceSource, K: np.ndarray, size: tuple[int, int],
    config: TrackerConfig, generator: torch.Generator,
) -> np.ndarray:  # fmt: skip
    """``contour_rms`` of frames begin..end-1, at most ``evidence_cache_frames`` frames' evidence at a time."""
    chunk = max(config.evidence_cache_frames, 1)
    parts = [
        contour_rms(rotations[a : min(a + chunk, end)], centres[a : min(a + chunk, end)], centroid, mesh,
                    evidence.take(slice(a, min(a + chunk, end))), slice(None), K, size, config, generator)
        for a in range(begin, end, chunk)
    ]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros(0)


def hand_turn(hands: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """(3,) mean over the hands (H,T,3,3) or (T,3,3) of each hand's turn (rotation vector, camera frame,
    left-multiplied) from frame ``first`` to frame ``last``: a held object's turn between the two (R_object
    = R_hand C). Stage 1's right hand on the seed-4 mug: 27.8 deg about the support normal from the grasp
    to the rest, the mug's 31.9."""
    hands = hands.reshape(-1, *hands.shape[-3:])
    return roma.rotmat_to_rotvec(hands[:, last] @ hands[:, first].transpose(1, 2)).mean(0)


def hand_departure(hands: torch.Tensor, weight: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """(T,3) mean over the hands (H,T,3,3) or (T,3,3) of each hand's turn (rotation vector, camera frame,
    left-multiplied) away from its own slerp between frames ``first`` and ``last`` (``weight``: (T,) 0 at
    ``first``, 1 at ``last``). A held object turns with the hand (R_object = R_hand C), so it turns away from
    its own slerp between the same frames by the same rotation."""
    hands = hands.reshape(-1, *hands.shape[-3:])
    turn = roma.rotmat_to_rotvec(hands[:, last] @ hands[:, first].transpose(1, 2))  # (H,3)
    line = roma.rotvec_to_rotmat(weight[None, :, None] * turn[:, None]) @ hands[:, first : first + 1]
    return roma.rotmat_to_rotvec(hands @ line.transpose(-1, -2)).mean(0)


def track_object(
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    initial_pose: np.ndarray,
    object_masks: np.ndarray,
    human_masks: np.ndarray,
    depth: np.ndarray | None = None,
    config: TrackerConfig = TrackerConfig(),
    device: str = "cpu",
    progress: Callable[[float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    anchors: Anchors | None = None,
    images: np.ndarray | None = None,
    hand_depth: np.ndarray | None = None,
    hand_rotation: np.ndarray | None = None,
) -> TrackResult:
    """Track the mesh through T frames from ``initial_pose`` (object->camera at frame 0, kept as is).

    With ``anchors``: the static start keeps the frame-0 pose, the final rest segment gets one pose fitted
    on the support plane, and the frames between are tracked with a soft depth prior interpolated between
    those two (the held object's depth is barely observable in its silhouette). With ``hand_depth`` (T,) (the
    holding hand's camera depth, ``held_hand_depth``), the prior follows the hand's motion between them; with
    ``hand_rotation`` (H,T,3,3) or (T,3,3) (the holding hands' orientations), the rotation prior turns with
    the hands (their mean turn away from their own slerp between the two still poses).

    With ``images`` (the video's uint8 (T,H,W,3) RGB frames): the surface colours seen at the frame-0 pose
    are a reference that every later frame's visible points are compared with (``weight_colour``)."""
    num_frames, height, width = object_masks.shape
    size = (height, width)
    dtype = torch.float64  # the normal equations need it; the image work is cheap either way
    generator = torch.Generator().manual_seed(config.seed)
    mesh = (
        torch.as_tensor(vertices, dtype=torch.float32, device=device),
        torch.as_tensor(faces, dtype=torch.long, device=device),
    )
    centroid = torch.as_tensor(mesh_centroid(vertices, faces), dtype=dtype, device=device)
    evidence = EvidenceSource(object_masks, human_masks, depth, config, device, dtype, images)

    hands = None  # the holding hands' orientations (H,T,3,3)
    if hand_rotation is not None and config.hand_rotation_prior:
        hands = torch.as_tensor(hand_rotation, dtype=dtype, device=device).reshape(-1, num_frames, 3, 3)
    pose0 = torch.as_tensor(initial_pose, dtype=dtype, device=device)
    evidence.reference = reference_appearance(pose0, mesh, evidence.take(0), 0, K, size, seed=config.seed)
    rotations = torch.zeros(num_frames, 3, 3, dtype=dtype, device=device)  # solved object rotations
    centres = torch.zeros(num_frames, 3, dtype=dtype, device=device)  # solved centroid positions (camera)
    rotations[0] = pose0[:3, :3]
    centres[0] = pose0[:3, :3] @ centroid + pose0[:3, 3]
    contour_px = np.zeros(num_frames)

    prefix, rest_start = 1, num_frames
    if anchors is not None and config.use_anchors:
        prefix = int(min(max(anchors.static_prefix, 1), num_frames))
        rotations[:prefix], centres[:prefix] = rotations[0], centres[0]
        suffix = int(anchors.rest_suffix) if anchors.plane_normal is not None else 0
        if 0 < suffix and num_frames - suffix >= prefix:
            rest_start = num_frames - suffix
            ids = torch.arange(rest_start, num_frames, device=device)
            picks = torch.linspace(0, len(ids) - 1, min(config.rest_frames, len(ids)), device=device)
            ids = ids[picks.round().long()]
            normal = torch.as_tensor(anchors.plane_normal, dtype=dtype, device=device)
            expected = None
            if hands is not None:  # the resting turn the holding hand predicts
                expected = roma.rotvec_to_rotmat(hand_turn(hands, prefix - 1, rest_start)) @ rotations[0]
                logger.info("resting pose: the holding hand turned %.1f deg about the support normal",
                            float(torch.rad2deg(roma.rotmat_to_rotvec(expected @ rotations[0].T) @ normal)))  # fmt: skip
            try:
                rest_rot, rest_centre = fit_rest_pose(
                    rotations[0], centres[0], centroid, mesh, evidence, ids, K, size, config, generator,
                    normal, float(anchors.plane_offset), expected,
                )  # fmt: skip
                rotations[rest_start:], centres[rest_start:] = rest_rot, rest_centre
            except ValueError as exc:
                logger.warning("resting pose not fitted (%s): tracking the last frames instead", exc)
                rest_start = num_frames
        if prefix > 1 or rest_start < num_frames:
            logger.info("object still in frames 0-%d and %d-%d", prefix - 1, rest_start, num_frames - 1)

    prior = None
    if rest_start < num_frames and rest_start > prefix:
        # Linear in time between the last still frame and the first resting one (rotation: slerp).
        t = torch.arange(num_frames, dtype=dtype, device=device)
        weight = ((t - (prefix - 1)) / (rest_start - (prefix - 1))).clamp(0, 1)
        turn = roma.rotmat_to_rotvec(rotations[rest_start] @ rotations[prefix - 1].T)
        depth = (1 - weight) * centres[prefix - 1, 2] + weight * centres[rest_start, 2]
        if hand_depth is not None:
            hand = torch.as_tensor(hand_depth, dtype=dtype, device=device)
            depth = depth + hand - ((1 - weight) * hand[prefix - 1] + weight * hand[rest_start])
        rotation = roma.rotvec_to_rotmat(weight[:, None] * turn) @ rotations[prefix - 1]
        if hands is not None:
            rotation = roma.rotvec_to_rotmat(hand_departure(hands, weight, prefix - 1, rest_start)) @ rotation
        prior = HeldPrior(depth=depth, rotation=rotation)

    def report(stop: int) -> None:
        if progress is not None:
            progress(stop / num_frames, f"object pose frame {stop}/{num_frames}")
        if check_cancelled is not None:
            check_cancelled()

    if prior is not None and config.two_way:
        _track_two_way(
            rotations, centres, contour_px, prefix, rest_start, centroid, mesh, evidence, K, size, config, generator,
            prior, report,
        )  # fmt: skip
    else:
        _track_frames(
            rotations, centres, contour_px, prefix, rest_start, centroid, mesh, evidence, K, size, config, generator,
            prior, report,
        )  # fmt: skip
    if rest_start < num_frames:
        contour_px[rest_start:] = contour_rms_frames(
            rotations, centres, rest_start, num_frames, centroid, mesh, evidence, K, size, config, generator
        )
    report(num_frames)

    poses = _poses(roma.special_procrustes(rotations), centres, centroid).cpu()
    poses[0] = torch.as_tensor(initial_pose, dtype=torch.float64)
    return TrackResult(poses=poses.numpy(), contour_px=contour_px)
