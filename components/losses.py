"""Training losses, registered by name and combined by weights from the config.

Every loss takes the model's logits (B, N, H, W), the batch (a dict of tensors: ``image`` (B, 1,
H, W), ``landmarks_2d`` (B, N, 2) px, ``visible`` (B, N), ``landmarks_3d`` (B, N, 3) mm, ``pose``
(B, 6)) and a ``LossContext``; it returns a scalar and the parts to log (floats). N is the size of
the study's landmark set.

- ``bce``: BCEWithLogits on disk (or Gaussian) masks, the paper's baseline;
- ``pose``: registration of the soft-argmax landmarks, then the rotation geodesic angle (degrees)
  and the translation distance (mm) against the true pose, each weighted (the paper's pose loss);
- ``reprojection``: registration, then the true 3D landmarks projected with the estimated pose
  against the true 2D landmarks, px;
- ``landmark``: soft-argmax points against the true 2D points, px, without registration (the
  control that tells whether the registration adds anything).

Invisible landmarks are masked out of every loss, and so are landmarks a subject lacks (NaN in the
batch, never visible): they are replaced by zeros before any arithmetic, so no NaN reaches a loss or
its gradients. A registration with fewer than ``LossContext.min_landmarks`` visible landmarks is a pose
failure, left out of the pose losses' means.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from components import geometry, heatmaps, metrics, registration
from components.geometry import Camera
from components.heatmaps import SOFT_ARGMAX_INPUTS, Decoding, SoftArgmaxInput

LossFunction = Callable[[torch.Tensor, dict, "LossContext"], tuple[torch.Tensor, dict[str, float]]]
LOSSES: dict[str, LossFunction] = {}


@dataclass(frozen=True)
class LossSettings:
    """The losses' settings, validated on construction (the config's ``train.loss``).

    Attributes:
        temperature: soft-argmax temperature (see ``heatmaps``); checkpoints store it for decoding.
        soft_argmax_input: what the soft-argmax reads, "logits" or "probabilities" (sigmoid of the
            logits: needs a much lower temperature, see ``heatmaps``); stored with the temperature.
        target: "disk" (the paper's masks) or "gaussian" targets for ``bce``.
        radius, sigma: disk radius and Gaussian standard deviation, px.
        pos_weight: BCE weight of the landmark pixels (None: 1).
        solver: "implicit" (``registration.solve``) or "unrolled" (the paper's Adam from the AP view).
        rotation_weight, translation_weight: ``pose`` loss per degree and per mm.
        robust: robust loss of the registration (None, "huber", "cauchy").
        unrolled_iterations: the unrolled solver's iterations.
        unrolled_optimizer: the unrolled solver's optimizer, "adam" (the paper's Section 2.3) or "lbfgs".
        unrolled_learning_rate: its learning rate (radians, and units of ``translation_scale`` mm:
            see ``registration.solve_unrolled``, whose default this is).
        unrolled_bounds: clamp the unrolled solver's pose to ``LossContext.bounds`` (the ranges the
            poses were drawn from) after every step; False: unbounded.
    """

    temperature: float = 1.0
    target: Literal["disk", "gaussian"] = "disk"
    radius: float = 3.0
    sigma: float = 2.0
    pos_weight: float | None = None
    solver: Literal["implicit", "unrolled"] = "implicit"
    rotation_weight: float = 1.0
    translation_weight: float = 1.0
    robust: Literal["huber", "cauchy"] | None = None
    unrolled_iterations: int = 100
    soft_argmax_input: SoftArgmaxInput = "logits"
    unrolled_optimizer: Literal["adam", "lbfgs"] = "adam"
    unrolled_learning_rate: float = 0.02
    unrolled_bounds: bool = True

    def __post_init__(self):
        positive = {"temperature": self.temperature, "radius": self.radius, "sigma": self.sigma}
        positive |= {"unrolled_learning_rate": self.unrolled_learning_rate}
        positive |= {"pos_weight": self.pos_weight} if self.pos_weight is not None else {}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"LossSettings.{name} must be > 0, got {value}")
        for name in ("rotation_weight", "translation_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"LossSettings.{name} must be >= 0, got {getattr(self, name)}")
        if self.unrolled_iterations < 1:
            raise ValueError(f"LossSettings.unrolled_iterations must be >= 1, got {self.unrolled_iterations}")
        choices = {
            "target": ("disk", "gaussian"),
            "solver": ("implicit", "unrolled"),
            "robust": ("huber", "cauchy", None),
            "soft_argmax_input": SOFT_ARGMAX_INPUTS,
            "unrolled_optimizer": ("adam", "lbfgs"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"LossSettings.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def decoding(self) -> Decoding:
        """How a model trained with these settings reads its landmarks off its heatmaps."""
        return Decoding(self.temperature, self.soft_argmax_input)


@dataclass(frozen=True)
class LossContext:
    """What the losses need besides logits and batch.

    Attributes:
        camera: the detector at the heatmaps' resolution.
        source_to_isocenter: the AP view's distance, mm (the unrolled solver's start).
        settings: the losses' settings.
        bounds: the unrolled solver's (6,) lowest and highest pose values, in the pose convention
            (rotation vector, radians; translation, mm), e.g. ``poses.pose_bounds`` of the data's
            pose ranges; None: unbounded. Used where ``settings.unrolled_bounds`` is on.
        min_landmarks: visible landmarks a registration needs (``data.landmarks.min_for_registration``).
    """

    camera: Camera
    source_to_isocenter: float
    settings: LossSettings = LossSettings()
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    min_landmarks: int = registration.MIN_LANDMARKS

    def __post_init__(self):
        registration.check_min_landmarks(self.min_landmarks)
        if self.bounds is not None:
            low, high = self.bounds
            if len(low) != 6 or len(high) != 6 or any(not lo <= hi for lo, hi in zip(low, high)):
                raise ValueError(f"LossContext.bounds must be (6,) low <= (6,) high, got {self.bounds}")


def register(name: str):
    """Decorator: make a loss function available under ``name``."""

    def add(function: LossFunction) -> LossFunction:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        LOSSES[name] = function
        return function

    return add


def masked(values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(B, N, D) ``values`` with the invisible landmarks' rows zeroed (a NaN of an absent one included)."""
    return torch.where(visible[..., None], values, torch.zeros((), dtype=values.dtype, device=values.device))


