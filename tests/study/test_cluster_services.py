"""A sweep submitted with ``ray job submit`` to a real local head, logging to a real ``mlflow server``: the
cluster setup of the README, in one test (each service costs seconds to start).

Each service is a child process in its own process group; the test ends those groups, never anything
else (no ``ray stop``).
"""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import REPO, child_process_group, children, free_port, sweep_config, wait_for, write

pytestmark = pytest.mark.slow  # trains models or starts Ray

TINY_SPACE = """
strategy: finetune
fixed: {train.strategies.finetune.phases.0.epochs: 1}
parameters:
  lr: {path: train.strategies.finetune.phases.0.learning_rate, distribution: loguniform, low: 1.0e-5, high: 1.0e-3}
"""

BIN = Path(sys.executable).parent


@pytest.mark.timeout(1500)  # above its deadlines: the services' 120 s each, the job's 400 s, the status's 60 s
def test_a_sweep_submitted_as_a_ray_job_logs_to_an_mlflow_server(train_study, tmp_path, request):
    port = free_port()
    server = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    uri = f"http://127.0.0.1:{port}"
    config = sweep_config(train_study, tmp_path, tracking=uri)
    config_path = write(tmp_path, "config.yaml", yaml.safe_dump(config.model_dump(mode="json")))
    space = write(tmp_path, "finetune.yaml", TINY_SPACE)
    dashboard = free_port()
    environment = os.environ | {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    environment.pop("RAY_ADDRESS", None)
    environment.pop("MLFLOW_TRACKING_URI", None)
    ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    request.addfinalizer(lambda: shutil.rmtree(ray_temp, ignore_errors=True))
    head = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={free_port()}",
        "--num-cpus=2",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--temp-dir={ray_temp}",
        # free ports, away from the test session's own Ray instance
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]
    with (
        child_process_group(server, environment, tmp_path / "mlflow.log") as mlflow_server,
        child_process_group(head, environment, tmp_path / "head.log") as ray_head,
    ):
        wait_for(f"{uri}/health", mlflow_server)
        wait_for(f"http://127.0.0.1:{dashboard}/api/version", ray_head)
        address = f"http://127.0.0.1:{dashboard}"
        submit = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(REPO),
            "--submission-id",
            "tiny-sweep",
            "--",
            "python",
            "-m",
            "study",
            "sweep",
            "--config",
            str(config_path),
            "--space",
            str(space),
            "--trials",
            "1",
            "--data",
            str(train_study[1]),
            "--name",
            "job-sweep",
        ]
        for _ in range(30):  # the dashboard answers a few seconds before its job agent does
            submitted = subprocess.run(submit, env=environment, capture_output=True, text=True, timeout=400)
            if "No available agent to submit job" not in submitted.stderr:
                break
            time.sleep(2)
        status = subprocess.run(
            [str(BIN / "ray"), "job", "status", "--address", address, "tiny-sweep"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "tiny-sweep' succeeded" in status.stdout, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "sweep job-sweep" in submitted.stdout  # the job's own output, streamed back by the CLI
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(config.name)
        parent = client.search_runs([experiment.experiment_id], "tags.`study.run_name` = 'job-sweep'")[0]
        trial_runs = children(client, parent.info.run_id)
        best_run_id = parent.data.tags["study.best_run_id"]
        (registered,) = client.search_model_versions(f"run_id = '{best_run_id}'")
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
        checkpoint = [a.path for a in client.list_artifacts(best_run_id, "checkpoint")]
    assert parent.info.status == "FINISHED" and parent.data.tags["study.kind"] == "sweep"
    assert [run.info.run_id for run in trial_runs] == [best_run_id]
    assert all(run.data.metrics["val_rmse_px"] > 0 for run in trial_runs)
    assert registered.name == f"{config.name}-landmarks"
    assert "sweep/optimization_history.png" in artifacts
    assert checkpoint == ["checkpoint/checkpoint.pt"]  # artifacts went through the server's proxy
    assert list((tmp_path / "artifacts").rglob("checkpoint.pt"))
