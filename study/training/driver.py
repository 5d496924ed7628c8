"""``study train``: one strategy of a study config, in this process or on Ray Train (DDP), tracked in MLflow.

A strategy (``train.strategies.<name>``) starts from random weights, from another strategy's
checkpoint (``train.checkpoint``: its last, or its best; trained first when it has no finished run),
from a checkpoint folder or from an MLflow run, then runs its phases in order (``study.training.loop``).

Where it trains (``train.launcher``, see ``resolve_launcher``): on one machine without GPUs, in this
process with all its cores ("process": no Ray, no workers, measured fastest by
``benchmarks/train_epoch.py``); where there are GPUs or several nodes, on ``train.workers`` Ray
Train DDP workers ("ray_train"). Both see the same batches, so they train the same model (up to
batch-norm statistics, which DDP keeps per worker).

How a run is put together:

- the driver (``train``) claims the run folder, resolves the start and opens the MLflow run;
- a run trains on the ``train`` split and validates on ``val``; one fold of a cross-validation
  (``train.fold``) leaves its held-out subjects out of both (``study.training.data.run_columns``);
- in process, one ``LocalWorker`` takes the rows from ``study.training.data`` (read once per
  process) and keeps its checkpoints in the run folder;
- on Ray Train, the driver puts the run's rows into Ray's object store once (read
  once per process); every worker takes all the rows from there and trains on its share of every batch; Ray
  keeps the latest and the best checkpoint by ``train.selection_metric``; a worker that dies
  restarts from the latest one (``train.max_failures``);
- the MLflow run gets the parameters that tell it apart (``study.tracking.params``), its config,
  a description and the splits it trains and validates on as its datasets; a fold's run is tagged
  with its fold, held-out subjects and the subjects it trains and validates on;
- every epoch, ``EpochLogger`` says a line and logs the metrics to MLflow (step: the epoch from 1,
  continuing the count of the checkpoint the run started from);
- starting a run again with the same name resumes it; a finished run is returned as it is;
- at the end the driver logs the run's checkpoint (``train.checkpoint``), its U-Net as the MLflow
  model ``unet-<strategy>`` and PNG overlays of val predictions.
"""

import math
import os
import tempfile
from pathlib import Path

import torch

from components.dataset import DatasetError
from components.manifest import check_landmarks, read_manifest
from components.model import CHECKPOINT_FILE, load_checkpoint, trained_model
from study import console
from study.config import LAUNCHERS, ConfigError, FoldConfig, StudyConfig
from study.runtime import ensure_ray, ray_is_running
from study.tracking.datasets import log_splits
from study.tracking.models import log_unet
from study.tracking.params import Tuned, run_params
from study.tracking.runs import Tracker
from study.training import faults
from study.training.callbacks import EpochLogger, TuneReportExceptLast, is_final, ray_train_callback
from study.training.data import ROLES, run_splits, run_subjects, source_split
from study.training.loop import train_loop
from study.training.run_folder import (
    BEST_CHECKPOINT,
    LATEST_CHECKPOINT,
    TrainResult,
    claim_run_folder,
    read_result,
    run_identity,
    storage_folder,
    write_result,
)
from study.training.workers import LocalWorker

__all__ = ["resolve_init", "resolve_launcher", "train"]


