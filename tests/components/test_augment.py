import pytest
import torch

from components.augment import IntensityParams, IntensityRanges, apply_intensity, sample_intensity


def image():
    return torch.linspace(0.0, 1.0, 64 * 64).reshape(1, 64, 64)


def test_same_seed_same_augmentation():
    assert sample_intensity(3) == sample_intensity(3)
    assert torch.equal(apply_intensity(image(), sample_intensity(3)), apply_intensity(image(), sample_intensity(3)))
    assert sample_intensity(3) != sample_intensity(4)


def test_draws_stay_in_their_ranges():
    ranges = IntensityRanges(contrast=(0.9, 1.1), gamma=(0.8, 1.2), noise_std=(0.0, 0.01))
    for seed in range(50):
        params = sample_intensity(seed, ranges)
        assert 0.9 <= params.contrast <= 1.1 and 0.8 <= params.gamma <= 1.2 and 0.0 <= params.noise_std <= 0.01


def test_identity_parameters_change_nothing():
    assert torch.allclose(apply_intensity(image(), IntensityParams()), image())


def test_each_parameter_does_what_it_says():
    flat = image()
    gamma = apply_intensity(flat, IntensityParams(gamma=2.0))
    assert torch.allclose(gamma, flat**2)
    contrast = apply_intensity(
        torch.full((1, 4, 4), 0.5) + torch.tensor([0.1, -0.1]).repeat(8).reshape(1, 4, 4), IntensityParams(contrast=2.0)
    )
    assert torch.allclose(contrast.unique(), torch.tensor([0.3, 0.7]))
    noisy = apply_intensity(torch.full((1, 64, 64), 0.5), IntensityParams(noise_std=0.05, noise_seed=1))
    assert noisy.std().item() == pytest.approx(0.05, rel=0.1) and noisy.min() >= 0 and noisy.max() <= 1


@pytest.mark.parametrize("field, value", [("contrast", (0.0, 1.0)), ("gamma", (1.2, 1.1)), ("noise_std", (-0.1, 0.1))])
def test_bad_ranges_are_refused(field, value):
    with pytest.raises(ValueError, match=f"IntensityRanges.{field}"):
        IntensityRanges(**{field: value})
