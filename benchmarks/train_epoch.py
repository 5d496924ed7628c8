"""Training at the speed of the machine: a bare PyTorch loop against ``study train``, in one run.

Three ways to train the demo preset's baseline (BCE) on the same data (the demo data set), model,
batch (16 per step) and threads (PyTorch's default: all cores):

- ``bare``: the reference, what this machine can do: the rows as tensors in memory, the platform's
  U-Net and BCE loss, Adam, then a val pass (forward and argmax over the val images) per epoch;
- ``default``: ``study train --preset demo`` as a user runs it (a fresh command; where it trains is
  the config's default, ``train.launcher: auto``);
- ``ray_train``: the same command on Ray Train DDP with 2 workers (``train.launcher=ray_train``).

For each command: its wall time, its epochs (the time between consecutive epochs' metrics in MLflow:
everything an epoch costs, validation, checkpoint and logging included), and its fixed cost per
run: wall time minus epochs times the median epoch, split into command start to the first epoch's
start and last epoch's end to the command's exit. Each command gets a fresh run folder and MLflow
database; the database is created before the command (a study's first command pays that once, not
every run: it is reported as ``mlflow_database_creation_s``, including the import of MLflow); the
data set is generated once, beforehand, and not timed.

Goals (on 2 cores): the default path's epoch at most 1.10x the bare loop's; its fixed cost at most 15 s.

Run: ``python benchmarks/train_epoch.py [--epochs N] [--quick]``; writes ``benchmarks/results/train_epoch.json``.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import goal, write_result  # noqa: E402
from components import heatmaps, losses, training  # noqa: E402
from components.dataset import read_split  # noqa: E402
from components.manifest import read_manifest  # noqa: E402
from components.model import make_unet  # noqa: E402
from study.config import load_config  # noqa: E402

STRATEGY = "baseline"


def bare_epochs(data_dir: Path, epochs: int) -> list[float]:
    """Seconds of each epoch of the bare loop (train steps, then the val pass)."""
    config = load_config("demo")
    train_config = config.train
    train = training.columns_of(read_split(data_dir, "train"))
    val = training.columns_of(read_split(data_dir, "val"))
    images = torch.from_numpy(train["image"].astype(np.float32) / 65535.0)[:, None]
    val_images = torch.from_numpy(val["image"].astype(np.float32) / 65535.0)[:, None]
    targets = {key: torch.from_numpy(np.asarray(value)) for key, value in train.items() if key != "image"}
    phase = train_config.strategies[STRATEGY].phases[0]
    context = train_config.loss_context(config.data)
    loss_function = losses.WeightedLoss(phase.losses)
    torch.manual_seed(0)
    model = make_unet(train_config.model, config.data.landmarks.landmark_set())
    optimizer = torch.optim.Adam(model.parameters(), lr=phase.learning_rate)
    batch_size, count = train_config.batch_size, len(images)
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(count, generator=torch.Generator().manual_seed(epoch))
        for step in range(count // batch_size):
            indices = order[step * batch_size : (step + 1) * batch_size]
            batch = {"image": images[indices]} | {key: value[indices] for key, value in targets.items()}
            loss, _ = loss_function(model(batch["image"]), batch, context)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for start in range(0, len(val_images), batch_size):
                heatmaps.argmax(model(val_images[start : start + batch_size]))
        seconds.append(time.perf_counter() - started)
    return seconds


def run_command(folder: Path, data_dir: Path, epochs: int, overrides: list[str]) -> dict:
    """Run ``study train`` in a fresh folder; its wall time, epoch times and fixed cost."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    phases = f"[{{losses: {{bce: 1.0}}, epochs: {epochs}, learning_rate: 0.002}}]"
    sets = [f"train.strategies.{STRATEGY}.phases={phases}", f"train.storage={folder / 'runs'}", *overrides]
    command = [str(Path(sys.executable).parent / "study"), "train", "--preset", "demo", "--strategy", STRATEGY]
    command += ["--data", str(data_dir), "--name", "bench"] + [f"--set={value}" for value in sets]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    database_seconds = create_database(uri)
    environment = os.environ | {"MLFLOW_TRACKING_URI": uri}
    started = time.time()
    completed = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True)
    ended = time.time()
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}")
    reported = epoch_report_times(folder)
    if len(reported) != epochs:
        raise RuntimeError(f"expected {epochs} epochs in MLflow, found {len(reported)}")
    intervals = np.diff(reported).tolist()
    epoch = statistics.median(intervals)
    wall = ended - started
    return {
        "wall_s": wall,
        "epoch_s": epoch,
        "epoch_intervals_s": intervals,
        "fixed_s": wall - epochs * epoch,
        "start_to_first_epoch_s": reported[0] - epoch - started,
        "last_epoch_to_exit_s": ended - reported[-1],
        "mlflow_database_creation_s": database_seconds,
        "terminal": completed.stdout.strip().splitlines(),
    }


