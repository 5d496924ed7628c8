"""Batched, differentiable landmark-based 2D/3D registration: the C-arm pose from 2D-3D landmarks.

``solve`` finds, for every sample of a batch at once, the pose that minimises the (optionally
robust, optionally weighted) reprojection error of the 3D landmarks onto the 2D ones:

1. initialisation in closed form: a scaled-orthographic camera fitted by least squares to the
   landmarks and made orthonormal, then corrected for perspective a few times (POSIT); unique
   for 4 or more non-coplanar points, so no starting pose is needed;
2. damped Newton steps (Levenberg-Marquardt damping) with the exact Hessian of the reprojection
   error in the local chart of the camera pose, derived analytically: quadratic convergence even
   where noisy landmarks leave large residuals; float64, every sample at once, each stopping on
   its own convergence and leaving the working set;
3. gradients by the implicit function theorem: one Newton step taken at the detached solution,
   ``pose* - H^-1 g(landmarks_2d, weights)``, has the solver's value and carries the exact
   derivative of the solution with respect to the 2D landmarks and the weights, at the cost of one
   step whatever the iteration count.

``solve_unrolled`` is the paper's solver, for comparison: Adam or L-BFGS from a given start (the
paper's identity pose) for a fixed number of iterations within parameter bounds, differentiable by
unrolling.

A sample with fewer than ``min_landmarks`` usable landmarks (at least 4, ``MIN_LANDMARKS``: weight 0,
or NaN coordinates, make a landmark unusable), or with coplanar or collinear usable landmarks, gets a
NaN pose and ``converged = False`` (a pose failure); it never raises, and no NaN reaches the gradients
of the other samples. A study sets ``min_landmarks`` with ``data.landmarks.min_for_registration``.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from components import geometry
from components.geometry import Camera

Robust = Literal["huber", "cauchy"] | None
MIN_LANDMARKS = 4  # the fewest 2D-3D correspondences that fix a pose (POSIT, 4 non-coplanar points)
# Singular-value ratio of the centred 3D landmarks below which they count as coplanar / collinear.
DEGENERATE_RATIO = 1e-3


@dataclass(frozen=True)
class Registration:
    """The result of a batched registration.

    Attributes:
        pose: (B, 6) rotation vector and translation (mm), ``geometry``'s convention; NaN where invalid.
        residuals: (B, N, 2) projected minus given 2D landmarks at the solution, pixels.
        iterations: (B,) iterations each sample took.
        converged: (B,) True where the solver met its tolerance on valid input.
    """

    pose: torch.Tensor
    residuals: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


# ----------------------------------------------------------------------------- robust losses


def robust_cost(distance: torch.Tensor, robust: Robust, scale: float) -> torch.Tensor:
    """(...) rho of residual lengths (...) in pixels: squares/2, Huber or Cauchy."""
    if robust is None:
        return distance**2 / 2
    if robust == "huber":
        return torch.where(distance <= scale, distance**2 / 2, scale * (distance - scale / 2))
    if robust == "cauchy":
        return scale**2 / 2 * torch.log1p((distance / scale) ** 2)
    raise ValueError(f"robust must be None, 'huber' or 'cauchy', got {robust!r}")


def robust_weight(distance: torch.Tensor, robust: Robust, scale: float) -> torch.Tensor:
    """(...) IRLS weights rho'(d) / d of residual lengths (...)."""
    if robust is None:
        return torch.ones_like(distance)
    if robust == "huber":
        return torch.where(distance <= scale, torch.ones_like(distance), scale / distance.clamp_min(1e-300))
    return 1 / (1 + (distance / scale) ** 2)


# ----------------------------------------------------------------------------- validity


