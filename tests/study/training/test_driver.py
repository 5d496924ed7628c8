"""Training in process (the default on CPU) and on Ray Train (real 2-worker DDP runs on CPU, gloo), on real
Parquet data, with a real MLflow (SQLite) store."""

import json
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from components import training
from components.dataset import TEST_SPLITS, read_split
from components.model import load_checkpoint, load_trained_model, weights_fingerprint
from study.cli import main
from study.config import ConfigError
from study.console import LOG_NAME
from study.training import faults
from study.training.driver import resolve_launcher, train
from study.training.run_folder import IDENTITY_FILE

pytestmark = pytest.mark.slow  # trains models or starts Ray


@pytest.fixture(scope="module")
def baseline(train_study):
    config, data = train_study
    return train(config, "baseline", data)


@pytest.fixture(scope="module")
def short_on_ray(train_study, tmp_path_factory):
    """Strategy ``short`` on 2 Ray Train DDP workers, uninterrupted, started as a person would (``study train``):
    (the run: what the interrupted runs must end at; what the terminal showed: exit code, stdout, stderr)."""
    config, data = train_study
    config = config.model_copy(update={"train": config.train.model_copy(update={"launcher": "ray_train"})})
    folder = tmp_path_factory.mktemp("short-on-ray")
    config_path = folder / "config.yaml"
    config_path.write_text(config.model_dump_json())  # JSON is YAML
    command = ["train", "--config", str(config_path), "--strategy", "short", "--data", str(data), "--name", "short-ddp"]
    with pytest.MonkeyPatch.context() as patch, open(folder / "out", "w+") as out, open(folder / "err", "w+") as err:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with redirect_stdout(out), redirect_stderr(err):  # the terminal the command's session keeps its lines for
            code = main(command)
        out.seek(0), err.seek(0)
        terminal = (code, out.read(), err.read())
    return train(config, "short", data, name="short-ddp"), terminal  # finished: its result, read back


def final_weights(result) -> str:
    return weights_fingerprint(load_checkpoint(result.last_checkpoint)["model"])


@pytest.fixture(autouse=True)
def no_tracking_uri_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def read_identity(result):
    return json.loads((Path(result.best_checkpoint).parent / IDENTITY_FILE).read_text())


def rows_of(folder, split):
    return training.columns_of(read_split(folder, split))


def test_the_default_run_trains_in_process_and_learns(train_study, baseline):
    config, _ = train_study
    assert resolve_launcher(config) == "process"
    assert read_identity(baseline)["launcher"] == "process"
    _, data = train_study
    floor = training.mean_position_rmse(rows_of(data, "train"), rows_of(data, "val"))
    assert baseline.status == "finished" and baseline.epochs == 20
    assert baseline.best_metrics["val_rmse_px"] < 0.6 * floor, (baseline.best_metrics, floor)


def test_best_checkpoint_reloads_to_the_same_predictions(train_study, baseline):
    config, data = train_study
    val = rows_of(data, "val")
    model = load_trained_model(baseline.best_checkpoint)
    assert model.decoding.temperature == config.train.loss.temperature
    predictions = training.predict(model.network, val, config.data.render_camera(), model.decoding)
    recomputed = training.validation_metrics(predictions, val)
    assert recomputed["rmse_px"] == pytest.approx(baseline.best_metrics["val_rmse_px"], abs=1e-9)
    assert recomputed["rmse_soft_px"] == pytest.approx(baseline.best_metrics["val_rmse_soft_px"], abs=1e-5)


