"""The pieces of a training run that are plain PyTorch: batches, epoch order, validation, divergence.

The training loop (``study/training/loop.py``) wires these together, in one process or across
Ray Train workers; everything here runs and is tested in one process.

Rows are held as numpy arrays (``image`` stays uint16, so a worker's share of a data set is
compact) and become a batch only when used: a dict of tensors ``image`` (B, 1, H, W) in [0, 1],
``landmarks_2d`` (B, N, 2) px, ``visible`` (B, N) bool, ``landmarks_3d`` (B, N, 3) mm and
``pose`` (B, 6), as ``losses`` expects (N: the landmark set's size; NaN for a landmark a subject lacks).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from components import heatmaps, metrics, registration
from components.augment import IntensityRanges, apply_intensity, sample_intensity
from components.fluoroscopy import Fluoroscope
from components.geometry import Camera
from components.heatmaps import Decoding

COLUMNS = ("image", "landmarks_2d", "visible", "landmarks_3d", "pose")
# What a run may select its best checkpoint by (and a sweep minimise): ``val_`` + a ``validation_metrics`` key.
SELECTION_METRICS = ("val_rmse_px", "val_rmse_soft_px", "val_mtre_mm")


def columns_of(rows) -> dict[str, np.ndarray]:
    """The training columns (``COLUMNS``) of a ``dataset.DRRRows``."""
    return {name: getattr(rows, name) for name in COLUMNS}


def row_count(rows: dict[str, np.ndarray]) -> int:
    return len(rows["image"])


def make_batch(
    rows: dict[str, np.ndarray],
    indices: np.ndarray,
    device: torch.device | str = "cpu",
    augment: IntensityRanges | None = None,
    augment_seeds: np.ndarray | None = None,
    randomize: Fluoroscope | None = None,
) -> dict[str, torch.Tensor]:
    """The batch of the rows at ``indices``. With ``randomize``, each image is first imaged by its seed's draw of
    that fluoroscope (domain randomization); with ``augment``, it then gets its seed's intensity change."""
    image = torch.from_numpy(rows["image"][indices].astype(np.float32) / 65535.0)[:, None]
    if augment is not None or randomize is not None:
        if augment_seeds is None or len(augment_seeds) != len(indices):
            raise ValueError("augmentation needs one seed per row")
        changed = []
        for one, seed in zip(image, augment_seeds):
            if randomize is not None:
                one = randomize.of_drr(one, randomize.sample(int(seed)))
            if augment is not None:
                one = apply_intensity(one, sample_intensity(int(seed), augment))
            changed.append(one)
        image = torch.stack(changed)
    return {
        "image": image.to(device),
        "landmarks_2d": torch.from_numpy(rows["landmarks_2d"][indices].astype(np.float32)).to(device),
        "visible": torch.from_numpy(rows["visible"][indices]).to(device),
        "landmarks_3d": torch.from_numpy(rows["landmarks_3d"][indices].astype(np.float64)).to(device),
        "pose": torch.from_numpy(rows["pose"][indices].astype(np.float64)).to(device),
    }


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int, steps: int | None = None) -> list[np.ndarray]:
    """The row indices of each batch of one epoch: a permutation drawn from (seed, epoch).

    The last, smaller batch is dropped when there is more than one batch (keeps DDP steps equal).
    ``steps`` cuts the epoch to at most that many batches.
    """
    if count < 1 or batch_size < 1:
        raise ValueError(f"need at least one row and a batch size >= 1, got {count} rows, batch size {batch_size}")
    order = np.random.default_rng([seed, epoch]).permutation(count)
    full = max(count // batch_size, 1)
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]
    return batches[:steps] if steps is not None else batches


def worker_share(batch: np.ndarray, rank: int, world_size: int) -> slice:
    """The slice of a (global) batch that DDP worker ``rank`` of ``world_size`` trains on: equal, contiguous parts.

    Every worker draws the same permutation (``epoch_batches``) and takes its part of each batch, so a
    run on ``world_size`` workers sees the same images per step as one process does.
    """
    if len(batch) % world_size:
        raise ValueError(f"a batch of {len(batch)} rows does not split evenly over {world_size} workers")
    size = len(batch) // world_size
    return slice(rank * size, (rank + 1) * size)


def augmentation_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """(B,) the augmentation seeds of the rows at ``indices`` in one epoch, from (seed, epoch, row): an image
    gets the same draw whatever its batch and however many workers share it."""
    return np.array(
        [np.random.SeedSequence([seed, epoch, int(row), 1]).generate_state(1)[0] >> 1 for row in indices],
        dtype=np.int64,
    )


