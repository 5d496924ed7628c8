"""``study train``: one strategy of a study config on Ray Train (DDP), tracked in MLflow.

A strategy (``train.strategies.<name>`` in the config) starts from random weights, from another
strategy's best checkpoint (trained first when it has no finished run), from a checkpoint folder
or from an MLflow run, then runs its phases in order; a phase is a weighted sum of registered
losses, a number of epochs and an optimizer.

How a run is put together:

- the driver (``train``) resolves the start, opens the MLflow run, and hands the ``train`` and
  ``val`` Parquet splits to a ``TorchTrainer`` as Ray Datasets (``train`` split across workers);
- every worker (``train_loop``) streams its share of the rows once, keeps it in memory and draws
  each epoch's order from (seed, epoch, rank); rank 0 evaluates on ``val`` after every epoch and
  reports the metrics with a checkpoint; Ray keeps the latest and the best by
  ``train.selection_metric``;
- on the Ray Train controller, ``EpochLogger`` prints every epoch and logs it to MLflow;
- a worker that dies restarts from the latest checkpoint (``train.max_failures``); starting a run
  again with the same name resumes it, and a finished run is returned as it is;
- a loss that is NaN/inf, or whose running median stays above ``train.divergence_factor`` times
  its start, ends the run with status ``diverged`` (no exception);
- at the end the driver logs the best checkpoint and PNG overlays of val predictions.
"""

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback

from components import losses, training
from components.dataset import DatasetError
from components.manifest import differing_keys, read_manifest
from components.model import CHECKPOINT_FILE, load_checkpoint, make_unet, save_checkpoint, weights_fingerprint
from study.config import ConfigError, StudyConfig
from study.runtime import ensure_ray
from study.tracking import Tracker

RESULT_FILE = "study_result.json"
IDENTITY_FILE = "study_run.json"
BEST_CHECKPOINT = "best_checkpoint"
LATEST_CHECKPOINT = "latest_checkpoint"


@dataclass
class TrainResult:
    """What a finished training run left behind (also written as ``<run folder>/study_result.json``).

    ``status`` is ``finished`` or ``diverged``; ``epochs`` counts the epochs run, the last one cut
    short when the run diverged; ``last_metrics`` are those of the last checkpoint; ``best_checkpoint`` is the folder of the best
    checkpoint by the selection metric (None when the run diverged before its first epoch ended).
    """

    run_name: str
    strategy: str
    status: str
    epochs: int
    best_checkpoint: str | None
    best_metrics: dict = field(default_factory=dict)
    last_metrics: dict = field(default_factory=dict)
    run_id: str | None = None


def model_settings(config: StudyConfig) -> dict:
    """The ``make_unet`` arguments that define the architecture (weights come from checkpoints)."""
    return config.train.model.model_dump(mode="json", exclude={"encoder_weights"})


def phase_of_epochs(config: StudyConfig, strategy: str) -> list[tuple[int, int]]:
    """(phase index, epoch within the phase) of every epoch of the strategy, in order."""
    phases = config.train.strategies[strategy].phases
    return [(index, epoch) for index, phase in enumerate(phases) for epoch in range(phase.epochs)]


def make_optimizer(phase, parameters) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return kinds[phase.optimizer](parameters, lr=phase.learning_rate, weight_decay=phase.weight_decay)


