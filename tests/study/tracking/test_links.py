"""Links into the MLflow UI open the runs of model training, not MLflow's GenAI overview."""

from study.tracking.links import experiment_url, link_line, run_url


def test_a_tracking_server_is_linked_directly():
    uri = "http://10.0.0.5:8080/"
    assert experiment_url(uri, "3") == "http://10.0.0.5:8080/#/experiments/3/runs?workflowType=machine_learning"
    assert run_url(uri, "3", "abc") == "http://10.0.0.5:8080/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert link_line(uri, "3", "abc") == "MLflow: " + run_url(uri, "3", "abc")


def test_a_sqlite_store_is_linked_through_mlflow_ui_and_says_how_to_start_it():
    uri = "sqlite:////data/mlflow.db"
    line = link_line(uri, "1")
    assert line.startswith("MLflow: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning")
    assert line.endswith("(start the UI: mlflow ui --backend-store-uri sqlite:////data/mlflow.db --port 5000)")
