"""A data set's splits as MLflow datasets: each run's inputs, and what its evaluation metrics were measured on.

A split is the dataset ``<data folder>-<split>`` (e.g. ``demo-train``) with the digest of the data
set's hash (its first 16 hex digits: MLflow keeps at most 36 characters; the full hash is in the
profile), source the split's folder, context its role (``train``, ``val``, ``novel_view``,
``novel_subject``) and a profile of its rows and subjects. A training run logs ``train`` and
``val``; an evaluation logs the test splits it measured, and its metrics name their dataset.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag

__all__ = ["SplitDataset", "log_splits", "split_dataset"]

DIGEST_LENGTH = 16


@dataclass(frozen=True)
class SplitDataset:
    """One split of a generated data set, as MLflow names it."""

    name: str
    digest: str
    split: str
    entity: Dataset


def split_dataset(data_dir: str | Path, manifest: dict, split: str) -> SplitDataset:
    """The MLflow dataset of ``split`` of the data set in ``data_dir`` (whose manifest is ``manifest``)."""
    folder = Path(data_dir).resolve()
    name, digest = f"{folder.name}-{split}", manifest["dataset_hash"][:DIGEST_LENGTH]
    subjects = manifest.get("subjects", {}).get(split, [])
    profile = {
        "rows": manifest["rows"].get(split, 0),
        "subjects": len(subjects),
        "dataset_hash": manifest["dataset_hash"],
    }
    source = json.dumps({"uri": (folder / split).as_uri()})
    entity = Dataset(name=name, digest=digest, source_type="local", source=source, profile=json.dumps(profile))
    return SplitDataset(name, digest, split, entity)


def log_splits(client, run_id: str, data_dir: str | Path, manifest: dict, splits) -> dict[str, SplitDataset]:
    """Log ``splits`` as the run's input datasets (context: the split); returns them by split."""
    datasets = {split: split_dataset(data_dir, manifest, split) for split in splits}
    inputs = [
        DatasetInput(dataset.entity, tags=[InputTag("mlflow.data.context", split)])
        for split, dataset in datasets.items()
    ]
    client.log_inputs(run_id, datasets=inputs)
    return datasets