def all_reduce(values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
    """``values`` reduced over the workers (unchanged with one worker)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=op)
    return tensor.cpu().tolist()


def read_rows(dataset_name: str, batch_size: int = 256) -> dict[str, np.ndarray]:
    shard = ray.train.get_dataset_shard(dataset_name)
    return training.collect_rows(shard.iter_batches(batch_size=batch_size, batch_format="numpy"))


def inject_failure(fail_once: dict | None, epoch: int, rank: int, world_size: int) -> None:
    """Tests only: the last worker exits hard once, a second into ``fail_once["epoch"]``."""
    if fail_once and epoch == fail_once["epoch"] and rank == world_size - 1 and not os.path.exists(fail_once["marker"]):
        Path(fail_once["marker"]).touch()
        time.sleep(1.0)  # as a crash mid-epoch would; the controller registers the last checkpoint meanwhile
        os._exit(1)


def quiet_report_logs() -> None:
    """Drop Ray Train's INFO line per report: its module logs under its file path, not ``ray.train``,
    so ``LoggingConfig`` does not reach it (Ray 2.60)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class RayTrainWorker:
    """A Ray Train worker's rank, rows, resumed state and reports."""

    def __init__(self):
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def rows(self, split: str) -> dict[str, np.ndarray]:
        return read_rows(split)

    def resumed_state(self) -> dict:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return {}
        with checkpoint.as_directory() as folder:
            return load_checkpoint(folder)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict, folder: str | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


class LocalWorker:
    """Training in this process, without Ray Train: a small CPU run such as a sweep trial.

    Checkpoints live in the run folder, ``latest/`` (to resume) and ``best_checkpoint/`` (by the
    selection metric); every report also goes to ``on_report``.
    """

    def __init__(self, run_folder: Path, data_dir: Path, metric: str, use_gpu: bool, cpus: float, on_report):
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.run_folder, self.data_dir, self.metric, self.on_report = run_folder, data_dir, metric, on_report
        best = run_folder / BEST_CHECKPOINT / CHECKPOINT_FILE
        self.best_value = load_checkpoint(best.parent)["metrics"][metric] if best.is_file() else math.inf  # of a resumed run
        torch.set_num_threads(max(1, int(cpus)))

    def rows(self, split: str) -> dict[str, np.ndarray]:
        from components.dataset import read_split

        rows = read_split(self.data_dir, split)
        return {name: getattr(rows, name) for name in training.COLUMNS}

    def resumed_state(self) -> dict:
        latest = self.run_folder / LATEST_CHECKPOINT
        return load_checkpoint(latest) if (latest / CHECKPOINT_FILE).is_file() else {}

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict, folder: str | None) -> None:
        if folder is not None:
            if metrics[self.metric] < self.best_value:
                self.best_value = metrics[self.metric]
                replace_folder(folder, self.run_folder / BEST_CHECKPOINT)
            replace_folder(folder, self.run_folder / LATEST_CHECKPOINT)
        self.on_report(metrics)


def replace_folder(source: str | Path, target: Path) -> None:
    """Copy ``source`` to ``target`` by a rename, so ``target`` is never half-written."""
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(source, temporary)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        target.rename(old)
    temporary.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def ray_train_loop(loop_config: dict) -> dict:
    """The entry point of a Ray Train worker."""
    quiet_report_logs()
    return train_loop(loop_config, RayTrainWorker())


