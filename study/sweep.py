"""``study sweep``: Ray Tune + Optuna over a search space, every trial a child run in MLflow.

How a sweep runs:

1. the search space (``search_spaces/*.yaml``, ``study.search_space``) is checked against the
   config, and the data set is generated if it is missing;
2. an MLflow parent run is opened; the strategies' shared starts are resolved once: a fine-tune
   sweep trains its baseline (or reuses its finished run, or the checkpoint/run given by ``--init``)
   and every trial starts from that one checkpoint;
3. a Ray Tune ``Tuner`` samples configs with Optuna's TPE (seeded) and stops weak trials early with
   ASHA, both on the running best of the val metric. Each trial trains through ``study.train``:
   in its own process when ``sweep.workers_per_trial`` is 1 (small CPU trials), else as a
   ``TorchTrainer`` with that many DDP workers (multi-GPU trials). A diverged trial raises
   ``TrialDiverged``: Tune records it as errored, Optuna as failed, and the sweep goes on;
4. afterwards the parent run gets the trial table, the best config, Optuna's plots (history,
   parameter importances, parallel coordinates); the best trial's model is registered in the
   MLflow model registry and only then evaluated on the test splits.

Everything a sweep needs to continue is in ``<sweep.storage>/<name>/``: Tune's experiment state
and ``study_sweep.json`` (config, space, data set, parent run, shared starts), so
``study sweep --resume <that folder>`` finishes the remaining trials without redoing finished ones.
"""

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from study.config import ConfigError, StudyConfig
from study.search_space import STRATEGY, SearchSpace, load_search_space

PLAN_FILE = "study_sweep.json"
SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"


class TrialDiverged(RuntimeError):
    """A trial whose training diverged: Tune marks it errored, Optuna failed; the sweep goes on."""


@dataclass
class SweepPlan:
    """What a sweep needs to run, or to be resumed (written as ``<folder>/study_sweep.json``)."""

    name: str
    config: str  # the study config, JSON
    space: str  # the search space, JSON
    space_path: str
    data_dir: str
    trials: int
    parent_run_id: str
    starts: dict[str, dict] = field(default_factory=dict)  # strategy -> {"checkpoint": path, "run_id": id}

    def study_config(self) -> StudyConfig:
        return StudyConfig.model_validate_json(self.config)

    def search_space(self) -> SearchSpace:
        return SearchSpace.model_validate_json(self.space)


@dataclass
class TrialRecord:
    """One trial after the sweep: its sampled values, status and result."""

    trial_id: str
    params: dict
    status: str  # finished | stopped (by ASHA) | diverged | failed
    epochs: int
    objective: float
    run_id: str | None = None
    seconds: float = math.nan  # the trial's wall time in Tune


@dataclass
class SweepResult:
    name: str
    folder: str
    parent_run_id: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    registered: str | None = None  # "<model name>/<version>"
    test: dict = field(default_factory=dict)


def sweep_folder(config: StudyConfig, name: str) -> Path:
    storage = config.sweep.storage
    if "://" in storage:
        raise ConfigError(f"sweep.storage '{storage}': sweeps keep their state in a local (or shared, mounted) folder")
    return Path(storage).resolve() / name


def trial_run_name(plan: SweepPlan, trial_id: str) -> str:
    return f"{plan.name}-{trial_id}"


def trial_config(plan: SweepPlan, params: dict) -> tuple[StudyConfig, str]:
    """A trial's config (sampled values, the sweep's resources and trial storage) and strategy."""
    config, strategy = plan.search_space().trial_config(plan.study_config(), params)
    raw = config.model_dump(mode="json")
    sweep = config.sweep
    raw["train"] |= {
        "workers": sweep.workers_per_trial, "cpus_per_worker": sweep.cpus_per_worker,
        "use_gpu": bool(gpus_per_worker(config)), "storage": str(Path(plan_folder(plan)) / "trials"),
    }
    return StudyConfig.model_validate(raw), strategy


def plan_folder(plan: SweepPlan) -> Path:
    return sweep_folder(plan.study_config(), plan.name)