def test_the_run_is_in_mlflow(train_study, baseline):
    config, _ = train_study
    client = MlflowClient(config.tracking.uri)
    run = client.get_run(baseline.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["study.status"] == "finished" and run.data.tags["study.strategy"] == "baseline"
    dataset_hash = run.data.tags["study.dataset_hash"]
    assert len(dataset_hash) == 64 and run.data.tags["mlflow.source.git.commit"]
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.type"] == "LOCAL"
    assert run.data.tags["mlflow.note.content"].startswith("Strategy 'baseline', from random weights: 20 epoch(s)")
    params = run.data.params
    assert (params["batch_size"], params["data.image_size"], params["strategy"], params["init"]) == (
        "8",
        "64",
        "baseline",
        "random",
    )
    assert (params["phase0.loss.bce"], params["phase0.loss.pose"], params["phase0.lr"]) == ("1.0", "0.0", "0.003")
    config_artifact = client.download_artifacts(baseline.run_id, "config.yaml")
    logged, expected = yaml.safe_load(Path(config_artifact).read_text()), config.model_dump(mode="json")
    assert logged["data"] == expected["data"] and logged["train"]["strategies"] == expected["train"]["strategies"]
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert {"train", "val"} <= set(inputs) and inputs["train"].digest == dataset_hash[:16]  # test splits once evaluated
    assert json.loads(inputs["val"].profile)["rows"] == 8
    # the epoch is the step, from 1; constants are parameters, not metrics
    history = client.get_metric_history(baseline.run_id, "val_rmse_px")
    assert sorted(m.step for m in history) == list(range(1, 21))
    assert min(m.value for m in history) == pytest.approx(baseline.best_metrics["val_rmse_px"])
    assert not {"epoch", "epochs", "phase", "first_epoch"} & set(run.data.metrics)
    tested = (*TEST_SPLITS, "fluoro")  # a reproduction in the same session evaluates this run on its test splits
    assert len([key for key in run.data.metrics if not key.startswith(tested)]) < 25
    best_step = client.get_metric_history(baseline.run_id, "best_val_rmse_soft_px")[0].step
    assert best_step == baseline.best_metrics["epoch"] + 1
    artifacts = {a.path for a in client.list_artifacts(baseline.run_id, "checkpoint")}
    plots = {a.path for a in client.list_artifacts(baseline.run_id, "plots")}
    assert artifacts == {"checkpoint/checkpoint.pt"} and plots == {"plots/val_overlays.png"}
    assert "optimizer" not in torch.load(client.download_artifacts(baseline.run_id, "checkpoint/checkpoint.pt"))
    models = client.search_logged_models([run.info.experiment_id], filter_string="name = 'unet-baseline'")
    assert [m.model_id for m in models if m.source_run_id == baseline.run_id] == [baseline.model_id]
    assert baseline.model_id == run.data.tags["study.model_id"]


def test_a_finished_run_of_the_same_name_is_returned_as_it_is(train_study, baseline):
    config, data = train_study
    again = train(config, "baseline", data)
    assert again == baseline


def test_finetune_starts_from_the_baseline_checkpoint(train_study, baseline):
    config, data = train_study
    tuned = train(config, "finetune", data)
    assert tuned.status == "finished" and tuned.epochs == 1
    start = load_checkpoint(tuned.last_checkpoint)["start_fingerprint"]
    # train.checkpoint "last" (the default, the paper's): the fine-tune continues the end of training
    assert start == weights_fingerprint(load_checkpoint(baseline.last_checkpoint)["model"])
    assert weights_fingerprint(load_checkpoint(tuned.last_checkpoint)["model"]) != start
    # its curve continues the baseline's epochs
    steps = [m.step for m in MlflowClient(config.tracking.uri).get_metric_history(tuned.run_id, "val_rmse_px")]
    assert steps == [baseline.epochs + 1]


def test_pose_only_trains_through_the_registration_but_learns_no_landmarks(train_study, baseline):
    config, data = train_study
    result = train(config, "pose_only", data)
    assert result.status == "finished" and result.epochs == 2
    assert math.isfinite(result.last_metrics["train_pose"]) and result.last_metrics["train_pose_failures"] == 0
    # as in the paper: from random weights, the pose loss alone does not place landmarks
    assert result.best_metrics["val_rmse_px"] > 5 * baseline.best_metrics["val_rmse_px"]
    run = MlflowClient(config.tracking.uri).get_run(result.run_id)
    assert (
        run.data.tags["study.status"] == "finished"
        and run.data.metrics["train_pose"] == result.last_metrics["train_pose"]
    )


def test_an_exploding_loss_is_recorded_as_diverged(train_study):
    config, data = train_study
    result = train(config, "exploding", data)
    assert result.status == "diverged" and result.epochs == 1
    run = MlflowClient(config.tracking.uri).get_run(result.run_id)
    assert run.data.tags["study.status"] == "diverged" and run.info.status == "FINISHED"


def test_a_run_on_ray_train_shows_its_epochs_and_nothing_of_ray(train_study, short_on_ray):
    """The epochs are said by the Ray Train controller, in another process, and relayed to this terminal; what Ray
    prints goes to the run's study.log, with the relayed lines."""
    config, _ = train_study
    _, (code, out, err) = short_on_ray
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0].startswith("data set: ") and lines[1].startswith("short-ddp: training 'short' on 2 Ray Train"), out
    epochs = [line.split(":")[0] for line in lines[2:-1]]  # the first, the last, and one every 45 s between them
    assert epochs[0] == "short epoch 1/4" and epochs[-1] == "short epoch 4/4" and len(epochs) <= 4, out
    assert lines[-1].startswith("short-ddp: finished after 4 epoch(s)"), out
    log = (Path(config.train.storage) / "short-ddp" / LOG_NAME).read_text()
    assert "===== " in log and all(f"short epoch {k}/4" in log for k in (1, 2, 3, 4))  # every epoch, relayed


