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
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Decoding:
    """How landmarks are read off a model's heatmaps: the soft-argmax temperature the model was
    trained with (argmax needs no setting). Every checkpoint stores it (``model.save_checkpoint``)."""

    temperature: float

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"the soft-argmax temperature must be > 0, got {self.temperature}")


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

    An invisible landmark gives an empty mask.
    """
    inside = squared_distances(landmarks_2d, height, width) <= radius**2
    return (inside & visible[..., None, None]).to(landmarks_2d.dtype)


def gaussian_targets(
    landmarks_2d: torch.Tensor, visible: torch.Tensor, height: int, width: int, sigma: float
) -> torch.Tensor:
    """(B, N, H, W) Gaussians of peak 1 and standard deviation ``sigma`` px; empty when invisible."""
    blob = torch.exp(-squared_distances(landmarks_2d, height, width) / (2 * sigma**2))
    return blob * visible[..., None, None].to(blob.dtype)


def soft_argmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, N, 2) differentiable expected pixel centre under ``softmax(logits / temperature)``."""
    batch, count, height, width = logits.shape
    weights = torch.softmax(logits.reshape(batch, count, -1).float() / temperature, -1).reshape(
        batch, count, height, width
    )
    u = (weights.sum(-2) * pixel_centers(width, weights.dtype, logits.device)).sum(-1)
    v = (weights.sum(-1) * pixel_centers(height, weights.dtype, logits.device)).sum(-1)
    return torch.stack([u, v], -1)


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) centre of the highest-scoring pixel of each heatmap (as the paper evaluates)."""
    batch, count, _, width = logits.shape
    index = logits.reshape(batch, count, -1).argmax(-1)
    return torch.stack([(index % width).float() + 0.5, (index // width).float() + 0.5], -1)
