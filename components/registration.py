"""Batched, differentiable landmark-based 2D/3D registration: the C-arm pose from 2D-3D landmarks.

``solve`` finds, for every sample of a batch at once, the pose that minimises the (optionally
robust, optionally weighted) reprojection error of the 3D landmarks onto the 2D ones:

1. initialisation in closed form: a weak-perspective (affine) camera fitted by least squares to
   the landmarks, made orthonormal; unique for 4 or more non-coplanar points and close to the
   answer because a C-arm sees the pelvis with little depth variation relative to its distance;
2. Levenberg-Marquardt with the analytic Jacobian of the projection under a left perturbation of
   the camera pose, float64, every sample at once, each stopping on its own convergence;
3. gradients by the implicit function theorem: one Newton step taken at the detached solution,
   ``pose* - H^-1 g(landmarks_2d, weights)``, has the solver's value and carries the exact
   derivative of the solution with respect to the 2D landmarks and the weights, at the cost of one
   step whatever the iteration count.

``solve_unrolled`` is the paper's solver, for comparison: Adam or L-BFGS from a given start (the
paper's identity pose) for a fixed number of iterations within parameter bounds, differentiable by
unrolling.

A sample with fewer than 4 usable landmarks (weight 0, or NaN coordinates, make a landmark
unusable), or with coplanar or collinear usable landmarks, gets a NaN pose and ``converged =
False``; it never raises, and no NaN reaches the gradients of the other samples.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch.func import jacfwd, vmap

from components import geometry
from components.geometry import Camera

Robust = Literal["huber", "cauchy"] | None
MIN_LANDMARKS = 4
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


def well_posed(landmarks_3d: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """(B,) bool: at least 4 usable landmarks, not coplanar and not collinear."""
    count = usable.sum(-1)
    mask = usable[..., None].to(landmarks_3d.dtype)
    points = torch.where(usable[..., None], landmarks_3d, torch.zeros_like(landmarks_3d))
    center = (points * mask).sum(1, keepdim=True) / count.clamp_min(1)[:, None, None]
    spread = torch.linalg.svdvals((points - center) * mask)
    return (count >= MIN_LANDMARKS) & (spread[:, 2] > DEGENERATE_RATIO * spread[:, 0].clamp_min(1e-300))


# ----------------------------------------------------------------------------- camera model


def camera_points(rotation: torch.Tensor, translation: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera-frame points ``R X + t`` of (B, N, 3) world points."""
    return points @ rotation.transpose(-1, -2) + translation[:, None, :]


def pixels(camera_xyz: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(B, N, 2) pixel coordinates of (B, N, 3) camera-frame points."""
    (fx, fy), (cx, cy) = camera.focal_length_px, camera.principal_point_px
    depth = camera_xyz[..., 2]
    return torch.stack([fx * camera_xyz[..., 0] / depth + cx, fy * camera_xyz[..., 1] / depth + cy], -1)


def pixel_jacobian(camera_xyz: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(B, N, 2, 6) d pixels / d (omega, delta) of the update ``c <- exp(omega) c + delta``."""
    (fx, fy) = camera.focal_length_px
    x, y, z = camera_xyz.unbind(-1)
    zero = torch.zeros_like(z)
    d_pixel_d_c = torch.stack(
        [torch.stack([fx / z, zero, -fx * x / z**2], -1), torch.stack([zero, fy / z, -fy * y / z**2], -1)], -2
    )
    d_c_d_update = torch.cat([-geometry.skew(camera_xyz), torch.eye(3, dtype=z.dtype).expand(*z.shape, 3, 3)], -1)
    return d_pixel_d_c @ d_c_d_update


# ----------------------------------------------------------------------------- initialisation


def weak_perspective_init(
    landmarks_3d: torch.Tensor, landmarks_2d: torch.Tensor, weights: torch.Tensor, camera: Camera
) -> tuple[torch.Tensor, torch.Tensor]:
    """World -> camera rotation (B, 3, 3) and translation (B, 3) of a scaled-orthographic fit.

    Normalised image points ``K^-1 (u, v, 1)`` are fitted by an affine map of the centred 3D
    points, ``A (X - m) + b``; the two rows of ``A`` are the first two rows of ``R`` over the
    mean depth ``Z0``. Their nearest orthonormal pair (polar decomposition) and its cross product
    give ``R``; ``Z0`` is the inverse of their mean singular value.
    """
    k_inv = geometry.make_k_inv(camera, dtype=landmarks_2d.dtype, device=landmarks_2d.device)
    normalised = landmarks_2d @ k_inv[:2, :2].T + k_inv[:2, 2]
    mass = weights.sum(-1).clamp_min(1e-300)[:, None, None]
    center = (landmarks_3d * weights[..., None]).sum(1, keepdim=True) / mass
    design = torch.cat([landmarks_3d - center, torch.ones_like(landmarks_3d[..., :1])], -1)  # (B, N, 4)
    weighted = design * weights[..., None]
    normal = weighted.transpose(-1, -2) @ design + 1e-12 * torch.eye(4, dtype=design.dtype)
    affine = torch.linalg.solve(normal, weighted.transpose(-1, -2) @ normalised).transpose(-1, -2)  # (B, 2, 4)
    left, singular, right = torch.linalg.svd(affine[..., :3], full_matrices=False)
    rows = left @ right  # (B, 2, 3) orthonormal
    rotation = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], 1)
    depth = 1 / singular.mean(-1).clamp_min(1e-300)
    center_camera = torch.cat([affine[..., 3] * depth[:, None], depth[:, None]], -1)
    translation = center_camera - (rotation @ center[:, 0, :, None])[..., 0]
    return rotation, translation


