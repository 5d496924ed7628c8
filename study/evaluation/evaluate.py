"""``study evaluate``: a trained model on the test splits, as the paper's Table 1 measures it, logged to its MLflow run.

The model is a checkpoint folder or an MLflow run id (``study.evaluation.models``). Writes
``per_image.csv`` (one row per image and method: landmark errors, predictions, pose errors),
``summary.json`` (per split and method), ``table1.md`` (Table 1's rows of the model on the test splits
evaluated, beside the trivial predictor's) and plots into the output folder, and logs them with the
metrics (``<split>_<metric>`` for argmax, the paper's, ``<split>_soft_<metric>`` for soft-argmax;
``study.evaluation.measure``) to the MLflow run, against the split's dataset and the run's model.
A model of one fold of a cross-validation is evaluated on its held-out subjects' rows.
"""

from pathlib import Path

from study import console
from study.config import StudyConfig
from study.data.generate import default_out_dir
from study.evaluation.measure import evaluate_checkpoint, log_evaluation, trivial_records
from study.evaluation.models import resolve_model
from study.evaluation.plots import error_cdf_plot, per_landmark_plot
from study.evaluation.table import Outcome, markdown, table_1
from study.figures import prediction_examples
from study.files import write_csv, write_json, write_text
from study.tracking.runs import Tracker

__all__ = ["default_evaluation_folder", "evaluate"]


def default_evaluation_folder(reference: str) -> Path:
    """``evaluations/<run id or checkpoint folder name>``."""
    return Path("evaluations") / (Path(reference).name if Path(reference).exists() else reference)


def evaluate(
    reference: str,
    config: StudyConfig | None = None,
    data_dir: str | Path | None = None,
    splits=None,
    out_dir: str | Path | None = None,
) -> dict:
    """Evaluate on ``splits`` (default: the data set's test splits), write the files, log them to the model's
    MLflow run; returns the summaries."""
    checkpoint, run_id, config = resolve_model(reference, config)
    splits = config.data.test_splits() if splits is None else splits
    data_dir = Path(data_dir or default_out_dir(config))
    out_dir = Path(out_dir or default_evaluation_folder(reference))
    records, summaries = evaluate_checkpoint(checkpoint, config, data_dir, splits)
    files = [write_csv(records, out_dir / "per_image.csv"), write_json(summaries, out_dir / "summary.json")]
    tested = [split for split in summaries if split in config.data.test_splits()]  # the trivial row's splits
    table = table_1_rows(records, config, data_dir, tested, Path(reference).name) if tested else ""
    if table:
        files.append(write_text(table, out_dir / "table1.md"))
    landmarks = config.data.landmarks.landmark_set()
    files.append(per_landmark_plot({"model": summaries}, landmarks, out_dir / "per_landmark_rmse.png"))
    files.append(error_cdf_plot({"model": records}, landmarks, out_dir / "error_cdf.png"))
    if config.report.examples:
        examples, camera = out_dir / "examples.png", config.data.render_camera()
        fold = config.train.fold if config.train is not None else None  # a fold's model: its held-out subjects
        first, held_out = next(iter(summaries)), fold.held_out if fold is not None else None
        files.append(
            prediction_examples(
                {"model": checkpoint}, camera, data_dir, first, examples, config.report.examples, held_out
            )
        )
    for split, methods in summaries.items():
        argmax, soft = methods["argmax"], methods["soft_argmax"]
        console.say(
            f"{split}: RMSE {argmax['rmse_px']:.2f} px "
            f"(95% CI {argmax['rmse_px_ci_low']:.2f}-{argmax['rmse_px_ci_high']:.2f}), "
            f"{argmax['rmse_isocenter_mm']:.2f} mm at the isocentre; soft-argmax {soft['rmse_px']:.2f} px; "
            f"mTRE median {argmax['mtre_mm_median']:.1f} mm, success {100 * argmax['success_rate']:.0f}%"
        )
    if table:
        console.say(table)
    if run_id is not None:
        tracker = Tracker.for_uri(config)
        log_evaluation(tracker, run_id, summaries, data_dir)
        for path in files:
            tracker.log_file(run_id, path, "evaluation")
        console.say(f"evaluation: {tracker.link(run_id)}")
    console.say(f"evaluation: {out_dir}")
    return summaries


def table_1_rows(records: list[dict], config: StudyConfig, data_dir: Path, splits: list[str], name: str) -> str:
    """Table 1's rows (``study.evaluation.table``) of one model on ``splits``, each beside the trivial predictor's
    (every landmark at its mean training position) on the same images, as Markdown."""
    trivial, _ = trivial_records(config, data_dir)
    model = Outcome(name, config.training_seed(), [r for r in records if r["method"] == "argmax"])
    rows = table_1([model], [r for r in trivial if r["split"] in splits], config, splits)
    which = config.train.checkpoint if config.train is not None else "given"
    return markdown(rows, [], [config.training_seed()], which, config.data.landmarks.landmark_set())
