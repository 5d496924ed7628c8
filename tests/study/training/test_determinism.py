"""Same config and seed, same numbers: two trainings of one config give bit-identical weights and losses on CPU
(in process and on Ray Train), whatever order Ray Data streams the rows in; another seed gives other weights."""

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from components import training
from components.model import load_checkpoint, weights_fingerprint
from study.config import StudyConfig
from study.training.data import ray_datasets, split_columns
from study.training.driver import train

# 2 epochs of 2 steps: enough to compare the weights and the per-epoch losses of two runs
TINY = {"phases": [{"losses": {"bce": 1.0}, "epochs": 2, "steps_per_epoch": 2, "learning_rate": 0.003}]}


def tiny_config(train_study, storage, seed=None) -> StudyConfig:
    """The training tests' config with strategy ``tiny``, runs in ``storage``, one Ray Train worker."""
    config, _ = train_study
    raw = config.model_dump(mode="json")
    raw["train"] |= {"storage": str(storage), "workers": 1, "seed": seed}
    raw["train"]["strategies"]["tiny"] = TINY
    return StudyConfig.model_validate(raw)


def trained(config, data, name, launcher) -> tuple[str, list[float]]:
    """(fingerprint of the final checkpoint's weights, train_loss per epoch) of a fresh run."""
    result = train(config, "tiny", data, name=name, launcher=launcher)
    assert result.status == "finished" and result.epochs == 2
    history = MlflowClient(config.tracking.uri).get_metric_history(result.run_id, "train_loss")
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    return weights_fingerprint(load_checkpoint(result.last_checkpoint)["model"]), losses


@pytest.mark.slow
def test_two_runs_in_process_train_the_same_weights_and_another_seed_does_not(train_study, tmp_path):
    _, data = train_study
    first = trained(tiny_config(train_study, tmp_path / "a"), data, "tiny-a", "process")
    second = trained(tiny_config(train_study, tmp_path / "b"), data, "tiny-b", "process")
    reseeded = trained(tiny_config(train_study, tmp_path / "c", seed=11), data, "tiny-c", "process")
    assert first == second and len(first[1]) == 2
    assert reseeded[0] != first[0] and reseeded[1] != first[1]
    assert not torch.are_deterministic_algorithms_enabled(), "the loop left the process in deterministic mode"


@pytest.mark.slow
def test_two_runs_on_ray_train_train_the_same_weights(train_study, tmp_path):
    _, data = train_study
    first = trained(tiny_config(train_study, tmp_path / "a"), data, "tiny-ray-a", "ray_train")
    second = trained(tiny_config(train_study, tmp_path / "b"), data, "tiny-ray-b", "ray_train")
    assert first == second and len(first[1]) == 2


@pytest.mark.slow
def test_rows_from_ray_data_come_in_the_data_sets_order_however_they_stream(train_study):
    _, data = train_study
    for split, dataset in ray_datasets(data).items():
        expected = split_columns(data, split)
        for streamed in (dataset, dataset.randomize_block_order(seed=1), dataset.random_shuffle(seed=2)):
            rows = training.collect_rows(streamed.iter_batches(batch_size=5, batch_format="numpy"), training.ROW_INDEX)
            assert rows.keys() == expected.keys()
            for name, column in expected.items():
                assert np.array_equal(rows[name], column), (split, name)


def some_rows(count=7):
    generator = np.random.default_rng(0)
    return {
        "image": generator.integers(0, 65535, (count, 4, 4), dtype=np.uint16),
        "landmarks_2d": generator.uniform(0, 4, (count, 8, 2)),
        "visible": generator.uniform(size=(count, 8)) > 0.3,
        "landmarks_3d": generator.normal(0, 50, (count, 8, 3)),
        "pose": generator.normal(0, 1, (count, 6)),
        training.ROW_INDEX: np.arange(count),
    }


def test_collected_rows_do_not_depend_on_the_order_of_the_batches():
    rows = some_rows()
    expected = {name: rows[name] for name in training.COLUMNS}
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(rows["image"]))
        shuffled = {name: column[order] for name, column in rows.items()}
        batches = [{name: column[i : i + 3] for name, column in shuffled.items()} for i in range(0, 7, 3)]
        batches.reverse()
        collected = training.collect_rows(batches, training.ROW_INDEX)
        assert collected.keys() == expected.keys()
        for name, column in expected.items():
            assert np.array_equal(collected[name], column), name


def test_collecting_the_same_row_twice_is_an_error():
    rows = some_rows(3)
    with pytest.raises(ValueError, match="the same row arrived twice"):
        training.collect_rows([rows, rows], training.ROW_INDEX)
    with pytest.raises(ValueError, match="lack the column"):
        training.collect_rows([{name: rows[name] for name in training.COLUMNS}], training.ROW_INDEX)