def train_loop(loop_config: dict, worker) -> dict:
    """Train the strategy's phases; report every epoch (rank 0 with a checkpoint and val metrics).

    ``worker`` is a ``RayTrainWorker`` or a ``LocalWorker``: where rows, the resumed state and reports go.
    """
    config = StudyConfig.model_validate_json(loop_config["config"])
    train_config, strategy = config.train, loop_config["strategy"]
    phases = train_config.strategies[strategy].phases
    schedule = phase_of_epochs(config, strategy)
    rank, world_size, device = worker.rank, worker.world_size, worker.device
    selection = f"best_{train_config.selection_metric}"
    camera = config.data.render_camera()
    loss_context = train_config.loss.context(camera, config.data.poses.source_to_isocenter)
    augment = train_config.augment.ranges() if train_config.augment else None
    use_amp = train_config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    seed = config.training_seed()
    torch.manual_seed(seed)
    settings = model_settings(config)
    model = make_unet(**settings, encoder_weights=train_config.model.encoder_weights)
    state = worker.resumed_state()
    if state:
        model.load_state_dict(state["model"])
    elif loop_config["init"]:
        start = load_checkpoint(loop_config["init"])
        if start["settings"] != settings:
            raise ConfigError(f"{loop_config['init']}: its model {start['settings']} differs from the config's {settings}")
        model.load_state_dict(start["model"])
    first_epoch = state.get("epoch", -1) + 1
    start_fingerprint = state.get("start_fingerprint") or weights_fingerprint(model.state_dict())
    best_so_far = state.get("metrics", {}).get(selection, math.inf)
    ddp_model = worker.prepare(model)

    train_rows = worker.rows("train")
    val_rows = worker.rows("val") if rank == 0 else None
    local_steps = len(training.epoch_batches(training.row_count(train_rows), train_config.batch_size, seed, 0))
    steps = int(all_reduce([local_steps], dist.ReduceOp.MIN)[0])

    optimizer, guard, current_phase = None, None, None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    for epoch in range(first_epoch, len(schedule)):
        phase_index = schedule[epoch][0]
        phase = phases[phase_index]
        if phase_index != current_phase:
            current_phase = phase_index
            optimizer = make_optimizer(phase, model.parameters())
            guard = training.DivergenceGuard(train_config.divergence_factor)
            if state.get("phase") == phase_index:
                optimizer.load_state_dict(state["optimizer"])
                guard.reference = state["divergence_reference"]
            loss_function = losses.WeightedLoss(phase.losses)
        inject_failure(loop_config.get("fail_once"), epoch, rank, world_size)

        started = time.perf_counter()
        sums, diverged = {}, False
        batches = training.epoch_batches(training.row_count(train_rows), train_config.batch_size, seed + 7919 * rank, epoch)
        for step, indices in enumerate(batches[: min(steps, phase.steps_per_epoch or steps)]):
            seeds = training.augmentation_seeds(seed, epoch, rank, step, len(indices)) if augment else None
            batch = training.make_batch(train_rows, indices, device, augment, seeds)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = ddp_model(batch["image"])
            loss, parts = loss_function(logits.float(), batch, loss_context)
            if all_reduce([float(guard.diverged(loss.item()))], dist.ReduceOp.MAX)[0]:
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["steps"] = sums.get("steps", 0.0) + 1

        keys = sorted(sums)
        reduced = dict(zip(keys, all_reduce([sums[key] for key in keys])))
        metrics = {f"train_{key}": value / reduced["steps"] for key, value in reduced.items() if key != "steps"}
        metrics |= {"epoch": epoch, "phase": phase_index, "epochs": len(schedule), "first_epoch": first_epoch,
                    "status": "diverged" if diverged else "running"}
        checkpoint = None
        if rank == 0 and not diverged:
            predictions = training.predict(model, val_rows, camera, loss_context.temperature, train_config.batch_size, device)
            metrics |= {f"val_{key}": value for key, value in training.validation_metrics(predictions, val_rows).items()}
            best_so_far = min(best_so_far, metrics[train_config.selection_metric])
        if rank == 0:
            metrics[selection] = best_so_far  # the running best (inf before any val): what a sweep compares trials by
        metrics["epoch_seconds"] = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0 and not diverged:
                save_checkpoint(
                    folder, model, settings, epoch=epoch, phase=phase_index, optimizer=optimizer.state_dict(),
                    divergence_reference=guard.reference, strategy=strategy, start_fingerprint=start_fingerprint,
                    config=loop_config["config"],
                    metrics={key: value for key, value in metrics.items() if isinstance(value, (int, float))},
                )
                checkpoint = folder
            worker.report(metrics, checkpoint)
        if diverged:
            return {"status": "diverged", "epoch": epoch}
    return {"status": "finished", "epoch": len(schedule) - 1}


class EpochLogger(UserCallback):
    """Print each epoch's line and log its metrics to MLflow (on the Ray Train controller, or in process)."""

    def __init__(self, tracking_uri: str, run_id: str, strategy: str, metric: str):
        self.tracking_uri, self.run_id, self.strategy, self.metric = tracking_uri, run_id, strategy, metric
        self.client = None

    def after_report(self, run_context, metrics, checkpoint):
        self.log(metrics[0])

    def log(self, reported: dict) -> None:
        from mlflow.tracking import MlflowClient

        from study.tracking import log_metrics

        self.client = self.client or MlflowClient(self.tracking_uri)
        log_metrics(self.client, self.run_id, {k: v for k, v in reported.items() if k != "epoch"}, int(reported["epoch"]))
        print(epoch_line(self.strategy, reported, self.metric), flush=True)


