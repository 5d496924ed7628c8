"""The paper's Table 1, computed only from per-image records (``per_image/<strategy>-seed<k>.csv``).

A row per split and strategy, each cell the mean ± sd over the training seeds that learned:

- ``mean``: the paper's "Mean", the arithmetic mean of the per-landmark RMSEs (px, argmax), with
  a 95% interval from a hierarchical bootstrap over seeds, subjects and images within them
  (``components.statistics``); ``L1``-``LN``: the per-landmark RMSEs, one per landmark of the study's
  set (``data.landmarks``: the paper's 8, DeepFluoro's 14, ...), in its order, named in the legend;
  ``pooled``: the RMSE over all landmarks at once (a different number: it weights the landmarks by
  their squared errors);
- ``mean_mm``: the mean at the isocentre; pose errors after registration (medians) and success rate.

A run is DIV (``Outcome.div`` says why) when its loss diverged (non-finite, or exploding: see
``train.divergence_factor``) or when it did not learn: its final val RMSE is no better than the
trivial predictor's. A DIV run's numbers leave its row and go to a footnote. The ``trivial`` row is
that predictor (every landmark at its mean training position): how hard the task is.

In a cross-validation (``study.evaluation.cross_validation``) the outcome of a seed pools its folds'
records, and ``markdown`` adds the spread of the per-fold means.
"""

import math
from dataclasses import dataclass

import numpy as np

from components import evaluation, metrics, statistics
from components.anatomy import LandmarkSet
from components.dataset import TEST_SPLITS
from study.config import FoldConfig, StudyConfig

__all__ = [
    "DIVERGED",
    "TRIVIAL",
    "Outcome",
    "aligned_errors",
    "columns",
    "footnotes",
    "format_cell",
    "landmark_columns",
    "markdown",
    "table_1",
]

DIVERGED = "DIV"
TRIVIAL = "trivial"  # the row of the mean-position predictor


def landmark_columns(landmarks: LandmarkSet) -> list[str]:
    """``L1`` ... ``LN``: a column per landmark of the set, in its order."""
    return [f"L{i + 1}" for i in range(len(landmarks))]


def columns(landmarks: LandmarkSet) -> list[str]:
    """Table 1's number columns for the set: the mean, one per landmark, then the pooled, mm and pose ones."""
    pose = ["rotation_deg", "translation_mm", "mtre_mm", "success"]
    return ["mean", *landmark_columns(landmarks), "pooled", "mean_mm", *pose]


@dataclass(frozen=True)
class Outcome:
    """One training run of a reproduction as Table 1 sees it.

    Attributes:
        strategy, seed: which run.
        records: its per-image records (read back from its CSV), None when it left no checkpoint.
        div: why the run is DIV (a footnote), None when it learned.
        fold: the fold of a cross-validation the run trained (None: the data set's fixed splits).
    """

    strategy: str
    seed: int
    records: list[dict] | None
    div: str | None = None
    fold: FoldConfig | None = None

    def label(self) -> str:
        """``<strategy> seed <k>``, and the fold: ``, fold 2 (phantom-00001 held out)``."""
        fold = self.fold
        held_out = f", fold {fold.number} ({', '.join(fold.held_out)} held out)" if fold is not None else ""
        return f"{self.strategy} seed {self.seed}{held_out}"


def split_records(records: list[dict], split: str) -> list[dict]:
    """The argmax records (the paper's) of one split."""
    return [r for r in records if r["split"] == split and r["method"] == "argmax"]


def cells_of(records: list[dict], config: StudyConfig) -> dict[str, float]:
    """The numbers of one table row (one split, strategy and seed) from its argmax records."""
    camera, source_to_isocenter = config.data.render_camera(), config.data.poses.source_to_isocenter
    landmarks = config.data.landmarks.landmark_set()
    summary = evaluation.summarise(
        records, landmarks, camera, source_to_isocenter, config.report.success_mm, resamples=10
    )
    mean = statistics.paper_mean(evaluation.error_matrix(records, landmarks))
    cells = {
        "mean": mean,
        "pooled": summary["rmse_px"],
        "mean_mm": mean * metrics.px_to_mm(camera, source_to_isocenter)[1],
        "rotation_deg": summary["rotation_deg_median"],
        "translation_mm": summary["translation_mm_median"],
        "mtre_mm": summary["mtre_mm_median"],
        "success": summary["success_rate"],
    }
    return cells | {f"L{i + 1}": summary[f"rmse_px_{name}"] for i, name in enumerate(landmarks.names)}


def aligned_errors(outcomes: list[Outcome], split: str, landmarks: LandmarkSet) -> tuple[np.ndarray, np.ndarray]:
    """(S, N, L) errors (px) of the set's L landmarks in the outcomes' argmax records of ``split`` on the N images
    they all have, in one order, and those images' (N,) subjects."""
    by_key = [{(r["subject_id"], str(r["view_id"])): r for r in split_records(o.records, split)} for o in outcomes]
    keys = sorted(set.intersection(*(set(k) for k in by_key))) if by_key else []
    matrices = [evaluation.error_matrix([mine[k] for k in keys], landmarks) for mine in by_key]
    errors = np.stack(matrices) if by_key else None
    return errors, np.array([subject for subject, _ in keys])


