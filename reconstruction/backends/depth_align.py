"""Per-frame depth: scale-and-shift alignment to the first-frame GT depth, and the ``static`` backend.

Alignment follows the reference contract (grail_contract.md section 4): for every frame t, solve
``min_{s,b} sum (s * est + b - gt)^2`` over background pixels - GT in (0.1, 65) m, estimate > 0.1 m,
not inside the human/object masks of frame 0 nor of frame t. Frames with fewer than 100 such pixels
stay unaligned (s = 1, b = 0). All frames are solved at once with masked sums (closed form).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

GT_MIN_M = 0.1
GT_MAX_M = 65.0
EST_MIN_M = 0.1
MIN_VALID_PIXELS = 100


@dataclass
class DepthAlignment:
    depth: torch.Tensor  # (T,H,W) float32 aligned depth, metres, 0 where the estimate was unknown
    scale: torch.Tensor  # (T,) float64
    shift: torch.Tensor  # (T,) float64
    valid_pixels: torch.Tensor  # (T,) int64 pixels used by each frame's fit
    aligned: torch.Tensor  # (T,) bool, False where too few pixels were valid


def alignment_pixels(estimate: torch.Tensor, gt_depth: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """(T,H,W) bool: background pixels usable to fit frame t (foreground = human|object per frame)."""
    gt_ok = (gt_depth > GT_MIN_M) & (gt_depth < GT_MAX_M)
    return gt_ok[None] & (estimate > EST_MIN_M) & ~foreground[:1] & ~foreground


def align_depth(estimate: torch.Tensor, gt_depth: torch.Tensor, foreground: torch.Tensor) -> DepthAlignment:
    """Align ``estimate`` (T,H,W) to ``gt_depth`` (H,W) with one scale and shift per frame.

    ``foreground`` (T,H,W) bool marks human|object pixels per frame; frame 0's mask is excluded from
    every frame's fit as the contract requires. Unknown estimates (<= 0) stay 0 in the output.
    """
    valid = alignment_pixels(estimate, gt_depth, foreground)
    weights = valid.to(torch.float64)
    x = estimate.to(torch.float64) * weights
    y = gt_depth.to(torch.float64)[None] * weights
    count = weights.sum(dim=(1, 2))
    sum_x, sum_y = x.sum(dim=(1, 2)), y.sum(dim=(1, 2))
    sum_xx = (x * x).sum(dim=(1, 2))
    sum_xy = (x * y).sum(dim=(1, 2))
    denom = count * sum_xx - sum_x**2
    enough = (count >= MIN_VALID_PIXELS) & (denom.abs() > 1e-9 * count.clamp(min=1) ** 2)
    safe_denom = torch.where(enough, denom, torch.ones_like(denom))
    scale = torch.where(enough, (count * sum_xy - sum_x * sum_y) / safe_denom, torch.ones_like(denom))
    shift = torch.where(enough, (sum_y - scale * sum_x) / count.clamp(min=1), torch.zeros_like(denom))
    known = estimate > 0
    aligned_depth = torch.where(
        known,
        (scale[:, None, None] * estimate.to(torch.float64) + shift[:, None, None]),
        torch.zeros((), dtype=torch.float64),
    )
    # A negative aligned value is meaningless depth: mark it unknown instead of storing it.
    aligned_depth = aligned_depth.clamp(min=0).to(torch.float32)
    if (~enough).any():
        logger.info(
            "depth alignment: %d frame(s) left unaligned (< %d valid pixels)", int((~enough).sum()), MIN_VALID_PIXELS
        )
    return DepthAlignment(
        depth=aligned_depth, scale=scale, shift=shift, valid_pixels=count.to(torch.int64), aligned=enough
    )


def static_depth(gt_depth: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """The ``static`` backend: the known first-frame depth for background pixels of each frame.

    A pixel is unknown (0) where frame t's human/object covers it, and also where frame 0's did: the GT
    there is the depth of the frame-0 foreground, not of the background later revealed.
    GT outside (0.1, 65) m is unknown too.
    """
    gt_ok = (gt_depth > GT_MIN_M) & (gt_depth < GT_MAX_M)
    known = gt_ok[None] & ~foreground & ~foreground[:1]
    return torch.where(known, gt_depth[None].to(torch.float32), torch.zeros((), dtype=torch.float32))