def train(
    config: StudyConfig,
    strategy: str,
    data_dir: str | Path,
    init: str | None = None,
    name: str | None = None,
    parent_run_id: str | None = None,
    launcher: str | None = None,
    report_to_tune: bool = False,
    tuned: Tuned | None = None,
) -> TrainResult:
    """Train ``strategy`` of ``config`` on the data set in ``data_dir``; resume or return a run of the same name.

    Args:
        init: overrides the strategy's start (a strategy name, checkpoint folder or MLflow run id).
        name: the run name (default ``config.run_name(strategy)``); Ray's run folder and the MLflow run.
        parent_run_id: an MLflow run to nest this run under.
        launcher: overrides ``train.launcher`` ("process" or "ray_train"; a sweep trial's choice).
        report_to_tune: also report every epoch to Ray Tune (when called from a Tune trial).
        tuned: a sweep trial's tuned values, logged under their short names, and its display name.
    """
    if config.train is None:
        raise ConfigError(f"config '{config.name}' has no 'train' section")
    strategies = config.train.strategies
    if strategy not in strategies:
        raise ConfigError(f"strategy '{strategy}' is not in the config (strategies: {', '.join(strategies)})")
    data_dir = Path(data_dir)
    name = name or config.run_name(strategy)
    storage = storage_folder(config)
    run_folder = Path(storage) / name
    local = "://" not in storage
    launcher = resolve_launcher(config, launcher)
    if launcher == "process" and not local:
        raise ConfigError(f"train.storage '{storage}': training in process needs a local folder")
    if local:
        claim_run_folder(run_folder, run_identity(config, strategy, init, launcher))
        finished = read_result(run_folder)
        if finished is not None:
            console.say(f"{name}: already trained ({finished.status}, {finished.epochs} epochs); reused")
            return finished
    fold = config.train.fold
    data_manifest = complete_manifest(data_dir, fold)
    check_landmarks(data_dir, config.data.landmarks.landmark_set())
    tracker = Tracker(config)
    start = init if init is not None else strategies[strategy].init
    init_checkpoint = resolve_init(config, start, data_dir, tracker)
    first_step = epochs_before(init_checkpoint) + 1
    tags = {
        "study.strategy": strategy,
        "study.dataset_hash": data_manifest["dataset_hash"],
        "study.data_dir": str(data_dir.resolve()),
        "study.init": str(init_checkpoint),
        "study.first_step": first_step,
    } | fold_tags(data_dir, fold)
    params = run_params(config, strategy, start, tuned)
    description = run_description(config, strategy, start, data_dir, tuned)
    display = tuned.display_name if tuned is not None else None
    run_id = tracker.start_run(name, config, params, tags, description, parent_run_id, display)
    log_splits(tracker.client, run_id, data_dir, data_manifest, [source_split(role, fold) for role in ROLES])

    use_gpu = config.train.use_gpu if config.train.use_gpu is not None else gpus_present(launcher) > 0
    loop_config = {
        "config": config.model_dump_json(),
        "strategy": strategy,
        "init": init_checkpoint,
        "epoch_offset": first_step - 1,
        "fail_once": faults.FAIL_ONCE,
    }
    logger = EpochLogger(tracker.uri, run_id, strategy, first_step, echo=not report_to_tune)
    where = "in this process" if launcher == "process" else f"on {config.train.workers} Ray Train worker(s)"
    console.say(f"{name}: training '{strategy}' {where} ({'GPU' if use_gpu else 'CPU'}); {tracker.link(run_id)}")
    try:
        if launcher == "process":
            result = train_in_process(loop_config, config, name, run_folder, data_dir, use_gpu, logger, report_to_tune)
        else:
            result = train_on_ray(loop_config, config, name, storage, data_dir, use_gpu, logger, report_to_tune)
    except Exception:
        tracker.end_run(run_id, "FAILED")
        raise
    result.run_id = run_id
    finish_tracking(tracker, config, result, data_dir, first_step, params)
    if local:
        write_result(run_folder, result)
    if report_to_tune:  # the final epoch, held back until the run is logged and its result written
        from ray import tune

        tune.report(result.last_metrics)
    metric = config.train.selection_metric
    best = result.best_metrics.get(metric, math.nan)
    console.say(f"{name}: {result.status} after {result.epochs} epoch(s); best {metric} {best:.3f}")
    return result


def resolve_launcher(config: StudyConfig, launcher: str | None = None) -> str:
    """Where a run trains: ``launcher`` or ``train.launcher``; "auto" is "ray_train" where Ray has GPUs or
    several nodes (or, without a Ray cluster, where this machine has a GPU), else "process"."""
    chosen = launcher or config.train.launcher
    if chosen not in LAUNCHERS:
        raise ConfigError(f"launcher {chosen!r}: expected one of {', '.join(LAUNCHERS)}")
    if chosen != "auto":
        return chosen
    if os.environ.get("RAY_ADDRESS") or ray_is_running():
        import ray

        ensure_ray()
        several_nodes = sum(node["Alive"] for node in ray.nodes()) > 1
        return "ray_train" if several_nodes or ray.cluster_resources().get("GPU", 0) > 0 else "process"
    return "ray_train" if torch.cuda.is_available() else "process"


def gpus_present(launcher: str) -> int:
    """GPUs a run could use: Ray's (on Ray Train), else this machine's."""
    if launcher == "ray_train":
        import ray

        ensure_ray()
        return int(ray.cluster_resources().get("GPU", 0))
    return torch.cuda.device_count()