def usable_landmarks(landmarks_3d: torch.Tensor, landmarks_2d: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: positive finite weight and finite 2D and 3D coordinates."""
    finite = torch.isfinite(landmarks_3d).all(-1) & torch.isfinite(landmarks_2d).all(-1)
    return finite & torch.isfinite(weights) & (weights > 0)


def well_posed(landmarks_3d: torch.Tensor, usable: torch.Tensor, min_landmarks: int = MIN_LANDMARKS) -> torch.Tensor:
    """(B,) bool: at least ``min_landmarks`` usable landmarks, not coplanar and not collinear.

    Flat or thin sets are those whose smallest principal spread (singular value of the centred
    points) is below ``DEGENERATE_RATIO`` of the largest.
    """
    count = usable.sum(-1)
    mask = usable[..., None].to(landmarks_3d.dtype)
    points = torch.where(usable[..., None], landmarks_3d, torch.zeros_like(landmarks_3d))
    center = (points * mask).sum(1, keepdim=True) / count.clamp_min(1)[:, None, None]
    centered = (points - center) * mask
    variances = torch.linalg.eigvalsh(centered.transpose(-1, -2) @ centered)  # ascending
    flat = variances[:, 0] <= DEGENERATE_RATIO**2 * variances[:, 2].clamp_min(1e-300)
    return (count >= min_landmarks) & ~flat


def check_min_landmarks(min_landmarks: int) -> None:
    """A ValueError unless ``min_landmarks`` is an integer of at least ``MIN_LANDMARKS``."""
    if isinstance(min_landmarks, bool) or not isinstance(min_landmarks, int) or min_landmarks < MIN_LANDMARKS:
        raise ValueError(f"min_landmarks must be an integer >= {MIN_LANDMARKS}, got {min_landmarks!r}")


# ----------------------------------------------------------------------------- camera model


def camera_points(rotation: torch.Tensor, translation: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera-frame points ``R X + t`` of (B, N, 3) world points."""
    return points @ rotation.transpose(-1, -2) + translation[:, None, :]


def pixels(camera_xyz: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(B, N, 2) pixel coordinates of (B, N, 3) camera-frame points."""
    (fx, fy), (cx, cy) = camera.focal_length_px, camera.principal_point_px
    depth = camera_xyz[..., 2]
    return torch.stack([fx * camera_xyz[..., 0] / depth + cx, fy * camera_xyz[..., 1] / depth + cy], -1)


def newton_system(camera_xyz: torch.Tensor, residual: torch.Tensor, weights: torch.Tensor, camera: Camera):
    """Derivatives of ``1/2 sum_n w_n |r_n|^2`` in the local chart ``c <- exp(omega) c + delta``.

    Args:
        camera_xyz: (B, N, 3) camera-frame points; residual: (B, N, 2) pixels; weights: (B, N).

    Returns:
        jacobian (B, N, 2, 6) of the pixels; the Gauss-Newton Hessian ``J^T W J`` (B, 6, 6); the
        residuals' curvature (B, 6, 6) (projection and exponential map), which added to it gives
        the exact Hessian; the gradient (B, 6).
    """
    (fx, fy) = camera.focal_length_px
    x, y, z = camera_xyz.unbind(-1)
    a = 1 / z
    xn, yn = x * a, y * a
    xy = xn * yn
    zero = torch.zeros_like(a)
    jacobian = torch.stack(
        [
            torch.stack([-fx * xy, fx + fx * xn * xn, -fx * yn, fx * a, zero, -fx * xn * a], -1),
            torch.stack([-fy - fy * yn * yn, fy * xy, fy * xn, zero, fy * a, -fy * yn * a], -1),
        ],
        -2,
    )
    weighted = jacobian * weights[..., None, None]
    gauss_newton = weighted.flatten(1, 2).transpose(-1, -2) @ jacobian.flatten(1, 2)
    gradient = (weighted * residual[..., None]).sum((1, 2))
    # Curvature: with p = w r_u fx, q = w r_v fy and m = a^2 (p x + q y),
    # sum_k w r_k d2(pixel_k)/dc2 = e_z s^T + s e_z^T with s = (-p a^2, -q a^2, m a). Through
    # dc/dxi = [-[c]_x | I] it gives A + A^T, A = sum_n (y, -x, 0, 0, 0, 1)_n (c x s, s)_n^T, whose
    # only rows are 0, 1 and 5. The exponential map adds, on the rotation block, the symmetric
    # part of sum_n v_n c_n^T with v = (p a, q a, -m), the gradient in camera coordinates.
    weighted_residual = weights[..., None] * residual
    p, q = weighted_residual[..., 0] * fx, weighted_residual[..., 1] * fy
    a2 = a * a
    m = (p * x + q * y) * a2
    s_vector = torch.stack([-p * a2, -q * a2, m * a], -1)
    h = torch.cat([torch.linalg.cross(camera_xyz, s_vector), s_vector], -1)  # (B, N, 6)
    rows = torch.stack([y, -x, torch.ones_like(a)], -2) @ h  # (B, 3, 6): rows 0, 1 and 5 of A
    v = torch.stack([p * a, q * a, -m], -2)  # (B, 3, N)
    exp_term = v @ camera_xyz  # (B, 3, 3)
    zeros = torch.zeros_like(rows[:, :1])
    a_matrix = torch.cat([rows[:, :2], zeros, zeros, zeros, rows[:, 2:]], 1)
    rotation_block = torch.cat([(exp_term + exp_term.transpose(-1, -2)) / 2, torch.zeros_like(exp_term)], -1)
    curvature = a_matrix + a_matrix.transpose(-1, -2) + torch.cat([rotation_block, torch.zeros_like(rotation_block)], 1)
    return jacobian, gauss_newton, curvature, gradient


# ----------------------------------------------------------------------------- initialisation


def nearest_rotation_rows(affine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The orthonormal rows (B, 2, 3) nearest to (B, 2, 3) ``affine`` and its mean singular value (B,).

    Polar decomposition in closed form: ``rows = (A A^T)^-1/2 A``, with the square root of the
    2x2 matrix ``M = A A^T`` as ``(M + sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M))``; the last
    denominator is also the sum of the two singular values.
    """
    gram = affine @ affine.transpose(-1, -2)
    root_det = (gram[:, 0, 0] * gram[:, 1, 1] - gram[:, 0, 1] ** 2).clamp_min(1e-300).sqrt()
    singular_sum = (gram[:, 0, 0] + gram[:, 1, 1] + 2 * root_det).sqrt()
    # inverse of (M + sqrt(det) I) by its adjugate; its determinant is sqrt(det) * singular_sum^2.
    shifted = gram + root_det[:, None, None] * torch.eye(2, dtype=gram.dtype, device=gram.device)
    adjugate = torch.stack(
        [
            torch.stack([shifted[:, 1, 1], -shifted[:, 0, 1]], -1),
            torch.stack([-shifted[:, 1, 0], shifted[:, 0, 0]], -1),
        ],
        -2,
    )
    inverse_root = adjugate * (singular_sum / (root_det * singular_sum**2))[:, None, None]
    return inverse_root @ affine, singular_sum / 2


def weak_perspective_init(
    landmarks_3d: torch.Tensor, landmarks_2d: torch.Tensor, weights: torch.Tensor, camera: Camera, corrections: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """World -> camera rotation (B, 3, 3) and translation (B, 3) in closed form (POSIT).

    Normalised image points ``K^-1 (u, v, 1)`` are fitted by an affine map of the centred 3D
    points, ``A (X - m) + b``: a scaled-orthographic camera whose two rows of ``A`` are the first
    two rows of ``R`` over the mean depth ``Z0``. Their nearest orthonormal pair and its cross
    product give ``R``; ``Z0`` is the inverse of their mean singular value. Each of the
    ``corrections`` then rescales the image points by their depth ratio ``1 + r3 (X - m) / Z0``
    and fits again (DeMenthon and Davis' POSIT), which removes most of the perspective error;
    the normal matrix of the fit is the same every time.
    """
    k_inv = geometry.make_k_inv(camera, dtype=landmarks_2d.dtype, device=landmarks_2d.device)
    normalised = landmarks_2d @ k_inv[:2, :2].T + k_inv[:2, 2]
    mass = weights.sum(-1).clamp_min(1e-300)[:, None, None]
    center = (landmarks_3d * weights[..., None]).sum(1, keepdim=True) / mass
    centered = landmarks_3d - center
    design = torch.cat([centered, torch.ones_like(landmarks_3d[..., :1])], -1)  # (B, N, 4)
    weighted = (design * weights[..., None]).transpose(-1, -2)
    fit = torch.linalg.solve(
        weighted @ design + 1e-12 * torch.eye(4, dtype=design.dtype, device=design.device), weighted
    )  # (B, 4, N)
    image = normalised
    for _ in range(corrections + 1):
        affine = (fit @ image).transpose(-1, -2)  # (B, 2, 4)
        rows, scale = nearest_rotation_rows(affine[..., :3])
        axis = torch.linalg.cross(rows[:, 0], rows[:, 1])
        depth = 1 / scale.clamp_min(1e-300)
        image = normalised * (1 + (centered @ axis[..., None]) / depth[:, None, None])
    rotation = torch.cat([rows, axis[:, None]], 1)
    center_camera = torch.cat([affine[..., 3] * depth[:, None], depth[:, None]], -1)
    translation = center_camera - (rotation @ center[:, 0, :, None])[..., 0]
    return rotation, translation


# ----------------------------------------------------------------------------- Levenberg-Marquardt


def levenberg_marquardt(
    landmarks_3d, landmarks_2d, weights, camera, rotation, translation, robust, scale, max_iterations, tolerance
):
    """Refine world -> camera extrinsics by damped Newton steps; every tensor float64 and detached.

    The exact Hessian (Gauss-Newton plus curvature) converges quadratically even where the
    residuals stay large, and the damping (on the Gauss-Newton diagonal) is cut tenfold on every
    accepted step and raised tenfold on every rejected one. A sample stops once its step is below
    ``tolerance``, or below its square root while shrinking quadratically (the next one would be
    below ``tolerance``); finished samples leave the working set, so late iterations cost little.

    Returns:
        rotation (B, 3, 3), translation (B, 3), iterations (B,), converged (B,).
    """
    batch = len(landmarks_3d)
    device = landmarks_3d.device
    iterations = torch.zeros(batch, dtype=torch.long, device=device)
    converged = torch.zeros(batch, dtype=torch.bool, device=device)
    rotation, translation = rotation.clone(), translation.clone()

    def evaluate(rotation, translation, points, observed, weight):
        camera_xyz = camera_points(rotation, translation, points)
        residual = pixels(camera_xyz, camera) - observed
        if robust is None:  # plain least squares needs no residual lengths
            return (weight * residual.square().sum(-1)).sum(-1) / 2, camera_xyz, residual, weight
        distance = residual.norm(dim=-1)
        return (weight * robust_cost(distance, robust, scale)).sum(-1), camera_xyz, residual, distance

    rows = torch.arange(batch, device=device)
    points, observed, weight = landmarks_3d, landmarks_2d, weights
    now_rotation, now_translation = rotation, translation
    cost, camera_xyz, residual, distance = evaluate(now_rotation, now_translation, points, observed, weight)
    damping = torch.full((batch,), 1e-6, dtype=torch.float64, device=device)
    previous = torch.full((batch,), float("inf"), dtype=torch.float64, device=device)
    # Step size: radians plus millimetres relative to the distance of the scene from the source.
    step_scale = torch.cat(
        [
            torch.ones(batch, 3, dtype=torch.float64, device=device),
            (1 / (1 + translation.norm(dim=-1)))[:, None].expand(-1, 3),
        ],
        -1,
    )
    for iteration in range(1, max_iterations + 1):
        w = weight if robust is None else weight * robust_weight(distance, robust, scale)
        _, gauss_newton, curvature, gradient = newton_system(camera_xyz, residual, w, camera)
        diagonal = torch.diagonal(gauss_newton, dim1=-2, dim2=-1)
        step = -torch.linalg.solve(
            gauss_newton + curvature + torch.diag_embed(damping[:, None] * diagonal + 1e-12), gradient
        )
        turn = geometry.rotation_vector_to_matrix(step[:, :3])
        new_rotation, new_translation = turn @ now_rotation, (turn @ now_translation[..., None])[..., 0] + step[:, 3:]
        new = evaluate(new_rotation, new_translation, points, observed, weight)
        # Near the optimum the cost changes below its rounding: accept steps within it, so the
        # iterate keeps converging to the step tolerance instead of stalling there.
        better = (new[0] <= cost * (1 + 1e-13)) & torch.isfinite(new[0])
        now_rotation = torch.where(better[:, None, None], new_rotation, now_rotation)
        now_translation = torch.where(better[:, None], new_translation, now_translation)
        cost, camera_xyz, residual, distance = (
            torch.where(better.view(-1, *[1] * (old.dim() - 1)), fresh, old)
            for fresh, old in zip(new, (cost, camera_xyz, residual, distance))
        )
        damping = torch.where(better, damping / 10, damping * 10).clamp(1e-12, 1e16)
        size = (step * step_scale).norm(dim=-1)
        quadratic = better & (size < tolerance**0.5) & (size < 1e-2 * previous)
        done = (size < tolerance) | quadratic | (cost < 1e-28)
        previous = torch.where(better, size, previous)
        finished = done | (damping >= 1e16)
        if finished.any():
            rotation[rows[finished]], translation[rows[finished]] = now_rotation[finished], now_translation[finished]
            iterations[rows[finished]] = iteration
            converged[rows[done]] = True
            keep = ~finished
            rows, points, observed, weight, step_scale = (
                rows[keep],
                points[keep],
                observed[keep],
                weight[keep],
                step_scale[keep],
            )
            now_rotation, now_translation, damping, previous = (
                now_rotation[keep],
                now_translation[keep],
                damping[keep],
                previous[keep],
            )
            cost, camera_xyz, residual, distance = cost[keep], camera_xyz[keep], residual[keep], distance[keep]
            if not len(rows):
                break
    rotation[rows], translation[rows] = now_rotation, now_translation
    iterations[rows] = max_iterations
    return rotation, translation, iterations, converged


# ----------------------------------------------------------------------------- implicit gradients


def implicit_step(rotation, translation, landmarks_3d, landmarks_2d, weights, camera) -> torch.Tensor:
    """(B, 6) poses one Newton step from the solved extrinsics: their value, with the implicit gradient.

    At the optimum the step ``xi = -H^-1 g`` is zero; ``g = J^T W r`` is differentiable in the 2D
    landmarks and the weights and ``H`` is the exact Hessian (detached), so ``d pose / d input``
    is the implicit-function derivative ``-(d pose / d xi) H^-1 dg / d input``.
    """
    camera_xyz = camera_points(rotation, translation, landmarks_3d)
    residual = pixels(camera_xyz, camera) - landmarks_2d
    jacobian, gauss_newton, curvature, _ = newton_system(camera_xyz, residual.detach(), weights.detach(), camera)
    hessian = gauss_newton + curvature
    gradient = (jacobian * (weights[..., None] * residual)[..., None]).sum((1, 2))
    step = -torch.linalg.solve(hessian, gradient)
    turn = geometry.rotation_vector_to_matrix(step[:, :3])
    return geometry.extrinsic_to_pose(turn @ rotation, (turn @ translation[..., None])[..., 0] + step[:, 3:])


# ----------------------------------------------------------------------------- the solver


def solve(
    landmarks_3d: torch.Tensor,
    landmarks_2d: torch.Tensor,
    camera: Camera,
    weights: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
    robust: Robust = None,
    robust_scale: float = 2.0,
    max_iterations: int = 100,
    tolerance: float = 1e-12,
    min_landmarks: int = MIN_LANDMARKS,
) -> Registration:
    """The pose of every sample from its 2D-3D landmark correspondences.

    Args:
        landmarks_3d: (B, N, 3) world mm.
        landmarks_2d: (B, N, 2) pixels (u, v) in ``camera``'s image.
        camera: the detector the 2D landmarks live on.
        weights: (B, N) non-negative confidence per landmark (0: invisible); default all 1.
        init: (B, 6) starting poses (e.g. ``geometry.ap_pose``: the paper's start); default closed form.
        robust: None (least squares), "huber" or "cauchy" on each landmark's residual length.
        robust_scale: the robust loss's scale, pixels.
        max_iterations: Levenberg-Marquardt iterations at most.
        tolerance: relative step size at which a sample has converged.
        min_landmarks: usable landmarks a sample needs (at least ``MIN_LANDMARKS``); with fewer its pose is NaN.

    Returns:
        ``Registration`` in the input dtype; ``pose`` is differentiable in ``landmarks_2d`` and
        ``weights`` (implicit function theorem).
    """
    robust_cost(torch.zeros(1), robust, robust_scale)  # validates ``robust`` up front
    check_min_landmarks(min_landmarks)
    given = (
        landmarks_2d.new_ones(landmarks_2d.shape[:2], dtype=torch.float64)
        if weights is None
        else weights.to(torch.float64)
    )
    differentiable = torch.is_grad_enabled() and (landmarks_2d.requires_grad or given.requires_grad)
    with torch.inference_mode():
        points, observed, weight, usable, valid = _prepared(landmarks_3d, landmarks_2d, given, min_landmarks)
        batch = len(observed)
        pose = observed.new_full((batch, 6), float("nan"))
        iterations = torch.zeros(batch, dtype=torch.long, device=observed.device)
        converged = torch.zeros(batch, dtype=torch.bool, device=observed.device)
        rows = torch.nonzero(valid)[:, 0]
        if len(rows):
            rows_3d, rows_2d, rows_weight = points[rows], observed[rows], weight[rows]
            if init is None:
                rotation, translation = weak_perspective_init(rows_3d, rows_2d, rows_weight, camera)
            else:
                rotation, translation = geometry.make_rt_inv(init.to(torch.float64)[rows])
            rotation, translation, iterations[rows], converged[rows] = levenberg_marquardt(
                rows_3d,
                rows_2d,
                rows_weight,
                camera,
                rotation,
                translation,
                robust,
                robust_scale,
                max_iterations,
                tolerance,
            )
            pose[rows] = geometry.extrinsic_to_pose(rotation, translation)
        residuals = geometry.project(points, pose, camera) - torch.where(usable[..., None], observed, torch.nan)
    # Outside inference mode, as ordinary tensors: callers may use them in autograd.
    pose, residuals, iterations, converged = (t.clone() for t in (pose, residuals, iterations, converged))
    if differentiable and len(rows):
        points, observed, weight, _, _ = _prepared(landmarks_3d, landmarks_2d, given, min_landmarks)
        rows, rotation, translation = rows.clone(), rotation.clone(), translation.clone()
        distance = (pixels(camera_points(rotation, translation, points[rows]), camera) - observed[rows].detach()).norm(
            dim=-1
        )
        step_weight = weight[rows] * robust_weight(distance, robust, robust_scale)
        pose = pose.index_put(
            (rows,), implicit_step(rotation, translation, points[rows], observed[rows], step_weight, camera)
        )
    dtype = landmarks_2d.dtype
    return Registration(pose.to(dtype), residuals.to(dtype), iterations, converged)


def _prepared(landmarks_3d: torch.Tensor, landmarks_2d: torch.Tensor, weights: torch.Tensor, min_landmarks: int):
    """float64 points, observations and weights with unusable landmarks zeroed (weight 0), the
    (B, N) usable mask and the (B,) well-posed mask; so that no NaN enters any sum."""
    points, observed = landmarks_3d.to(torch.float64), landmarks_2d.to(torch.float64)
    usable = usable_landmarks(points, observed, weights)
    valid = well_posed(points, usable, min_landmarks)
    weight = torch.where(usable, weights, torch.zeros_like(weights))
    points = torch.where(usable[..., None], points, torch.zeros_like(points))
    observed = torch.where(usable[..., None], observed, torch.zeros_like(observed))
    return points, observed, weight, usable, valid


# ----------------------------------------------------------------------------- the paper's solver


def solve_unrolled(
    landmarks_3d: torch.Tensor,
    landmarks_2d: torch.Tensor,
    camera: Camera,
    init: torch.Tensor,
    optimizer: Literal["adam", "lbfgs"] = "adam",
    iterations: int = 100,
    learning_rate: float = 0.02,
    translation_scale: float = 100.0,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    weights: torch.Tensor | None = None,
    min_depth: float = 1.0,
    min_landmarks: int = MIN_LANDMARKS,
) -> Registration:
    """The paper's registration: a fixed number of optimizer steps from ``init``, unrolled.

    It minimises the sum of squared reprojection errors (the paper's Eq. 4) over the pose with Adam
    (the paper's choice) or L-BFGS, clamping the camera depth at ``min_depth`` mm before the
    perspective division and the parameters to ``bounds`` after every step. Rotations are
    optimised in radians and translations in units of ``translation_scale`` mm, so that one
    learning rate suits both. Differentiable by unrolling: the backward pass goes through every
    iteration, so its cost grows with ``iterations``.

    Args:
        landmarks_3d, landmarks_2d, camera, weights: as for ``solve``; an unusable landmark (weight 0, NaN) is
            left out, but a usable set is not checked for flatness.
        init: (B, 6) starting poses, e.g. ``geometry.ap_pose(source_to_isocenter, B)``.
        bounds: (6,) or (B, 6) lowest and highest pose values.
        min_landmarks: as for ``solve``: a sample with fewer usable landmarks gets a NaN pose.
    """
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    check_min_landmarks(min_landmarks)
    dtype = landmarks_2d.dtype
    given = landmarks_2d.new_ones(landmarks_2d.shape[:2], dtype=torch.float64) if weights is None else weights
    usable = usable_landmarks(landmarks_3d, landmarks_2d, given)
    zero = torch.zeros((), dtype=torch.float64, device=landmarks_2d.device)
    points = torch.where(usable[..., None], landmarks_3d.to(torch.float64), zero)
    observed = torch.where(usable[..., None], landmarks_2d.to(torch.float64), zero)
    weight = torch.where(usable, given.to(torch.float64), zero)
    scale = torch.tensor(
        [1.0, 1.0, 1.0, translation_scale, translation_scale, translation_scale],
        dtype=torch.float64,
        device=observed.device,
    )
    low, high = (None, None) if bounds is None else (bound.to(scale) / scale for bound in bounds)
    differentiable = torch.is_grad_enabled() and (
        landmarks_2d.requires_grad or (weights is not None and weights.requires_grad)
    )

    def loss(theta: torch.Tensor) -> torch.Tensor:
        """(B,) weighted sum of squared reprojection errors."""
        camera_xyz = geometry.to_camera_frame(points, theta * scale)
        camera_xyz = torch.cat([camera_xyz[..., :2], camera_xyz[..., 2:].clamp_min(min_depth)], -1)
        return (weight * (pixels(camera_xyz, camera) - observed).pow(2).sum(-1)).sum(-1)

    def clamp(theta: torch.Tensor) -> torch.Tensor:
        return theta if low is None else torch.maximum(torch.minimum(theta, high), low)

    theta = clamp(init.detach().to(torch.float64) / scale)
    with torch.enable_grad():
        if not theta.requires_grad:
            theta = theta.requires_grad_()
        step = _adam if optimizer == "adam" else _lbfgs
        theta = step(loss, clamp, theta, iterations, learning_rate, differentiable)
    enough = (usable.sum(-1) >= min_landmarks)[:, None]
    pose = torch.where(enough, theta * scale, torch.full_like(theta, float("nan")))
    if not differentiable:
        pose = pose.detach()
    residuals = geometry.project(points, pose, camera) - torch.where(usable[..., None], observed, torch.nan)
    finite = torch.isfinite(pose).all(-1)
    count = torch.full((len(pose),), iterations, dtype=torch.long, device=pose.device)
    return Registration(pose.to(dtype), residuals.to(dtype), count, finite)


def _adam(loss, clamp, theta, iterations, learning_rate, differentiable, betas=(0.9, 0.999), eps=1e-8):
    """``iterations`` Adam steps written out, so autograd can go through them."""
    first, second = torch.zeros_like(theta), torch.zeros_like(theta)
    for t in range(1, iterations + 1):
        (gradient,) = torch.autograd.grad(loss(theta).sum(), theta, create_graph=differentiable)
        first = betas[0] * first + (1 - betas[0]) * gradient
        second = betas[1] * second + (1 - betas[1]) * gradient**2
        update = (first / (1 - betas[0] ** t)) / ((second / (1 - betas[1] ** t)).sqrt() + eps)
        theta = clamp(theta - learning_rate * update)
    return theta


def _lbfgs(loss, clamp, theta, iterations, learning_rate, differentiable, history=10, halvings=20):
    """``iterations`` batched L-BFGS steps (two-loop recursion, backtracking), written out."""
    steps, changes = [], []
    value = loss(theta)
    (gradient,) = torch.autograd.grad(value.sum(), theta, create_graph=differentiable)
    for _ in range(iterations):
        direction = -gradient
        alphas = []
        for s, y in reversed(list(zip(steps, changes))):
            curvature = (y * s).sum(-1, keepdim=True)  # a pair without positive curvature is skipped
            rho = torch.where(curvature > 1e-300, 1 / curvature.clamp_min(1e-300), torch.zeros_like(curvature))
            alpha = rho * (s * direction).sum(-1, keepdim=True)
            direction = direction - alpha * y
            alphas.append((rho, alpha))
        # Initial inverse-Hessian scale s.y / y.y; a step of length ``learning_rate`` before any
        # curvature is known (first iteration, or no decrease found last time).
        first_step = learning_rate / direction.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        if steps:
            s, y = steps[-1], changes[-1]
            curvature = (y * s).sum(-1, keepdim=True)
            gamma = curvature / (y * y).sum(-1, keepdim=True).clamp_min(1e-300)
            direction = direction * torch.where(curvature > 0, gamma, first_step)
        else:
            direction = direction * first_step
        for (s, y), (rho, alpha) in zip(zip(steps, changes), reversed(alphas)):
            direction = direction + s * (alpha - rho * (y * direction).sum(-1, keepdim=True))
        # Backtracking: the largest of 1, 1/2, 1/4, ... that lowers the loss, per sample.
        length = torch.zeros_like(value)
        chosen = torch.zeros_like(value, dtype=torch.bool)
        for k in range(halvings):
            trial = loss(clamp(theta + 0.5**k * direction))
            accept = ~chosen & (trial < value)
            length = torch.where(accept, torch.full_like(length, 0.5**k), length)
            chosen |= accept
        new_theta = clamp(theta + length[:, None] * direction)
        new_value = loss(new_theta)
        (new_gradient,) = torch.autograd.grad(new_value.sum(), new_theta, create_graph=differentiable)
        steps = (steps + [new_theta - theta])[-history:]
        changes = (changes + [new_gradient - gradient])[-history:]
        theta, value, gradient = new_theta, new_value, new_gradient
    return theta
