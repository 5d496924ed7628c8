"""Intensity augmentation that leaves the geometry alone: contrast, gamma, Gaussian noise.

As in TorchIO, the random part only draws parameters from a seed (``sample_intensity``); the
deterministic twin (``apply_intensity``) applies them, so every augmented sample can be
reproduced from its seed. Pixels never move, so the landmarks and the pose stay exact.
"""

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IntensityRanges:
    """Uniform ranges of the augmentation; validated on construction.

    Attributes:
        contrast: factor on the deviation from the image's mean (1: unchanged).
        gamma: exponent on the [0, 1] image (1: unchanged).
        noise_std: standard deviation of additive Gaussian noise, in [0, 1] image units.
    """

    contrast: tuple[float, float] = (0.8, 1.25)
    gamma: tuple[float, float] = (0.7, 1.4)
    noise_std: tuple[float, float] = (0.0, 0.03)

    def __post_init__(self):
        for name, may_be_zero in (("contrast", False), ("gamma", False), ("noise_std", True)):
            low, high = getattr(self, name)
            above_zero = low >= 0 if may_be_zero else low > 0
            if not (math.isfinite(low) and math.isfinite(high) and above_zero and low <= high):
                bound = "0 <= low <= high" if may_be_zero else "0 < low <= high"
                raise ValueError(f"IntensityRanges.{name} must be finite with {bound}, got ({low}, {high})")


@dataclass(frozen=True)
class IntensityParams:
    """One draw of the augmentation; ``noise_seed`` seeds the noise image."""

    contrast: float = 1.0
    gamma: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0


def sample_intensity(seed: int, ranges: IntensityRanges = IntensityRanges()) -> IntensityParams:
    """The parameters of one augmentation, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda low, high: low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()  # noqa: E731
    return IntensityParams(
        contrast=draw(*ranges.contrast),
        gamma=draw(*ranges.gamma),
        noise_std=draw(*ranges.noise_std),
        noise_seed=int(torch.randint(0, 2**31 - 1, (), generator=generator)),
    )


def apply_intensity(image: torch.Tensor, params: IntensityParams) -> torch.Tensor:
    """(..., H, W) the [0, 1] image with contrast, gamma and noise applied, clipped to [0, 1]."""
    mean = image.mean(dim=(-2, -1), keepdim=True)
    out = ((image - mean) * params.contrast + mean).clamp(0.0, 1.0) ** params.gamma
    if params.noise_std > 0:
        generator = torch.Generator(device=image.device).manual_seed(params.noise_seed)
        out = out + params.noise_std * torch.randn(
            image.shape, generator=generator, device=image.device, dtype=image.dtype
        )
    return out.clamp(0.0, 1.0)
