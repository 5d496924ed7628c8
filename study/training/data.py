"""A data set's splits, read once per process and shared by every run that process trains or evaluates.

A reproduce trains and evaluates several strategies and seeds on one data set; a sweep runs many
trials on it. Reading the Parquet shards again for each run costs seconds each time, so:

- ``split_rows(data_dir, split)`` reads a split once per process (keyed by the data set's folder,
  split and hash: a regenerated data set is read again) and returns the same ``DRRRows`` after;
- ``share_splits(data_dir)`` hands the training columns to other processes: a sweep's driver puts
  them into Ray's object store once for its trials (``adopt_splits`` makes a trial process use them,
  zero-copy), and a Ray Train run puts them there once for its workers.

Every worker trains on its share of every batch, so each needs all of a split, in the order this
process reads it: the object store gives each worker exactly the arrays the driver read (on any
node, with no shared file system), in their order, where a Ray Dataset would stream rows in an
order of its own and start its executor in every worker (about 5 s per run on 2 cores).
"""

from pathlib import Path

import numpy as np

from components import training
from components.dataset import DatasetError, DRRRows, read_split
from components.manifest import read_manifest

__all__ = ["adopt_splits", "share_splits", "split_columns", "split_rows"]

_ROWS: dict[tuple, DRRRows] = {}
_COLUMNS: dict[tuple, dict[str, np.ndarray]] = {}


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