def epoch_line(strategy: str, metrics: dict, metric: str) -> str:
    """One line of progress: ``baseline epoch 3/15: loss 0.0123, val RMSE 4.21 px (soft 4.50), ...``."""
    text = f"{strategy} epoch {metrics['epoch'] + 1}/{metrics['epochs']}"
    if metrics.get("status") == "diverged":
        return f"{text}: diverged (loss not finite, or running above the divergence factor times its start); stopping"
    text += f": loss {metrics.get('train_loss', math.nan):.4g}"
    if "val_rmse_px" in metrics:
        text += f", val RMSE {metrics['val_rmse_px']:.2f} px (soft-argmax {metrics['val_rmse_soft_px']:.2f})"
        text += f", pose {metrics.get('val_rotation_deg', math.nan):.2f} deg / {metrics.get('val_translation_mm', math.nan):.1f} mm"
    return text + f", {metrics['epoch_seconds']:.1f} s"


def storage_folder(config: StudyConfig) -> str:
    storage = config.train.storage
    return storage if "://" in storage else str(Path(storage).resolve())


def claim_run_folder(run_folder: Path, identity: dict) -> None:
    """Make ``run_folder`` the home of this run, or check that the run there is this one."""
    path = run_folder / IDENTITY_FILE
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != identity:
            differing = ", ".join(sorted(differing_keys(existing, identity)))
            raise ConfigError(
                f"{run_folder}: a run of another config or strategy has this name (differs in: {differing}); "
                f"choose another --name or delete the folder"
            )
        return
    run_folder.mkdir(parents=True, exist_ok=True)
    temporary = run_folder / f".{IDENTITY_FILE}.tmp"
    temporary.write_text(json.dumps(identity, indent=2, sort_keys=True))
    temporary.replace(path)


def read_result(run_folder: Path) -> TrainResult | None:
    path = run_folder / RESULT_FILE
    return TrainResult(**json.loads(path.read_text())) if path.is_file() else None


def write_result(run_folder: Path, result: TrainResult) -> None:
    temporary = run_folder / f".{RESULT_FILE}.tmp"
    temporary.write_text(json.dumps(asdict(result), indent=2))
    temporary.replace(run_folder / RESULT_FILE)


def resolve_init(config: StudyConfig, init: str | None, data_dir: Path, tracker: Tracker) -> str | None:
    """The checkpoint folder a strategy starts from (None: random weights)."""
    if init is None:
        return None
    if init in config.train.strategies:
        print(f"start: the best checkpoint of strategy '{init}'")
        start = train(config, init, data_dir)
        if start.best_checkpoint is None:
            raise ConfigError(f"strategy '{init}' {start.status} before its first checkpoint; nothing to start from")
        return start.best_checkpoint
    if Path(init).exists():
        load_checkpoint(init)
        return str(Path(init).resolve())
    return str(tracker.download_checkpoint(init))


def complete_manifest(data_dir: Path) -> dict:
    data_manifest = read_manifest(data_dir)
    if data_manifest is None or data_manifest.get("status") != "complete":
        raise DatasetError(f"{data_dir}: not a complete data set (run 'study generate' first)")
    for split in ("train", "val"):
        if not data_manifest["rows"].get(split):
            raise DatasetError(f"{data_dir}: the '{split}' split has no rows; training needs train and val DRRs")
    return data_manifest


