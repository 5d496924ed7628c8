"""``study reproduce``: the paper's four strategies on the same data and seeds, then its Table 1.

Every strategy is trained (or its finished run reused) for every training seed of
``report.seeds``, as child runs of one parent MLflow run; each trained model is evaluated on the
test splits. Table 1 has a row per split and strategy: the pooled ("mean") and per-landmark RMSE
in px by argmax, the RMSE in mm at the isocentre, and the pose errors after registration. A
diverged run reads ``DIV``. With several seeds each cell is mean ± sd over the seeds, and a paired
Wilcoxon test over images says whether finetune beats baseline.

The table is computed only from the per-image records, which are saved as CSV
(``per_image/<strategy>-seed<k>.csv``), so anyone can recompute it.
"""

import math
from pathlib import Path

import numpy as np
from scipy import stats

from components import evaluation
from components.anatomy import LANDMARK_NAMES
from study.config import ConfigError, StudyConfig
from study.evaluate import TEST_SPLITS, evaluate_checkpoint, metric_names, per_image_rmse, read_csv, write_csv, write_json, write_text

STRATEGIES = ("baseline", "composite", "pose_only", "finetune")
DIVERGED = "DIV"
COLUMNS = ["mean", *[f"L{i + 1}" for i in range(len(LANDMARK_NAMES))], "mean_mm", "rotation_deg", "translation_mm", "mtre_mm", "success"]


def with_training_seed(config: StudyConfig, seed: int) -> StudyConfig:
    return config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})


def cells_of(records: list[dict], config: StudyConfig) -> dict[str, float]:
    """The numbers of one table row (one split, strategy and seed) from its argmax records."""
    summary = evaluation.summarise(records, config.data.render_camera(), config.data.poses.source_to_isocenter,
                                   config.report.success_mm, resamples=10, seed=0)
    cells = {"mean": summary["rmse_px"], "mean_mm": summary["rmse_isocenter_mm"], "rotation_deg": summary["rotation_deg_median"],
             "translation_mm": summary["translation_mm_median"], "mtre_mm": summary["mtre_mm_median"], "success": summary["success_rate"]}
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
            cells = [cells_of([r for r in records if r["split"] == split and r["method"] == "argmax"], config)
                     for _, records in seeded if records is not None]
            row = {"split": split, "strategy": strategy, "seeds": len(seeded), "diverged": sum(records is None for _, records in seeded)}
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
    lines.append("RMSE in px by argmax (mean: over all landmarks; L1-L8: " + ", ".join(LANDMARK_NAMES) + "); "
                 "mean_mm: at the isocentre; pose errors: medians after registration; success: mTRE below the threshold.")
    for test in tests:
        lines.append(f"\nWilcoxon signed-rank, {test['split']}: finetune < baseline per image, "
                     f"{test['pairs']} pairs, median difference {test['median_difference_px']:+.3f} px, p = {test['p_value']:.3g}")
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
            mine = {(r["subject_id"], r["view_id"]): r for r in records if r["split"] == split and r["method"] == "argmax"}
            theirs = {(r["subject_id"], r["view_id"]): r for r in other if r["split"] == split and r["method"] == "argmax"}
            keys = sorted(set(mine) & set(theirs))
            finetune += list(per_image_rmse([mine[k] for k in keys]))
            baseline += list(per_image_rmse([theirs[k] for k in keys]))
        difference = np.array(finetune) - np.array(baseline)
        difference = difference[np.isfinite(difference)]
        if difference.size and np.any(difference != 0):
            p_value = float(stats.wilcoxon(difference, alternative="less").pvalue)
            tests.append({"split": split, "pairs": int(difference.size), "median_difference_px": float(np.median(difference)), "p_value": p_value})
    return tests


def reproduce(config: StudyConfig, data_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[dict]:
    """Train and evaluate the four strategies for every seed; write, print and log Table 1; returns its rows."""
    from study.generate import default_out_dir, generate
    from study.plots import error_cdf_plot, example_plot, per_landmark_plot, training_curves_plot
    from study.tracking import Tracker
    from study.train import train

    if config.train is None or any(s not in config.train.strategies for s in STRATEGIES):
        raise ConfigError(f"config '{config.name}': reproduce needs the strategies {', '.join(STRATEGIES)} in its train section")
    data_dir = Path(data_dir or default_out_dir(config))
    out_dir = Path(out_dir or Path("reports") / config.name)
    (out_dir / "per_image").mkdir(parents=True, exist_ok=True)
    generate(config, data_dir)
    tracker = Tracker(config)
    parent = tracker.start_run(f"{config.name}-reproduce", config, {"study.kind": "reproduce"})
    seeds = config.report.seeds or [config.training_seed()]
    runs, summaries, checkpoints, histories = {}, {}, {}, {}
    for seed in seeds:
        seeded = with_training_seed(config, seed)
        for step, strategy in enumerate(STRATEGIES, 1):
            print(f"reproduce: seed {seed}, strategy {step}/{len(STRATEGIES)} '{strategy}'")
            result = train(seeded, strategy, data_dir, parent_run_id=parent)
            tracker.set_tags(result.run_id, {"mlflow.parentRunId": parent})  # also a reused, finished run
            histories[f"{strategy} seed {seed}"] = {
                key: [(m.step, m.value) for m in tracker.client.get_metric_history(result.run_id, key)] for key in ("train_loss", "val_rmse_px")
            }
            if result.status == "diverged" or result.best_checkpoint is None:
                runs[(strategy, seed)] = None
                continue
            records, summaries[strategy] = evaluate_checkpoint(result.best_checkpoint, seeded, data_dir)
            write_csv(records, out_dir / "per_image" / f"{strategy}-seed{seed}.csv")
            tracker.log_metrics(result.run_id, metric_names(summaries[strategy]), step=0)
            runs[(strategy, seed)] = read_csv(out_dir / "per_image" / f"{strategy}-seed{seed}.csv")
            checkpoints.setdefault(strategy, result.best_checkpoint)
    rows, tests = table_1(runs, config), wilcoxon_tests(runs)
    text = markdown(rows, tests)
    files = [write_text(text, out_dir / "table1.md"), write_csv(rows, out_dir / "table1.csv"), write_json({"rows": rows, "wilcoxon": tests}, out_dir / "table1.json")]
    if summaries:
        files.append(per_landmark_plot(summaries, out_dir / "per_landmark_rmse.png"))
        files.append(error_cdf_plot({k[0]: v for k, v in runs.items() if v is not None and k[1] == seeds[0]}, out_dir / "error_cdf.png"))
        files.append(example_plot(checkpoints, config, data_dir, TEST_SPLITS[-1], out_dir / "examples.png", config.report.examples or 4))
    files.append(training_curves_plot(histories, out_dir / "training_curves.png"))
    for path in files:
        tracker.log_file(parent, path, "table1")
    for row in rows:
        prefix = f"{row['split']}_{row['strategy']}_"
        tracker.log_metrics(parent, {prefix + "rmse_px": row["mean"], prefix + "mtre_mm": row["mtre_mm"]}, step=0)
    tracker.end_run(parent, "FINISHED")
    print(text)
    print(f"reproduce: {out_dir} (table1.md, table1.csv, per_image/, plots); MLflow parent run {parent}")
    return rows
