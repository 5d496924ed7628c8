"""A miniature ``study reproduce`` end to end: real training, evaluation, Table 1 and MLflow."""

import csv

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from components.anatomy import LANDMARK_NAMES
from study.evaluation.reproduce import STRATEGIES, reproduce
from study.evaluation.table import COLUMNS

pytestmark = pytest.mark.slow  # trains models or starts Ray


@pytest.fixture(autouse=True)
def no_tracking_uri_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def reproduction(train_study, tmp_path_factory):
    config, data = train_study
    out = tmp_path_factory.mktemp("report")
    return config, out, reproduce(config, data, out)


def test_table_has_a_row_per_split_and_strategy(reproduction):
    _, out, rows = reproduction
    assert [(r["split"], r["strategy"]) for r in rows] == [
        (s, k) for s in ("novel_view", "novel_subject") for k in STRATEGIES
    ]
    with open(out / "table1.csv") as stream:
        header = next(csv.reader(stream))
    assert {"split", "strategy", "seeds", "diverged", *COLUMNS} <= set(header)
    table = (out / "table1.md").read_text()
    assert table.splitlines()[0] == "| " + " | ".join(["split", "strategy", *COLUMNS]) + " |"
    assert len([line for line in table.splitlines() if line.startswith("| novel_")]) == 8


def test_table_numbers_equal_a_recomputation_from_the_per_image_predictions(reproduction):
    _, out, rows = reproduction
    for row in rows:
        path = out / "per_image" / f"{row['strategy']}-seed3.csv"
        if row["diverged"]:
            assert not path.exists()
            continue
        with open(path) as stream:
            records = [r for r in csv.DictReader(stream) if r["split"] == row["split"] and r["method"] == "argmax"]
        errors = np.array([[float(r[f"error_px_{name}"]) for name in LANDMARK_NAMES] for r in records])
        assert row["mean"] == pytest.approx(np.sqrt(np.nanmean(errors**2)), rel=1e-9)
        assert row["L1"] == pytest.approx(np.sqrt(np.nanmean(errors[:, 0] ** 2)), rel=1e-9)
        assert row["L8"] == pytest.approx(np.sqrt(np.nanmean(errors[:, 7] ** 2)), rel=1e-9)
        mtre = np.array([float(r["mtre_mm"]) for r in records])
        assert row["mtre_mm"] == pytest.approx(np.nanmedian(mtre), rel=1e-9)
        assert row["success"] == pytest.approx(np.mean(np.nan_to_num(mtre, nan=np.inf) < 10.0))


def test_everything_sits_under_one_parent_run(reproduction):
    config, _, _ = reproduction
    client = MlflowClient(config.tracking.uri)
    experiment = client.get_experiment_by_name(config.name)
    parent = client.search_runs([experiment.experiment_id], "tags.`study.kind` = 'reproduce'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["study.strategy"] for c in children) == sorted(STRATEGIES)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "table1")}
    assert {
        "table1/table1.md",
        "table1/table1.csv",
        "table1/per_landmark_rmse.png",
        "table1/error_cdf.png",
        "table1/examples.png",
        "table1/training_curves.png",
    } <= logged
    finetune = next(c for c in children if c.data.tags["study.strategy"] == "finetune")
    assert "novel_subject_rmse_px" in finetune.data.metrics and "novel_view_soft_rmse_px" in finetune.data.metrics