def train(
    config: StudyConfig,
    strategy: str,
    data_dir: str | Path,
    init: str | None = None,
    name: str | None = None,
    parent_run_id: str | None = None,
    fail_once: dict | None = None,
    in_process: bool = False,
    report_to_tune: bool = False,
) -> TrainResult:
    """Train ``strategy`` of ``config`` on the data set in ``data_dir``; resume or return a run of the same name.

    Args:
        init: overrides the strategy's start (a strategy name, checkpoint folder or MLflow run id).
        name: the run name (default ``config.run_name(strategy)``); Ray's run folder and the MLflow run.
        parent_run_id: an MLflow run to nest this run under.
        fail_once: tests only: ``{"epoch": k, "marker": path}`` kills a worker once at epoch k.
        in_process: train here, in one process, instead of on Ray Train workers (small CPU runs, sweep trials).
        report_to_tune: also report every epoch to Ray Tune (when called from a Tune trial).
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
    finished = None
    if in_process and "://" in storage:
        raise ConfigError(f"train.storage '{storage}': training in process needs a local folder")
    if "://" not in storage:
        resolved = config.model_dump(mode="json", exclude={"tracking", "report", "sweep"})
        resolved["train"]["seed"] = config.training_seed()  # "no training seed" and "the study's seed" are one run
        identity = {"config": resolved, "strategy": strategy, "init": init} | ({"in_process": True} if in_process else {})
        claim_run_folder(run_folder, identity)
        finished = read_result(run_folder)
    if finished is not None:
        print(f"{name}: already trained ({finished.status}, {finished.epochs} epochs); best checkpoint {finished.best_checkpoint}")
        return finished
    data_manifest = complete_manifest(data_dir)
    tracker = Tracker(config)
    init_checkpoint = resolve_init(config, init if init is not None else strategies[strategy].init, data_dir, tracker)
    tags = {"study.strategy": strategy, "study.dataset_hash": data_manifest["dataset_hash"],
            "study.data_dir": str(data_dir.resolve()), "study.init": str(init_checkpoint)}
    run_id = tracker.start_run(name, config, tags, parent_run_id)

    ensure_ray()
    use_gpu = config.train.use_gpu if config.train.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    metric = config.train.selection_metric
    loop_config = {"config": config.model_dump_json(), "strategy": strategy, "init": init_checkpoint, "fail_once": fail_once}
    logger = EpochLogger(tracker.uri, run_id, strategy, metric)
    where = "in this process" if in_process else f"on {config.train.workers} Ray Train worker(s)"
    print(f"{name}: training '{strategy}' {where} ({'GPU' if use_gpu else 'CPU'}); MLflow run {run_id}")
    try:
        if in_process:
            result = train_in_process(loop_config, config, name, run_folder, data_dir, use_gpu, logger, report_to_tune)
        else:
            result = train_on_ray(loop_config, config, name, storage, data_dir, use_gpu, logger, report_to_tune)
    except Exception:
        tracker.end_run(run_id, "FAILED")
        raise
    result.run_id = run_id
    finish_tracking(tracker, config, result, data_dir)
    if "://" not in storage:
        write_result(run_folder, result)
    if report_to_tune:  # the final epoch, held back until the run is logged and its result written
        from ray import tune

        tune.report(result.last_metrics)
    print(f"{name}: {result.status} after {result.epochs} epoch(s); best {metric} "
          f"{result.best_metrics.get(metric, math.nan):.3f}; best checkpoint {result.best_checkpoint}")
    return result


def is_final(metrics: dict) -> bool:
    """The report of a run's last epoch (or of its diverged one)."""
    return metrics.get("status") == "diverged" or metrics["epoch"] + 1 == metrics["epochs"]