# ----------------------------------------------------------------------------- Levenberg-Marquardt


def levenberg_marquardt(
    landmarks_3d, landmarks_2d, weights, camera, rotation, translation, robust, scale, max_iterations, tolerance
):
    """Refine world -> camera extrinsics; every tensor float64 and detached.

    Returns:
        rotation (B, 3, 3), translation (B, 3), iterations (B,), converged (B,).
    """
    batch = len(landmarks_3d)

    def cost_of(rotation, translation):
        residual = pixels(camera_points(rotation, translation, landmarks_3d), camera) - landmarks_2d
        distance = residual.norm(dim=-1)
        return (weights * robust_cost(distance, robust, scale)).sum(-1), residual, distance

    damping = torch.full((batch,), 1e-3, dtype=torch.float64)
    active = torch.ones(batch, dtype=torch.bool)
    converged = torch.zeros(batch, dtype=torch.bool)
    iterations = torch.zeros(batch, dtype=torch.long)
    cost, residual, distance = cost_of(rotation, translation)
    for _ in range(max_iterations):
        if not active.any():
            break
        jacobian = pixel_jacobian(camera_points(rotation, translation, landmarks_3d), camera)
        w = weights * robust_weight(distance, robust, scale)
        hessian = torch.einsum("bnki,bn,bnkj->bij", jacobian, w, jacobian)
        gradient = torch.einsum("bnki,bn,bnk->bi", jacobian, w, residual)
        diagonal = torch.diagonal(hessian, dim1=-2, dim2=-1)
        step = -torch.linalg.solve(hessian + torch.diag_embed(damping[:, None] * diagonal + 1e-12), gradient)
        turn = geometry.rotation_vector_to_matrix(step[:, :3])
        new_rotation, new_translation = turn @ rotation, (turn @ translation[..., None])[..., 0] + step[:, 3:]
        new_cost, new_residual, new_distance = cost_of(new_rotation, new_translation)
        # Near the optimum the cost changes below its rounding: accept steps within it, so the
        # iterate keeps converging to the step tolerance instead of stalling there.
        better = active & (new_cost <= cost * (1 + 1e-13)) & torch.isfinite(new_cost)
        rotation = torch.where(better[:, None, None], new_rotation, rotation)
        translation = torch.where(better[:, None], new_translation, translation)
        cost = torch.where(better, new_cost, cost)
        residual = torch.where(better[:, None, None], new_residual, residual)
        distance = torch.where(better[:, None], new_distance, distance)
        damping = torch.where(better, damping / 10, damping * 10).clamp(1e-12, 1e16)
        size = step[:, :3].norm(dim=-1) + step[:, 3:].norm(dim=-1) / (1 + translation.norm(dim=-1))
        done = active & ((size < tolerance) | (cost < 1e-28))
        iterations += active
        converged |= done
        active &= ~done & (damping < 1e16)
    return rotation, translation, iterations, converged


# ----------------------------------------------------------------------------- implicit gradients


def _residual_of_pose(pose: torch.Tensor, landmarks_3d: torch.Tensor, landmarks_2d: torch.Tensor, camera: Camera):
    """(N, 2) residuals of one pose (6,); for torch.func."""
    return geometry.project(landmarks_3d[None], pose[None], camera)[0] - landmarks_2d


