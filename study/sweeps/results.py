"""After a sweep's trials: a record per trial, the report, the registered model, the test evaluation.

The parent MLflow run gets the trial table, the best config and Optuna's plots (optimisation
history, parameter importances, parallel coordinates; the parameters by their short names); the
best trial's run is tagged ``study.best_trial``, its logged U-Net is registered in the MLflow model
registry (with descriptions, and the alias ``champion``), and only then evaluated on the test
splits. A trial ASHA stopped early ends FINISHED, tagged ``study.trial_status=stopped``.
"""

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from components.model import load_trained_model
from study import console
from study.evaluation.evaluate import evaluate
from study.evaluation.measure import log_evaluation
from study.figures import save_figure
from study.files import write_csv, write_json, write_text
from study.sweeps.plan import SweepPlan, plan_folder, trial_config, trial_run_name
from study.tracking.models import CHAMPION, log_unet, register
from study.tracking.runs import RUN_NAME_TAG, Tracker
from study.training.run_folder import CHECKPOINT_FOLDERS

__all__ = ["SweepResult", "TrialRecord", "finish"]


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


def trial_records(plan: SweepPlan, results, tracker: Tracker) -> list[TrialRecord]:
    """One record per trial, with its MLflow run closed with the right status."""
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
        params = {name: result.config.get(name) for name in space.parameters}
        name = trial_run_name(plan, trial_id)
        runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{name}'")
        run_id = runs[0].info.run_id if runs else None
        if run_id is not None:
            tracker.set_tags(run_id, {"study.trial_status": status, "study.sweep": plan.name})
            if runs[0].info.status == "RUNNING":  # a trial Tune stopped early ends without closing its run
                tracker.set_tags(run_id, {"study.status": "stopped"})
                tracker.end_run(run_id, "FINISHED")  # stopped by design, not crashed: the tag says so
        epochs = int(metrics.get("epoch", -1)) + 1
        objective = float(value) if value is not None else math.nan
        seconds = float(metrics.get("time_total_s", math.nan))
        records.append(TrialRecord(trial_id, params, status, epochs, objective, run_id, seconds))
    return records


def optuna_study(plan: SweepPlan, records: list[TrialRecord]):
    """The trials as an Optuna study (for Optuna's plots): failed for diverged/failed ones."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = plan.search_space().distributions()
    study = optuna.create_study(direction="minimize", study_name=plan.name)
    for record in records:
        ok = record.status in ("finished", "stopped") and math.isfinite(record.objective)
        state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL
        trial = optuna.trial.create_trial(
            params=record.params, distributions=distributions, value=record.objective if ok else None, state=state
        )
        study.add_trial(trial)
    return study


def optuna_plots(study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and parallel coordinates, as PNGs (those that can be drawn)."""
    from optuna.visualization import matplotlib as plots

    written = []
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    kinds = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
    }
    for kind, plot in kinds.items():
        if kind != "optimization_history" and len(complete) < 2:
            console.say(f"sweep: no {kind} plot (needs at least 2 completed trials)")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. importances of parameters that never varied
                console.say(f"sweep: no {kind} plot ({error})")
                continue
        figure = np.ravel(axes)[0].figure
        figure.set_size_inches(11, 5)  # room for the long config paths
        written.append(save_figure(figure, folder / f"{kind}.png"))
    return written


def register_model(plan: SweepPlan, best: TrialRecord, checkpoint: Path, tracker: Tracker) -> str:
    """Register the best trial's logged U-Net (logged now if its run has none, e.g. a trial trained before an
    upgrade) as the newest version, the ``champion``; returns ``name/version``."""
    config = plan.study_config()
    model_name = config.sweep.register_model or f"{config.name}-landmarks"
    run = tracker.client.get_run(best.run_id)
    strategy = run.data.tags.get("study.strategy", "model")
    model_id = run.data.tags.get("study.model_id") or log_unet(
        tracker.uri,
        best.run_id,
        load_trained_model(checkpoint).network,
        f"unet-{strategy}",
        config.data.image_size,
        {"strategy": strategy},
    )
    objective, size = plan.search_space().objective(config), config.data.image_size
    values = ", ".join(
        f"{name} = {value:.4g}" if isinstance(value, float) else f"{name} = {value}"
        for name, value in best.params.items()
    )
    description = (
        f"The landmark U-Net of study '{config.name}' ({config.data.landmarks.in_words()} as heatmaps; input a 1 x "
        f"{size} x {size} DRR, output {len(config.data.landmarks.landmark_set())} heatmap logits). Each version is "
        "the best trial of a sweep; "
        f"the alias '{CHAMPION}' marks the newest."
    )
    version_description = (
        f"Best of sweep {plan.name} ({len(plan.search_space().parameters)} tuned parameter(s)): trial {best.trial_id},"
        f" {values}; {objective} {best.objective:.4g} on val. Test metrics are logged to its run."
    )
    tags = {"study.sweep": plan.name, "study.objective": f"{best.objective:.6g}", "study.trial": best.trial_id}
    version = register(tracker.client, model_name, model_id, best.run_id, description, version_description, tags)
    return f"{model_name}/{version}"


