"""``study sweep``: Ray Tune + Optuna over a search space, every trial a child run in MLflow.

How a sweep runs:

1. the search space (``study.sweeps.space``) is checked against the config, and the data set is
   generated if it is missing;
2. an MLflow parent run is opened; the strategies' shared starts are resolved once: a fine-tune
   sweep trains its baseline (or reuses its finished run, or the checkpoint/run given by
   ``--init``) and every trial starts from that one checkpoint;
3. the plan is written to the sweep folder (``study.sweeps.plan``) and Ray Tune runs the trials
   (``study.sweeps.trials``), printing a line per ended trial;
4. the trials are recorded, reported and the best model registered and tested
   (``study.sweeps.results``).

Everything a sweep needs to continue is in ``<sweep.storage>/<name>/``, so ``study sweep --resume
<that folder>`` finishes the remaining trials without redoing finished ones.
"""

from pathlib import Path

from ray import tune

from components.manifest import read_manifest
from study import console
from study.config import ConfigError, StudyConfig
from study.data.generate import default_out_dir, generate
from study.runtime import ensure_ray
from study.sweeps.plan import PLAN_FILE, SweepPlan, gpus_per_worker, read_plan, sweep_folder, write_plan
from study.sweeps.results import SweepResult, finish
from study.sweeps.space import SearchSpace, find_search_space, load_search_space
from study.sweeps.trials import make_tuner, trainable
from study.tracking.datasets import log_splits
from study.tracking.params import study_params
from study.tracking.runs import Tracker
from study.training.driver import resolve_init, train

__all__ = ["default_sweep_name", "resume", "sweep"]


def default_sweep_name(config: StudyConfig, space: str | Path) -> str:
    """``<config name>-sweep-<space name>``: a sweep's name when none is given."""
    return f"{config.name}-sweep-{find_search_space(space).stem}"


def shared_starts(
    config: StudyConfig, space: SearchSpace, data_dir: Path, init: str | None, tracker
) -> dict[str, dict]:
    """The checkpoint each swept strategy starts from, trained or resolved once for the whole sweep."""
    starts = {}
    for strategy in space.strategies(config):
        reference = init or config.train.strategies[strategy].init
        if reference is None:
            continue
        if reference in config.train.strategies:
            console.say(f"sweep: the shared start of '{strategy}' is strategy '{reference}', trained once (or reused)")
            result = train(config, reference, data_dir)
            checkpoint = result.checkpoint(config.train.checkpoint)
            if checkpoint is None:
                raise ConfigError(
                    f"strategy '{reference}' {result.status} before its first checkpoint; nothing to fine-tune"
                )
            starts[strategy] = {"checkpoint": checkpoint, "run_id": result.run_id}
        else:
            starts[strategy] = {"checkpoint": resolve_init(config, reference, data_dir, tracker), "run_id": None}
    return starts


def sweep(
    config: StudyConfig,
    space: str | Path,
    trials: int,
    data_dir: str | Path | None = None,
    name: str | None = None,
    init: str | None = None,
) -> SweepResult:
    """Run a new sweep of ``trials`` trials over the search space ``space`` (a file, or a shipped space's name)."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    space_path = find_search_space(space)
    search_space = load_search_space(space_path, config)
    name = name or default_sweep_name(config, space_path)
    folder = sweep_folder(config, name)
    if (folder / PLAN_FILE).is_file():
        raise ConfigError(
            f"{folder}: a sweep of this name exists; "
            f"continue it with 'study sweep --resume {folder}' or choose another --name"
        )
    data_dir = Path(data_dir or default_out_dir(config)).resolve()
    generate(config, data_dir)
    ensure_ray()
    tracker = Tracker(config)
    tags = {"study.kind": "sweep", "study.space": str(space_path), "study.trials": trials}
    strategies = ", ".join(search_space.strategies(config))
    objective = search_space.objective(config)
    params = study_params(config) | {"space": space_path.stem, "trials": str(trials), "swept": strategies}
    params |= {"objective": objective} | {f"space.{n}": describe(p) for n, p in search_space.parameters.items()}
    description = (
        f"Sweep of {trials} trial(s) of '{strategies}' over {', '.join(search_space.parameters)} "
        f"(search space {space_path.name}; Optuna TPE, ASHA early stopping), minimising {objective} on val. "
        "Its children are the trials (parameters under the short names above); its artifacts hold the trial "
        "table, the best config and Optuna's plots; the best trial's model is registered with the alias 'champion'."
    )
    parent = tracker.start_run(name, config, params, tags, description)
    log_splits(tracker.client, parent, data_dir, read_manifest(data_dir), ("train", "val"))  # the tests: at the end
    console.say(f"sweep {name}: {tracker.link(parent)}")
    tracker.log_file(parent, space_path, "sweep")
    starts = shared_starts(config, search_space, data_dir, init, tracker)
    tracker.set_tags(
        parent, {f"study.start.{s}": start["run_id"] or start["checkpoint"] for s, start in starts.items()}
    )
    # trials run in other processes (on other nodes, in other folders): settle here what the driver sees
    raw = config.model_dump(mode="json")
    raw["tracking"]["uri"] = tracker.uri
    raw["sweep"] |= {"storage": str(folder.parent), "gpus_per_worker": gpus_per_worker(config)}
    resolved = StudyConfig.model_validate(raw)
    plan = SweepPlan(
        name,
        resolved.model_dump_json(),
        search_space.model_dump_json(),
        str(space_path),
        str(data_dir),
        trials,
        parent,
        starts,
    )
    write_plan(plan, folder)
    console.say(
        f"sweep {name}: {trials} trial(s) of '{strategies}' over {', '.join(search_space.parameters)}; folder {folder}"
    )
    return finish(plan, make_tuner(plan).fit())


def describe(parameter) -> str:
    """A tuned parameter's distribution in a few words: ``loguniform [0.0001, 1] (train.loss.temperature)``."""
    if parameter.distribution == "categorical":
        return f"categorical {parameter.choices}"
    return f"{parameter.distribution} [{parameter.low:g}, {parameter.high:g}] ({parameter.path})"


def resume(folder: str | Path) -> SweepResult:
    """Continue an interrupted sweep: finished trials are kept, unfinished ones run again, the rest are sampled."""
    folder = Path(folder).resolve()
    plan = read_plan(folder)
    ensure_ray()
    if not tune.Tuner.can_restore(str(folder)):
        raise ConfigError(f"{folder}: Ray Tune left no experiment state to resume (did the sweep start any trial?)")
    console.say(f"sweep {plan.name}: resuming from {folder}")
    tuner = tune.Tuner.restore(
        str(folder), trainable(plan), resume_unfinished=True, resume_errored=False, restart_errored=False
    )
    return finish(plan, tuner.fit())
