"""The paper's Table 1, computed only from per-image records (``per_image/<strategy>-seed<k>.csv``).

A row per split and strategy: the pooled ("mean") and per-landmark RMSE in px by argmax, the RMSE
in mm at the isocentre, and the pose errors after registration. A diverged run reads ``DIV``.
With several seeds each cell is mean ± sd over the seeds, and a paired Wilcoxon test over images
says whether finetune beats baseline.
"""

import math

import numpy as np
from scipy import stats

from components import evaluation
from components.anatomy import LANDMARK_NAMES
from components.dataset import TEST_SPLITS
from study.config import StudyConfig

__all__ = ["COLUMNS", "DIVERGED", "markdown", "table_1", "wilcoxon_tests"]

DIVERGED = "DIV"
COLUMNS = [
    "mean",
    *[f"L{i + 1}" for i in range(len(LANDMARK_NAMES))],
    "mean_mm",
    "rotation_deg",
    "translation_mm",
    "mtre_mm",
    "success",
]


def cells_of(records: list[dict], config: StudyConfig) -> dict[str, float]:
    """The numbers of one table row (one split, strategy and seed) from its argmax records."""
    summary = evaluation.summarise(
        records,
        config.data.render_camera(),
        config.data.poses.source_to_isocenter,
        config.report.success_mm,
        resamples=10,
        seed=0,
    )
    cells = {
        "mean": summary["rmse_px"],
        "mean_mm": summary["rmse_isocenter_mm"],
        "rotation_deg": summary["rotation_deg_median"],
        "translation_mm": summary["translation_mm_median"],
        "mtre_mm": summary["mtre_mm_median"],
        "success": summary["success_rate"],
    }
    return cells | {f"L{i + 1}": summary[f"rmse_px_{name}"] for i, name in enumerate(LANDMARK_NAMES)}


def table_1(runs: dict[tuple[str, int], list[dict] | None], config: StudyConfig, splits=TEST_SPLITS) -> list[dict]:
    """Rows of Table 1 from per-image records keyed by (strategy, seed); None marks a diverged run.

    Each row: ``split``, ``strategy``, ``seeds``, ``diverged`` (how many seeds), and for every column
    ``<column>`` (mean over the seeds that did not diverge) and ``<column>_sd``.
    """
    strategies = list(dict.fromkeys(strategy for strategy, _ in runs))
    rows = []
    for split in splits:
        for strategy in strategies:
            seeded = [(seed, records) for (name, seed), records in runs.items() if name == strategy]
            cells = [
                cells_of([r for r in records if r["split"] == split and r["method"] == "argmax"], config)
                for _, records in seeded
                if records is not None
            ]
            row = {
                "split": split,
                "strategy": strategy,
                "seeds": len(seeded),
                "diverged": sum(records is None for _, records in seeded),
            }
            for column in COLUMNS:
                values = np.array([c[column] for c in cells], dtype=float)
                row[column] = float(values.mean()) if values.size else math.nan
                row[f"{column}_sd"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            rows.append(row)
    return rows


def format_cell(row: dict, column: str) -> str:
    if row["diverged"] == row["seeds"]:
        return DIVERGED
    value, sd = row[column], row[f"{column}_sd"]
    text = f"{100 * value:.0f}%" if column == "success" else f"{value:.2f}"
    if math.isfinite(sd):
        text += f" ± {100 * sd:.0f}%" if column == "success" else f" ± {sd:.2f}"
    return text + (f" ({row['diverged']} DIV)" if row["diverged"] else "")


def markdown(rows: list[dict], tests: list[dict]) -> str:
    """Table 1 as Markdown, with the Wilcoxon tests below it."""
    header = ["split", "strategy", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([row["split"], row["strategy"], *[format_cell(row, c) for c in COLUMNS]]) + " |")
    lines.append("")
    lines.append(
        "RMSE in px by argmax (mean: over all landmarks; L1-L8: " + ", ".join(LANDMARK_NAMES) + "); "
        "mean_mm: at the isocentre; pose errors: medians after registration; success: mTRE below the threshold."
    )
    for test in tests:
        lines.append(
            f"\nWilcoxon signed-rank, {test['split']}: finetune < baseline per image, "
            f"{test['pairs']} pairs, median difference {test['median_difference_px']:+.3f} px, "
            f"p = {test['p_value']:.3g}"
        )
    return "\n".join(lines) + "\n"


def wilcoxon_tests(runs: dict[tuple[str, int], list[dict] | None], splits=TEST_SPLITS) -> list[dict]:
    """Per split: a one-sided paired Wilcoxon test that finetune's per-image RMSE is below baseline's (all seeds)."""
    tests = []
    for split in splits:
        finetune, baseline = [], []
        for (strategy, seed), records in runs.items():
            other = runs.get(("baseline", seed))
            if strategy != "finetune" or records is None or other is None:
                continue
            mine = {
                (r["subject_id"], r["view_id"]): r for r in records if r["split"] == split and r["method"] == "argmax"
            }
            theirs = {
                (r["subject_id"], r["view_id"]): r for r in other if r["split"] == split and r["method"] == "argmax"
            }
            keys = sorted(set(mine) & set(theirs))
            finetune += list(evaluation.per_image_rmse([mine[k] for k in keys]))
            baseline += list(evaluation.per_image_rmse([theirs[k] for k in keys]))
        difference = np.array(finetune) - np.array(baseline)
        difference = difference[np.isfinite(difference)]
        if difference.size and np.any(difference != 0):
            p_value = float(stats.wilcoxon(difference, alternative="less").pvalue)
            tests.append(
                {
                    "split": split,
                    "pairs": int(difference.size),
                    "median_difference_px": float(np.median(difference)),
                    "p_value": p_value,
                }
            )
    return tests