class DivergenceGuard:
    """Tells when a loss has diverged: not finite, or running above ``factor`` times its start.

    The start is the median of the first ``window`` losses, and "running" is the median of the
    last ``window``: one spike (a registration of poor landmarks can be off by metres) is not
    divergence, a loss that stays high is.
    """

    def __init__(self, factor: float | None, window: int = 5):
        if factor is not None and not factor > 1:
            raise ValueError(f"the divergence factor must be > 1 (or None to check finiteness only), got {factor}")
        if window < 1:
            raise ValueError(f"the divergence window must be >= 1, got {window}")
        self.factor, self.window = factor, window
        self.reference: float | None = None
        self.recent: list[float] = []

    def diverged(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        self.recent = (self.recent + [loss])[-self.window :]
        if self.reference is None:
            if len(self.recent) == self.window:
                self.reference = abs(float(np.median(self.recent)))
            return False
        return (
            self.factor is not None
            and self.reference > 0
            and float(np.median(self.recent)) > self.factor * self.reference
        )


@dataclass
class Predictions:
    """What the model predicts for a set of rows: (B, N, 2) px landmarks, and (B, 6) poses
    registered from them (``pose`` from argmax, ``soft_pose`` from soft-argmax), NaN where unsolved."""

    argmax: torch.Tensor
    soft_argmax: torch.Tensor
    pose: torch.Tensor
    soft_pose: torch.Tensor | None = None


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    rows: dict[str, np.ndarray],
    camera: Camera,
    decoding: Decoding,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    min_landmarks: int = registration.MIN_LANDMARKS,
) -> Predictions:
    """Landmarks by argmax and by soft-argmax as ``decoding`` says (the model's, from its checkpoint or
    its training settings), and the poses registered from each's visible landmarks (a pose failure, NaN,
    with fewer than ``min_landmarks``).

    The network runs in batches of ``batch_size``; the registration then solves all rows at once (each
    sample's solve is independent of its batch-mates, and one batched solve costs about what one small
    batch does: 8x less time than batches of 16 for a 260-image split)."""
    was_training = model.training
    model.eval()
    argmax, soft = [], []
    for start in range(0, row_count(rows), batch_size):
        indices = np.arange(start, min(start + batch_size, row_count(rows)))
        logits = model(make_batch(rows, indices, device)["image"]).float()
        argmax.append(heatmaps.argmax(logits).cpu())
        soft.append(decoding.soft_argmax(logits).cpu())
    model.train(was_training)
    argmax, soft = torch.cat(argmax), torch.cat(soft)
    landmarks_3d = torch.from_numpy(rows["landmarks_3d"]).double()
    weights = torch.from_numpy(rows["visible"]).double()
    pose = registration.solve(landmarks_3d, argmax.double(), camera, weights, min_landmarks=min_landmarks).pose
    soft_pose = registration.solve(landmarks_3d, soft.double(), camera, weights, min_landmarks=min_landmarks).pose
    return Predictions(argmax, soft, pose, soft_pose)


def validation_metrics(predictions: Predictions, rows: dict[str, np.ndarray]) -> dict[str, float]:
    """RMSE (px) of both landmark estimates over the visible landmarks, and the pose errors.

    Keys: ``rmse_px`` (argmax, the paper's), ``rmse_soft_px``, ``rotation_deg`` and ``translation_mm``
    (medians over the solved images), ``mtre_mm`` (median) and ``pose_failures`` (images the
    registration could not solve).
    """
    truth = torch.from_numpy(rows["landmarks_2d"]).double()
    visible = torch.from_numpy(rows["visible"])
    pose = torch.from_numpy(rows["pose"]).double()
    solved = torch.isfinite(predictions.pose).all(-1)
    result = {
        "rmse_px": metrics.landmark_rmse(predictions.argmax.double(), truth, visible),
        "rmse_soft_px": metrics.landmark_rmse(predictions.soft_argmax.double(), truth, visible),
        "pose_failures": float((~solved).sum()),
    }
    if solved.any():
        estimate, reference = predictions.pose[solved].double(), pose[solved]
        landmarks_3d = torch.from_numpy(rows["landmarks_3d"][solved.numpy()]).double()
        result["rotation_deg"] = metrics.rotation_error_deg(estimate, reference).median().item()
        result["translation_mm"] = metrics.translation_error_mm(estimate, reference).median().item()
        result["mtre_mm"] = metrics.mean_target_registration_error_mm(estimate, reference, landmarks_3d).median().item()
    else:
        result |= {"rotation_deg": math.nan, "translation_mm": math.nan, "mtre_mm": math.nan}
    return result


def mean_positions(train_rows: dict[str, np.ndarray]) -> torch.Tensor:
    """(N, 2) px each landmark's mean position over the rows where it is visible; NaN for one never visible."""
    visible = torch.from_numpy(train_rows["visible"])[..., None]
    points = torch.from_numpy(train_rows["landmarks_2d"]).double()
    total = torch.where(visible, points, torch.zeros((), dtype=torch.float64)).sum(0)
    return total / visible.sum(0)  # 0 / 0: NaN, never a guessed position


def mean_position_rmse(train_rows: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> float:
    """RMSE (px) of always predicting each landmark's mean training position: the floor to beat."""
    truth = torch.from_numpy(rows["landmarks_2d"]).double()
    return metrics.landmark_rmse(mean_positions(train_rows).expand_as(truth), truth, torch.from_numpy(rows["visible"]))
