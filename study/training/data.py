"""A data set's splits, read once per process and shared by every run that process trains or evaluates.

A reproduce trains and evaluates several strategies and seeds on one data set; a sweep runs many
trials on it. Reading the Parquet shards again for each run costs seconds each time, so:

- ``split_rows(data_dir, split)`` reads a split once per process (keyed by the data set's folder,
  split and hash: a regenerated data set is read again) and returns the same ``DRRRows`` after;
- ``share_splits(data_dir)`` hands the training columns to other processes (a sweep's driver puts
  them into Ray's object store once), and ``adopt_splits`` makes a trial process use them (zero-copy);
- ``ray_datasets(data_dir)`` gives Ray Train runs the ``train`` and ``val`` splits as Ray Datasets,
  materialised once per process, each row with its position in ``split_columns``' order
  (``training.ROW_INDEX``): a Ray Train worker sorts the rows it streams by it, so it trains on the
  rows in the order this process would, whatever order Ray Data streams them in.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa

from components import training
from components.dataset import DatasetError, DRRRows, read_split
from components.manifest import read_manifest

__all__ = ["adopt_splits", "ray_datasets", "share_splits", "split_columns", "split_rows"]

_ROWS: dict[tuple, DRRRows] = {}
_COLUMNS: dict[tuple, dict[str, np.ndarray]] = {}
_DATASETS: dict[tuple, dict] = {}


def dataset_key(data_dir: str | Path) -> tuple[str, str]:
    """(absolute folder, data set hash): what identifies the data set a cached split belongs to."""
    folder = Path(data_dir).resolve()
    manifest = read_manifest(folder)
    if manifest is None:
        raise DatasetError(f"{folder}: no manifest; is this a data set made by 'study generate'?")
    return str(folder), str(manifest.get("dataset_hash"))


def split_rows(data_dir: str | Path, split: str) -> DRRRows:
    """All rows of ``split``, read from Parquet the first time this process asks."""
    key = (*dataset_key(data_dir), split)
    if key not in _ROWS:
        _ROWS[key] = read_split(Path(data_dir), split)
    return _ROWS[key]


def split_columns(data_dir: str | Path, split: str) -> dict[str, np.ndarray]:
    """The training columns (``training.COLUMNS``) of ``split``: shared from the driver, or read once here."""
    key = (*dataset_key(data_dir), split)
    if key not in _COLUMNS:
        _COLUMNS[key] = training.columns_of(split_rows(data_dir, split))
    return _COLUMNS[key]


def share_splits(data_dir: str | Path, splits=("train", "val")) -> dict:
    """The training columns of ``splits``, to hand to other processes (e.g. with ``tune.with_parameters``, which
    puts them into Ray's object store once): ``{"key": (folder, hash), "splits": {split: columns}}``."""
    return {"key": dataset_key(data_dir), "splits": {split: split_columns(data_dir, split) for split in splits}}


def adopt_splits(shared: dict) -> None:
    """Use the splits another process shared (``share_splits``) here, instead of reading them again."""
    key = tuple(shared["key"])
    for split, columns in shared["splits"].items():
        _COLUMNS.setdefault((*key, split), columns)


def row_positions(data_dir: str | Path, split: str) -> dict[tuple[str, int], int]:
    """(subject id, view id) -> the row's position in ``split``, in ``split_rows``' order (the manifest's shards)."""
    rows = split_rows(data_dir, split)
    keys = list(zip(rows.subject_id.tolist(), rows.view_id.tolist()))
    if len(set(keys)) != len(keys):
        raise DatasetError(f"{data_dir}: split '{split}' has two rows of the same subject and view")
    return {key: position for position, key in enumerate(keys)}


def ray_datasets(data_dir: str | Path) -> dict:
    """The ``train`` and ``val`` training columns and ``training.ROW_INDEX`` as Ray Datasets, read and materialised
    once per process."""
    import ray.data

    key = dataset_key(data_dir)
    if key not in _DATASETS:
        columns = [*training.COLUMNS, training.ROW_INDEX]
        _DATASETS[key] = {}
        for split in ("train", "val"):
            positions = row_positions(data_dir, split)

            def add_row_index(table: pa.Table, positions=positions) -> pa.Table:
                keys = zip(table.column("subject_id").to_pylist(), table.column("view_id").to_pylist())
                return table.append_column(training.ROW_INDEX, pa.array([positions[k] for k in keys], pa.int64()))

            dataset = ray.data.read_parquet(str(Path(data_dir) / split))
            dataset = dataset.map_batches(add_row_index, batch_format="pyarrow", zero_copy_batch=True)
            _DATASETS[key][split] = dataset.select_columns(columns).materialize()
    return _DATASETS[key]
