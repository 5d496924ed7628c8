"""X-ray physics after the line integral: from a DRR's optical depth to the image a fluoroscope displays.

A DRR is a line integral, the optical depth tau = ∫ mu dl of each detector pixel. A fluoroscope
counts photons: ``I0 * exp(-tau)`` at the dose ``I0`` (photons per pixel of the open beam), shaded by
the heel effect and the image intensifier's vignetting, plus scatter (a low-frequency fraction of
the primary), blurred by the detector, with Poisson quantum noise and electronic noise; collimator
shutters and the intensifier's circular field blank what they cover; the display shows the log
of the counts, windowed. ``fluoro_image`` runs that chain, in that order.

Where the optical depth comes from: ``linear_attenuation`` turns a CT's HU into a soft-tissue and
a bone part of the linear attenuation (1/mm); a renderer integrates each, and the depth of one
image is ``tau_soft + bone * tau_bone`` with that image's bone multiplier (the beam's energy and
the bone's mineral content change how much bone attenuates beside water). A stored DRR scaled to
[0, 1] has lost its units: ``Fluoroscope.of_drr`` takes it as the depth times a drawn span.

``Fluoroscope`` is the whole chain with ranges: its ``sample(seed)`` draws every effect, and
``of_attenuation`` / ``of_drr`` make the image of that draw (the ``fluoro`` test split and
train-time domain randomization).

Every effect is a TorchIO-style transform: ranges validated on construction, ``sample(seed)``
draws one ``Draw`` of its parameters (or none, with probability ``1 - probability``), and
``apply`` is the deterministic twin, so the same seed gives the same image. With every effect off
(or at zero strength) and the window ``(0, 1)``, ``fluoro_image`` returns tau itself.

Shapes: images are (..., H, W) float tensors, on any device; tau is non-negative.
"""

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