def gpus_per_worker(config: StudyConfig) -> float:
    import ray

    if config.sweep.gpus_per_worker is not None:
        return config.sweep.gpus_per_worker
    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def run_trial(params: dict, plan: dict) -> None:
    """A Tune trial (function trainable): train the sampled config; every epoch is reported to Tune."""
    from ray import tune

    from study.train import read_result, train

    plan = SweepPlan(**plan)
    config, strategy = trial_config(plan, params)
    start = plan.starts.get(strategy)
    init = None
    if start is not None:  # the shared start: its local checkpoint, or its MLflow run on another node
        init = start["checkpoint"] if Path(start["checkpoint"]).exists() else start["run_id"]
    trial_id = tune.get_context().get_trial_id()
    name = trial_run_name(plan, trial_id)
    finished = read_result(Path(config.train.storage) / name)
    if finished is not None:  # trained before the sweep was interrupted: report its result, do not train again
        tune.report(finished.last_metrics)
        result = finished
    else:
        result = train(config, strategy, plan.data_dir, init=init, name=name, parent_run_id=plan.parent_run_id,
                       in_process=config.sweep.workers_per_trial == 1, report_to_tune=True)
    if result.status == "diverged":
        raise TrialDiverged(f"trial {trial_id} ({strategy}, {params}) diverged after {result.epochs} epoch(s)")


def trial_resources(config: StudyConfig) -> dict:
    """What Tune reserves for one trial: the training process itself, or a token for a TorchTrainer's driver."""
    sweep = config.sweep
    if sweep.workers_per_trial == 1:
        return {"cpu": sweep.cpus_per_worker, "gpu": gpus_per_worker(config)}
    return {"cpu": 0.01}  # the TorchTrainer's workers reserve their own CPUs/GPUs


