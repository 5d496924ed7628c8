"""The training loop of one strategy: its phases, epoch by epoch, on any ``Worker``.

A strategy's phases run in order; each phase is a weighted sum of registered losses, a number of
epochs and an optimizer. Every epoch the loop reports its metrics (rank 0 adds the ``val``
metrics and a checkpoint); a run started again continues from the worker's latest checkpoint.
A loss that is not finite, or whose running median stays above ``train.divergence_factor``
times its start, ends the run as ``diverged``.

The loop is plain PyTorch plus a worker (``study.training.workers``), which says where rows come
from, where the resumed state is and where reports go: a Ray Train worker (DDP) or this process.

The same config and seed train the same weights on CPU: the rows come in the data set's order, the
batches and augmentations are drawn from (seed, epoch, step), the initial weights from the seed,
and the loop runs with deterministic kernels (``deterministic_kernels``). What still differs, on
GPU and across thread counts: docs/architecture.md, "Determinism".
"""

import math
import random
import tempfile
import time
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from components import losses, training
from components.model import checkpoint_landmarks, load_checkpoint, make_unet, save_checkpoint, weights_fingerprint
from study.config import ConfigError, StudyConfig
from study.training import faults

__all__ = ["Worker", "phase_of_epochs", "train_loop"]


class Worker(Protocol):
    """Where a training loop runs: its rank among ``world_size`` workers, its device, and its I/O."""

    rank: int
    world_size: int
    device: torch.device
    scratch: str | None  # where the loop saves each checkpoint before reporting it (None: the system's temp)

    def rows(self, role: str) -> dict[str, np.ndarray]:
        """The training columns of all of the run's ``role`` rows, "train" or "val" (``data.run_columns``; each
        worker trains on its share of every batch)."""

    def resumed_state(self) -> dict:
        """The latest checkpoint's contents when the run resumes, else ``{}``."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this worker's device (wrapped for DDP where there are several workers)."""

    def report(self, metrics: dict, folder: str | None) -> None:
        """Report an epoch's metrics, with the checkpoint in ``folder`` (rank 0) or None."""


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


@contextmanager
def deterministic_kernels(device: torch.device):
    """Deterministic kernels while the block runs; the process's settings as they were after.

    CPU: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic kernel raises
    rather than varies). CUDA: cuDNN's deterministic convolutions, without benchmark autotuning;
    ``use_deterministic_algorithms`` is left alone there: it needs ``CUBLAS_WORKSPACE_CONFIG`` set
    before CUDA starts and raises on the ops that have only atomic-add kernels.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def seed_everything(seed: int) -> None:
    """torch's generators (CPU and CUDA), numpy's and Python's global ones: the loop draws its batches and
    augmentations from generators of its own, but the initial weights come from torch's."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train_loop(loop_config: dict, worker: Worker) -> dict:
    """Train the strategy's phases; report every epoch (rank 0 with a checkpoint and val metrics).

    ``loop_config``: ``config`` (the study config, JSON), ``strategy``, ``init`` (a checkpoint
    folder or None), ``epoch_offset`` (the epochs behind ``init``, kept in every checkpoint) and
    ``fail_once`` (tests only, see ``faults``). Returns the run's ``status``
    (``finished`` or ``diverged``) and its last ``epoch``.
    """
    with deterministic_kernels(worker.device):
        return train_phases(loop_config, worker)


