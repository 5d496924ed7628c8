"""X-ray physics after the line integral: each effect does what it says, zero strength is the identity,
the same seed gives the same image, and a bad range is refused naming the setting."""

import dataclasses
import re

import pytest
import torch

from components.fluoroscopy import (
    WATER_MU,
    DetectorBlur,
    Draw,
    Fluoroscope,
    Harmonization,
    HeelEffect,
    IntensifierField,
    QuantumNoise,
    Scatter,
    Shutters,
    auto_window,
    fluoro_image,
    linear_attenuation,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def depth(device="cpu", size=64) -> torch.Tensor:
    """A smooth optical depth in [0, 1] (a bright blob on a ramp)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return (0.3 + 0.2 * x + 0.5 * torch.exp(-(x**2 + y**2) / 0.2)).clamp(0, 1).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_every_effect_at_zero_strength_is_the_identity(device):
    tau = depth(device)
    off = {
        "heel": (HeelEffect(), Draw({"strength": 0.0})),
        "field": (IntensifierField(), Draw({"radius": 10.0, "vignetting": 0.0})),
        "scatter": (Scatter(), Draw({"spr": 0.0, "sigma_px": 8.0})),
        "blur": (DetectorBlur(), Draw({"sigma_px": 0.0})),
        "shutters": (Shutters(), Draw({"left": 0.0, "right": 0.0, "top": 0.0, "bottom": 0.0})),
    }
    assert torch.allclose(fluoro_image(tau, **off), tau, atol=1e-5)
    assert torch.allclose(fluoro_image(tau), tau, atol=1e-5)  # no effect at all


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dose", [200.0, 2000.0])
def test_quantum_noise_has_the_variance_of_its_mean_at_the_set_dose(device, dose):
    counts = torch.full((256, 256), dose * 0.5, device=device, dtype=torch.float64)
    effect = QuantumNoise(dose=(dose, dose), electronic_std=(0.0, 0.0))
    noisy = effect.apply(counts, effect.sample(seed=3))
    assert noisy.mean().item() == pytest.approx(dose * 0.5, rel=0.01)
    assert noisy.var().item() == pytest.approx(noisy.mean().item(), rel=0.05)


def test_electronic_noise_adds_its_variance():
    counts = torch.full((256, 256), 400.0, dtype=torch.float64)
    effect = QuantumNoise(dose=(800.0, 800.0), electronic_std=(10.0, 10.0))
    noisy = effect.apply(counts, effect.sample(seed=4))
    assert noisy.var().item() == pytest.approx(400.0 + 100.0, rel=0.05)


@pytest.mark.parametrize("spr", [0.2, 1.0])
def test_scatter_adds_its_fraction_of_the_primary(spr):
    counts = 1000 * torch.exp(-depth(size=96).double())
    effect = Scatter(spr=(spr, spr), sigma_px=(12.0, 12.0))
    scattered = effect.apply(counts, effect.sample(seed=0))
    added = scattered - counts
    assert added.mean().item() == pytest.approx(spr * counts.mean().item(), rel=0.01)
    # low frequency: it fills in the dense blob at the centre, where the primary is darkest
    assert added[48, 48].item() > 1.2 * spr * counts[48, 48].item()


def test_a_shutter_blanks_exactly_its_region():
    tau = depth()
    shutters = Shutters()
    draw = Draw({"left": 0.25, "right": 0.0, "top": 0.125, "bottom": 0.0})
    image = fluoro_image(tau, shutters=(shutters, draw), blank=1.0)
    blanked = torch.zeros(64, 64, dtype=torch.bool)
    blanked[:, :16] = True
    blanked[:8, :] = True
    assert torch.equal(image[blanked], torch.ones(int(blanked.sum())))
    assert torch.allclose(image[~blanked], tau[~blanked], atol=1e-5)


def test_the_intensifier_field_blanks_outside_its_circle_and_darkens_towards_its_rim():
    tau = torch.zeros(64, 64)
    field = IntensifierField()
    image = fluoro_image(tau, field=(field, Draw({"radius": 0.8, "vignetting": 0.3})))
    assert image[0, 0] == 1.0 and image[32, 32] < 0.01  # a corner is outside, the centre sees the open beam
    assert 0.05 < image[32, 6] < 1.0  # near the rim: fewer photons, a higher optical depth


def test_the_heel_effect_tilts_the_beam_across_the_columns():
    counts = torch.full((8, 64), 1000.0)
    shaded = HeelEffect().apply(counts, Draw({"strength": 0.2}))
    assert shaded[0, 0] == pytest.approx(1000 * (1 + 0.2 * (1 - 1 / 64)), rel=1e-5)
    assert shaded.mean().item() == pytest.approx(1000.0, rel=1e-5)  # a tilt, not a change of dose


def test_detector_blur_keeps_the_mean_and_smooths():
    counts = torch.zeros(64, 64)
    counts[32, 32] = 1000.0
    blurred = DetectorBlur(sigma_px=(1.5, 1.5)).apply(counts, Draw({"sigma_px": 1.5}))
    assert blurred.sum().item() == pytest.approx(1000.0, rel=1e-4) and blurred.max() < 100


def test_the_same_seed_gives_the_same_image_and_another_seed_another():
    tau = depth()
    effects = {
        "heel": HeelEffect(),
        "field": IntensifierField(),
        "scatter": Scatter(),
        "blur": DetectorBlur(),
        "noise": QuantumNoise(),
        "shutters": Shutters(),
    }

    def image(seed):
        return fluoro_image(tau, **{name: (e, e.sample(seed + i)) for i, (name, e) in enumerate(effects.items())})

    assert torch.equal(image(7), image(7))
    assert not torch.equal(image(7), image(8))


def test_an_effect_with_probability_zero_is_never_drawn_and_one_always():
    assert all(Scatter(probability=0.0).sample(seed) is None for seed in range(20))
    assert all(Scatter(probability=1.0).sample(seed) is not None for seed in range(20))
    drawn = [QuantumNoise(dose=(100.0, 900.0)).sample(seed).values["dose"] for seed in range(50)]
    assert min(drawn) >= 100.0 and max(drawn) <= 900.0 and max(drawn) - min(drawn) > 400


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: QuantumNoise(dose=(-5.0, 100.0)), "QuantumNoise.dose must be a range with 1 <= low"),
        (lambda: QuantumNoise(electronic_std=(-1.0, 1.0)), "QuantumNoise.electronic_std"),
        (lambda: Scatter(spr=(0.5, 0.2)), "Scatter.spr must be a range"),
        (lambda: Scatter(probability=1.5), "Scatter.probability must be in [0, 1]"),
        (lambda: Shutters(fraction=(0.0, 0.6)), "Shutters.fraction must be a range with 0 <= low <= high <= 0.45"),
        (lambda: HeelEffect(strength=(0.0, float("inf"))), "HeelEffect.strength"),
        (lambda: IntensifierField(vignetting=(0.0, 2.0)), "IntensifierField.vignetting"),
        (lambda: DetectorBlur(sigma_px=(float("nan"), 1.0)), "DetectorBlur.sigma_px"),
        (lambda: Harmonization(strength=(0.0, 1.5)), "Harmonization.strength"),
        (lambda: Fluoroscope(bone=(1.5, 1.0)), "Fluoroscope.bone must be a range"),
        (lambda: Fluoroscope(depth=(0.0, 5.0)), "Fluoroscope.depth must be a range with 0.01 <= low"),
        (lambda: Fluoroscope(clip=(0.0, 0.5)), "Fluoroscope.clip"),
        (lambda: fluoro_image(depth(), window=(1.0, 1.0)), "window must be (low, high) with low < high"),
        (lambda: fluoro_image(depth(), dose=0.0), "dose must be a positive number"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_linear_attenuation_follows_the_hounsfield_scale_and_splits_off_bone():
    hu = torch.tensor([-1000.0, -100.0, 0.0, 100.0, 1100.0, 3000.0])
    soft, bone = linear_attenuation(hu)
    assert torch.allclose(soft + bone, WATER_MU * (1 + hu / 1000))  # mu = mu_water (1 + HU / 1000)
    assert soft[0] == 0 and torch.all(bone[:4] == 0) and bone[4] == pytest.approx(WATER_MU * 1.0)
    assert torch.all(soft[3:] == soft[3])  # above the split, all of the excess is bone


def test_a_fluoroscope_draw_is_reproducible_and_its_bone_multiplier_scales_the_bone_only():
    fluoroscope = Fluoroscope(noise=None, scatter=None, harmonization=None, shutters=None, field=None, heel=None)
    soft, bone = depth(), torch.zeros(64, 64)
    bone[20:30, 20:30] = 0.5
    draw = fluoroscope.sample(3)
    assert fluoroscope.sample(3) == draw and fluoroscope.sample(4) != draw
    heavier = dataclasses.replace(draw, bone=2 * draw.bone)
    same_soft = fluoroscope.of_attenuation(soft, torch.zeros_like(bone), draw)
    assert torch.equal(same_soft, fluoroscope.of_attenuation(soft, torch.zeros_like(bone), heavier))
    light, heavy = fluoroscope.of_attenuation(soft, bone, draw), fluoroscope.of_attenuation(soft, bone, heavier)

    def contrast(image):  # the bone against the soft tissue just around it
        return (image[22:28, 22:28].mean() - image[14:36, 14:36].mean()).item()

    assert contrast(heavy) > 1.3 * contrast(light) > 0


def test_a_fluoroscope_image_lies_in_0_1_with_its_blanked_pixels_at_1():
    fluoroscope = Fluoroscope(shutters=Shutters(fraction=(0.1, 0.1), probability=1.0))
    image = fluoroscope.of_drr(depth(), fluoroscope.sample(0))
    assert image.min() >= 0 and image.max() <= 1
    assert torch.all(image[:, :6] == 1) and torch.all(image[:6, :] == 1)  # 10% of 64 px behind each shutter
    assert image[20:44, 20:44].std() > 0.05  # the anatomy is still there


def test_harmonization_at_zero_strength_is_the_identity_and_flattens_slow_gradients():
    tau = depth()
    assert torch.equal(Harmonization().apply(tau, Draw({"strength": 0.0, "sigma_px": 8.0})), tau)
    ramp = torch.linspace(0, 4, 64).expand(64, 64)
    flattened = Harmonization().apply(ramp, Draw({"strength": 0.9, "sigma_px": 8.0}))
    assert (flattened[:, 40] - flattened[:, 20]).mean() < 0.2 * (ramp[:, 40] - ramp[:, 20]).mean()


def test_the_auto_window_spans_the_finite_pixels_and_blanks_nan():
    values = torch.linspace(2.0, 5.0, 100).reshape(10, 10)
    values[0, 0] = float("nan")
    windowed = auto_window(values, clip=0.0)
    assert windowed[0, 0] == 1 and windowed[0, 1] == 0 and windowed[-1, -1] == pytest.approx(1.0)