def best_checkpoint(best: TrialRecord, plan: SweepPlan, tracker: Tracker) -> Path:
    """The best trial's checkpoint (``train.checkpoint``: its last or its best): in its local run folder, else
    downloaded from its MLflow run."""
    config, _ = trial_config(plan, best.params)
    local = (
        Path(config.train.storage) / trial_run_name(plan, best.trial_id) / CHECKPOINT_FOLDERS[config.train.checkpoint]
    )
    return local if local.is_dir() else tracker.download_checkpoint(best.run_id)


def finish(plan: SweepPlan, results) -> SweepResult:
    """Record the trials, log the best config and plots, register and test-evaluate the best model."""
    config, folder = plan.study_config(), plan_folder(plan)
    tracker = Tracker(config)
    records = trial_records(plan, results, tracker)
    out = folder / "report"
    rows = [asdict(r) | {"params": json.dumps(r.params)} for r in records]
    files = [write_csv(rows, out / "trials.csv")] if records else []
    files += optuna_plots(optuna_study(plan, records), out)
    # the best trial among those that trained to the end (their runs hold the best checkpoint), else among all
    scored = [r for r in records if r.status == "finished" and math.isfinite(r.objective)]
    scored = scored or [r for r in records if r.status == "stopped" and math.isfinite(r.objective)]
    best = min(scored, key=lambda r: r.objective) if scored else None
    result = SweepResult(plan.name, str(folder), plan.parent_run_id, records, best)
    counts = {
        status: sum(r.status == status for r in records) for status in ("finished", "stopped", "diverged", "failed")
    }
    tracker.set_tags(plan.parent_run_id, {f"study.trials_{k}": v for k, v in counts.items()})
    if best is not None:
        best_config, strategy = trial_config(plan, best.params)
        best_yaml = yaml.safe_dump(best_config.model_dump(mode="json"), sort_keys=False)
        files.append(write_text(best_yaml, out / "best_config.yaml"))
        best_trial = {
            "trial_id": best.trial_id,
            "strategy": strategy,
            "params": best.params,
            "objective": best.objective,
            "run_id": best.run_id,
        }
        files.append(write_json(best_trial, out / "best_trial.json"))
        best_tags = {f"best.{path}": value for path, value in best.params.items()}
        tracker.set_tags(
            plan.parent_run_id, {"study.best_trial": best.trial_id, "study.best_run_id": best.run_id or ""} | best_tags
        )
        if best.run_id:
            tracker.set_tags(best.run_id, {"study.best_trial": "true"})
        objective = plan.search_space().objective(config).removeprefix("best_")
        tracker.log_metrics(plan.parent_run_id, {f"best_{objective}": best.objective}, step=0)
        checkpoint = best_checkpoint(best, plan, tracker)
        result.registered = register_model(plan, best, checkpoint, tracker)
        console.say(f"sweep: best trial {best.trial_id} ({best.objective:.3f}): {best.params}")
        console.say(
            f"sweep: registered model {result.registered}; evaluating it on the test splits (never seen before)"
        )
        result.test = evaluate(str(checkpoint), best_config, plan.data_dir, out_dir=out / "test_evaluation")
        for run_id in filter(None, (best.run_id, plan.parent_run_id)):
            log_evaluation(tracker, run_id, result.test, plan.data_dir)
        files.append(write_json(result.test, out / "test_summary.json"))
    for path in files:
        tracker.log_file(plan.parent_run_id, path, "sweep")
    tracker.end_run(plan.parent_run_id, "FINISHED")
    console.say(trial_table(records))
    console.say(f"sweep {plan.name}: {counts}; report {out}")
    console.say(f"sweep {plan.name}: {tracker.link(plan.parent_run_id)}")
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
