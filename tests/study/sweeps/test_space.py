"""Search spaces: the shipped ones validate against both presets; bad ones fail naming the file and parameter."""

from pathlib import Path

import pytest

from study.config import SPACES_DIR, ConfigError, load_config
from study.sweeps.space import find_search_space, load_search_space

SPACES = sorted(SPACES_DIR.glob("*.yaml"))


def write_space(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_the_three_spaces_ship():
    assert {path.stem for path in SPACES} >= {"finetune", "composite", "strategy"}


@pytest.mark.parametrize("preset", ["demo", "paper"])
@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_shipped_spaces_validate_against_the_presets(path, preset):
    config = load_config(preset)
    space = load_search_space(path, config)
    assert space.parameters
    for strategy in space.strategies(config):
        assert strategy in config.train.strategies


def test_a_trial_config_carries_the_sampled_values(tmp_path):
    config = load_config("demo")
    space = load_search_space(find_search_space("finetune"), config)
    values = {
        "pose_weight": 0.25,
        "temperature": 0.4,
        "ft_epochs": 3,
        "ft_lr": 2e-4,
    }
    trial, strategy = space.trial_config(config, values)
    phase = trial.train.strategies["finetune"].phases[0]
    assert strategy == "finetune"
    assert phase.losses == {"bce": 1.0, "pose": 0.25}  # the fixed BCE term, then the sampled weight
    assert (phase.epochs, phase.learning_rate, trial.train.loss.temperature) == (3, 2e-4, 0.4)
    assert trial.train.selection_metric == "val_rmse_soft_px"
    assert trial.train.strategies["baseline"] == config.train.strategies["baseline"]  # the shared start is untouched
    assert config.train.loss.temperature == 1.0  # the base config is not modified


def test_the_strategy_parameter_picks_the_strategy():
    config = load_config("demo")
    space = load_search_space(find_search_space("strategy"), config)
    trial, strategy = space.trial_config(config, {"strategy": "composite"})
    assert strategy == "composite" and trial.train == config.train.model_copy(
        update={"selection_metric": "val_rmse_px"}
    )
    optuna_space = space.distributions()
    assert optuna_space["strategy"].choices == ("baseline", "composite", "pose_only", "finetune")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "parameters: {x: {path: train.loss.temprature, distribution: uniform, low: 0.1, high: 1}}",
            "parameter 'x': unknown config path 'train.loss.temprature' (no 'temprature')",
        ),
        (
            "parameters: {x: {path: train.strategies.finetune.phases.3.epochs, distribution: int, low: 1, high: 2}}",
            "unknown config path 'train.strategies.finetune.phases.3.epochs' (no '3')",
        ),
        (
            "parameters: {x: {path: train.loss.temperature, distribution: uniform, low: 2.0, high: 1.0}}",
            "empty range: low 2.0 is not below high 1.0",
        ),
        ("parameters: {x: {path: train.loss.temperature, distribution: uniform, low: 1.0, high: 1.0}}", "empty range"),
        (
            "parameters: {x: {path: train.loss.temperature, distribution: loguniform, low: 0.0, high: 1.0}}",
            "loguniform distribution needs low > 0",
        ),
        (
            "parameters: {x: {path: train.loss.temperature, distribution: int, low: 1, high: 3}}",
            "is the float 1.0 in the config; use uniform or loguniform",
        ),
        (
            "parameters: {x: {path: train.batch_size, distribution: uniform, low: 2, high: 8}}",
            "is the integer 16 in the config; use an int distribution",
        ),
        (
            "parameters: {x: {path: train.loss.target, distribution: uniform, low: 0.1, high: 1}}",
            "is 'disk' in the config, not a number",
        ),
        (
            "parameters: {x: {path: train.loss.target, distribution: categorical, choices: [disk, cone]}}",
            "parameter 'x' = 'cone' gives an invalid config",
        ),
        (
            "parameters: {x: {path: train.loss.temperature, distribution: normal, low: 0.1, high: 1}}",
            "parameters.x.distribution",
        ),
        (
            "parameters: {x: {path: train.loss.temperature, distribution: categorical, choices: []}}",
            "non-empty 'choices'",
        ),
        ("parameters: {x: {path: train.loss.temperature, distribution: uniform, low: 0.1}}", "needs 'low' and 'high'"),
        (
            "parameters: {x: {path: train.batch_size, distribution: int, low: 0, high: 4}}",
            "parameter 'x' = 0 gives an invalid config",
        ),
        (
            "parameters: {strategy: {distribution: categorical, choices: [baseline, best_one]}}",
            "strategy 'best_one' is not in the config",
        ),
        ("parameters: {strategy: {distribution: int, low: 1, high: 2}}", "parameter 'strategy' must be categorical"),
        (
            "strategy: nonesuch\n"
            "parameters: {x: {path: train.loss.temperature, distribution: uniform, low: 0.1, high: 1}}",
            "strategy 'nonesuch' is not in the config",
        ),
        (
            "fixed: {train.los.radius: 2.0}\n"
            "parameters: {x: {path: train.loss.temperature, distribution: uniform, low: 0.1, high: 1}}",
            "fixed 'train.los.radius': unknown config path",
        ),
        ("parameters: {}", "parameters"),
        (
            "metric: val_loss\n"
            "parameters: {x: {path: train.loss.temperature, distribution: uniform, low: 0.1, high: 1}}",
            "metric",
        ),
        ("parameters: {x: {distribution: uniform, low: 0.1, high: 1}}", "parameter 'x' needs a 'path'"),
        (
            "parameters: {pose weight: {path: train.loss.temperature, distribution: uniform, low: 0.1, high: 1}}",
            "parameter name 'pose weight': expected a short identifier",
        ),
        (
            "parameters: {a: {path: train.loss.radius, distribution: uniform, low: 1, high: 2},"
            " b: {path: train.loss.radius, distribution: uniform, low: 2, high: 3}}",
            "parameters tune the same path twice: ['train.loss.radius']",
        ),
        (
            "parameters: {strategy: {path: train.seed, distribution: categorical, choices: [baseline]}}",
            "without a path",
        ),
        ("- a list", "expected a mapping"),
    ],
)
def test_bad_spaces_fail_naming_the_file_and_parameter(tmp_path, text, message):
    path = write_space(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_search_space(path, load_config("demo"))
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_missing_space_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: search space file not found"):
        load_search_space(tmp_path / "nope.yaml", load_config("demo"))
