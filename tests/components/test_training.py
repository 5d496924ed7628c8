import math

import numpy as np
import pytest
import torch

from components import geometry, training
from components.augment import IntensityRanges
from components.fluoroscopy import Fluoroscope
from components.geometry import Camera
from components.heatmaps import Decoding
from components.model import UNetSettings, make_unet


def make_rows(count=6, size=32, seed=0):
    generator = np.random.default_rng(seed)
    return {
        "image": generator.integers(0, 65535, (count, size, size), dtype=np.uint16),
        "landmarks_2d": generator.uniform(4, size - 4, (count, 8, 2)),
        "visible": np.ones((count, 8), dtype=bool),
        "landmarks_3d": generator.normal(0, 50, (count, 8, 3)),
        "pose": np.tile([0.0, 0.0, 0.0, 0.0, 800.0, 0.0], (count, 1)),
    }


def test_make_batch_scales_images_and_keeps_dtypes():
    rows = make_rows(3)
    batch = training.make_batch(rows, np.array([2, 0]))
    assert batch["image"].shape == (2, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert torch.allclose(batch["image"][0, 0], torch.from_numpy(rows["image"][2] / 65535.0).float())
    assert batch["landmarks_3d"].dtype == torch.float64 and batch["visible"].dtype == torch.bool


def test_augmented_batches_are_reproducible_from_their_seeds():
    rows = make_rows(3)
    seeds = training.augmentation_seeds(0, 1, np.arange(3))
    a = training.make_batch(rows, np.arange(3), augment=IntensityRanges(), augment_seeds=seeds)
    b = training.make_batch(rows, np.arange(3), augment=IntensityRanges(), augment_seeds=seeds)
    plain = training.make_batch(rows, np.arange(3))
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], plain["image"])
    assert torch.equal(a["landmarks_2d"], plain["landmarks_2d"])
    with pytest.raises(ValueError, match="one seed per row"):
        training.make_batch(rows, np.arange(3), augment=IntensityRanges())


def test_an_images_augmentation_seed_depends_on_seed_epoch_and_row_not_on_its_batch():
    seeds = training.augmentation_seeds(0, 1, np.array([5, 2, 9]))
    assert np.array_equal(training.augmentation_seeds(0, 1, np.array([9, 5])), seeds[[2, 0]])
    assert not np.array_equal(training.augmentation_seeds(0, 2, np.array([5, 2, 9])), seeds)
    assert not np.array_equal(training.augmentation_seeds(1, 1, np.array([5, 2, 9])), seeds)


def test_randomized_batches_are_fluoroscope_images_reproducible_from_their_seeds():
    rows = make_rows(3)
    seeds = training.augmentation_seeds(0, 1, np.arange(3))
    fluoroscope = Fluoroscope()
    a = training.make_batch(rows, np.arange(3), augment_seeds=seeds, randomize=fluoroscope)
    b = training.make_batch(rows, np.arange(3), augment_seeds=seeds, randomize=fluoroscope)
    assert torch.equal(a["image"], b["image"])
    drr = torch.from_numpy(rows["image"][1] / 65535.0).float()
    expected = fluoroscope.of_drr(drr, fluoroscope.sample(int(seeds[1])))
    assert torch.allclose(a["image"][1, 0], expected)
    assert a["image"].min() >= 0 and a["image"].max() <= 1
    with pytest.raises(ValueError, match="one seed per row"):
        training.make_batch(rows, np.arange(3), randomize=fluoroscope)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_worker_shares_tile_a_batch_in_order(world_size):
    batch = training.epoch_batches(40, 8, seed=3, epoch=1)[0]
    parts = [batch[training.worker_share(batch, rank, world_size)] for rank in range(world_size)]
    assert np.array_equal(np.concatenate(parts), batch) and {len(part) for part in parts} == {8 // world_size}


def test_a_batch_that_does_not_split_over_the_workers_is_refused():
    with pytest.raises(ValueError, match="6 rows does not split evenly over 4 workers"):
        training.worker_share(np.arange(6), 0, 4)


def test_epoch_batches_permute_by_epoch_and_drop_the_ragged_end():
    first = training.epoch_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in first] == [4, 4]
    assert len(set(np.concatenate(first))) == 8
    again = training.epoch_batches(10, 4, seed=0, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(training.epoch_batches(10, 4, seed=0, epoch=1)))
    assert [len(b) for b in training.epoch_batches(3, 4, 0, 0)] == [3]
    assert len(training.epoch_batches(40, 4, 0, 0, steps=2)) == 2
    with pytest.raises(ValueError, match="at least one row"):
        training.epoch_batches(0, 4, 0, 0)