def TuneReportExceptLast():
    """Ray Tune's ``TuneReportCallback``, holding back the final epoch, which ``train`` reports itself
    after the run is logged: Tune may end a trial (e.g. ASHA at ``max_t``) as soon as it sees it."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class Callback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if not is_final(metrics[0]):
                super().after_report(run_context, metrics, checkpoint)

    return Callback()


def train_on_ray(loop_config: dict, config: StudyConfig, name: str, storage: str, data_dir: Path, use_gpu: bool,
                 logger: EpochLogger, report_to_tune: bool) -> TrainResult:
    """A ``TorchTrainer`` run: DDP over ``train.workers`` workers, checkpoints in Ray's run folder."""
    datasets = {split: ray.data.read_parquet(str(data_dir / split)).select_columns(list(training.COLUMNS)) for split in ("train", "val")}
    metric = config.train.selection_metric
    callbacks = [logger] + ([TuneReportExceptLast()] if report_to_tune else [])
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.train.workers, use_gpu=use_gpu, resources_per_worker={"CPU": config.train.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=name, storage_path=storage,
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric, checkpoint_score_order="min"),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level="WARNING"),  # EpochLogger prints each epoch instead
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return summarise(trainer.fit(), name, loop_config["strategy"], metric)


def train_in_process(loop_config: dict, config: StudyConfig, name: str, run_folder: Path, data_dir: Path, use_gpu: bool,
                     logger: EpochLogger, report_to_tune: bool) -> TrainResult:
    """One process, no DDP (``train.workers`` is ignored): checkpoints in ``run_folder``; a run started again resumes."""
    reports = []

    def on_report(metrics: dict) -> None:
        reports.append(metrics)
        logger.log(metrics)
        if report_to_tune and not is_final(metrics):
            from ray import tune

            tune.report(metrics)

    metric = config.train.selection_metric
    worker = LocalWorker(run_folder, data_dir, metric, use_gpu, config.train.cpus_per_worker, on_report)
    returned = train_loop(loop_config, worker)
    best = run_folder / BEST_CHECKPOINT
    has_best = (best / CHECKPOINT_FILE).is_file()
    latest = run_folder / LATEST_CHECKPOINT
    return TrainResult(
        run_name=name, strategy=loop_config["strategy"], status=returned["status"], epochs=returned["epoch"] + 1,
        best_checkpoint=str(best) if has_best else None,
        best_metrics=load_checkpoint(best)["metrics"] if has_best else {},
        last_metrics=reports[-1] if reports else (load_checkpoint(latest)["metrics"] if (latest / CHECKPOINT_FILE).is_file() else {}),
    )


def summarise(fitted, name: str, strategy: str, metric: str, run_id: str | None = None) -> TrainResult:
    returned = fitted.return_value or {}
    last = {k: v for k, v in (fitted.metrics or {}).items() if isinstance(v, (int, float, str))}
    best = fitted.get_best_checkpoint(metric, "min") if fitted.best_checkpoints else None
    best_metrics = next((m for c, m in fitted.best_checkpoints or [] if best is not None and c.path == best.path), {})
    return TrainResult(
        run_name=name, strategy=strategy, status=returned.get("status", last.get("status", "finished")),
        epochs=int(returned.get("epoch", last.get("epoch", -1))) + 1, best_checkpoint=best.path if best is not None else None,
        best_metrics={k: v for k, v in best_metrics.items() if isinstance(v, (int, float))}, last_metrics=last, run_id=run_id,
    )


def finish_tracking(tracker: Tracker, config: StudyConfig, result: TrainResult, data_dir: Path) -> None:
    """Log the best checkpoint, its metrics and val overlays; end the MLflow run with the study's status."""
    from study.preview import write_overlays

    tracker.set_tags(result.run_id, {"study.status": result.status, "study.epochs": result.epochs})
    if result.best_checkpoint is not None:
        tracker.log_metrics(result.run_id, {f"best_{k}": v for k, v in result.best_metrics.items() if k.startswith("val_")}, result.epochs)
        tracker.log_artifacts(result.run_id, result.best_checkpoint, BEST_CHECKPOINT)
        if config.tracking.overlays:
            with tempfile.TemporaryDirectory() as folder:
                png = write_overlays(result.best_checkpoint, data_dir, Path(folder) / "val_overlays.png", config, config.tracking.overlays)
                tracker.log_file(result.run_id, png, "plots")
    tracker.end_run(result.run_id, "FINISHED")

