"""X-ray physics after the line integral: from a DRR's optical depth to the image a fluoroscope displays.

A DRR is a line integral, the optical depth tau = ∫ mu dl of each detector pixel. A fluoroscope
counts photons: ``I0 * exp(-tau)`` at the dose ``I0`` (photons per pixel of the open beam), shaded by
the heel effect and the image intensifier's vignetting, plus scatter (a low-frequency fraction of
the primary), blurred by the detector, with Poisson quantum noise and electronic noise; collimator
shutters and the intensifier's circular field blank what they cover; the display shows the log
of the counts, windowed. ``fluoro_image`` runs that chain, in that order.

Every effect is a TorchIO-style transform: ranges validated on construction, ``sample(seed)``
draws one ``Draw`` of its parameters (or none, with probability ``1 - probability``), and
``apply`` is the deterministic twin, so the same seed gives the same image. With every effect off
(or at zero strength) and the window ``(0, 1)``, ``fluoro_image`` returns tau itself.

Shapes: images are (..., H, W) float tensors, on any device; tau is non-negative.
"""

import math
from dataclasses import dataclass, fields

import torch

__all__ = [
    "DetectorBlur",
    "Draw",
    "HeelEffect",
    "IntensifierField",
    "QuantumNoise",
    "Scatter",
    "Shutters",
    "display",
    "fluoro_image",
]

Range = tuple[float, float]


def check_range(owner: str, name: str, value: Range, lowest: float = 0.0, highest: float = math.inf) -> None:
    """A finite ``(low, high)`` with ``lowest <= low <= high <= highest``, else a ValueError naming the setting."""
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high) and lowest <= low <= high <= highest):
        raise ValueError(f"{owner}.{name} must be a range with {lowest:g} <= low <= high <= {highest:g}, got {value}")


def check_probability(owner: str, probability: float) -> None:
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"{owner}.probability must be in [0, 1], got {probability}")


@dataclass(frozen=True)
class Draw:
    """One sampled effect: its parameters by name, and the seed of its noise (if it has any)."""

    values: dict
    noise_seed: int = 0


class Effect:
    """An effect with uniform ranges (its dataclass fields of tuples) and a ``probability`` of being applied."""

    probability: float

    def __post_init__(self):
        owner = type(self).__name__
        check_probability(owner, self.probability)
        for item in fields(self):
            if item.name != "probability":
                check_range(owner, item.name, getattr(self, item.name), *self.bounds().get(item.name, (0.0, math.inf)))

    def bounds(self) -> dict[str, Range]:
        """What each range must lie within (default: non-negative)."""
        return {}

    def sample(self, seed: int) -> Draw | None:
        """The parameters of one application, from ``seed``; None when the effect is not applied this time."""
        generator = torch.Generator().manual_seed(seed)
        if torch.rand((), generator=generator, dtype=torch.float64).item() >= self.probability:
            return None
        values = {}
        for item in fields(self):
            if item.name != "probability":
                low, high = getattr(self, item.name)
                values[item.name] = low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()
        return Draw(values, int(torch.randint(0, 2**31 - 1, (), generator=generator)))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(..., H, W) blurred by a normalised Gaussian of ``sigma`` px (reflected at the edges; sigma 0: unchanged)."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    shape = image.shape
    flat = image.reshape(-1, 1, *shape[-2:])
    radius_h, radius_w = min(radius, shape[-2] - 1), min(radius, shape[-1] - 1)
    padded = torch.nn.functional.pad(flat, (radius_w, radius_w, radius_h, radius_h), mode="reflect")
    padded = torch.nn.functional.pad(padded, (radius - radius_w,) * 2 + (radius - radius_h,) * 2, mode="replicate")
    rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, -1, 1))
    return torch.nn.functional.conv2d(rows, kernel.view(1, 1, 1, -1)).reshape(shape)


def radius_map(image: torch.Tensor) -> torch.Tensor:
    """(H, W) each pixel's distance from the image centre, in units of half the shorter side."""
    height, width = image.shape[-2:]
    rows = (torch.arange(height, device=image.device, dtype=image.dtype) + 0.5 - height / 2)[:, None]
    columns = (torch.arange(width, device=image.device, dtype=image.dtype) + 0.5 - width / 2)[None, :]
    return torch.sqrt(rows**2 + columns**2) / (min(height, width) / 2)


@dataclass(frozen=True)
class HeelEffect(Effect):
    """The anode heel: the open beam falls off linearly across the columns, by ``strength`` (a fraction of the
    dose) from the centre to each edge (brighter on the cathode side, at the left)."""

    strength: Range = (0.0, 0.2)
    probability: float = 1.0

    def bounds(self):
        return {"strength": (0.0, 0.9)}

    def apply(self, counts: torch.Tensor, draw: Draw) -> torch.Tensor:
        width = counts.shape[-1]
        x = (torch.arange(width, device=counts.device, dtype=counts.dtype) + 0.5) / width * 2 - 1  # -1 .. 1
        return counts * (1 - draw.values["strength"] * x)


@dataclass(frozen=True)
class Scatter(Effect):
    """Scatter: the primary blurred by ``sigma_px`` (a broad kernel) times the scatter-to-primary ratio ``spr``,
    added to it: the image's mean grows by that fraction."""

    spr: Range = (0.1, 1.0)
    sigma_px: Range = (8.0, 32.0)
    probability: float = 1.0

    def apply(self, counts: torch.Tensor, draw: Draw) -> torch.Tensor:
        return counts + draw.values["spr"] * gaussian_blur(counts, draw.values["sigma_px"])


