"""The Ray Tune side of a sweep: the trial function, its resources, the Tuner, and a line per trial.

Optuna's TPE (seeded) samples each trial's values and ASHA stops weak trials early, both on the
running best of the val metric. A trial trains through ``study.training.driver.train``: in its
own Tune process when ``sweep.workers_per_trial`` is 1 (CPU trials, which share one read of the
data set through Ray's object store), else as a ``TorchTrainer`` with that many DDP workers
(multi-GPU trials). A diverged trial raises
``TrialDiverged``: Tune records it as errored, Optuna as failed, and the sweep goes on.
"""

import math
import re
import time
from dataclasses import asdict
from pathlib import Path

from ray import tune

from study import console
from study.config import StudyConfig
from study.sweeps.plan import SweepPlan, gpus_per_worker, plan_folder, trial_config, trial_run_name
from study.sweeps.space import STRATEGY
from study.tracking.params import Tuned
from study.training.data import adopt_splits, share_splits
from study.training.driver import train
from study.training.loop import phase_of_epochs
from study.training.run_folder import read_result

__all__ = ["TrialDiverged", "make_tuner", "trainable"]


class TrialDiverged(RuntimeError):
    """A trial whose training diverged: Tune marks it errored, Optuna failed; the sweep goes on."""


def run_trial(params: dict, plan: dict, shared: dict | None = None) -> None:
    """A Tune trial (function trainable): train the sampled config; every epoch is reported to Tune.

    ``shared``: the data set's splits as the driver read them (``share_splits``), for trials in process.
    """
    plan = SweepPlan(**plan)
    if shared is not None:
        adopt_splits(shared)
    config, strategy = trial_config(plan, params)
    start = plan.starts.get(strategy)
    init = None
    if start is not None:  # the shared start: its local checkpoint, or its MLflow run on another node
        init = start["checkpoint"] if Path(start["checkpoint"]).exists() else start["run_id"]
    context = tune.get_context()
    trial_id = context.get_trial_id()
    name = trial_run_name(plan, trial_id)
    finished = read_result(Path(config.train.storage) / name)
    if finished is not None:  # trained before the sweep was interrupted: report its result, do not train again
        tune.report(finished.last_metrics)
        result = finished
    else:
        result = train(
            config,
            strategy,
            plan.data_dir,
            init=init,
            name=name,
            parent_run_id=plan.parent_run_id,
            launcher="process" if config.sweep.workers_per_trial == 1 else "ray_train",
            report_to_tune=True,
            tuned=Tuned(params, plan.search_space().paths(), trial_display_name(trial_id, context.get_trial_dir())),
        )
    if result.status == "diverged":
        raise TrialDiverged(f"trial {trial_id} ({strategy}, {params}) diverged after {result.epochs} epoch(s)")


def trial_display_name(trial_id: str, trial_dir: str) -> str:
    """A trial run's short name in MLflow, ``t03-48b65ca8``: Tune's trial number (the ``_3_`` after the id in
    its folder's name) and id."""
    found = re.search(rf"_{re.escape(trial_id)}_(\d+)", Path(trial_dir).name)
    return f"t{int(found.group(1)):02d}-{trial_id}" if found else f"t-{trial_id}"


def trial_resources(config: StudyConfig) -> dict:
    """What Tune reserves for one trial: the training process itself, or a token for a TorchTrainer's driver."""
    sweep = config.sweep
    if sweep.workers_per_trial == 1:
        return {"cpu": sweep.cpus_per_worker, "gpu": gpus_per_worker(config)}
    return {"cpu": 0.01}  # the TorchTrainer's workers reserve their own CPUs/GPUs


def max_concurrent(config: StudyConfig, trials: int) -> int | None:
    """Trials at once: the config's, or as many as the cluster's CPUs (and GPUs) hold now (None: let an autoscaler
    decide)."""
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
    space, config = plan.search_space(), plan.study_config()
    longest = 1
    for name, parameter in space.parameters.items():
        for value in parameter.examples():
            for strategy in space.strategies(config):
                values = {name: value} if name != STRATEGY else {}
                trial, _ = space.trial_config(config, values | {STRATEGY: strategy})
                longest = max(longest, len(phase_of_epochs(trial, strategy)))
    return longest


def trainable(plan: SweepPlan):
    """The trial function with the plan bound to it and the resources it reserves."""
    config = plan.study_config()
    # Trials in process share one read of the data set, through Ray's object store (DDP trials stream it).
    shared = share_splits(plan.data_dir) if config.sweep.workers_per_trial == 1 else None
    trial = tune.with_parameters(run_trial, plan=asdict(plan), shared=shared)
    return tune.with_resources(trial, trial_resources(config))


class TrialLines(tune.Callback):
    """A line per ended trial (on the driver): its status, epochs and objective, the best so far, time left."""

    def __init__(self, trials: int, objective: str):
        self.trials, self.objective = trials, objective
        self.ended, self.best, self.started = 0, math.inf, time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        stopped = result.get("epoch", -1) + 1 < result.get("epochs", 0)
        self.say(trial, "stopped early by ASHA" if stopped else "finished", result)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.say(trial, "diverged or failed", trial.last_result or {})

    def say(self, trial, status: str, result: dict) -> None:
        self.ended += 1
        value = result.get(self.objective, math.nan)
        if status != "diverged or failed" and math.isfinite(value):
            self.best = min(self.best, value)
        elapsed = time.monotonic() - self.started
        left = elapsed / self.ended * (self.trials - self.ended)
        epochs = int(result.get("epoch", -1)) + 1
        console.say(
            f"sweep: trial {self.ended}/{self.trials} ({trial.trial_id}) {status} after {epochs} epoch(s), "
            f"{self.objective} {value:.3f} (best {self.best:.3f}); {console.format_duration(elapsed)} elapsed"
            + (f", about {console.format_duration(left)} left" if self.ended < self.trials else "")
        )


def make_tuner(plan: SweepPlan) -> tune.Tuner:
    """The Tuner of a new sweep: TPE search, ASHA early stopping, trials as resources allow."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    config, space = plan.study_config(), plan.search_space()
    objective = space.objective(config)
    seed = config.sweep.seed if config.sweep.seed is not None else config.seed
    sampler = optuna.samplers.TPESampler(seed=seed)
    searcher = OptunaSearch(space=space.distributions(), metric=objective, mode="min", sampler=sampler)
    longest = longest_trial(plan)
    scheduler = ASHAScheduler(  # a grace period of the longest trial or more switches early stopping off
        metric=objective,
        mode="min",
        time_attr="training_iteration",
        max_t=longest,
        grace_period=min(config.sweep.grace_epochs, longest),
        reduction_factor=config.sweep.reduction_factor,
    )
    folder = plan_folder(plan)
    return tune.Tuner(
        trainable(plan),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=plan.trials,
            max_concurrent_trials=max_concurrent(config, plan.trials),
        ),
        run_config=tune_run_config(plan, folder),
    )


def tune_run_config(plan: SweepPlan, folder: Path) -> tune.RunConfig:
    """Where Tune keeps the experiment, and the line per trial (also for a resumed sweep)."""
    objective = plan.search_space().objective(plan.study_config())
    return tune.RunConfig(
        name=folder.name,
        storage_path=str(folder.parent),
        verbose=1,
        failure_config=tune.FailureConfig(max_failures=0),
        callbacks=[TrialLines(plan.trials, objective)],
    )
