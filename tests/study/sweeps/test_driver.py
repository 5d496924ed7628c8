"""``study sweep`` end to end on real Ray Tune, Optuna, Parquet and MLflow (tiny data, in-process trials)."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.sweeps.driver import resume, sweep
from study.sweeps.plan import PLAN_FILE, read_plan
from study.tracking.runs import tracking_uri
from tests.helpers import FINETUNE_SPACE, REPO, children, runs_named, sweep_config, write

pytestmark = pytest.mark.slow  # trains models or starts Ray

TRACKING_ENVIRONMENT = os.environ.get("MLFLOW_TRACKING_URI")

EXPLODING_SPACE = """
parameters:
  strategy: {distribution: categorical, choices: [exploding]}
  lr: {path: train.strategies.exploding.phases.0.learning_rate, distribution: loguniform, low: 1.0e+20, high: 1.0e+30}
"""


def test_every_trial_is_a_child_run_with_its_sampled_values(finetune_sweep):
    config, result = finetune_sweep
    client = MlflowClient(tracking_uri(config))
    assert len(result.trials) == 3
    trial_runs = {run.info.run_id: run for run in children(client, result.parent_run_id)}
    parent_source = client.get_run(result.parent_run_id).data.tags["mlflow.source.name"]
    assert len({run.info.run_name for run in trial_runs.values()}) == 3
    assert sorted(trial_runs) == sorted(record.run_id for record in result.trials)
    assert all(math.isfinite(record.objective) for record in result.trials if record.status == "finished")
    for record in result.trials:
        run = trial_runs[record.run_id]
        assert run.data.tags["study.trial_status"] == record.status in ("finished", "stopped")
        assert run.info.status == "FINISHED"  # a trial ASHA stopped is not a crash: its tag says it stopped
        # the tuned values under the space's short names, as scalars; the rest of the phase under its own
        params = run.data.params
        assert float(params["pose_weight"]) == pytest.approx(record.params["pose_weight"])
        assert int(params["epochs"]) == record.params["epochs"] and params["phase0.loss.bce"] == "1.0"
        assert "phase0.loss.pose" not in params and "phase0.epochs" not in params
        assert re.fullmatch(rf"t\d\d-{record.trial_id}", run.info.run_name)
        assert run.data.tags["mlflow.source.name"] == parent_source  # the sweep's command, not Ray's worker
        history = client.get_metric_history(record.run_id, "val_rmse_soft_px")
        assert len(history) == record.epochs >= 1
        assert record.objective == pytest.approx(min(m.value for m in history))


def test_the_baseline_is_trained_once_and_shared(finetune_sweep, train_study):
    config, result = finetune_sweep
    client = MlflowClient(tracking_uri(config))
    baselines = runs_named(client, config, config.run_name("baseline"))
    assert len(baselines) == 1  # one baseline run for the whole sweep (and the training tests)
    plan = read_plan(result.folder)
    start = plan.starts["finetune"]["checkpoint"]
    inits = {client.get_run(record.run_id).data.tags["study.init"] for record in result.trials}
    assert inits == {start}
    assert start.startswith(str(Path(config.train.storage).resolve() / config.run_name("baseline")))


def test_the_parent_run_has_the_best_config_plots_and_test_metrics(finetune_sweep):
    config, result = finetune_sweep
    client = MlflowClient(tracking_uri(config))
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["study.kind"] == "sweep"
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {
        "sweep/optimization_history.png",
        "sweep/param_importances.png",
        "sweep/parallel_coordinate.png",
        "sweep/best_config.yaml",
        "sweep/trials.csv",
        "sweep/test_summary.json",
    } <= artifacts
    finished = [r for r in result.trials if r.status == "finished"]
    best = min(finished or result.trials, key=lambda r: r.objective)
    assert result.best.trial_id == best.trial_id and parent.data.tags["study.best_run_id"] == best.run_id
    assert parent.data.metrics["best_val_rmse_soft_px"] == pytest.approx(best.objective)
    best_config = yaml.safe_load((Path(result.folder) / "report" / "best_config.yaml").read_text())
    assert best_config["train"]["strategies"]["finetune"]["phases"][0]["losses"]["pose"] == pytest.approx(
        best.params["pose_weight"]
    )
    # evaluated on the test splits only after the sweep, and only the best trial
    assert parent.data.metrics["novel_view_rmse_px"] == pytest.approx(result.test["novel_view"]["argmax"]["rmse_px"])
    assert "novel_subject_rmse_px" in client.get_run(best.run_id).data.metrics
    assert all(
        "novel_view_rmse_px" not in client.get_run(r.run_id).data.metrics for r in result.trials if r is not best
    )


def test_the_best_model_is_registered(finetune_sweep):
    config, result = finetune_sweep
    client = MlflowClient(tracking_uri(config))
    name, version = result.registered.split("/")
    registered = client.get_model_version(name, version)
    assert name == f"{config.name}-landmarks" and registered.run_id == result.best.run_id
    assert registered.tags["study.sweep"] == result.name and registered.description.startswith("Best of sweep")
    best_run = client.get_run(result.best.run_id)
    assert registered.source == f"models:/{best_run.data.tags['study.model_id']}"  # the trial's own logged model
    assert best_run.data.tags["study.best_trial"] == "true"
    assert str(client.get_model_version_by_alias(name, "champion").version) == version
    assert client.get_registered_model(name).description.startswith("The landmark U-Net")
    assert os.environ.get("MLFLOW_TRACKING_URI") == TRACKING_ENVIRONMENT  # registering leaves no global URI behind


def test_a_diverged_trial_is_recorded_and_the_sweep_goes_on(train_study, tmp_path):
    config = sweep_config(train_study, tmp_path)
    space = write(tmp_path, "exploding.yaml", EXPLODING_SPACE)
    result = sweep(config, space, trials=2, data_dir=train_study[1], name="exploding-sweep")
    assert [record.status for record in result.trials] == ["diverged", "diverged"]
    assert result.best is None and result.registered is None
    client = MlflowClient(tracking_uri(config))
    for record in result.trials:
        assert client.get_run(record.run_id).data.tags["study.status"] == "diverged"
    assert client.get_run(result.parent_run_id).data.tags["study.trials_diverged"] == "2"


def test_a_new_sweep_does_not_overwrite_an_existing_one(finetune_sweep, train_study):
    config, result = finetune_sweep
    space = Path(result.folder).parent.parent / "finetune.yaml"
    with pytest.raises(ValueError, match="a sweep of this name exists; continue it with 'study sweep --resume"):
        sweep(config, space, trials=1, data_dir=train_study[1], name=result.name)


INTERRUPT_WITHIN_S = 300  # a trial should finish in under a minute; twice as slow a machine still fits


@pytest.mark.timeout(INTERRUPT_WITHIN_S + 600)  # then the resumed sweep trains the other trials
def test_an_interrupted_sweep_resumes_without_redoing_finished_trials(train_study, ray_session, tmp_path):
    # one trial at a time, none stopped early: the sweep is killed while its second trial trains
    config = sweep_config(train_study, tmp_path, max_concurrent=1, grace_epochs=9)
    config_path = write(tmp_path, "config.yaml", yaml.safe_dump(config.model_dump(mode="json")))
    space = write(tmp_path, "finetune.yaml", FINETUNE_SPACE.replace("low: 1, high: 2", "low: 2, high: 3"))
    environment = os.environ | {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "study", "sweep", "--config", str(config_path), "--space", str(space)]
    command += ["--trials", "2", "--data", str(train_study[1]), "--name", "interrupted"]
    folder = Path(config.sweep.storage) / "interrupted"
    with open(tmp_path / "sweep.log", "w") as log:
        process = subprocess.Popen(
            command, env=environment, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.time() + INTERRUPT_WITHIN_S
            while not list((folder / "trials").glob("*/study_result.json")) and process.poll() is None:
                assert time.time() < deadline, "no trial finished in time"
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    finished_before = {
        path.parent.name: path.stat().st_mtime for path in (folder / "trials").glob("*/study_result.json")
    }
    output = (tmp_path / "sweep.log").read_text()[-3000:]
    assert len(finished_before) == 1, f"the sweep should have been interrupted with 1 trial done:\n{output}"

    result = resume(folder)
    assert len(result.trials) == 2
    for name, modified in finished_before.items():
        assert (folder / "trials" / name / "study_result.json").stat().st_mtime == modified  # not trained again
    client = MlflowClient(tracking_uri(config))
    for record in result.trials:
        assert len(runs_named(client, config, f"interrupted-{record.trial_id}")) == 1
    assert len(children(client, read_plan(folder).parent_run_id)) == 2
    assert json.loads((folder / PLAN_FILE).read_text())["trials"] == 2
