"""Search spaces of ``study sweep``: YAML files that name the tuned parameters and their distributions.

A search space (a YAML file; three ship in ``study/search_spaces/`` and are named without the path
and suffix: ``finetune``, ``composite``, ``strategy``)::

    strategy: finetune                  # the strategy every trial trains (default: finetune)
    metric: val_rmse_soft_px            # what the sweep minimises on val (default: train.selection_metric)
    fixed:                              # optional: config paths set in every trial's config before sampling
      train.strategies.finetune.phases.0.losses: {bce: 1.0, pose: 0.01}
    parameters:                         # a short name -> the config path it sets and its distribution
      pose_weight: {path: train.strategies.finetune.phases.0.losses.pose,
                    distribution: loguniform, low: 0.001, high: 1.0}
      temperature: {path: train.loss.temperature, distribution: uniform, low: 0.2, high: 2.0}
      ft_epochs: {path: train.strategies.finetune.phases.0.epochs, distribution: int, low: 1, high: 4}
      strategy: {distribution: categorical, choices: [baseline, finetune]}

The short names are what Optuna, Ray Tune, the trial table and MLflow call the parameters (a
trial's run logs ``pose_weight``, not the config path). A path is dotted, with list positions as
numbers (``phases.0``); it must exist in the config, and its current value fixes the type a
distribution must produce. The parameter ``strategy`` (no path) picks the trained strategy
itself. Everything is checked up front, against the config the sweep will run, with errors that
name the file and the parameter.
"""

import copy
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.training import SELECTION_METRICS
from study.config import SPACES_DIR, ConfigError, StudyConfig, find_yaml, problems, read_yaml_mapping

__all__ = ["STRATEGY", "Parameter", "SearchSpace", "find_search_space", "load_search_space"]

STRATEGY = "strategy"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Parameter(BaseModel):
    """One tuned parameter: the config ``path`` it sets (none for ``strategy``) and its distribution,
    ``loguniform``/``uniform`` (float in [low, high]), ``int`` (integer in [low, high], with ``step``)
    or ``categorical`` (one of ``choices``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    distribution: Literal["loguniform", "uniform", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: int = Field(1, ge=1)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def bounds_fit_the_kind(self):
        if self.distribution == "categorical":
            if not self.choices:
                raise ValueError("a categorical distribution needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None:
                raise ValueError("a categorical distribution takes 'choices', not low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.distribution} distribution takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.distribution} distribution needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"a loguniform distribution needs low > 0, got {self.low}")
        if self.distribution == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"an int distribution needs whole-number bounds, got [{self.low}, {self.high}]")
        return self

    def optuna(self):
        """The equivalent Optuna distribution."""
        import optuna.distributions as d

        if self.distribution == "categorical":
            return d.CategoricalDistribution(self.choices)
        if self.distribution == "int":
            return d.IntDistribution(int(self.low), int(self.high), step=self.step)
        return d.FloatDistribution(self.low, self.high, log=self.distribution == "loguniform")

    def examples(self) -> list:
        """Values at the edges of the distribution, used to validate it against the config."""
        if self.distribution == "categorical":
            return list(self.choices)
        if self.distribution == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str = "finetune"
    metric: Literal[SELECTION_METRICS] | None = None
    fixed: dict[str, Any] = {}
    parameters: dict[str, Parameter] = Field(min_length=1)

    @model_validator(mode="after")
    def names_and_paths_are_sound(self):
        for name, parameter in self.parameters.items():
            if not NAME.fullmatch(name):
                raise ValueError(f"parameter name {name!r}: expected a short identifier such as 'pose_weight'")
            if name == STRATEGY:
                if parameter.distribution != "categorical" or parameter.path is not None:
                    raise ValueError(
                        "parameter 'strategy' must be categorical (a list of strategy names), without a path"
                    )
            elif parameter.path is None:
                raise ValueError(f"parameter '{name}' needs a 'path' (the config setting it tunes)")
        paths = [p.path for p in self.parameters.values() if p.path is not None]
        twice = sorted({path for path in paths if paths.count(path) > 1})
        if twice:
            raise ValueError(f"parameters tune the same path twice: {twice}")
        return self

    def distributions(self) -> dict:
        """``{name: optuna distribution}`` for Ray Tune's ``OptunaSearch``."""
        return {name: parameter.optuna() for name, parameter in self.parameters.items()}

    def paths(self) -> dict[str, str]:
        """``{name: config path}`` of the parameters that set a config path (all but ``strategy``)."""
        return {name: p.path for name, p in self.parameters.items() if p.path is not None}

    def strategies(self, config: StudyConfig) -> list[str]:
        """Every strategy a trial may train."""
        chosen = self.parameters.get(STRATEGY)
        return list(chosen.choices) if chosen is not None else [self.strategy]

    def trial_config(self, config: StudyConfig, values: dict[str, Any]) -> tuple[StudyConfig, str]:
        """The config and strategy of a trial with the sampled ``values`` (``{name: value}``)."""
        raw = config.model_dump(mode="json")
        for path, value in self.fixed.items():
            set_path(raw, path, value)
        strategy = values.get(STRATEGY, self.strategy)
        paths = self.paths()
        for name, value in values.items():
            if name != STRATEGY:
                set_path(raw, paths[name], value)
        if self.metric:
            raw["train"]["selection_metric"] = self.metric
        return StudyConfig.model_validate(raw), strategy

    def objective(self, config: StudyConfig) -> str:
        """The metric a trial reports as its result: the running best of the selection metric."""
        return f"best_{self.metric or config.train.selection_metric}"