def targets(batch: dict, context: LossContext, height: int, width: int) -> torch.Tensor:
    """(B, N, H, W) training targets of the batch's landmarks."""
    settings = context.settings
    if settings.target == "disk":
        return heatmaps.disk_targets(batch["landmarks_2d"], batch["visible"], height, width, settings.radius)
    return heatmaps.gaussian_targets(batch["landmarks_2d"], batch["visible"], height, width, settings.sigma)


@register("bce")
def bce(logits: torch.Tensor, batch: dict, context: LossContext):
    """Mean BCEWithLogits over the pixels of the visible landmarks' heatmaps."""
    height, width = logits.shape[-2:]
    target = targets(batch, context, height, width).to(logits.dtype)
    pos_weight = None if context.settings.pos_weight is None else logits.new_tensor(context.settings.pos_weight)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    visible = batch["visible"].to(logits.dtype)
    loss = (per_pixel.mean((-2, -1)) * visible).sum() / visible.sum().clamp_min(1)
    return loss, {"bce": loss.item()}


@register("landmark")
def landmark(logits: torch.Tensor, batch: dict, context: LossContext):
    """Mean distance (px) of the soft-argmax points to the true ones, over visible landmarks."""
    predicted = context.settings.decoding().soft_argmax(logits)
    truth = masked(batch["landmarks_2d"].to(predicted.dtype), batch["visible"])
    visible = batch["visible"].to(predicted.dtype)
    distance = (predicted - truth).norm(dim=-1) * visible
    loss = distance.sum() / visible.sum().clamp_min(1)
    return loss, {"landmark_px": loss.item()}