def table_1(outcomes: list[Outcome], trivial: list[dict] | None, config: StudyConfig, splits=TEST_SPLITS) -> list[dict]:
    """Rows of Table 1 (see the module docstring), then the ``trivial`` row from its records (if given).

    Each row: ``split``, ``strategy``, ``seeds`` (trained), ``diverged`` (how many are DIV), for every
    column ``<column>`` (mean over the seeds that learned) and ``<column>_sd``, and ``mean_low``,
    ``mean_high`` (the bootstrap interval of ``mean``).
    """
    strategies = list(dict.fromkeys(o.strategy for o in outcomes))
    landmarks = config.data.landmarks.landmark_set()
    rows = []
    for split in splits:
        for strategy in [*strategies, TRIVIAL] if trivial is not None else strategies:
            if strategy == TRIVIAL:
                mine, learned = [Outcome(TRIVIAL, 0, trivial)], [Outcome(TRIVIAL, 0, trivial)]
            else:
                mine = [o for o in outcomes if o.strategy == strategy]
                learned = [o for o in mine if o.div is None]
            row = {"split": split, "strategy": strategy, "seeds": len(mine), "diverged": len(mine) - len(learned)}
            cells = [cells_of(split_records(o.records, split), config) for o in learned]
            for column in columns(landmarks):
                values = np.array([c[column] for c in cells], dtype=float)
                row[column] = float(values.mean()) if values.size else math.nan
                row[f"{column}_sd"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            row["mean_low"], row["mean_high"] = math.nan, math.nan
            if learned:
                errors, subjects = aligned_errors(learned, split, landmarks)
                low, high = statistics.paper_mean_interval(
                    errors, subjects, config.report.bootstrap_resamples, config.seed
                )
                row["mean_low"], row["mean_high"] = low, high
            rows.append(row)
    return rows


def format_cell(row: dict, column: str) -> str:
    if row["diverged"] == row["seeds"]:
        return DIVERGED
    value, sd = row[column], row[f"{column}_sd"]
    text = f"{100 * value:.0f}%" if column == "success" else f"{value:.2f}"
    if math.isfinite(sd):
        text += f" ± {100 * sd:.0f}%" if column == "success" else f" ± {sd:.2f}"
    if column == "mean" and math.isfinite(row["mean_low"]):
        text += f" [{row['mean_low']:.2f}, {row['mean_high']:.2f}]"
    return text + (f" ({row['diverged']} DIV)" if row["diverged"] else "")


def footnotes(outcomes: list[Outcome], config: StudyConfig, splits=TEST_SPLITS) -> list[str]:
    """One line per DIV run: why, and the numbers it would have had."""
    lines = []
    for outcome in outcomes:
        if outcome.div is None:
            continue
        numbers = ""
        if outcome.records is not None:
            tested = [s for s in splits if split_records(outcome.records, s)]  # a fold: its subject's splits
            means = {s: cells_of(split_records(outcome.records, s), config)["mean"] for s in tested}
            numbers = "; its mean RMSE: " + ", ".join(f"{s} {v:.2f} px" for s, v in means.items())
        lines.append(f"{outcome.label()}: {DIVERGED}, {outcome.div}{numbers}")
    return lines


def format_folds(row: dict) -> str:
    """The spread of a cross-validation row's per-fold means: ``min / median / max``, and its DIV fold runs."""
    if not row["folds"]:
        return DIVERGED
    text = f"{row['fold_min']:.2f} / {row['fold_median']:.2f} / {row['fold_max']:.2f}"
    return text + (f" ({row['fold_runs_diverged']} of {row['fold_runs']} DIV)" if row["fold_runs_diverged"] else "")


def markdown(
    rows: list[dict],
    notes: list[str],
    seeds: list[int],
    checkpoint: str,
    landmarks: LandmarkSet,
    folds: int | None = None,
) -> str:
    """Table 1 as Markdown, with how to read it (the legend names the set's landmarks) and the DIV footnotes;
    for a cross-validation of ``folds`` folds (rows with the keys ``study.evaluation.cross_validation.
    with_fold_spread`` adds), a column of the per-fold means' spread."""
    numbers = columns(landmarks)
    header = ["split", "strategy", *numbers, *(["folds"] if folds else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [format_cell(row, c) for c in numbers] + ([format_folds(row)] if folds else [])
        lines.append("| " + " | ".join([row["split"], row["strategy"], *cells]) + " |")
    legend = ", ".join(f"{column} {name}" for column, name in zip(landmark_columns(landmarks), landmarks.names))
    lines.append("")
    lines.append(
        f"RMSE in px by argmax, mean ± sd over {len(seeds)} training seed(s) ({', '.join(map(str, seeds))}), "
        f"each evaluated at its {checkpoint} checkpoint. mean: the paper's, the mean of the {len(landmarks)} "
        f"per-landmark RMSEs of the landmark set '{landmarks.name}' ({legend}), with its 95% interval from a "
        "hierarchical bootstrap (seeds, "
        "subjects, images within subjects); pooled: the RMSE over all landmarks at once; mean_mm: the mean at the "
        "isocentre; pose errors: medians after registration; success: mTRE below the threshold. trivial: every "
        "landmark at its mean training position. DIV: the loss diverged, or the final val RMSE was no better than "
        "the trivial predictor's."
    )
    if folds:
        lines.append("")
        lines.append(
            f"Leave-one-subject-out cross-validation, {folds} folds: each fold trains on every training subject "
            "but one and is tested on that one, so every image belongs to exactly one fold's test and each row "
            "pools the folds (the trivial predictor's mean positions too come from each fold's own training rows). "
            "The subjects the bootstrap resamples are the held-out subjects, one per fold. novel_view: the held-out "
            "subjects' views that no fold trains on (novel subjects, in the paper's terms). folds: each fold's mean "
            "RMSE (over its seeds), min / median / max over the folds (folds.md has every fold); a DIV fold run "
            "leaves its subject out of its seed's pool."
        )
    for index, note in enumerate(notes, 1):
        lines.append(f"\n[{index}] {note}")
    return "\n".join(lines) + "\n"
