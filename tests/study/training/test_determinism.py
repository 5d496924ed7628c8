"""Same config and seed, same numbers: two trainings of one config give bit-identical weights and losses on CPU
in process; another seed gives other weights. On Ray Train, ``training/test_driver.py`` checks that a run killed
and resumed ends at the very weights of the same run uninterrupted."""

import pytest
import torch
from mlflow.tracking import MlflowClient

from components.model import load_checkpoint, weights_fingerprint
from study.config import StudyConfig
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