def register_predicted(logits: torch.Tensor, batch: dict, context: LossContext) -> registration.Registration:
    """The pose of every sample from its soft-argmax landmarks (visible ones only).

    The unrolled solver starts from the AP view (``geometry.ap_pose``: the paper's identity
    rotation, plus the source-to-isocentre displacement of its Section 3.1) and stays within
    ``context.bounds`` where ``settings.unrolled_bounds`` is on.
    """
    settings = context.settings
    predicted = settings.decoding().soft_argmax(logits)
    weights = batch["visible"].to(torch.float64)
    if settings.solver == "implicit":
        return registration.solve(
            batch["landmarks_3d"],
            predicted,
            context.camera,
            weights=weights,
            robust=settings.robust,
            min_landmarks=context.min_landmarks,
        )
    start = geometry.ap_pose(context.source_to_isocenter, len(predicted), device=predicted.device)
    bounds = None
    if settings.unrolled_bounds and context.bounds is not None:
        bounds = tuple(torch.tensor(b, dtype=torch.float64, device=predicted.device) for b in context.bounds)
    return registration.solve_unrolled(
        batch["landmarks_3d"],
        predicted,
        context.camera,
        start,
        optimizer=settings.unrolled_optimizer,
        iterations=settings.unrolled_iterations,
        learning_rate=settings.unrolled_learning_rate,
        bounds=bounds,
        weights=weights,
        min_landmarks=context.min_landmarks,
    )


def mean_over_solved(values: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean of the finite entries of (B,) ``values``; 0 (still in the graph of ``anchor``) if none."""
    finite = torch.isfinite(values)
    if not finite.any():
        return anchor.sum() * 0.0
    return values[finite].mean()


@register("pose")
def pose(logits: torch.Tensor, batch: dict, context: LossContext):
    """Weighted rotation angle (deg) plus translation distance (mm) of the registered pose."""
    solved = register_predicted(logits, batch, context)
    truth = batch["pose"].to(torch.float64)
    rotation = mean_over_solved(metrics.rotation_error_deg(solved.pose.double(), truth), logits)
    translation = mean_over_solved(metrics.translation_error_mm(solved.pose.double(), truth), logits)
    weights = context.settings
    loss = (weights.rotation_weight * rotation + weights.translation_weight * translation).to(logits.dtype)
    parts = {"pose": loss.item(), "pose_rotation_deg": rotation.item(), "pose_translation_mm": translation.item()}
    return loss, parts | {"pose_failures": float((~torch.isfinite(solved.pose).all(-1)).sum())}


@register("reprojection")
def reprojection(logits: torch.Tensor, batch: dict, context: LossContext):
    """RMS distance (px) between the true 2D landmarks and the 3D ones projected with the registered pose."""
    solved = register_predicted(logits, batch, context)
    landmarks_3d = masked(batch["landmarks_3d"].to(torch.float64), batch["visible"])
    projected = geometry.project(landmarks_3d, solved.pose.double(), context.camera)
    squared = (projected - masked(batch["landmarks_2d"].to(torch.float64), batch["visible"])).pow(2).sum(-1)
    visible = batch["visible"].to(torch.float64)
    per_sample = ((squared * visible).sum(-1) / visible.sum(-1).clamp_min(1)).sqrt()
    loss = mean_over_solved(per_sample, logits).to(logits.dtype)
    return loss, {"reprojection_px": loss.item()}


class WeightedLoss:
    """``sum_i w_i loss_i`` over the named losses; its parts are every loss's parts plus ``loss``."""

    def __init__(self, weights: dict[str, float]):
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}; registered: {sorted(LOSSES)}")
        if not weights:
            raise ValueError("a loss needs at least one named part")
        self.weights = dict(weights)

    def __call__(self, logits: torch.Tensor, batch: dict, context: LossContext):
        total, parts = 0.0, {}
        for name, weight in self.weights.items():
            value, logged = LOSSES[name](logits, batch, context)
            total = total + weight * value
            parts.update(logged)
        parts["loss"] = float(total.item())
        return total, parts