def implicit_step(pose, landmarks_3d, landmarks_2d, weights, camera) -> torch.Tensor:
    """(B, 6) ``pose - H^-1 g``: equal to ``pose`` at an optimum, with the implicit gradient.

    ``g = J^T W r`` is differentiable in the 2D landmarks and the weights; ``H`` is the exact Hessian
    of ``1/2 sum w |r|^2`` in pose coordinates (Gauss-Newton term plus the residual term), detached.
    """
    pose = pose.detach()
    fixed_2d, fixed_weights = landmarks_2d.detach(), weights.detach()
    jacobian = vmap(jacfwd(_residual_of_pose), in_dims=(0, 0, 0, None))(pose, landmarks_3d, fixed_2d, camera)
    curvature = vmap(jacfwd(jacfwd(_residual_of_pose)), in_dims=(0, 0, 0, None))(pose, landmarks_3d, fixed_2d, camera)
    residual = geometry.project(landmarks_3d, pose, camera) - landmarks_2d
    fixed_residual = residual.detach()
    hessian = torch.einsum("bnki,bn,bnkj->bij", jacobian, fixed_weights, jacobian)
    hessian = hessian + torch.einsum("bn,bnk,bnkij->bij", fixed_weights, fixed_residual, curvature)
    gradient = torch.einsum("bnki,bn,bnk->bi", jacobian, weights, residual)
    return pose - torch.linalg.solve(hessian, gradient)


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

    Returns:
        ``Registration`` in the input dtype; ``pose`` is differentiable in ``landmarks_2d`` and
        ``weights`` (implicit function theorem).
    """
    robust_cost(torch.zeros(1), robust, robust_scale)  # validates ``robust`` up front
    batch = len(landmarks_2d)
    points = landmarks_3d.to(torch.float64)
    observed = landmarks_2d.to(torch.float64)
    given = torch.ones(observed.shape[:2], dtype=torch.float64) if weights is None else weights.to(torch.float64)
    usable = usable_landmarks(points, observed, given)
    valid = well_posed(points, usable)
    # Unusable landmarks take weight 0 and harmless coordinates, so no NaN enters any sum.
    weight = torch.where(usable, given, torch.zeros_like(given))
    points = torch.where(usable[..., None], points, torch.zeros_like(points))
    observed = torch.where(usable[..., None], observed, torch.zeros_like(observed))

    pose = torch.full((batch, 6), float("nan"), dtype=torch.float64)
    iterations = torch.zeros(batch, dtype=torch.long)
    converged = torch.zeros(batch, dtype=torch.bool)
    if valid.any():
        rows = torch.nonzero(valid)[:, 0]
        rows_3d, rows_2d, rows_weight = points[rows], observed[rows], weight[rows]
        with torch.no_grad():
            if init is None:
                rotation, translation = weak_perspective_init(rows_3d, rows_2d, rows_weight, camera)
            else:
                rotation, translation = geometry.make_rt_inv(init.detach().to(torch.float64)[rows])
            rotation, translation, rows_iterations, rows_converged = levenberg_marquardt(
                rows_3d, rows_2d.detach(), rows_weight.detach(), camera, rotation, translation,
                robust, robust_scale, max_iterations, tolerance,
            )
            solved = geometry.extrinsic_to_pose(rotation, translation)
            distance = (geometry.project(rows_3d, solved, camera) - rows_2d).norm(dim=-1)
            robust_factor = robust_weight(distance, robust, robust_scale)
        if torch.is_grad_enabled() and (rows_2d.requires_grad or rows_weight.requires_grad):
            solved = implicit_step(solved, rows_3d, rows_2d, rows_weight * robust_factor, camera)
        pose = pose.index_put((rows,), solved)
        iterations[rows], converged[rows] = rows_iterations, rows_converged
    residuals = geometry.project(points, pose, camera) - torch.where(usable[..., None], observed, torch.nan)
    dtype = landmarks_2d.dtype
    return Registration(pose.to(dtype), residuals.to(dtype), iterations, converged)


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
) -> Registration:
    """The paper's registration: a fixed number of optimizer steps from ``init``, unrolled.

    It minimises the sum of squared reprojection errors (the paper's Eq. 4) over the pose with Adam
    (the paper's choice) or L-BFGS, clamping the camera depth at ``min_depth`` mm before the
    perspective division and the parameters to ``bounds`` after every step. Rotations are
    optimised in radians and translations in units of ``translation_scale`` mm, so that one
    learning rate suits both. Differentiable by unrolling: the backward pass goes through every
    iteration, so its cost grows with ``iterations``.

    Args:
        landmarks_3d, landmarks_2d, camera, weights: as for ``solve`` (no validity checks).
        init: (B, 6) starting poses, e.g. ``geometry.ap_pose(source_to_isocenter, B)``.
        bounds: (6,) or (B, 6) lowest and highest pose values.
    """
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    dtype = landmarks_2d.dtype
    points, observed = landmarks_3d.to(torch.float64), landmarks_2d.to(torch.float64)
    weight = torch.ones(observed.shape[:2], dtype=torch.float64) if weights is None else weights.to(torch.float64)
    scale = torch.tensor([1.0, 1.0, 1.0, translation_scale, translation_scale, translation_scale], dtype=torch.float64)
    low, high = (None, None) if bounds is None else (bounds[0].to(torch.float64) / scale, bounds[1].to(torch.float64) / scale)
    differentiable = torch.is_grad_enabled() and (landmarks_2d.requires_grad or (weights is not None and weights.requires_grad))

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
    pose = theta * scale
    if not differentiable:
        pose = pose.detach()
    residuals = geometry.project(points, pose, camera) - observed
    finite = torch.isfinite(pose).all(-1)
    count = torch.full((len(pose),), iterations, dtype=torch.long)
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