def train_phases(loop_config: dict, worker: Worker) -> dict:
    """``train_loop``'s body."""
    config = StudyConfig.model_validate_json(loop_config["config"])
    train_config, strategy = config.train, loop_config["strategy"]
    phases = train_config.strategies[strategy].phases
    schedule = phase_of_epochs(config, strategy)
    rank, world_size, device = worker.rank, worker.world_size, worker.device
    selection = f"best_{train_config.selection_metric}"
    loss_context = train_config.loss_context(config.data)
    decoding = train_config.loss.decoding()
    use_amp = train_config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    seed = config.training_seed()
    seed_everything(seed)
    landmarks = config.data.landmarks.landmark_set()
    model = make_unet(train_config.model, landmarks)
    architecture = train_config.model.architecture()
    state = worker.resumed_state()
    if state:
        model.load_state_dict(state["model"])
    elif loop_config["init"]:
        start = load_checkpoint(loop_config["init"])
        if start["settings"] != architecture:
            raise ConfigError(
                f"{loop_config['init']}: its model {start['settings']} differs from the config's {architecture}"
            )
        if checkpoint_landmarks(start).names != landmarks.names:
            raise ConfigError(
                f"{loop_config['init']}: its model detects the landmark set {checkpoint_landmarks(start).name!r}, "
                f"not the config's {landmarks.name!r} ({', '.join(landmarks.names)})"
            )
        model.load_state_dict(start["model"])
    first_epoch = state.get("epoch", -1) + 1
    start_fingerprint = state.get("start_fingerprint") or weights_fingerprint(model.state_dict())
    best_so_far = state.get("metrics", {}).get(selection, math.inf)
    ddp_model = worker.prepare(model)

    train_rows = worker.rows("train")
    val_rows = worker.rows("val") if rank == 0 else None

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
        faults.inject(loop_config.get("fail_once"), epoch, rank, world_size)

        started = time.perf_counter()
        sums, diverged = {}, False
        # The same global batches on every worker; each trains on its share (DDP averages the gradients).
        batches = training.epoch_batches(
            training.row_count(train_rows), train_config.batch_size, seed, epoch, phase.steps_per_epoch
        )
        augment, randomize = train_config.augment, train_config.strategies[strategy].randomize
        for global_batch in batches:
            mine = global_batch[training.worker_share(global_batch, rank, world_size)]
            seeds = training.augmentation_seeds(seed, epoch, mine) if augment or randomize else None
            batch = training.make_batch(train_rows, mine, device, augment, seeds, randomize)
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
        reduced = dict(zip(keys, all_reduce([sums[key] for key in keys]), strict=True))
        metrics = {f"train_{key}": value / reduced["steps"] for key, value in reduced.items() if key != "steps"}
        metrics |= {
            "epoch": epoch,
            "phase": phase_index,
            "epochs": len(schedule),
            "first_epoch": first_epoch,
            "status": "diverged" if diverged else "running",
        }
        checkpoint = None
        if rank == 0 and not diverged:
            predictions = training.predict(
                model,
                val_rows,
                loss_context.camera,
                decoding,
                train_config.batch_size,
                device,
                min_landmarks=loss_context.min_landmarks,
            )
            metrics |= {
                f"val_{key}": value for key, value in training.validation_metrics(predictions, val_rows).items()
            }
            best_so_far = min(best_so_far, metrics[train_config.selection_metric])
        if rank == 0:
            metrics[selection] = best_so_far  # the running best (inf before any val): what a sweep compares trials by
        metrics["epoch_seconds"] = time.perf_counter() - started
        with tempfile.TemporaryDirectory(dir=worker.scratch, prefix=".checkpoint-") as folder:
            if rank == 0 and not diverged:
                save_checkpoint(
                    folder,
                    model,
                    train_config.model,
                    decoding,
                    landmarks,
                    epoch=epoch,
                    phase=phase_index,
                    optimizer=optimizer.state_dict(),
                    divergence_reference=guard.reference,
                    strategy=strategy,
                    start_fingerprint=start_fingerprint,
                    epoch_offset=loop_config.get("epoch_offset", 0),  # the epochs behind the start checkpoint
                    config=loop_config["config"],
                    metrics={key: value for key, value in metrics.items() if isinstance(value, int | float)},
                )
                checkpoint = folder
            worker.report(metrics, checkpoint)
        if diverged:
            return {"status": "diverged", "epoch": epoch}
    return {"status": "finished", "epoch": len(schedule) - 1}
