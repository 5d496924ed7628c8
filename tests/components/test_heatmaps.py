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