@pytest.mark.parametrize(
    "losses, factor, expected",
    [
        ([1.0, 2.0, 3.0, 9.9, 50.0], 10.0, [False] * 5),  # reference: median(1, 2, 3) = 2
        ([1.0, 2.0, 3.0, 100.0, 1.0, 2.0], 10.0, [False] * 6),  # one spike is not divergence
        ([1.0, 2.0, 3.0, 30.0, 30.0], 10.0, [False, False, False, False, True]),  # a high median is
        ([1.0, math.nan], 10.0, [False, True]),
        ([math.inf], 10.0, [True]),
        ([1.0, 1.0, 1.0, 1e9, 1e9], None, [False] * 5),
    ],
)
def test_divergence_guard(losses, factor, expected):
    guard = training.DivergenceGuard(factor, window=3)
    assert [guard.diverged(loss) for loss in losses] == expected


def test_divergence_factor_must_exceed_one():
    with pytest.raises(ValueError, match="must be > 1"):
        training.DivergenceGuard(1.0)
    with pytest.raises(ValueError, match="window must be >= 1"):
        training.DivergenceGuard(10.0, window=0)


def test_perfect_predictions_have_zero_errors():
    camera = Camera(sdd=1020.0, height=64, width=64, delx=6.7, dely=6.7)
    rows = make_rows(4, size=64)
    pose = torch.tensor([[0.1, -0.05, 0.02, 5.0, 800.0, -3.0]] * 4, dtype=torch.float64)
    landmarks_3d = torch.from_numpy(rows["landmarks_3d"])
    rows["pose"] = pose.numpy()
    rows["landmarks_2d"] = geometry.project(landmarks_3d, pose, camera).numpy()
    truth = torch.from_numpy(rows["landmarks_2d"])
    solved = training.registration.solve(landmarks_3d, truth.double(), camera).pose
    result = training.validation_metrics(training.Predictions(truth, truth, solved), rows)
    assert result["rmse_px"] == 0 and result["rmse_soft_px"] == 0 and result["pose_failures"] == 0
    assert result["rotation_deg"] < 1e-3 and result["translation_mm"] < 1e-2 and result["mtre_mm"] < 1e-2


def test_mean_position_rmse_by_hand():
    train = make_rows(2)
    train["landmarks_2d"] = np.zeros((2, 8, 2))
    train["landmarks_2d"][1] = 2.0  # mean position: (1, 1)
    val = make_rows(1)
    val["landmarks_2d"] = np.full((1, 8, 2), 4.0)  # 3 px off in u and v
    assert training.mean_position_rmse(train, val) == pytest.approx(math.sqrt(18))


def test_mean_positions_leave_out_invisible_and_absent_landmarks():
    train = make_rows(3)
    train["landmarks_2d"][:, 0] = [[1.0, 1.0], [3.0, 5.0], [np.nan, np.nan]]  # absent in the third row
    train["visible"][2, 0] = False
    train["visible"][:, 1] = False  # never visible
    means = training.mean_positions(train)
    assert means[0].tolist() == [2.0, 3.0]
    assert torch.isnan(means[1]).all()  # never guessed
    assert torch.isfinite(means[2:]).all()


def test_the_mtre_of_a_subject_lacking_landmarks_is_over_the_ones_it_has():
    rows = make_rows(2, size=64)
    rows["landmarks_3d"][:, 3] = np.nan
    rows["visible"][:, 3] = False
    truth = torch.tensor([[0.1, -0.05, 0.02, 5.0, 800.0, -3.0]] * 2, dtype=torch.float64)
    rows["pose"] = truth.numpy()
    off = truth + torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0, 0.0], dtype=torch.float64)  # 2 mm off in x
    points = torch.from_numpy(rows["landmarks_2d"])
    result = training.validation_metrics(training.Predictions(points, points, off), rows)
    assert result["mtre_mm"] == pytest.approx(2.0) and result["pose_failures"] == 0


def test_predict_returns_both_estimates_and_a_pose():
    torch.manual_seed(0)
    camera = Camera(sdd=1020.0, height=32, width=32, delx=13.4, dely=13.4)
    predictions = training.predict(
        make_unet(UNetSettings(encoder_depth=3)), make_rows(3), camera, Decoding(1.0), batch_size=2
    )
    assert predictions.argmax.shape == predictions.soft_argmax.shape == (3, 8, 2)
    assert predictions.pose.shape == (3, 6)
    assert ((predictions.argmax % 1) == 0.5).all()