def get_path(raw: dict, path: str) -> Any:
    node = raw
    for key in path.split("."):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise KeyError(key)
    return node


def set_path(raw: dict, path: str, value: Any) -> None:
    """Set an existing ``a.b.0.c`` in nested dicts and lists (a new key only in a dict that exists)."""
    *parents, last = path.split(".")
    node = get_path(raw, ".".join(parents)) if parents else raw
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise KeyError(last)
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise KeyError(last)


def check_types(current: Any, distribution: Parameter) -> None:
    if distribution.distribution == "categorical":
        return
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise ValueError(f"is {current!r} in the config, not a number; use a categorical distribution")
    if distribution.distribution == "int" and not isinstance(current, int):
        raise ValueError(f"is the float {current} in the config; use uniform or loguniform, not int")
    if distribution.distribution != "int" and isinstance(current, int) and not isinstance(current, bool):
        raise ValueError(f"is the integer {current} in the config; use an int distribution")


def validate(space: SearchSpace, config: StudyConfig, source: str) -> None:
    """Check every path, type and value of ``space`` against ``config``; errors name ``source`` and the parameter."""
    if config.train is None:
        raise ConfigError(f"{source}: config '{config.name}' has no 'train' section to sweep")
    raw = config.model_dump(mode="json")
    for path, value in space.fixed.items():
        try:
            set_path(raw, path, copy.deepcopy(value))
        except KeyError as error:
            raise ConfigError(f"{source}: fixed '{path}': unknown config path (no '{error.args[0]}')") from None
    base = StudyConfig.model_validate(raw) if space.fixed else config
    strategies = base.train.strategies
    for name in space.strategies(base):
        if name not in strategies:
            raise ConfigError(f"{source}: strategy '{name}' is not in the config (strategies: {', '.join(strategies)})")
    for name, path in space.paths().items():
        parameter = space.parameters[name]
        try:
            current = get_path(raw, path)
        except KeyError as error:
            raise ConfigError(
                f"{source}: parameter '{name}': unknown config path '{path}' (no '{error.args[0]}')"
            ) from None
        try:
            check_types(current, parameter)
        except ValueError as error:
            raise ConfigError(f"{source}: parameter '{name}' ({path}) {error}") from None
        for example in parameter.examples():
            try:
                space.trial_config(config, {name: example})
            except ValidationError as error:
                raise ConfigError(
                    f"{source}: parameter '{name}' = {example!r} gives an invalid config ({problems(error)})"
                ) from None


def find_search_space(name_or_path: str | Path) -> Path:
    """A search space file: a path, or the name of a shipped one (``finetune``, ``composite``, ``strategy``)."""
    return find_yaml(name_or_path, SPACES_DIR, "search space", "shipped search space")


def load_search_space(path: str | Path, config: StudyConfig) -> SearchSpace:
    """The validated search space in the file ``path``, checked against ``config``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search space file not found")
    try:
        space = SearchSpace.model_validate(read_yaml_mapping(path))
    except ValidationError as error:
        raise ConfigError(f"{path}: {problems(error)}") from error
    validate(space, config, str(path))
    return space