def max_concurrent(config: StudyConfig, trials: int) -> int | None:
    """Trials at once: the config's, or as many as the cluster's CPUs (and GPUs) hold now (None: let an autoscaler decide)."""
    import ray

    sweep = config.sweep
    if sweep.max_concurrent is not None:
        return sweep.max_concurrent
    available = ray.cluster_resources()
    fits = available.get("CPU", 0) // (sweep.workers_per_trial * sweep.cpus_per_worker)
    gpus = gpus_per_worker(config)
    if gpus:
        fits = min(fits, available.get("GPU", 0) // (sweep.workers_per_trial * gpus))
    return int(min(fits, trials)) if fits >= 1 else None


def longest_trial(plan: SweepPlan) -> int:
    """The most epochs any trial can run (ASHA's ``max_t``)."""
    from study.train import phase_of_epochs

    space, config = plan.search_space(), plan.study_config()
    longest = 1
    for path, distribution in space.parameters.items():
        for value in distribution.examples():
            for strategy in space.strategies(config):
                values = {path: value} if path != STRATEGY else {}
                trial, _ = space.trial_config(config, values | {STRATEGY: strategy})
                longest = max(longest, len(phase_of_epochs(trial, strategy)))
    return longest


def trainable(plan: SweepPlan):
    from ray import tune

    config = plan.study_config()
    return tune.with_resources(tune.with_parameters(run_trial, plan=asdict(plan)), trial_resources(config))


def make_tuner(plan: SweepPlan):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    config, space = plan.study_config(), plan.search_space()
    objective = space.objective(config)
    seed = config.sweep.seed if config.sweep.seed is not None else config.seed
    searcher = OptunaSearch(space=space.distributions(), metric=objective, mode="min", sampler=optuna.samplers.TPESampler(seed=seed))
    longest = longest_trial(plan)
    scheduler = ASHAScheduler(  # a grace period of the longest trial or more switches early stopping off
        metric=objective, mode="min", time_attr="training_iteration", max_t=longest,
        grace_period=min(config.sweep.grace_epochs, longest), reduction_factor=config.sweep.reduction_factor,
    )
    folder = plan_folder(plan)
    return tune.Tuner(
        trainable(plan),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.trials,
                                    max_concurrent_trials=max_concurrent(config, plan.trials)),
        run_config=tune.RunConfig(name=folder.name, storage_path=str(folder.parent), verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def write_plan(plan: SweepPlan, folder: Path) -> None:
    from study.evaluate import write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(asdict(plan), folder / PLAN_FILE)


def read_plan(folder: str | Path) -> SweepPlan:
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no {PLAN_FILE}; not a sweep folder made by 'study sweep'")
    return SweepPlan(**json.loads(path.read_text()))


def shared_starts(config: StudyConfig, space: SearchSpace, data_dir: Path, init: str | None, tracker) -> dict[str, dict]:
    """The checkpoint each swept strategy starts from, trained or resolved once for the whole sweep."""
    from study.train import resolve_init, train

    starts = {}
    for strategy in space.strategies(config):
        reference = init or config.train.strategies[strategy].init
        if reference is None:
            continue
        if reference in config.train.strategies:
            print(f"sweep: shared start for '{strategy}': strategy '{reference}' (trained once, or its finished run reused)")
            result = train(config, reference, data_dir)
            if result.best_checkpoint is None:
                raise ConfigError(f"strategy '{reference}' {result.status} before its first checkpoint; nothing to fine-tune")
            starts[strategy] = {"checkpoint": result.best_checkpoint, "run_id": result.run_id}
        else:
            starts[strategy] = {"checkpoint": resolve_init(config, reference, data_dir, tracker), "run_id": None}
    return starts


def sweep(config: StudyConfig, space_path: str | Path, trials: int, data_dir: str | Path | None = None,
          name: str | None = None, init: str | None = None) -> SweepResult:
    """Run a new sweep of ``trials`` trials over the search space in ``space_path``."""
    from study.generate import default_out_dir, generate
    from study.runtime import ensure_ray
    from study.tracking import Tracker

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    space = load_search_space(space_path, config)
    name = name or f"{config.name}-sweep-{Path(space_path).stem}"
    folder = sweep_folder(config, name)
    if (folder / PLAN_FILE).is_file():
        raise ConfigError(f"{folder}: a sweep of this name exists; continue it with 'study sweep --resume {folder}' or choose another --name")
    data_dir = Path(data_dir or default_out_dir(config)).resolve()
    generate(config, data_dir)
    ensure_ray()
    tracker = Tracker(config)
    parent = tracker.start_run(name, config, {"study.kind": "sweep", "study.space": str(space_path), "study.trials": trials})
    tracker.log_file(parent, space_path, "sweep")
    starts = shared_starts(config, space, data_dir, init, tracker)
    tracker.set_tags(parent, {f"study.start.{s}": start["run_id"] or start["checkpoint"] for s, start in starts.items()})
    # trials run in other processes (on other nodes, in other folders): settle here what the driver sees
    raw = config.model_dump(mode="json")
    raw["tracking"]["uri"] = tracker.uri
    raw["sweep"] |= {"storage": str(folder.parent), "gpus_per_worker": gpus_per_worker(config)}
    resolved = StudyConfig.model_validate(raw)
    plan = SweepPlan(name, resolved.model_dump_json(), space.model_dump_json(), str(space_path), str(data_dir), trials, parent, starts)
    write_plan(plan, folder)
    print(f"sweep {name}: {trials} trial(s) of '{', '.join(space.strategies(config))}' over {', '.join(space.parameters)}; "
          f"folder {folder}; MLflow parent run {parent}")
    results = make_tuner(plan).fit()
    return finish(plan, results)


def resume(folder: str | Path) -> SweepResult:
    """Continue an interrupted sweep: finished trials are kept, unfinished ones run again, the rest are sampled."""
    from ray import tune

    from study.runtime import ensure_ray

    folder = Path(folder).resolve()
    plan = read_plan(folder)
    ensure_ray()
    if not tune.Tuner.can_restore(str(folder)):
        raise ConfigError(f"{folder}: Ray Tune left no experiment state to resume (did the sweep start any trial?)")
    print(f"sweep {plan.name}: resuming from {folder}")
    tuner = tune.Tuner.restore(str(folder), trainable(plan), resume_unfinished=True, resume_errored=False, restart_errored=False)
    return finish(plan, tuner.fit())


def trial_records(plan: SweepPlan, results, tracker) -> list[TrialRecord]:
    """One record per trial, with its MLflow run closed with the right status."""
    from study.tracking import RUN_NAME_TAG

    space = plan.search_space()
    objective_name = space.objective(plan.study_config())
    records = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        value = metrics.get(objective_name)
        if result.error is not None:
            status = "diverged" if "TrialDiverged" in repr(result.error) else "failed"
        elif metrics.get("epoch", -1) + 1 < metrics.get("epochs", 0):
            status = "stopped"
        else:
            status = "finished"
        params = {path: result.config.get(path) for path in space.parameters}
        runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{trial_run_name(plan, trial_id)}'")
        run_id = runs[0].info.run_id if runs else None
        if run_id is not None:
            tracker.set_tags(run_id, {"study.trial_status": status, "study.sweep": plan.name})
            if runs[0].info.status == "RUNNING":  # a trial Tune stopped early ends without closing its run
                tracker.set_tags(run_id, {"study.status": "stopped"})
                tracker.end_run(run_id, "KILLED")
        epochs = int(metrics.get("epoch", -1)) + 1
        objective = float(value) if value is not None else math.nan
        records.append(TrialRecord(trial_id, params, status, epochs, objective, run_id, float(metrics.get("time_total_s", math.nan))))
    return records


def optuna_study(plan: SweepPlan, records: list[TrialRecord]):
    """The trials as an Optuna study (for Optuna's plots): failed for diverged/failed ones."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = plan.search_space().distributions()
    study = optuna.create_study(direction="minimize", study_name=plan.name)
    for record in records:
        ok = record.status in ("finished", "stopped") and math.isfinite(record.objective)
        study.add_trial(optuna.trial.create_trial(
            params=record.params, distributions=distributions, value=record.objective if ok else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
        ))
    return study


def optuna_plots(study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and parallel coordinates, as PNGs (those that can be drawn)."""
    import warnings

    from optuna.visualization import matplotlib as plots

    from study.preview import save_figure

    written = []
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    kinds = {"optimization_history": plots.plot_optimization_history, "param_importances": plots.plot_param_importances,
             "parallel_coordinate": plots.plot_parallel_coordinate}
    for kind, plot in kinds.items():
        if kind != "optimization_history" and len(complete) < 2:
            print(f"sweep: no {kind} plot (needs at least 2 completed trials)")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. importances of parameters that never varied
                print(f"sweep: no {kind} plot ({error})")
                continue
        figure = np.ravel(axes)[0].figure
        figure.set_size_inches(11, 5)  # room for the long config paths
        written.append(save_figure(figure, folder / f"{kind}.png"))
    return written


def register_model(plan: SweepPlan, best: TrialRecord, checkpoint: Path, tracker) -> str:
    """Log the best trial's U-Net as an MLflow model in its run and register it; returns ``name/version``."""
    import mlflow
    import mlflow.pytorch

    from components.model import model_from_checkpoint

    config = plan.study_config()
    model_name = config.sweep.register_model or f"{config.name}-landmarks"
    model = model_from_checkpoint(checkpoint).eval()
    size = config.data.image_size
    example = np.zeros((1, 1, size, size), dtype=np.float32)
    # log_model needs mlflow's global tracking URI, which it also exports as MLFLOW_TRACKING_URI: restore both after
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracker.uri)
    try:
        with mlflow.start_run(run_id=best.run_id):
            info = mlflow.pytorch.log_model(model, name="model", input_example=example, registered_model_name=model_name)
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets the environment variable again
    version = info.registered_model_version
    tracker.client.set_model_version_tag(model_name, str(version), "study.sweep", plan.name)
    tracker.client.set_model_version_tag(model_name, str(version), "study.objective", f"{best.objective:.6g}")
    return f"{model_name}/{version}"


def best_checkpoint(best: TrialRecord, plan: SweepPlan, tracker) -> Path:
    """The best trial's checkpoint: in its local run folder, else downloaded from its MLflow run."""
    from study.train import BEST_CHECKPOINT

    config, _ = trial_config(plan, best.params)
    local = Path(config.train.storage) / trial_run_name(plan, best.trial_id) / BEST_CHECKPOINT
    return local if local.is_dir() else tracker.download_checkpoint(best.run_id)


def finish(plan: SweepPlan, results) -> SweepResult:
    """Record the trials, log the best config and plots, register and test-evaluate the best model."""
    import yaml

    from study.evaluate import evaluate, metric_names, write_csv, write_json, write_text
    from study.tracking import Tracker

    config, folder = plan.study_config(), plan_folder(plan)
    tracker = Tracker(config)
    records = trial_records(plan, results, tracker)
    out = folder / "report"
    files = [write_csv([asdict(r) | {"params": json.dumps(r.params)} for r in records], out / "trials.csv")] if records else []
    files += optuna_plots(optuna_study(plan, records), out)
    # the best trial among those that trained to the end (their runs hold the best checkpoint), else among all
    scored = [r for r in records if r.status == "finished" and math.isfinite(r.objective)]
    scored = scored or [r for r in records if r.status == "stopped" and math.isfinite(r.objective)]
    best = min(scored, key=lambda r: r.objective) if scored else None
    result = SweepResult(plan.name, str(folder), plan.parent_run_id, records, best)
    counts = {status: sum(r.status == status for r in records) for status in ("finished", "stopped", "diverged", "failed")}
    tracker.set_tags(plan.parent_run_id, {f"study.trials_{k}": v for k, v in counts.items()})
    if best is not None:
        best_config, strategy = trial_config(plan, best.params)
        files.append(write_text(yaml.safe_dump(best_config.model_dump(mode="json"), sort_keys=False), out / "best_config.yaml"))
        files.append(write_json({"trial_id": best.trial_id, "strategy": strategy, "params": best.params,
                                 "objective": best.objective, "run_id": best.run_id}, out / "best_trial.json"))
        tracker.set_tags(plan.parent_run_id, {"study.best_trial": best.trial_id, "study.best_run_id": best.run_id or ""} |
                         {f"best.{path}": value for path, value in best.params.items()})
        tracker.log_metrics(plan.parent_run_id, {f"best_{plan.search_space().objective(config).removeprefix('best_')}": best.objective}, step=0)
        checkpoint = best_checkpoint(best, plan, tracker)
        result.registered = register_model(plan, best, checkpoint, tracker)
        print(f"sweep: best trial {best.trial_id} ({best.objective:.3f}): {best.params}; registered model {result.registered}")
        print("sweep: evaluating the best trial on the test splits (never seen during the sweep)")
        result.test = evaluate(str(checkpoint), best_config, plan.data_dir, out_dir=out / "test_evaluation")
        tracker.log_metrics(plan.parent_run_id, metric_names(result.test), step=0)
        if best.run_id:
            tracker.log_metrics(best.run_id, metric_names(result.test), step=0)
        files.append(write_json(result.test, out / "test_summary.json"))
    for path in files:
        tracker.log_file(plan.parent_run_id, path, "sweep")
    tracker.end_run(plan.parent_run_id, "FINISHED")
    print(trial_table(records))
    print(f"sweep {plan.name}: {counts}; report {out}; MLflow parent run {plan.parent_run_id}")
    return result


def trial_table(records: list[TrialRecord]) -> str:
    """The trials as a Markdown table, best first."""
    if not records:
        return "(no trials)"
    paths = list(records[0].params)
    lines = ["| trial | status | epochs | objective | " + " | ".join(paths) + " |", "|" + "---|" * (4 + len(paths))]
    for r in sorted(records, key=lambda r: (not math.isfinite(r.objective), r.objective)):
        values = " | ".join(f"{r.params[p]:.4g}" if isinstance(r.params[p], float) else str(r.params[p]) for p in paths)
        lines.append(f"| {r.trial_id} | {r.status} | {r.epochs} | {r.objective:.3f} | {values} |")
    return "\n".join(lines)
