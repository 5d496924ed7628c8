import math

import pytest
import torch

from components import heatmaps


def test_disk_target_covers_pixel_centres_within_the_radius():
    landmarks = torch.tensor([[[5.0, 3.0], [1.0, 1.0]]])
    target = heatmaps.disk_targets(landmarks, torch.tensor([[True, False]]), 8, 10, radius=1.0)
    assert target.shape == (1, 2, 8, 10)
    # centres within 1 px of (5, 3): pixels (row, col) (2, 4), (2, 5), (3, 4), (3, 5) at distance 0.707
    assert target[0, 0].nonzero().tolist() == [[2, 4], [2, 5], [3, 4], [3, 5]]
    assert target[0, 1].sum() == 0  # invisible: empty


def test_gaussian_target_peaks_at_the_landmark():
    target = heatmaps.gaussian_targets(torch.tensor([[[4.5, 2.5]]]), torch.tensor([[True]]), 6, 9, sigma=1.5)
    assert target[0, 0, 2, 4] == 1.0 and target[0, 0, 2, 5] == pytest.approx(math.exp(-1 / 4.5))


@pytest.mark.parametrize("target", [heatmaps.disk_targets, heatmaps.gaussian_targets])
def test_a_landmark_the_subject_lacks_has_an_empty_target(target):
    landmarks = torch.tensor([[[4.5, 2.5], [math.nan, math.nan]]])  # the second is absent (NaN), never visible
    maps = target(landmarks, torch.tensor([[True, False]]), 6, 9, 1.5)
    assert torch.isfinite(maps).all() and maps[0, 1].sum() == 0 and maps[0, 0].sum() > 0


def test_argmax_uses_pixel_centres():
    logits = torch.zeros(1, 1, 5, 7)
    logits[0, 0, 3, 6] = 1.0
    assert heatmaps.argmax(logits).tolist() == [[[6.5, 3.5]]]


def test_soft_argmax_at_low_temperature_equals_argmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 32, 40, generator=generator)
    logits[:, :, 10, 20] += 10.0  # a clear peak
    assert torch.allclose(heatmaps.soft_argmax(logits, temperature=0.05), heatmaps.argmax(logits), atol=1e-4)


@pytest.mark.parametrize("center", [(20.3, 11.7), (33.77, 40.12), (8.5, 9.5)])
def test_soft_argmax_of_an_off_grid_gaussian_blob(center):
    landmarks = torch.tensor([[center]], dtype=torch.float32)
    log_blob = -heatmaps.squared_distances(landmarks, 64, 48) / (2 * 2.0**2)
    assert torch.allclose(heatmaps.soft_argmax(log_blob, temperature=1.0), landmarks, atol=0.05)


def test_soft_argmax_is_differentiable():
    logits = torch.randn(1, 1, 16, 16, requires_grad=True)
    heatmaps.soft_argmax(logits, temperature=2.0).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_decoding_validates_and_decodes_as_soft_argmax():
    with pytest.raises(ValueError, match="soft-argmax input"):
        heatmaps.Decoding(1.0, "softmax")
    with pytest.raises(ValueError, match="soft-argmax input"):
        heatmaps.soft_argmax(torch.zeros(1, 1, 4, 4), 1.0, "heatmap")
    logits = torch.randn(2, 8, 16, 12, generator=torch.Generator().manual_seed(1))
    decoding = heatmaps.Decoding(0.3, "probabilities")
    assert decoding == heatmaps.Decoding(0.3, "probabilities") and heatmaps.Decoding(0.3).input == "logits"
    assert torch.equal(decoding.soft_argmax(logits), heatmaps.soft_argmax(logits, 0.3, "probabilities"))


def test_soft_argmax_of_probabilities_finds_a_sharp_peak_at_a_low_temperature():
    # sigmoid: 1 at the peak, 0 elsewhere (contrast d = 1); 64 * 64 * exp(-1 / 0.05) ~ 1e-5 of the weight is off it.
    logits = torch.full((2, 8, 64, 64), -12.0)
    logits[:, :, 50, 9] = 12.0
    estimate = heatmaps.soft_argmax(logits, 0.05, "probabilities")
    assert torch.allclose(estimate, heatmaps.argmax(logits), atol=1e-3)
    logits.requires_grad_()
    heatmaps.soft_argmax(logits * 0.2, 0.05, "probabilities").sum().backward()  # finite gradients, not saturated
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_probabilities_pull_the_estimate_to_the_image_centre_more_than_logits_at_the_same_temperature():
    # One pixel at logit 6 (probability 0.9975) on a background at -6 (0.0025), T = 1, 32 x 32 px.
    size, temperature = 32, 1.0
    logits = torch.full((1, 1, size, size), -6.0)
    logits[0, 0, 4, 28] = 6.0  # the pixel centred at (28.5, 4.5); the image centre is (16, 16)
    peak = torch.tensor([28.5, 4.5])
    centre = torch.tensor([16.0, 16.0])

    def expected(peak_score: float, background_score: float) -> torch.Tensor:
        # weights exp(score / T): the background averages to the centre, the peak sits at ``peak``
        w_peak, w_background = math.exp(peak_score / temperature), math.exp(background_score / temperature)
        background = size * size - 1
        total = w_peak + background * w_background
        return (w_peak * peak + w_background * (size * size * centre - peak)) / total

    from_logits = heatmaps.soft_argmax(logits, temperature, "logits")[0, 0]
    from_probabilities = heatmaps.soft_argmax(logits, temperature, "probabilities")[0, 0]
    assert torch.allclose(from_logits, expected(6.0, -6.0), atol=1e-4)
    sigmoid = torch.sigmoid(torch.tensor([6.0, -6.0])).tolist()
    assert torch.allclose(from_probabilities, expected(*sigmoid), atol=1e-4)
    pull_logits = (from_logits - peak).norm() / (centre - peak).norm()
    pull_probabilities = (from_probabilities - peak).norm() / (centre - peak).norm()
    # The estimate moves N w_background / total of the way to the centre: logits 1024 e^-6 / (e^6 + 1023 e^-6)
    # = 0.6%; probabilities (scores 0.9975 and 0.0025 at T = 1: an almost uniform softmax) 99.8%.
    assert pull_logits.item() == pytest.approx(0.006, abs=0.001)
    assert pull_probabilities.item() == pytest.approx(0.998, abs=0.001)