def resolve_init(config: StudyConfig, init: str | None, data_dir: Path, tracker: Tracker) -> str | None:
    """The checkpoint folder a strategy starts from (None: random weights)."""
    if init is None:
        return None
    if init in config.train.strategies:
        which = config.train.checkpoint
        console.say(f"start: the {which} checkpoint of strategy '{init}'")
        start = train(config, init, data_dir)
        if start.checkpoint(which) is None:
            raise ConfigError(f"strategy '{init}' {start.status} before its first checkpoint; nothing to start from")
        return start.checkpoint(which)
    if Path(init).exists():
        load_checkpoint(init)
        return str(Path(init).resolve())
    return str(tracker.download_checkpoint(init))


def epochs_before(init_checkpoint: str | None) -> int:
    """The epochs behind a start checkpoint: its own run's, after those of that run's start (0 for random
    weights)."""
    if init_checkpoint is None:
        return 0
    state = load_checkpoint(init_checkpoint)
    return int(state.get("epoch_offset", 0)) + int(state.get("epoch", -1)) + 1


def run_description(config: StudyConfig, strategy: str, start: str | None, data_dir: Path, tuned: Tuned | None) -> str:
    """A strategy run in words: what it starts from, each phase's losses, length and optimizer, seed and data."""
    phases = []
    for phase in config.train.strategies[strategy].phases:
        losses = " + ".join(f"{weight:g} {name}" for name, weight in phase.losses.items())
        phases.append(f"{phase.epochs} epoch(s) of {losses} ({phase.optimizer}, lr {phase.learning_rate:g})")
    begin = f"from the {config.train.checkpoint} checkpoint of '{start}'" if start else "from random weights"
    text = f"Strategy '{strategy}', {begin}: " + "; then ".join(phases) + "."
    text += f" Training seed {config.training_seed()}; data set {data_dir.name}."
    if tuned is not None:
        text += " Sweep trial: " + ", ".join(f"{name} = {value}" for name, value in tuned.values.items()) + "."
    return text


def fold_tags(data_dir: Path, fold: FoldConfig | None) -> dict:
    """A fold's run's tags: ``study.fold``, ``study.held_out`` and the subjects it trains and validates on."""
    if fold is None:
        return {}
    tags = {"study.fold": fold.number, "study.held_out": ",".join(fold.held_out)}
    return tags | {f"study.{role}_subjects": ",".join(run_subjects(data_dir, role, fold)) for role in ROLES}


def complete_manifest(data_dir: Path, fold: FoldConfig | None = None) -> dict:
    """The manifest of a complete data set with rows to train and validate on (else a ``DatasetError`` naming the
    folder)."""
    data_manifest = read_manifest(data_dir)
    if data_manifest is None or data_manifest.get("status") != "complete":
        raise DatasetError(f"{data_dir}: not a complete data set (run 'study generate' first)")
    for split in [source_split(role, fold) for role in ROLES]:
        if not data_manifest["rows"].get(split):
            raise DatasetError(f"{data_dir}: the '{split}' split has no rows; training needs train and val DRRs")
    return data_manifest


