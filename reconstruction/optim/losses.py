"""Loss terms of the stage 4 optimiser, one pure function per term (contract section 6).

Conventions shared by every term:
- tensors carry any number of leading batch dimensions ``...`` (videos), then frames ``T``, then points;
  every term returns one value per batch element, shape ``(...)`` (a scalar for unbatched input), so the
  optimiser can sum over videos for the backward pass and still log each video's curve.
- lengths are metres, image coordinates pixels; the world is Z-up (ground terms use ``z``); camera-space
  tensors use OpenCV (z forward).
- masks are bool tensors; a term with nothing to measure (no contact frames, no depth points) returns 0.
"""

from __future__ import annotations

import torch

from reconstruction.projection import project

_EPS = 1e-8


# ---- helpers --------------------------------------------------------------------------------------
def _masked_mean(values: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` over ``dims``; 0 where the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dims) / mask.sum(dims).clamp_min(1.0)


def huber(residual: torch.Tensor, delta: float) -> torch.Tensor:
    """0.5 r^2 inside ``delta``, linear outside (robust to wrong contact partners)."""
    absolute = residual.abs()
    quadratic = absolute.clamp(max=delta)
    return 0.5 * quadratic.square() + delta * (absolute - quadratic)


def _velocity(points: torch.Tensor) -> torch.Tensor:
    return points[..., 1:, :, :] - points[..., :-1, :, :]


def _acceleration(points: torch.Tensor) -> torch.Tensor:
    return points[..., 2:, :, :] - 2.0 * points[..., 1:-1, :, :] + points[..., :-2, :, :]


def _temporal(points: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean squared acceleration + ``beta`` x mean squared velocity of points (..., T, N, D)."""
    batch = points.shape[:-3]
    total = points.new_zeros(batch)
    if points.shape[-3] >= 3:
        total = total + _acceleration(points).square().sum(-1).mean((-2, -1))
    if beta and points.shape[-3] >= 2:
        total = total + beta * _velocity(points).square().sum(-1).mean((-2, -1))
    return total


# ---- human ---------------------------------------------------------------------------------------
def keypoint_tracking(
    pred_2d: torch.Tensor,
    target_2d: torch.Tensor,
    confidence: torch.Tensor,
    hand_mask: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Confidence-weighted mean squared 2D reprojection error (pixels^2) of body and hand keypoints.

    pred_2d, target_2d (..., T, K, 2); confidence (..., T, K) in [0, 1]; hand_mask (K,) bool marks hand
    keypoints, weighted by ``beta`` relative to body keypoints (hand detections are noisier)."""
    weight = confidence * torch.where(hand_mask, beta, 1.0).to(confidence.dtype)
    error = (pred_2d - target_2d).square().sum(-1)
    return (weight * error).sum((-2, -1)) / weight.sum((-2, -1)).clamp_min(_EPS)


def person_height_px(target_2d: torch.Tensor, confidence: torch.Tensor, hand_mask: torch.Tensor) -> torch.Tensor:
    """The person's image height (px) from the 2D body keypoints (..., T, K, 2): per frame the vertical
    extent of the body keypoints detected with confidence > 0.5 (nose to heels), median over the frames
    with at least 4 of them; (...). 1 where no frame has."""
    body = ~hand_mask
    y = target_2d[..., body, 1]
    seen = confidence[..., body] > 0.5
    top = torch.where(seen, y, torch.full_like(y, float("inf"))).amin(-1)
    bottom = torch.where(seen, y, torch.full_like(y, float("-inf"))).amax(-1)
    extent = torch.where(seen.sum(-1) >= 4, bottom - top, torch.full_like(top, float("nan")))
    height = torch.nanmedian(extent, dim=-1).values
    return torch.where(torch.isfinite(height) & (height > 0), height, torch.ones_like(height))


def human_smoothness(joints: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """1st + 2nd order temporal smoothness of body joints (..., T, J, 3): mean |a|^2 + beta mean |v|^2."""
    return _temporal(joints, beta)


def human_pose_reg(pose_residual: torch.Tensor) -> torch.Tensor:
    """Mean squared axis-angle residual (..., T, J, 3): stay near the stage 1 pose."""
    return pose_residual.square().sum(-1).mean((-2, -1))


def residual_reg(residual: torch.Tensor) -> torch.Tensor:
    """Mean squared residual over every non-batch dim (..., T, D) or (..., D): the *_reg terms
    (human_global_init_reg, human_traj_reg, obj_traj_reg, obj_rot_reg)."""
    return residual.square().sum(-1).mean(-1) if residual.dim() >= 2 else residual.square().sum(-1)


def human_foot_contact(foot_points: torch.Tensor, ground_z: torch.Tensor, foot_height: float = 0.05) -> torch.Tensor:
    """Foot skating: squared horizontal foot motion between frames where the foot is near the ground.

    foot_points (..., T, F, 3) world (Z-up); ground_z (...). A foot point counts as planted at t and t+1
    when both heights are below ``foot_height`` (decided without gradient: the term moves the foot
    horizontally, it does not lift it off the floor)."""
    height = foot_points[..., 2] - ground_z[..., None, None]
    planted = (height < foot_height).detach()
    both = planted[..., 1:, :] & planted[..., :-1, :]
    slide = _velocity(foot_points)[..., :2].square().sum(-1)
    return _masked_mean(slide, both, (-2, -1))


def ground(foot_points: torch.Tensor, ground_z: torch.Tensor) -> torch.Tensor:
    """Feet below the ground: mean squared depth under ``ground_z`` of foot points (..., T, F, 3)."""
    below = (ground_z[..., None, None] - foot_points[..., 2]).clamp_min(0.0)
    return below.square().mean((-2, -1))


# ---- object --------------------------------------------------------------------------------------
def verts_tracking(pred_2d: torch.Tensor, target_2d: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared pixel distance between the object's projected vertices and the stage 3 projection.

    pred_2d, target_2d (..., T, N, 2); valid (..., T) frames where stage 3 tracked the object (bool) or a
    weight per frame (float)."""
    error = (pred_2d - target_2d).square().sum(-1).mean(-1)
    if valid is None:
        return error.mean(-1)
    return _masked_mean(error, valid, (-1,))


def obj_smoothness(object_points: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Smoothness of the object's motion, measured on surface samples (..., T, N, 3) so rotation and
    translation are weighed in metres."""
    return _temporal(object_points, beta)


def obj_precontact_reg(
    object_points: torch.Tensor,
    precontact: torch.Tensor,
    rest_points: torch.Tensor | None = None,
    has_rest: torch.Tensor | None = None,
) -> torch.Tensor:
    """Object still before contact: mean squared frame-to-frame motion of surface samples (..., T, N, 3)
    over consecutive frames that are both before the first contact (``precontact`` (..., T) bool).

    With the object's known resting pose (``rest_points`` (..., N, 3), the same samples posed at frame 0 by
    the render config; ``has_rest`` (...) bool where known) the pre-contact frames are also pulled onto
    it: mean squared distance of the samples to their resting place. Only the render knows where the object
    stands; this anchors a tracker's depth error before the hands reach it."""
    return obj_still_reg(object_points, precontact, precontact, rest_points, has_rest)


def obj_still_reg(
    object_points: torch.Tensor,
    still: torch.Tensor,
    at_rest: torch.Tensor,
    rest_points: torch.Tensor | None = None,
    has_rest: torch.Tensor | None = None,
) -> torch.Tensor:
    """hoiweb: the object does not move in frames where it is seen still, touched or not.

    object_points (..., T, N, 3) surface samples; ``still`` (..., T) bool frames where the object is still:
    mean squared frame-to-frame motion of the samples over consecutive frames that are both still. ``at_rest``
    (..., T) bool still frames where the object is known to stand at its resting pose (``rest_points``
    (..., N, 3), ``has_rest`` (...) bool where known; the still start of a clip): mean squared distance of the
    samples to their resting place, added. A hand that touches a still object must not drag it: the contact
    term then moves the hand."""
    both = still[..., 1:] & still[..., :-1]
    motion = _velocity(object_points).square().sum(-1).mean(-1)
    total = _masked_mean(motion, both, (-1,))
    if rest_points is not None:
        offset = (object_points - rest_points[..., None, :, :]).square().sum(-1).mean(-1)  # (..., T)
        anchored = at_rest if has_rest is None else at_rest & has_rest[..., None]
        total = total + _masked_mean(offset, anchored, (-1,))
    return total


# ---- depth ---------------------------------------------------------------------------------------
def _trimmed_mean(distances: torch.Tensor, valid: torch.Tensor, trim_pct: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, mean of the smallest (1 - trim_pct) share of the valid entries of (..., T, N).

    Returns (mean (..., T), frame has any valid entry (..., T))."""
    big = torch.finfo(distances.dtype).max
    ordered, _ = torch.where(valid, distances, big).sort(dim=-1)
    count = valid.sum(-1)
    keep = torch.ceil(count.to(distances.dtype) * (1.0 - trim_pct)).clamp_min(1.0)
    rank = torch.arange(ordered.shape[-1], device=ordered.device)
    kept = rank < keep[..., None]
    kept = kept & (ordered < big)
    mean = torch.where(kept, ordered, 0.0).sum(-1) / keep
    return mean, count > 0


def depth_pointcloud(
    pred_points: torch.Tensor,
    pred_valid: torch.Tensor,
    depth_points: torch.Tensor,
    depth_valid: torch.Tensor,
    trim_pct: float = 0.2,
    depth_tol: float = 0.02,
) -> torch.Tensor:
    """Bidirectional trimmed Chamfer between visible mesh points and unprojected depth points.

    pred_points (..., T, N, 3), pred_valid (..., T, N) (visible samples of the posed meshes);
    depth_points (..., T, M, 3), depth_valid (..., T, M) (depth pixels of the same instance, same frame).
    Squared distances below ``depth_tol`` cost nothing (depth-estimate noise); in each direction the
    worst ``trim_pct`` share is dropped (occlusions, mask errors). Mean over frames that have both."""
    # nearest neighbours without gradient; then only the matched pairs are differentiated
    with torch.no_grad():
        # invalid points are moved far away instead of masking the (N, M) matrix
        far = pred_points.new_full((), 1e6)  # a fill, not a host-to-device copy: CUDA graphs capture it
        distance = torch.cdist(
            torch.where(pred_valid[..., None], pred_points, far),
            torch.where(depth_valid[..., None], depth_points, -far),
        )  # (..., T, N, M)
        nearest_depth = distance.argmin(-1)  # (..., T, N)
        nearest_pred = distance.transpose(-1, -2).contiguous().argmin(-1)  # (..., T, M); contiguous: fast argmin
        del distance
    matched_depth = depth_points.gather(-2, nearest_depth[..., None].expand(*nearest_depth.shape, 3))
    matched_pred = pred_points.gather(-2, nearest_pred[..., None].expand(*nearest_pred.shape, 3))
    deadzone = lambda d: (d - depth_tol).clamp_min(0.0).square()  # noqa: E731
    pred_to_depth, pred_any = _trimmed_mean(deadzone((pred_points - matched_depth).norm(dim=-1)), pred_valid, trim_pct)
    depth_to_pred, depth_any = _trimmed_mean(
        deadzone((depth_points - matched_pred).norm(dim=-1)), depth_valid, trim_pct
    )
    frame_ok = pred_any & depth_any
    return _masked_mean(pred_to_depth + depth_to_pred, frame_ok, (-1,))


# ---- contact and penetration ---------------------------------------------------------------------
def contact(
    hand_points_cam: torch.Tensor,
    object_points_cam: torch.Tensor,
    contact_mask: torch.Tensor,
    K: torch.Tensor,
    depth_only: bool = False,
    max_contact_dist: float = 0.15,
    contact_px: float = 20.0,
    huber_delta: float = 0.01,
    object_facing: torch.Tensor | None = None,
    object_normals_cam: torch.Tensor | None = None,
    sample_radius: torch.Tensor | float = 0.0,
    palm_normals_cam: torch.Tensor | None = None,
    palm_facing_cos: float = 0.5,
) -> torch.Tensor:
    """Hands touch the object in contact frames.

    hand_points_cam (..., T, 2, H, 3): contact points of the left and right hand (camera frame);
    object_points_cam (..., T, N, 3) object surface samples; contact_mask (..., T, 2) bool; K (..., 3, 3).
    A (frame, hand) whose closest hand-object distance exceeds ``max_contact_dist`` is skipped (the
    label is then more likely wrong than the geometry): 3D distance, or with ``depth_only`` the image-plane
    distance in metres at the object's depth (the depth gap is what depth_only is there to close).
    Only the hand's contact patch should touch (not the back of the hand): per hand, the mean over its
    ``max(1, H // 8)`` best-matching points is taken.
    - default: squared closest 3D distance between hand points and object samples; with the samples' unit
      normals (``object_normals_cam`` (..., T, N, 3)) the distance to the nearest sample's tangent plane, plus
      the sideways offset beyond ``sample_radius`` (m, scalar or (...)): a hand flat on a face between two
      sparse samples touches it;
    - ``depth_only``: the image already places hand and object; only their view-space depth is pulled
      together. For each hand point, the object samples within ``contact_px`` pixels on screen are its
      partners (only those ``object_facing`` marks, when given), the one nearest to the hand point in 3D is
      chosen (the least move that makes it touch: stage 1's depth is kept where it is right), and the Huber
      loss of their z difference is taken.

    With the palms' outward unit normals (``palm_normals_cam`` (..., T, 2, 3)) and ``object_normals_cam``, a hand
    grips the surface its palm faces: partners are the samples whose normal opposes the palm's (cosine below
    ``-palm_facing_cos``), where that hand has any such partner. A box held by its side faces is then not
    "touched" on its top or back edge, which the image cannot tell apart from the side."""
    # Partners are chosen without gradient (argmin over all pairs); the loss then differentiates only the
    # chosen pairs, so backward costs O(points), not O(pairs).
    big = torch.finfo(hand_points_cam.dtype).max
    objects = object_points_cam[..., :, None, :, :]  # (..., T, 1, N, 3) broadcast over hands
    with torch.no_grad():
        dist = torch.cdist(hand_points_cam, objects.expand(*hand_points_cam.shape[:-2], -1, 3))  # (...,T,2,H,N)
        closest = dist.min(-1).values
        gate = closest.min(-1).values  # (..., T, 2)
        gripped = None  # (..., T, 2, 1, N) samples the palm faces, per hand
        if palm_normals_cam is not None and object_normals_cam is not None:
            cos = (palm_normals_cam[..., :, None, :] * object_normals_cam[..., None, :, :]).sum(-1)  # (..., T, 2, N)
            gripped = (cos < -palm_facing_cos)[..., None, :]
        if gripped is not None and not depth_only:
            # nearest among the samples the palm faces, for a hand that has any near enough to count
            gripped_dist = torch.where(gripped, dist, big)
            usable = gripped_dist.amin((-2, -1), keepdim=True) <= max_contact_dist
            dist = torch.where(usable, gripped_dist, dist)
        nearest = dist.argmin(-1)
        if depth_only:
            # depth_only trusts the image and fixes depth: gate on the image-plane gap (metres at the object's
            # depth), or a hand that stage 1 put 30 cm too deep would never be pulled onto the object
            hand_ray = hand_points_cam[..., :2] / hand_points_cam[..., 2:].clamp_min(1e-3)
            obj_depth = objects[..., 2].clamp_min(1e-3)
            obj_ray = objects[..., :2] / obj_depth[..., None]
            lateral = torch.cdist(hand_ray, obj_ray.expand(*hand_ray.shape[:-2], -1, 2)) * obj_depth[..., None, :]
            gate = lateral.min(-1).values.min(-1).values
        active = contact_mask & (gate <= max_contact_dist)
        if depth_only:
            hand_px = project(hand_points_cam, K)  # (..., T, 2, H, 2)
            obj_px = project(object_points_cam, K)[..., :, None, :, :]  # (..., T, 1, N, 2)
            near = torch.cdist(hand_px, obj_px.expand(*hand_px.shape[:-2], -1, 2)) <= contact_px
            if object_facing is not None:  # partners on the surface the camera can see (front and sides)
                near = near & object_facing[..., :, None, None, :]
            if gripped is not None:  # the surface the palm faces, for a hand that has such partners on screen
                near_gripped = near & gripped
                near = torch.where(near_gripped.any((-2, -1), keepdim=True), near_gripped, near)
            nearest = torch.where(near, dist, big).argmin(-1)  # the nearest in 3D of the on-screen partners
            has_partner = near.any(-1)  # (..., T, 2, H)
    partner = objects.expand(*hand_points_cam.shape[:-2], -1, 3).gather(
        -2, nearest[..., None].expand(*nearest.shape, 3)
    )  # (..., T, 2, H, 3)
    patch = max(1, hand_points_cam.shape[-2] // 8)
    if not depth_only:
        offset = hand_points_cam - partner
        per_point = offset.square().sum(-1)
        if object_normals_cam is not None:
            normals = object_normals_cam[..., :, None, :, :].expand(*hand_points_cam.shape[:-2], -1, 3)
            normal = normals.gather(-2, nearest[..., None].expand(*nearest.shape, 3))
            along = (offset * normal).sum(-1)
            if isinstance(sample_radius, torch.Tensor):
                radius = sample_radius.to(offset.dtype)
            else:  # new_full fills on the device; as_tensor would copy from the host (not capturable)
                radius = offset.new_full((), float(sample_radius))
            radius = radius.reshape(*radius.shape, *([1] * (offset.dim() - 1 - radius.dim())))
            sideways = (per_point - along.square()).clamp_min(1e-12).sqrt()  # not 0: sqrt's gradient there is inf
            per_point = along.square() + (sideways - radius).clamp_min(0.0).square()
        best = per_point.gather(-1, per_point.detach().topk(patch, dim=-1, largest=False).indices)
        return _masked_mean(best.mean(-1), active, (-2, -1))
    z_gap = hand_points_cam[..., 2] - partner[..., 2]
    cost = torch.where(has_partner, huber(z_gap, huber_delta), big)
    best = cost.topk(min(patch, cost.shape[-1]), dim=-1, largest=False).values
    counted = best < big
    per_hand = _masked_mean(torch.where(counted, best, 0.0), counted, (-1,))
    return _masked_mean(per_hand, active & has_partner.any(-1), (-2, -1))


def hand_grasp(
    fingertips: torch.Tensor,
    surface: torch.Tensor,
    normals: torch.Tensor,
    contact_mask: torch.Tensor,
    tip_gap: float = 0.003,
    max_contact_dist: float = 0.15,
    huber_delta: float = 0.01,
) -> torch.Tensor:
    """hoiweb: a hand that holds the object rests its fingertips on the surface.

    fingertips (..., T, 2, F, 3) tip keypoints of the left and right hand; surface (..., T, N, 3) object samples
    with outward unit normals (..., T, N, 3); contact_mask (..., T, 2) bool. Per tip, the signed distance to
    the tangent plane of its nearest sample is pulled to ``tip_gap`` (a keypoint sits inside the finger, just
    under the skin) with a Huber loss (a tip that the surface curves away from pulls with a bounded force, not
    the whole hand after it). A (frame, hand) whose nearest tip is farther than ``max_contact_dist`` from the
    surface is skipped (the label is then more likely wrong than the hand). Mean over the tips, then over the
    active (frame, hand) pairs."""
    batch = fingertips.shape[:-2]  # (..., T, 2)
    tips = fingertips.flatten(-3, -2)  # (..., T, 2F, 3)
    with torch.no_grad():
        dist = torch.cdist(tips, surface)  # (..., T, 2F, N)
        closest, nearest = dist.min(-1)
        gate = closest.reshape(*batch, -1).min(-1).values  # (..., T, 2)
    index = nearest[..., None].expand(*nearest.shape, 3)
    sample, normal = surface.gather(-2, index), normals.gather(-2, index)
    along = ((tips - sample) * normal).sum(-1).reshape(*batch, -1)  # (..., T, 2, F) signed plane distance
    per_hand = huber(along - tip_gap, huber_delta).mean(-1)
    return _masked_mean(per_hand, contact_mask & (gate <= max_contact_dist), (-2, -1))


def hand_pose_reg(hand_residual: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """hoiweb: the fingers stay near the stage 1 fit: mean squared axis-angle residual (..., T, F, 3), plus
    ``beta`` x its mean squared frame-to-frame change (a grip does not flicker)."""
    total = hand_residual.square().sum(-1).mean((-2, -1))
    if beta and hand_residual.shape[-3] >= 2:
        change = hand_residual[..., 1:, :, :] - hand_residual[..., :-1, :, :]
        total = total + beta * change.square().sum(-1).mean((-2, -1))
    return total


def contact_smoothness(hand_points_obj: torch.Tensor, contact_mask: torch.Tensor) -> torch.Tensor:
    """A held object moves rigidly with the hand: squared frame-to-frame motion of the hand's contact
    points expressed in the object's frame, (..., T, 2, H, 3), over consecutive contact frames of a hand."""
    both = contact_mask[..., 1:, :] & contact_mask[..., :-1, :]
    motion = (hand_points_obj[..., 1:, :, :, :] - hand_points_obj[..., :-1, :, :, :]).square().sum(-1).mean(-1)
    return _masked_mean(motion, both, (-2, -1))


def signed_distance(points: torch.Tensor, surface: torch.Tensor, normals: torch.Tensor, k: int = 4) -> torch.Tensor:
    """Approximate signed distance of points (..., P, 3) to a closed surface given by dense samples
    (..., N, 3) with outward unit normals (..., N, 3).

    The magnitude is the distance to the nearest sample. A point is inside only when it lies behind the
    tangent planes of all its ``k`` nearest samples: one plane alone misjudges points just outside an
    edge (behind the neighbouring face's plane), which a sparse sampling makes common."""
    k = min(k, surface.shape[-2])
    with torch.no_grad():  # neighbours only; the gradient flows through the chosen samples
        nearest = torch.cdist(points, surface).topk(k, dim=-1, largest=False).indices  # (..., P, k)
    index = nearest.flatten(-2)[..., None].expand(*nearest.shape[:-2], nearest.shape[-2] * k, 3)
    sample = surface.gather(-2, index).reshape(*nearest.shape, 3)
    normal = normals.gather(-2, index).reshape(*nearest.shape, 3)
    offset = points[..., None, :] - sample  # (..., P, k, 3)
    inside = ((offset * normal).sum(-1) < 0).all(-1).detach()
    magnitude = offset[..., 0, :].norm(dim=-1)
    return torch.where(inside, -magnitude, magnitude)


def grid_signed_distance(
    points: torch.Tensor, values: torch.Tensor, origin: torch.Tensor, cell: torch.Tensor
) -> torch.Tensor:
    """hoiweb: signed distance of points (B, ..., 3), given in the object's model frame, by trilinear
    interpolation of a grid (``geometry.mesh_sdf_grid``): values (B, X, Y, Z), node (i, j, k) of video b at
    ``origin[b] + cell[b] * (i, j, k)``. Returns (B, ...). Differentiable in the points: the gradient is the
    interpolated SDF's, along the true surface normal (not towards a nearby sample). Points beyond the grid take
    its border values (outside, positive)."""
    batch, rest = points.shape[0], points.shape[1:-1]
    # (3,) cells per axis (X, Y, Z); device fills, not a host copy (CUDA graphs capture them)
    size = torch.stack([values.new_full((), float(n - 1)) for n in values.shape[1:]])
    flat = points.reshape(batch, 1, 1, -1, 3)
    unit = (flat - origin.reshape(batch, 1, 1, 1, 3)) / (cell.reshape(batch, 1, 1, 1, 1) * size)
    # grid_sample reads (x, y, z) as (W, H, D): the volume is laid out (B, 1, Z, Y, X)
    sampled = torch.nn.functional.grid_sample(
        values.permute(0, 3, 2, 1)[:, None], 2.0 * unit - 1.0, mode="bilinear", padding_mode="border",
        align_corners=True,
    )  # fmt: skip
    return sampled.reshape(batch, *rest)


def penetration_depth(sdf: torch.Tensor) -> torch.Tensor:
    """hoiweb: body points inside the object from their signed distances (..., T, P): per frame, the sum of
    squared penetration depths; mean over frames."""
    return (-sdf).clamp_min(0.0).square().sum(-1).mean(-1)