def create_database(uri: str) -> float:
    """Create the MLflow database (once per study, not per run: paid by a study's first command); its seconds."""
    code = (
        f"import time; t = time.perf_counter(); from mlflow.tracking import MlflowClient; "
        f"MlflowClient({uri!r}).search_experiments(); print(time.perf_counter() - t)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


def epoch_report_times(folder: Path) -> list[float]:
    """When each epoch's metrics reached MLflow (seconds since the epoch), in order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo")
    run = client.search_runs([experiment.experiment_id])[0]
    history = client.get_metric_history(run.info.run_id, "train_loss")
    return [metric.timestamp / 1000 for metric in sorted(history, key=lambda metric: metric.step)]


def ensure_data(data_dir: Path) -> None:
    manifest = read_manifest(data_dir)
    if manifest is None or manifest.get("status") != "complete":
        study = str(Path(sys.executable).parent / "study")
        subprocess.run([study, "generate", "--preset", "demo", "--out", str(data_dir)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per command (at least 2)")
    parser.add_argument("--data", type=Path, default=None, help="the demo data set (default: generated in a temp dir)")
    parser.add_argument("--skip-ray-train", action="store_true", help="leave out the Ray Train DDP command")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (an epoch is the time between two epochs' reports)")
    scratch = Path(tempfile.mkdtemp(prefix="train-epoch-"))
    data_dir = (args.data or scratch / "data").resolve()
    ensure_data(data_dir)
    bare = bare_epochs(data_dir, args.epochs)
    bare_epoch = statistics.median(bare[1:])  # the first epoch warms the allocator and kernels up
    config = load_config("demo")
    results = {"batch_size": config.train.batch_size, "image_px": config.data.image_size, "epochs": args.epochs}
    results |= {"train_images": len(read_split(data_dir, "train")), "val_images": len(read_split(data_dir, "val"))}
    results["threads"] = torch.get_num_threads()
    results["bare"] = {"epoch_s": bare_epoch, "epochs_s": bare}
    results["default"] = run_command(scratch / "default", data_dir, args.epochs, [])
    if not args.skip_ray_train:
        ddp = ["train.launcher=ray_train", "train.workers=2", "train.cpus_per_worker=0.5"]
        results["ray_train_2_workers"] = run_command(scratch / "ray_train", data_dir, args.epochs, ddp)
    for name in ("default", "ray_train_2_workers"):
        if name in results:
            results[name]["epoch_vs_bare"] = results[name]["epoch_s"] / bare_epoch
    default = results["default"]
    goals = [
        goal("default path's epoch against the bare loop's", default["epoch_vs_bare"], "<=", 1.10, "x"),
        goal("default path's fixed cost per run", default["fixed_s"], "<=", 15.0, "s"),
    ]
    write_result("train_epoch", results, goals, threads=results["threads"])
    print(json.dumps({key: value for key, value in default.items() if key != "terminal"}, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
