"""What the MLflow UI shows of a reproduction and a sweep, read through a real ``mlflow server``'s REST API
(the API the UI itself calls): strategy runs that differ in their parameters, trials with scalar tuned
parameters, datasets, logged models, descriptions and the registered model's ``champion``.

The server runs on the session's SQLite store (where the miniature reproduction and sweep logged), as a
child process in its own process group, ended by the test.
"""

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import child_process_group, children, free_port, wait_for

pytestmark = pytest.mark.slow  # trains models (the session's reproduction and sweep) and starts a server

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(train_study, reproduction, finetune_sweep, tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 over the session's store: its URL."""
    config, _ = train_study
    port, folder = free_port(), tmp_path_factory.mktemp("mlflow-ui")
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", config.tracking.uri]
    environment = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    with child_process_group(command, environment, folder / "mlflow.log") as process:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health", process)
        yield url


def differing(runs) -> set[str]:
    """The parameters whose values are not the same in every run (missing counts as a value)."""
    keys = set().union(*(run.data.params for run in runs))
    return {key for key in keys if len({run.data.params.get(key) for run in runs}) > 1}


def test_the_strategy_runs_differ_in_strategy_and_phase_parameters(server, train_study):
    config, _ = train_study
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(config.name)
    assert experiment.tags["mlflow.note.content"].startswith(f"Study '{config.name}'")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`study.kind` = 'reproduce'")
    runs = children(client, parent.info.run_id)
    assert len(runs) >= 4
    diff = differing(runs)
    assert {"strategy", "init", "randomize", "phase0.loss.bce", "phase0.loss.pose", "phase0.epochs"} <= diff
    assert diff <= {"strategy", "init", "randomize", "phases"} | {key for key in diff if key.startswith("phase")}
    sweep_parent = client.search_runs([experiment.experiment_id], "tags.`study.kind` = 'sweep'")
    for run in [parent, *runs, *sweep_parent]:
        assert run.inputs.dataset_inputs, run.info.run_name  # the Dataset column is never empty
        tags = run.data.tags
        assert tags["mlflow.user"] and tags["mlflow.source.name"] and tags["mlflow.source.git.commit"]
        assert len(tags["mlflow.note.content"]) > 40  # a description
        if run is not parent:  # the parent holds the comparisons: 4 numbers each
            assert len(run.data.metrics) < 60, sorted(run.data.metrics)  # 11 per test split; was 140-160 per run
    assert all(key.endswith(("_difference", "_low", "_high", "_p_value")) for key in parent.data.metrics)
    for run in runs:
        assert {i.tags[0].value for i in run.inputs.dataset_inputs} >= {"train", "val", "novel_view"}
        model = client.get_logged_model(run.data.tags["study.model_id"])
        assert model.name == f"unet-{run.data.tags['study.strategy']}" and model.source_run_id == run.info.run_id
        assert "novel_view_rmse_px" in run.data.metrics


def test_the_trials_have_scalar_tuned_parameters_and_the_registered_model_a_champion(server, finetune_sweep):
    _, result = finetune_sweep
    client = MlflowClient(server)
    trials = children(client, result.parent_run_id)
    assert len(trials) == 3
    assert "pose_weight" in differing(trials)
    for trial in trials:
        assert float(trial.data.params["pose_weight"]) > 0 and int(trial.data.params["epochs"]) >= 1
        assert trial.info.status == "FINISHED" and trial.data.tags["study.trial_status"] in ("finished", "stopped")
        assert trial.info.run_name.startswith("t") and len(trial.info.run_name) < 16
    name, number = result.registered.split("/")
    registered = client.get_registered_model(name)
    newest = max(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    assert registered.description and int(registered.aliases["champion"]) == newest  # the newest sweep's best
    version = client.get_model_version(name, number)
    assert version.description.startswith(f"Best of sweep {result.name}") and version.run_id == result.best.run_id


def test_the_ui_is_served_and_answers_its_own_api(server, train_study):
    config, _ = train_study
    with urllib.request.urlopen(server, timeout=30) as page:
        assert b"MLflow" in page.read()
    url = f"{server}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name={config.name}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert json.loads(answer.read())["experiment"]["name"] == config.name
