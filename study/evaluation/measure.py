"""Measuring a trained model on data set splits: per-image records and per-split summaries.

A record is one image and one way of reading landmarks off the heatmaps (``argmax``, the paper's,
or ``soft_argmax`` with the temperature the model was trained with, from its checkpoint): the
error of every landmark and the pose registered from them (``components.evaluation``).
"""

from pathlib import Path

from components import evaluation, training
from components.dataset import TEST_SPLITS
from components.model import load_trained_model
from study.config import StudyConfig
from study.training.data import split_columns, split_rows

__all__ = ["evaluate_checkpoint", "metric_names"]


def evaluate_checkpoint(
    checkpoint: str | Path, config: StudyConfig, data_dir: str | Path, splits=TEST_SPLITS
) -> tuple[list[dict], dict]:
    """Per-image records and summaries ``{split: {method: {metric: value}}}`` of a checkpoint."""
    model = load_trained_model(checkpoint)
    camera = config.data.render_camera()
    records, summaries = [], {}
    for split in splits:
        rows, columns = split_rows(data_dir, split), split_columns(data_dir, split)
        ids = {"subject_id": rows.subject_id, "view_id": rows.view_id, "split": rows.split}
        predictions = training.predict(model.network, columns, camera, model.decoding)
        split_records = evaluation.per_image_results(predictions, columns, ids)
        records += split_records
        summaries[split] = {
            method: evaluation.summarise(
                [r for r in split_records if r["method"] == method],
                camera,
                config.data.poses.source_to_isocenter,
                config.report.success_mm,
                config.report.bootstrap_resamples,
                config.training_seed(),
            )
            for method in evaluation.METHODS
        }
    return records, summaries


def metric_names(summaries: dict) -> dict[str, float]:
    """Flat MLflow metrics: ``<split>_<metric>`` (argmax) and ``<split>_soft_<metric>`` (soft-argmax)."""
    flat = {}
    for split, methods in summaries.items():
        for method, summary in methods.items():
            prefix = f"{split}_" if method == "argmax" else f"{split}_soft_"
            flat |= {prefix + key: value for key, value in summary.items()}
    return flat
