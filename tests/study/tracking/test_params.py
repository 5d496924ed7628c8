"""The parameters a run logs: flat, scalar, and different where the strategies differ."""

import pytest

from study.config import load_config
from study.sweeps.space import find_search_space, load_search_space
from study.tracking.params import Tuned, param_name, run_params, study_params


@pytest.mark.parametrize(
    "path, name",
    [
        ("train.strategies.finetune.phases.0.learning_rate", "phase0.lr"),
        ("train.strategies.finetune.phases.1.losses.pose", "phase1.loss.pose"),
        ("train.strategies.baseline.phases.0.epochs", "phase0.epochs"),
        ("train.loss.temperature", "loss.temperature"),
        ("train.model.encoder", "model.encoder"),
        ("train.seed", "seed"),
        ("data.image_size", "data.image_size"),
    ],
)
def test_config_paths_get_short_parameter_names(path, name):
    assert param_name(path) == name


def test_every_parameter_is_a_flat_scalar_and_the_config_is_not_dumped_whole():
    config = load_config("demo")
    params = run_params(config, "finetune", "baseline")
    assert all(isinstance(value, str) and "{" not in value and "[" not in value for value in params.values())
    assert not any(key.startswith("train.strategies") for key in params)
    assert params["data.poses.rotation_deg"] == "15.0,15.0,15.0"
    assert params["data.image_size"] == str(config.data.image_size)
    assert params["loss.temperature"] == str(config.train.loss.temperature)
    assert len(params) < 70  # the whole config flattened has hundreds


def test_strategies_differ_in_their_own_parameters():
    config = load_config("demo")
    baseline, finetune = run_params(config, "baseline", None), run_params(config, "finetune", "baseline")
    differing = {key for key in baseline | finetune if baseline.get(key) != finetune.get(key)}
    assert {"strategy", "init", "phase0.loss.bce", "phase0.loss.pose", "phase0.epochs", "phase0.lr"} <= differing
    assert differing <= {"strategy", "init"} | {key for key in differing if key.startswith("phase")}
    assert baseline["init"] == "random" and finetune["init"] == "baseline"
    phase = config.train.strategies["finetune"].phases[0]
    assert finetune["phase0.loss.pose"] == str(phase.losses["pose"]) and baseline["phase0.loss.pose"] == "0.0"


def test_a_trial_logs_its_tuned_values_under_the_space_names_in_place_of_their_paths():
    config = load_config("demo")
    space = load_search_space(find_search_space("finetune"), config)
    values = {"pose_weight": 0.25, "temperature": 0.4, "ft_epochs": 3, "ft_lr": 2e-4}
    trial, strategy = space.trial_config(config, values)
    params = run_params(trial, strategy, "baseline", Tuned(values, space.paths(), "t01-abc"))
    assert {key: params[key] for key in values} == {
        "pose_weight": "0.25",
        "temperature": "0.4",
        "ft_epochs": "3",
        "ft_lr": "0.0002",
    }
    assert not {"phase0.loss.pose", "loss.temperature", "phase0.epochs", "phase0.lr"} & set(params)
    assert params["phase0.loss.bce"] == "1.0"  # the space's fixed BCE term: not tuned, so under its own name


def test_the_study_parameters_name_the_data_and_training_seed():
    config = load_config("demo", ["train.seed=5"])
    params = study_params(config)
    assert params["seed"] == "5" and params["data.cohort.kind"] == "phantom" and "strategy" not in params
    assert params["data.landmarks"] == "paper" and params["data.landmarks.min_for_registration"] == "4"
    deepfluoro = study_params(load_config("demo", ["data.landmarks={name: deepfluoro, min_for_registration: 6}"]))
    assert deepfluoro["data.landmarks"] == "deepfluoro" and deepfluoro["data.landmarks.min_for_registration"] == "6"
