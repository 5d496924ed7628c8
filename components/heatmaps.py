"""Heatmap targets from 2D landmarks, and landmarks back from heatmaps (soft-argmax, argmax).

Everything uses the pixel convention of docs/architecture.md: ``(u, v)`` = (column, row) with the origin at the
top-left corner of the image, so the centre of pixel ``[r, c]`` is ``(c + 0.5, r + 0.5)``.

Soft-argmax and its temperature: ``softmax(logits / T)`` over the H*W pixels, then the expected
pixel centre. A background pixel whose logit lies ``d`` below the peak's carries
``exp(-d / T)`` of the peak's weight, and there are about ``H * W`` of them, so the estimate stays
near the peak only while ``H * W * exp(-d / T) << 1``: ``T < d / ln(H * W)``. The temperature
therefore has to shrink (or the logits' contrast grow) as the heatmap grows: ln(H*W) is 9.7 at
128 px and 11.1 at 256 px. A low T approaches argmax; a higher T averages over the blob, which
is what makes the estimate sub-pixel and differentiable.

The soft-argmax reads either the logits (``input="logits"``, the default) or the sigmoid
probabilities (``input="probabilities"``: ``softmax(sigmoid(logits) / T)``, what the paper's lab's
public code is reported to do; not verified here). Probabilities lie in 0..1, so their contrast is
``d <= 1`` whatever the network learns: the estimate stays near the peak only for
``T < 1 / ln(H * W)``, 0.09 at 256 px (0.11 at 96 px), and in practice lower (a peak below 1, a
background above 0). With about 20 pixels at the peak's probability (a disk of radius 2.5 px),
``T = 0.05`` leaves the 65536 background pixels of a 256 px heatmap about 1e-5 of the weight at
d = 1 and 0.3% at d = 0.7; T = 1, fine for logits, makes that softmax almost uniform, i.e. the
image centre. A temperature is therefore only meaningful together with its input.
"""

from dataclasses import dataclass
from typing import Literal

import torch

SoftArgmaxInput = Literal["logits", "probabilities"]
SOFT_ARGMAX_INPUTS = ("logits", "probabilities")


@dataclass(frozen=True)
class Decoding:
    """How landmarks are read off a model's heatmaps: the soft-argmax temperature the model was
    trained with and what it is applied to, ``input`` "logits" or "probabilities" (argmax needs no
    setting). Every checkpoint stores it (``model.save_checkpoint``)."""

    temperature: float
    input: SoftArgmaxInput = "logits"

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"the soft-argmax temperature must be > 0, got {self.temperature}")
        if self.input not in SOFT_ARGMAX_INPUTS:
            raise ValueError(f"the soft-argmax input must be one of {SOFT_ARGMAX_INPUTS}, got {self.input!r}")

    def soft_argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) soft-argmax landmarks of (B, N, H, W) logits, decoded this way."""
        return soft_argmax(logits, self.temperature, self.input)


def pixel_centers(size: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(size,) pixel-centre coordinates 0.5, 1.5, ..."""
    return torch.arange(size, dtype=dtype, device=device) + 0.5


def squared_distances(landmarks_2d: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, N, H, W) squared pixel distance of every pixel centre to each (B, N, 2) landmark."""
    u = pixel_centers(width, landmarks_2d.dtype, landmarks_2d.device)
    v = pixel_centers(height, landmarks_2d.dtype, landmarks_2d.device)
    du = u - landmarks_2d[..., 0, None]
    dv = v - landmarks_2d[..., 1, None]
    return dv[..., :, None] ** 2 + du[..., None, :] ** 2


def disk_targets(
    landmarks_2d: torch.Tensor, visible: torch.Tensor, height: int, width: int, radius: float
) -> torch.Tensor:
    """(B, N, H, W) binary masks: 1 on pixels whose centre lies within ``radius`` px (the paper's BCE masks).

    An invisible landmark (an absent, NaN, one included) gives an empty mask.
    """
    inside = squared_distances(landmarks_2d, height, width) <= radius**2
    return (inside & visible[..., None, None]).to(landmarks_2d.dtype)


def gaussian_targets(
    landmarks_2d: torch.Tensor, visible: torch.Tensor, height: int, width: int, sigma: float
) -> torch.Tensor:
    """(B, N, H, W) Gaussians of peak 1 and standard deviation ``sigma`` px; empty when invisible (an absent, NaN,
    landmark included)."""
    blob = torch.exp(-squared_distances(landmarks_2d, height, width) / (2 * sigma**2))
    return torch.where(visible[..., None, None], blob, torch.zeros((), dtype=blob.dtype, device=blob.device))


def soft_argmax(logits: torch.Tensor, temperature: float, input: SoftArgmaxInput = "logits") -> torch.Tensor:
    """(B, N, 2) differentiable expected pixel centre under ``softmax(logits / temperature)``, or under
    ``softmax(sigmoid(logits) / temperature)`` with ``input="probabilities"`` (see the module's note on T)."""
    if input not in SOFT_ARGMAX_INPUTS:
        raise ValueError(f"the soft-argmax input must be one of {SOFT_ARGMAX_INPUTS}, got {input!r}")
    batch, count, height, width = logits.shape
    scores = logits.reshape(batch, count, -1).float()
    if input == "probabilities":
        scores = torch.sigmoid(scores)
    weights = torch.softmax(scores / temperature, -1).reshape(batch, count, height, width)
    u = (weights.sum(-2) * pixel_centers(width, weights.dtype, logits.device)).sum(-1)
    v = (weights.sum(-1) * pixel_centers(height, weights.dtype, logits.device)).sum(-1)
    return torch.stack([u, v], -1)


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) centre of the highest-scoring pixel of each heatmap (as the paper evaluates)."""
    batch, count, _, width = logits.shape
    index = logits.reshape(batch, count, -1).argmax(-1)
    return torch.stack([(index % width).float() + 0.5, (index // width).float() + 0.5], -1)