@dataclass(frozen=True)
class DetectorBlur(Effect):
    """The detector's point spread: a Gaussian of ``sigma_px``."""

    sigma_px: Range = (0.0, 1.0)
    probability: float = 1.0

    def apply(self, counts: torch.Tensor, draw: Draw) -> torch.Tensor:
        return gaussian_blur(counts, draw.values["sigma_px"])


@dataclass(frozen=True)
class QuantumNoise(Effect):
    """Poisson quantum noise of the counts at ``dose`` photons per pixel of the open beam (the dose of the whole
    image: ``fluoro_image`` takes it from this draw), then Gaussian electronic noise of ``electronic_std`` counts."""

    dose: Range = (500.0, 5000.0)
    electronic_std: Range = (0.0, 5.0)
    probability: float = 1.0

    def bounds(self):
        return {"dose": (1.0, math.inf)}

    def apply(self, counts: torch.Tensor, draw: Draw) -> torch.Tensor:
        generator = torch.Generator(device=counts.device).manual_seed(draw.noise_seed)
        noisy = torch.poisson(counts.clamp_min(0), generator=generator)
        if draw.values["electronic_std"] > 0:
            noise = torch.randn(counts.shape, generator=generator, device=counts.device, dtype=counts.dtype)
            noisy = noisy + draw.values["electronic_std"] * noise
        return noisy


@dataclass(frozen=True)
class IntensifierField(Effect):
    """The image intensifier's circular field of ``radius`` (in half the shorter side: 1 touches the edges) with
    vignetting: the counts fall by the fraction ``vignetting`` from the centre to the rim."""

    radius: Range = (0.9, 1.4)
    vignetting: Range = (0.0, 0.3)
    probability: float = 1.0

    def bounds(self):
        return {"radius": (0.05, math.inf), "vignetting": (0.0, 1.0)}

    def shade(self, counts: torch.Tensor, draw: Draw) -> torch.Tensor:
        r = radius_map(counts) / draw.values["radius"]
        return counts * (1 - draw.values["vignetting"] * r.clamp(max=1.0) ** 2)

    def blanked(self, image: torch.Tensor, draw: Draw) -> torch.Tensor:
        """(H, W) bool: outside the field."""
        return radius_map(image) > draw.values["radius"]


@dataclass(frozen=True)
class Shutters(Effect):
    """Collimator shutters: each side's ``fraction`` of the image (left, right, top, bottom drawn apart) blanked."""

    fraction: Range = (0.0, 0.15)
    probability: float = 1.0

    def bounds(self):
        return {"fraction": (0.0, 0.45)}

    def sample(self, seed: int) -> Draw | None:
        draw = super().sample(seed)
        if draw is None:
            return None
        generator = torch.Generator().manual_seed(draw.noise_seed)
        low, high = self.fraction
        sides = low + (high - low) * torch.rand(4, generator=generator, dtype=torch.float64)
        return Draw(dict(zip(("left", "right", "top", "bottom"), sides.tolist(), strict=True)), draw.noise_seed)

    def blanked(self, image: torch.Tensor, draw: Draw) -> torch.Tensor:
        """(H, W) bool: behind a shutter (whole pixel rows and columns)."""
        height, width = image.shape[-2:]
        rows = torch.arange(height, device=image.device)[:, None]
        columns = torch.arange(width, device=image.device)[None, :]
        v = draw.values
        return (
            (columns < round(v["left"] * width))
            | (columns >= width - round(v["right"] * width))
            | (rows < round(v["top"] * height))
            | (rows >= height - round(v["bottom"] * height))
        )


def display(counts: torch.Tensor, dose: float, window: Range = (0.0, 1.0)) -> torch.Tensor:
    """The log image a fluoroscope shows, bone bright: ``log(dose / counts)`` (counts below 1 read as 1),
    mapped from ``window`` (in optical depth) to [0, 1] and clipped."""
    low, high = window
    depth = torch.log(dose / counts.clamp_min(1.0))
    return ((depth - low) / (high - low)).clamp(0.0, 1.0)


def fluoro_image(
    tau: torch.Tensor,
    window: Range = (0.0, 1.0),
    heel: tuple[HeelEffect, Draw | None] | None = None,
    field: tuple[IntensifierField, Draw | None] | None = None,
    scatter: tuple[Scatter, Draw | None] | None = None,
    blur: tuple[DetectorBlur, Draw | None] | None = None,
    noise: tuple[QuantumNoise, Draw | None] | None = None,
    shutters: tuple[Shutters, Draw | None] | None = None,
    blank: float = 1.0,
    dose: float = 1e6,
) -> torch.Tensor:
    """(..., H, W) the displayed image of optical depth ``tau`` with the given effects and their draws (an effect
    or draw of None is off), in the physical order; blanked pixels (behind a shutter, outside the field) are
    ``blank`` (1: no photons, as bright as the densest bone). The open beam has the noise draw's dose, else
    ``dose`` photons per pixel (without noise it matters only where fewer than 1 photon arrives)."""
    if noise is not None and noise[1] is not None:
        dose = noise[1].values["dose"]
    if dose <= 0 or not math.isfinite(dose):
        raise ValueError(f"dose must be a positive number of photons per pixel, got {dose}")
    if not window[0] < window[1]:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    counts = dose * torch.exp(-tau)
    for stage in (heel, field, scatter, blur, noise):
        if stage is not None and stage[1] is not None:
            effect, draw = stage
            counts = effect.shade(counts, draw) if isinstance(effect, IntensifierField) else effect.apply(counts, draw)
    image = display(counts, dose, window)
    for stage in (field, shutters):
        if stage is not None and stage[1] is not None:
            image = torch.where(stage[0].blanked(image, stage[1]), torch.full_like(image, blank), image)
    return image