__all__ = [
    "DetectorBlur",
    "Draw",
    "FluoroDraw",
    "Fluoroscope",
    "Harmonization",
    "HeelEffect",
    "IntensifierField",
    "QuantumNoise",
    "Scatter",
    "Shutters",
    "display",
    "fluoro_image",
    "linear_attenuation",
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

    __pydantic_config__: ClassVar[dict] = {"extra": "forbid"}  # as a config section: a misspelt setting is an error
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


@dataclass(frozen=True)
class Harmonization(Effect):
    """The display's dynamic-range compression (unsharp masking of the log image, as fluoroscopes process
    every frame): ``strength`` of a Gaussian blur of ``sigma_px`` subtracted from the optical depth, so thick
    soft tissue no longer takes the window from bone edges."""

    strength: Range = (0.7, 0.95)
    sigma_px: Range = (4.0, 12.0)
    probability: float = 1.0

    def bounds(self):
        return {"strength": (0.0, 1.0)}

    def apply(self, depth: torch.Tensor, draw: Draw) -> torch.Tensor:
        return depth - draw.values["strength"] * gaussian_blur(depth, draw.values["sigma_px"])


def display(counts: torch.Tensor, dose: float, window: Range | None = (0.0, 1.0)) -> torch.Tensor:
    """The log image a fluoroscope shows, bone bright: the depth ``log(dose / counts)`` (counts below 1 read as
    1), mapped from ``window`` (in optical depth) to [0, 1] and clipped; with ``window`` None, the depth itself."""
    depth = torch.log(dose / counts.clamp_min(1.0))
    if window is None:
        return depth
    low, high = window
    return ((depth - low) / (high - low)).clamp(0.0, 1.0)


def fluoro_image(
    tau: torch.Tensor,
    window: Range | None = (0.0, 1.0),
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
    ``dose`` photons per pixel (without noise it matters only where fewer than 1 photon arrives). With ``window``
    None the image is the displayed optical depth, unwindowed."""
    if noise is not None and noise[1] is not None:
        dose = noise[1].values["dose"]
    if dose <= 0 or not math.isfinite(dose):
        raise ValueError(f"dose must be a positive number of photons per pixel, got {dose}")
    if window is not None and not window[0] < window[1]:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    counts = dose * torch.exp(-tau)
    for stage in (heel, field, scatter, blur, noise):
        if stage is not None and stage[1] is not None:
            effect, draw = stage
            shade = isinstance(effect, IntensifierField)
            counts = effect.shade(counts, draw) if shade else effect.apply(counts, draw)
    image = display(counts, dose, window)
    for stage in (field, shutters):
        if stage is not None and stage[1] is not None:
            image = torch.where(stage[0].blanked(image, stage[1]), torch.full_like(image, blank), image)
    return image


# ----------------------------------------------------------------------------- attenuation

WATER_MU = 0.0206  # 1/mm: water's linear attenuation at an effective 60 keV (0.206 / cm)
BONE_SPLIT_HU = 100.0  # HU above this count as bone: the part a bone multiplier scales


def linear_attenuation(hu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft, bone): two (...) parts of the linear attenuation (1/mm) of (...) HU, ``mu = soft + bone``.

    ``mu = WATER_MU * (1 + HU / 1000)`` (the definition of the Hounsfield scale), never negative; the
    part above ``BONE_SPLIT_HU`` is ``bone``, so that an image's bone multiplier scales the bone alone.
    """
    soft = WATER_MU * (1 + hu.clamp(max=BONE_SPLIT_HU) / 1000).clamp_min(0.0)
    bone = WATER_MU * (hu - BONE_SPLIT_HU).clamp_min(0.0) / 1000
    return soft, bone


# ----------------------------------------------------------------------------- the whole chain


@dataclass(frozen=True)
class FluoroDraw:
    """One sampled fluoroscope: the bone multiplier, the depth span (for ``of_drr``), the display's clipped
    fraction, and each effect's draw (None: not applied)."""

    bone: float
    depth: float
    clip: float
    effects: dict


EFFECTS = ("heel", "field", "scatter", "blur", "noise", "shutters", "harmonization")


@dataclass(frozen=True)
class Fluoroscope:
    """A fluoroscope's imaging chain with the ranges its images are drawn from; validated on construction.

    Attributes:
        bone: range of the bone attenuation multiplier (images made ``of_attenuation``).
        depth: range of the optical depth that 1 means in a [0, 1] DRR (images made ``of_drr``); a pelvis
            in AP attenuates the beam by 3-7 (e^-3 to e^-7) at its densest.
        clip: range of the fraction of pixels the display's automatic window clips at each end.
        heel, field, scatter, blur, noise, shutters, harmonization: the effects (None: off), each with its own ranges
            and probability. The defaults suit 64-128 px images of a pelvis: the dose, 2e4-2e5 photons per
            pixel, is about 450-4500 per mm^2 on 6.7 mm pixels (a 431 mm panel at 64 px); scatter
            kernels of 6-16 px are 40-110 mm there.
    """

    __pydantic_config__: ClassVar[dict] = {"extra": "forbid"}
    bone: Range = (0.8, 1.4)
    depth: Range = (3.0, 7.0)
    clip: Range = (0.0, 0.01)
    heel: HeelEffect | None = HeelEffect(strength=(0.0, 0.1))
    field: IntensifierField | None = IntensifierField(radius=(0.9, 1.4), vignetting=(0.0, 0.2))
    scatter: Scatter | None = Scatter(spr=(0.05, 0.3), sigma_px=(6.0, 16.0))
    blur: DetectorBlur | None = DetectorBlur(sigma_px=(0.0, 1.0))
    noise: QuantumNoise | None = QuantumNoise(dose=(2e4, 2e5), electronic_std=(0.0, 5.0))
    shutters: Shutters | None = Shutters(fraction=(0.0, 0.15), probability=0.5)
    harmonization: Harmonization | None = Harmonization()

    def __post_init__(self):
        check_range("Fluoroscope", "bone", self.bone, 0.0, 10.0)
        check_range("Fluoroscope", "depth", self.depth, 0.01, 50.0)
        check_range("Fluoroscope", "clip", self.clip, 0.0, 0.2)

    def sample(self, seed: int) -> FluoroDraw:
        """Every parameter of one image, from ``seed`` (each effect from a seed of its own)."""
        generator = torch.Generator().manual_seed(seed)
        uniform = lambda low, high: low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()  # noqa: E731
        bone, depth, clip = uniform(*self.bone), uniform(*self.depth), uniform(*self.clip)
        seeds = torch.randint(0, 2**31 - 1, (len(EFFECTS),), generator=generator).tolist()
        effects = {}
        for name, effect_seed in zip(EFFECTS, seeds, strict=True):
            effect = getattr(self, name)
            effects[name] = None if effect is None else effect.sample(effect_seed)
        return FluoroDraw(bone, depth, clip, effects)

    def image(self, tau: torch.Tensor, draw: FluoroDraw) -> torch.Tensor:
        """(..., H, W) in [0, 1]: the displayed image of optical depth ``tau``: the physical chain of
        ``fluoro_image``, harmonized, then windowed automatically to the in-field pixels' depths between the
        ``clip`` and ``1 - clip`` quantiles; blanked pixels are 1."""
        physical = {name: (getattr(self, name), draw.effects[name]) for name in EFFECTS[:5] if getattr(self, name)}
        physical["field"] = None if self.field is None else (_ShadeOnly(self.field), draw.effects["field"])
        depth = fluoro_image(tau, window=None, **physical)
        if self.harmonization is not None and draw.effects["harmonization"] is not None:
            depth = self.harmonization.apply(depth, draw.effects["harmonization"])
        for name in ("field", "shutters"):
            effect, effect_draw = getattr(self, name), draw.effects[name]
            if effect is not None and effect_draw is not None:
                depth = depth.masked_fill(effect.blanked(depth, effect_draw), math.nan)
        return auto_window(depth, draw.clip)

    def of_attenuation(self, tau_soft: torch.Tensor, tau_bone: torch.Tensor, draw: FluoroDraw) -> torch.Tensor:
        """(..., H, W) the image of the rendered soft-tissue and bone depths, bone scaled by the draw's multiplier."""
        return self.image(tau_soft + draw.bone * tau_bone, draw)

    def of_drr(self, drr: torch.Tensor, draw: FluoroDraw) -> torch.Tensor:
        """(..., H, W) the image of a [0, 1] DRR taken as optical depth ``drr * draw.depth`` (no bone multiplier:
        a stored DRR has no separate bone part)."""
        return self.image(drr * draw.depth, draw)


class _ShadeOnly:
    """An intensifier field that vignettes but blanks nothing (``Fluoroscope.image`` blanks after harmonizing)."""

    def __init__(self, field: IntensifierField):
        self.field = field

    def apply(self, counts: torch.Tensor, draw: Draw) -> torch.Tensor:
        return self.field.shade(counts, draw)

    def blanked(self, image: torch.Tensor, draw: Draw) -> torch.Tensor:
        return torch.zeros(image.shape[-2:], dtype=torch.bool, device=image.device)


def auto_window(depth: torch.Tensor, clip: float) -> torch.Tensor:
    """(..., H, W) depth (NaN where blanked) mapped to [0, 1] between the ``clip`` and ``1 - clip`` quantiles of
    each image's finite pixels; blanked pixels become 1 (no photons: as bright as the densest bone)."""
    flat = depth.reshape(-1, depth.shape[-2] * depth.shape[-1])
    out = torch.empty_like(flat)
    for index, pixels in enumerate(flat):
        finite = pixels[torch.isfinite(pixels)]
        if finite.numel() == 0:
            out[index] = 1.0
            continue
        low, high = torch.quantile(finite, torch.tensor([clip, 1 - clip], dtype=finite.dtype, device=finite.device))
        span = (high - low).clamp_min(1e-6)
        out[index] = torch.where(torch.isfinite(pixels), ((pixels - low) / span).clamp(0.0, 1.0), 1.0)
    return out.reshape(depth.shape)
