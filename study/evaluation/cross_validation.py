"""Leave-one-subject-out cross-validation (``report.cross_validation``): the folds, and Table 1 pooled over them.

With few subjects (DeepFluoro has 6 specimens) a fixed split wastes data and gives one noisy number;
Grupp et al. train on all specimens but one and test on that one, for each in turn.

The folds (``folds``): one per subject of the train split, in the cohort's order. Fold k

- trains on the train rows of every other subject;
- validates on the val split, whose subjects are in no fold; a cohort without val subjects
  validates on the novel views of the fold's training subjects (views no fold trains on) instead;
- is tested on its subject's rows of every test split: its novel_view rows (views no fold trains
  on, now of a subject the fold never saw) and its fluoro rows (and those of any further test split
  that holds the subject). The novel_subject split's subjects are in no fold and not reported.

A fold's run is an ordinary training run with ``train.fold`` set (``fold_config``), named
``<name>-<strategy>-fold<k>`` (``-seed<s>`` for another training seed), resumed and reused like any
run; a fine-tune of a fold starts from the same fold's baseline. The trivial predictor of a fold
takes its mean positions from the fold's own training rows, and its val RMSE, the bar a fold's run
must beat not to be DIV, is measured on the fold's val rows.

Pooling: every test image belongs to exactly one fold's test, so per strategy and seed the folds'
records are pooled (``pooled_outcomes``), and Table 1 and the comparisons are computed from the
pooled records as for fixed splits: the subjects the bootstrap resamples are the held-out subjects,
each measured by its own fold's model, and two strategies are compared on the same images (each
fold's models on their own subject). A fold run that is DIV leaves its subject out of its seed's
pool (a footnote says so); a seed is DIV when every fold of it is. ``fold_rows`` is Table 1 of each
fold alone (``folds.md``, ``folds.csv``), and ``with_fold_spread`` adds the spread of the per-fold
means to the pooled rows.
"""

import math

import numpy as np

from study.config import FoldConfig, StudyConfig
from study.data.generate import cohort_splits
from study.evaluation.table import TRIVIAL, Outcome, format_cell, table_1

__all__ = [
    "FOLD_COLUMNS",
    "fold_config",
    "fold_rows",
    "folds",
    "folds_markdown",
    "pooled_outcomes",
    "with_fold_spread",
]

FOLD_COLUMNS = ["mean", "pooled", "mean_mm", "mtre_mm", "success"]  # the columns of folds.md


def folds(config: StudyConfig) -> list[FoldConfig]:
    """One fold per subject of the train split, numbered from 1 in the cohort's order."""
    subjects = [source.subject_id for source in cohort_splits(config)["train"]]
    val = "val" if config.data.cohort.subjects.val else "novel_view"
    return [FoldConfig(number=number, held_out=[subject], val=val) for number, subject in enumerate(subjects, 1)]


def fold_config(config: StudyConfig, fold: FoldConfig) -> StudyConfig:
    """The config of a fold's runs: ``train.fold`` set, and ``report.cross_validation`` off (a fold's run is an
    ordinary training run)."""
    train = config.train.model_copy(update={"fold": fold})
    report = config.report.model_copy(update={"cross_validation": None})
    return config.model_copy(update={"train": train, "report": report})


def pooled_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    """Per strategy and seed (in the order of ``outcomes``, one per fold each), the records of its folds that
    learned, pooled; DIV only when every fold is."""
    pooled = []
    for strategy, seed in dict.fromkeys((o.strategy, o.seed) for o in outcomes):
        mine = [o for o in outcomes if (o.strategy, o.seed) == (strategy, seed)]
        learned = [o for o in mine if o.div is None]
        records = [record for o in learned for record in o.records] if learned else None
        pooled.append(Outcome(strategy, seed, records, None if learned else f"DIV in all {len(mine)} folds"))
    return pooled


def fold_rows(outcomes: list[Outcome], trivial: list[Outcome], config: StudyConfig, splits) -> list[dict]:
    """Table 1 of each fold alone, on the splits its held-out subjects have rows in; each row with ``fold`` (its
    number) and ``held_out`` (its subjects). ``trivial``: the trivial predictor's outcome of each fold."""
    rows = []
    for reference in trivial:
        fold = reference.fold
        tested = [split for split in splits if any(r["split"] == split for r in reference.records)]
        mine = [o for o in outcomes if o.fold == fold]
        for row in table_1(mine, reference.records, config, tested):
            rows.append({"fold": fold.number, "held_out": ",".join(fold.held_out)} | row)
    return rows


def with_fold_spread(rows: list[dict], per_fold: list[dict]) -> list[dict]:
    """The pooled Table 1 ``rows`` with the spread of their per-fold means (``per_fold``: ``fold_rows``):
    ``folds`` (how many folds have a mean), ``fold_min``, ``fold_median``, ``fold_max``, ``fold_sd``, and
    ``fold_runs``, ``fold_runs_diverged`` (the fold runs behind the row, and how many of them are DIV)."""
    spread = []
    for row in rows:
        mine = [f for f in per_fold if (f["split"], f["strategy"]) == (row["split"], row["strategy"])]
        means = np.array([f["mean"] for f in mine if math.isfinite(f["mean"])])
        spread.append(
            row
            | {
                "folds": len(means),
                "fold_min": float(means.min()) if means.size else math.nan,
                "fold_median": float(np.median(means)) if means.size else math.nan,
                "fold_max": float(means.max()) if means.size else math.nan,
                "fold_sd": float(means.std(ddof=1)) if means.size > 1 else math.nan,
                "fold_runs": sum(f["seeds"] for f in mine),
                "fold_runs_diverged": sum(f["diverged"] for f in mine),
            }
        )
    return spread


def folds_markdown(per_fold: list[dict], splits, strategies: list[str], seeds: list[int]) -> str:
    """``folds.md``: every fold's result (``fold_rows``), by split and strategy, then fold."""
    order = {name: index for index, name in enumerate([*splits, *strategies, TRIVIAL])}
    rows = sorted(per_fold, key=lambda r: (order[r["split"]], order[r["strategy"]], r["fold"]))
    header = ["split", "strategy", "fold", "held out", *FOLD_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["split"], row["strategy"], str(row["fold"]), row["held_out"]]
        lines.append("| " + " | ".join(cells + [format_cell(row, column) for column in FOLD_COLUMNS]) + " |")
    lines.append("")
    lines.append(
        f"Each fold of the leave-one-subject-out cross-validation alone: its model(s) on the subject it held out. "
        f"Cells as in table1.md, mean ± sd over {len(seeds)} training seed(s) ({', '.join(map(str, seeds))}); "
        "the interval resamples only the held-out subject's images (one subject). trivial: the mean positions of "
        "the fold's own training rows."
    )
    return "\n".join(lines) + "\n"