def train_on_ray(
    loop_config: dict,
    config: StudyConfig,
    name: str,
    storage: str,
    data_dir: Path,
    use_gpu: bool,
    logger: EpochLogger,
    report_to_tune: bool,
) -> TrainResult:
    """A ``TorchTrainer`` run: DDP over ``train.workers`` workers, checkpoints in Ray's run folder."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from study.training.ray_worker import ray_train_loop_with

    ensure_ray()
    splits = ray.put(run_splits(data_dir, config.train.fold))  # once into the object store; every worker takes all
    metric = config.train.selection_metric
    callbacks = [ray_train_callback(logger)] + ([TuneReportExceptLast()] if report_to_tune else [])
    trainer = TorchTrainer(
        ray_train_loop_with(splits),
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.train.workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": config.train.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=metric, checkpoint_score_order="min"
            ),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level="WARNING"),  # EpochLogger says each epoch instead
        ),
    )
    shown = console.last_relayed()
    result = summarise(trainer.fit(), name, loop_config["strategy"], metric)
    if logger.echo:
        console.wait_for_last_relayed(shown + 1)  # the final epoch's line, before what follows it
    return result


def train_in_process(
    loop_config: dict,
    config: StudyConfig,
    name: str,
    run_folder: Path,
    data_dir: Path,
    use_gpu: bool,
    logger: EpochLogger,
    report_to_tune: bool,
) -> TrainResult:
    """One process, no DDP (``train.workers`` is ignored), checkpoints in ``run_folder``; a run started again
    resumes."""
    reports = []

    def on_report(metrics: dict) -> None:
        reports.append(metrics)
        logger.log(metrics)
        if report_to_tune and not is_final(metrics):
            from ray import tune

            tune.report(metrics)

    metric = config.train.selection_metric
    worker = LocalWorker(run_folder, data_dir, metric, use_gpu, on_report, config.train.fold)
    returned = train_loop(loop_config, worker)
    best = run_folder / BEST_CHECKPOINT
    has_best = (best / CHECKPOINT_FILE).is_file()
    latest = run_folder / LATEST_CHECKPOINT
    if reports:
        last_metrics = reports[-1]
    else:
        last_metrics = load_checkpoint(latest)["metrics"] if (latest / CHECKPOINT_FILE).is_file() else {}
    return TrainResult(
        run_name=name,
        strategy=loop_config["strategy"],
        status=returned["status"],
        epochs=returned["epoch"] + 1,
        best_checkpoint=str(best) if has_best else None,
        best_metrics=load_checkpoint(best)["metrics"] if has_best else {},
        last_metrics=last_metrics,
        last_checkpoint=str(latest) if (latest / CHECKPOINT_FILE).is_file() else None,
    )


def summarise(fitted, name: str, strategy: str, metric: str) -> TrainResult:
    """The ``TrainResult`` of a finished ``TorchTrainer.fit()``."""
    returned = fitted.return_value or {}
    last = {k: v for k, v in (fitted.metrics or {}).items() if isinstance(v, int | float | str)}
    best = fitted.get_best_checkpoint(metric, "min") if fitted.best_checkpoints else None
    best_metrics = next((m for c, m in fitted.best_checkpoints or [] if best is not None and c.path == best.path), {})
    return TrainResult(
        run_name=name,
        strategy=strategy,
        status=returned.get("status", last.get("status", "finished")),
        epochs=int(returned.get("epoch", last.get("epoch", -1))) + 1,
        best_checkpoint=best.path if best is not None else None,
        best_metrics={k: v for k, v in best_metrics.items() if isinstance(v, int | float)},
        last_metrics=last,
        last_checkpoint=fitted.checkpoint.path if fitted.checkpoint is not None else None,
    )


def finish_tracking(
    tracker: Tracker, config: StudyConfig, result: TrainResult, data_dir: Path, first_step: int, params: dict
) -> None:
    """Log the checkpoint that stands for the run (``train.checkpoint``) and its U-Net as an MLflow model, the
    best val metrics (at the best epoch's step) and val overlays; end the MLflow run with the study's status."""
    which = config.train.checkpoint
    tags = {"study.status": result.status, "study.epochs": result.epochs, "study.checkpoint": which}
    tracker.set_tags(result.run_id, tags)
    selection = f"best_{config.train.selection_metric}"  # the running best, logged every epoch already
    if result.best_checkpoint is not None:
        best_val = {f"best_{k}": v for k, v in result.best_metrics.items() if k.startswith("val_")}
        best_val.pop(selection, None)
        tracker.log_metrics(result.run_id, best_val, first_step + int(result.best_metrics.get("epoch", 0)))
    if result.checkpoint(which) is not None:
        state = load_checkpoint(result.checkpoint(which))  # read once, for the artifact and the model
        tracker.log_checkpoint(result.run_id, state)
        model_params = {key: params[key] for key in ("strategy", "init", "loss.temperature") if key in params}
        result.model_id = log_unet(
            tracker.uri,
            result.run_id,
            trained_model(state).network,
            f"unet-{result.strategy}",
            config.data.image_size,
            model_params,
        )
        tracker.set_tags(result.run_id, {"study.model_id": result.model_id})
        if config.tracking.overlays:
            from study.figures import prediction_examples  # matplotlib: only when there is something to draw

            with tempfile.TemporaryDirectory() as folder:
                best = {"model": result.checkpoint(which)}
                overlays = Path(folder) / "val_overlays.png"
                camera = config.data.render_camera()
                fold, count = config.train.fold, config.tracking.overlays
                subjects = run_subjects(data_dir, "val", fold) if fold is not None else None
                split = source_split("val", fold)
                png = prediction_examples(best, camera, data_dir, split, overlays, count, subjects)
                tracker.log_file(result.run_id, png, "plots")
    tracker.end_run(result.run_id, "FINISHED")