def test_a_killed_worker_resumes_and_a_failed_run_started_again_with_its_name_resumes(
    train_study, short_on_ray, tmp_path, monkeypatch
):
    """A worker killed in the 3rd epoch is restarted by Ray Train from the last checkpoint (``max_failures`` 1);
    killed again in the 4th the run fails; started again with its name it resumes from its last checkpoint, and ends at
    the very weights of the same run uninterrupted (same config and seed, same numbers)."""
    config, data = train_study
    assert config.train.max_failures == 1
    marker = tmp_path / "failed"
    with monkeypatch.context() as patch:
        patch.setattr(faults, "FAIL_ONCE", {"epochs": [2, 3], "marker": str(marker)})  # 0-based: the 3rd and 4th
        with pytest.raises(Exception, match="Training failed"):
            train(config, "short", data, name="restarted", launcher="ray_train")
    assert Path(f"{marker}.2").exists() and Path(f"{marker}.3").exists()  # the retry got as far as the 4th
    result = train(config, "short", data, name="restarted", launcher="ray_train")
    assert result.status == "finished" and result.epochs == 4
    # Ray registers reported checkpoints asynchronously: the latest registered one may be an epoch old
    assert result.last_metrics["first_epoch"] in (1, 2, 3), "restarted from scratch, not from a checkpoint"
    history = MlflowClient(config.tracking.uri).get_metric_history(result.run_id, "train_loss")
    steps = [m.step for m in history]
    assert sorted(set(steps)) == [1, 2, 3, 4]
    assert steps.count(1) == 1, f"a retry or the restart began again at epoch 1: {sorted(steps)}"
    assert final_weights(result) == final_weights(short_on_ray[0])


def test_unknown_strategy_and_missing_train_section(train_study):
    config, data = train_study
    with pytest.raises(ConfigError, match="strategy 'nope' is not in the config"):
        train(config, "nope", data)
    with pytest.raises(ConfigError, match="has no 'train' section"):
        train(config.model_copy(update={"train": None}), "baseline", data)


def test_a_run_name_belongs_to_one_config(train_study, baseline):
    config, data = train_study
    other = config.model_copy(update={"seed": 4})
    with pytest.raises(
        ConfigError,
        match=r"a run of another config or strategy has this name \(differs in: config.seed, config.train.seed\)",
    ):
        train(other, "baseline", data)


def test_ddp_on_two_workers_trains_the_model_that_one_process_trains(train_study, short_on_ray):
    """The same batches on 2 DDP workers (4 images each, gradients averaged) and in one process (8 images):
    the same run up to batch-norm statistics, which DDP keeps per worker; another seed is far further away."""
    config, data = train_study
    ddp, _ = short_on_ray
    alone = train(config, "short", data, name="short-process", launcher="process")
    reseeded = config.model_copy(update={"train": config.train.model_copy(update={"seed": 11})})
    other_seed = train(reseeded, "short", data, name="short-seed11", launcher="process")
    client = MlflowClient(config.tracking.uri)

    def losses(result):
        history = client.get_metric_history(result.run_id, "train_loss")
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    ddp_losses, alone_losses, other_losses = losses(ddp), losses(alone), losses(other_seed)
    assert len(ddp_losses) == len(alone_losses) == 4
    gap = max(abs(a - b) / b for a, b in zip(ddp_losses, alone_losses))
    seed_gap = max(abs(a - b) / b for a, b in zip(other_losses, alone_losses))
    # measured: DDP within 6% of one process at every epoch; another seed 30% away at the first
    assert gap < 0.10 and gap < seed_gap / 2, (ddp_losses, alone_losses, other_losses)
