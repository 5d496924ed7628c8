"""A data set's splits, read once per process and shared by every run that process trains or evaluates.

A reproduce trains and evaluates several strategies and seeds on one data set; a sweep runs many
trials on it. Reading the Parquet shards again for each run costs seconds each time, so:

- ``split_rows(data_dir, split)`` reads a split once per process (keyed by the data set's folder,
  split and hash: a regenerated data set is read again) and returns the same ``DRRRows`` after;
- ``share_splits(data_dir)`` hands the training columns to other processes: a sweep's driver puts
  them into Ray's object store once for its trials (``adopt_splits`` makes a trial process use them,
  zero-copy); a Ray Train run puts its own rows (``run_splits``) there once for its workers.

A run trains and validates on its rows (``run_columns``): the ``train`` and ``val`` splits, or, for
one fold of a cross-validation by subject (``train.fold``), those rows without the fold's held-out
subjects; it is tested on every test split, or on the held-out subjects' rows of them
(``rows_to_test``, ``splits_to_test``). A fold's rows are selected from the cached splits when a run
asks for them and are not cached themselves: a study of many folds holds each split once.

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
from study.config import FoldConfig

__all__ = [
    "ROLES",
    "adopt_splits",
    "rows_to_test",
    "run_columns",
    "run_splits",
    "run_subjects",
    "share_splits",
    "source_split",
    "split_columns",
    "split_rows",
    "splits_to_test",
]

ROLES = ("train", "val")  # the rows a run trains on and those it validates on

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


def source_split(role: str, fold: FoldConfig | None = None) -> str:
    """The split a run's ``role`` rows ("train" or "val") come from: the split of that name, or for a fold's val
    rows the fold's val split (``fold.val``)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {ROLES}")
    return fold.val if fold is not None and role == "val" else role


def run_rows(data_dir: str | Path, role: str, fold: FoldConfig | None) -> tuple[str, np.ndarray | None]:
    """The split a run's ``role`` rows come from, and which of its rows they are ((N,) bool; None: all)."""
    split = source_split(role, fold)
    if fold is None:
        return split, None
    subjects = split_rows(data_dir, split).subject_id
    if role == "train":
        unknown = sorted(set(fold.held_out) - set(subjects))
        if unknown:
            raise DatasetError(
                f"{data_dir}: train.fold.held_out {unknown} are not subjects of the train split "
                f"({', '.join(sorted(set(subjects)))})"
            )
    keep = ~np.isin(subjects, fold.held_out)
    if not keep.any():
        raise DatasetError(f"{data_dir}: fold {fold.number} leaves no {split} rows once {fold.held_out} are held out")
    return split, keep


def run_columns(data_dir: str | Path, role: str, fold: FoldConfig | None = None) -> dict[str, np.ndarray]:
    """The training columns a run trains on (``role`` "train") or validates on ("val"): the split of that name, or
    for a fold (``train.fold``) the ``train`` split and the fold's val split (``fold.val``), each without the rows
    of the held-out subjects (a copy)."""
    split, keep = run_rows(data_dir, role, fold)
    columns = split_columns(data_dir, split)
    return columns if keep is None else {name: column[keep] for name, column in columns.items()}


def run_subjects(data_dir: str | Path, role: str, fold: FoldConfig | None = None) -> list[str]:
    """The subjects of the rows ``run_columns`` gives, sorted."""
    split, keep = run_rows(data_dir, role, fold)
    subjects = split_rows(data_dir, split).subject_id
    return sorted(set(subjects if keep is None else subjects[keep]))


def run_splits(data_dir: str | Path, fold: FoldConfig | None = None) -> dict[str, dict[str, np.ndarray]]:
    """A run's rows by role (``run_columns``), to put into Ray's object store for its Ray Train workers."""
    return {role: run_columns(data_dir, role, fold) for role in ROLES}


def splits_to_test(data_dir: str | Path, splits, fold: FoldConfig | None = None) -> list[str]:
    """Those of ``splits`` a run is tested on: those with rows, or for a fold those holding rows of its held-out
    subjects (by the data set's manifest)."""
    manifest = read_manifest(Path(data_dir))
    if fold is None:
        return [split for split in splits if manifest["rows"].get(split, 0)]
    subjects = manifest["subjects"]
    return [split for split in splits if set(fold.held_out) & set(subjects.get(split, []))]


def rows_to_test(
    data_dir: str | Path, split: str, fold: FoldConfig | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ids (``subject_id``, ``view_id``, ``split``: (B,) arrays) and training columns of the rows of ``split``
    a run is tested on: all of them, or for a fold (``train.fold``) its held-out subjects' rows only."""
    rows, columns = split_rows(data_dir, split), split_columns(data_dir, split)
    ids = {"subject_id": rows.subject_id, "view_id": rows.view_id, "split": rows.split}
    if fold is None:
        return ids, columns
    keep = np.isin(rows.subject_id, fold.held_out)
    return {name: value[keep] for name, value in ids.items()}, {name: value[keep] for name, value in columns.items()}
