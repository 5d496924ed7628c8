"""The MLflow parameters of a run: the settings that tell it apart from the runs beside it, flat and scalar.

The full resolved config goes into every run as the artifact ``config.yaml``; the parameters are
what a person compares in the UI (Compare, "Show diff only"; parallel coordinates):

- the data set's defining settings: ``data.cohort.kind``, ``data.cohort.subjects.train``, ...,
  ``data.image_size``, ``data.poses.rotation_deg`` (lists as ``15,15,15``), ``data.renderer.name``,
  ``data.landmarks`` (the set's name; its landmarks in ``config.yaml``) and
  ``data.landmarks.min_for_registration``;
- the model and the losses' and decoding settings: ``model.encoder``, ``loss.temperature``, ...;
- training: ``seed``, ``batch_size``, ``checkpoint``, ``selection_metric``, ``augment``, ...; for one
  fold of a cross-validation ``fold.number``, ``fold.held_out`` and ``fold.val``;
- a strategy run's own: ``strategy``, ``init`` (``random`` for none), ``randomize`` (on: domain
  randomization, its settings in ``config.yaml``) and per phase
  ``phase<i>.loss.<name>`` (the weight of every registered loss, 0 for one the phase does not use),
  ``phase<i>.epochs``, ``phase<i>.lr``, ``phase<i>.optimizer``, ...

A sweep trial logs each tuned value under its short name from the search space (``pose_weight``)
in place of the parameter of the same config path (``phase0.loss.pose``).
"""

import json
from dataclasses import dataclass, field
from typing import Any

from components.losses import LOSSES
from study.config import StudyConfig

__all__ = ["Tuned", "param_name", "run_params", "study_params"]

DATA_SETTINGS = ("cohort", "views", "image_size", "poses")
TRAIN_SETTINGS = ("batch_size", "checkpoint", "selection_metric", "divergence_factor")  # and seed, augment
PHASE_NAMES = {"learning_rate": "lr"}


@dataclass(frozen=True)
class Tuned:
    """A sweep trial's sampled values by short name (``values``), the config paths they set (``paths``; none
    for ``strategy``) and the trial run's display name (``t03-48b65ca8``)."""

    values: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None


def param_name(path: str) -> str:
    """The parameter name of a config path: ``train.strategies.<s>.phases.0.learning_rate`` -> ``phase0.lr``,
    ``train.strategies.<s>.phases.0.losses.pose`` -> ``phase0.loss.pose``, ``train.loss.temperature`` ->
    ``loss.temperature``, ``train.seed`` -> ``seed``; ``data.*`` as it is."""
    keys = path.split(".")
    if keys[:2] == ["train", "strategies"] and len(keys) > 5 and keys[3] == "phases":
        index, setting, rest = keys[4], keys[5], keys[6:]
        if setting == "losses":
            return f"phase{index}.loss." + ".".join(rest)
        return f"phase{index}." + ".".join([PHASE_NAMES.get(setting, setting), *rest])
    if keys[0] == "train":
        return ".".join(keys[1:])
    return path


def flat(tree: Any, path: str) -> dict[str, Any]:
    """``{config path: scalar}`` of a nested dict."""
    if isinstance(tree, dict) and tree:
        return {key: value for name, sub in tree.items() for key, value in flat(sub, f"{path}.{name}").items()}
    return {path: tree}


def text(value: Any) -> str:
    """A parameter's value as MLflow stores it: lists as ``a,b,c``, None as ``none``."""
    if isinstance(value, list | tuple):
        return ",".join(text(item) for item in value)
    if value is None:
        return "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def study_params(config: StudyConfig) -> dict[str, str]:
    """What every run of the study shares: data set, model, losses and decoding, training settings."""
    raw = config.model_dump(mode="json")
    paths = {f"data.{key}": raw["data"][key] for key in DATA_SETTINGS}
    paths["data.renderer.name"] = raw["data"]["renderer"]["name"]
    paths["data.landmarks"] = raw["data"]["landmarks"]["name"]
    paths["data.landmarks.min_for_registration"] = raw["data"]["landmarks"]["min_for_registration"]
    paths["data.fluoro"] = "on" if raw["data"]["fluoro"] else "off"  # its settings: config.yaml
    if config.train is not None:
        train = raw["train"]
        paths |= {"train.model": train["model"], "train.loss": train["loss"]}
        paths |= {f"train.{key}": train[key] for key in TRAIN_SETTINGS}
        paths["train.seed"] = config.training_seed()
        paths["train.augment"] = "on" if train["augment"] else "off"
        if train["fold"] is not None:  # a fold of a cross-validation: fold.number, fold.held_out, fold.val
            paths["train.fold"] = train["fold"]
    params = {}
    for path, value in paths.items():
        params |= {param_name(key): text(scalar) for key, scalar in flat(value, path).items()}
    return params


def run_params(config: StudyConfig, strategy: str, init: str | None, tuned: Tuned | None = None) -> dict[str, str]:
    """A strategy run's parameters: the study's, then ``strategy``, ``init`` and its phases; a sweep trial's
    tuned values under their short names, in place of the parameters of the paths they set."""
    params = study_params(config) | {"strategy": strategy, "init": init or "random"}
    params["randomize"] = "on" if config.train.strategies[strategy].randomize else "off"
    phases = config.train.strategies[strategy].phases
    params["phases"] = str(len(phases))
    for index, phase in enumerate(phases):
        base = f"train.strategies.{strategy}.phases.{index}"
        raw = phase.model_dump(mode="json")
        weights = {name: raw["losses"].get(name, 0.0) for name in sorted(LOSSES)}
        for setting, value in (raw | {"losses": weights}).items():
            params |= {param_name(key): text(scalar) for key, scalar in flat(value, f"{base}.{setting}").items()}
    if tuned is None:
        return params
    for path in tuned.paths.values():
        params.pop(param_name(path), None)
    return params | {name: text(value) for name, value in tuned.values.items()}
