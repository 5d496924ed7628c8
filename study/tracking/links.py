"""Links into the MLflow UI: an experiment's runs table and a run's page, as every logging command prints them.

MLflow 3 opens an experiment on its GenAI overview unless the URL asks for the runs of model
training (``?workflowType=machine_learning``). A SQLite store has no server: its links point at
``mlflow ui`` on 127.0.0.1:5000, and the line says how to start it.
"""

__all__ = ["UI_PORT", "experiment_url", "link_line", "run_url", "ui_command"]

UI_PORT = 5000
RUNS_VIEW = "workflowType=machine_learning"


def ui_base(uri: str) -> str:
    """The UI's address: a tracking server's own, else that of ``mlflow ui`` on this machine."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{UI_PORT}"


def ui_command(uri: str) -> str | None:
    """The command that serves a store without a server (None for a tracking server)."""
    if uri.startswith(("http://", "https://")):
        return None
    return f"mlflow ui --backend-store-uri {uri} --port {UI_PORT}"


def experiment_url(uri: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs?{RUNS_VIEW}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}?{RUNS_VIEW}"


def link_line(uri: str, experiment_id: str, run_id: str | None = None, how_to_start: bool = True) -> str:
    """``MLflow: <url>``, with how to start the UI for a store without a server (``how_to_start``)."""
    url = run_url(uri, experiment_id, run_id) if run_id else experiment_url(uri, experiment_id)
    command = ui_command(uri) if how_to_start else None
    return f"MLflow: {url}" + (f"  (start the UI: {command})" if command else "")
