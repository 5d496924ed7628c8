"""The plots a reader of an evaluation or a reproduction wants, each written as a PNG (atomically).

Every function takes results keyed by a label (a strategy name, or "model" for one model).
"""

from pathlib import Path

import numpy as np

from components import evaluation
from components.anatomy import LandmarkSet
from study.figures import plt, save_figure

__all__ = ["error_cdf_plot", "per_landmark_plot", "training_curves_plot"]


def per_landmark_plot(summaries: dict[str, dict], landmarks: LandmarkSet, out: Path) -> Path:
    """Bars of each landmark's argmax RMSE (px): a group per landmark of the set, a bar per label, a panel per
    split."""
    splits = sorted({split for by_split in summaries.values() for split in by_split})
    names = landmarks.names
    width_in = max(6.0, 0.55 * len(names) + 1.6)
    figure, axes = plt.subplots(1, len(splits), figsize=(width_in * len(splits), 3.6), squeeze=False)
    width = 0.8 / max(len(summaries), 1)
    for axis, split in zip(axes.flat, splits):
        for index, (label, by_split) in enumerate(summaries.items()):
            if split not in by_split:
                continue
            values = [by_split[split]["argmax"][f"rmse_px_{name}"] for name in names]
            axis.bar(np.arange(len(names)) + index * width, values, width, label=label)
        axis.set_xticks(np.arange(len(names)) + width * (len(summaries) - 1) / 2, names, rotation=45, fontsize=7)
        axis.set_ylabel("RMSE (px, argmax)")
        axis.set_title(split)
        axis.legend(fontsize=7)
    return save_figure(figure, Path(out))


def error_cdf_plot(records: dict[str, list[dict]], landmarks: LandmarkSet, out: Path) -> Path:
    """Cumulative distribution of the errors (px, argmax) of the set's landmarks per label; a panel per split."""
    splits = sorted({r["split"] for rows in records.values() for r in rows})
    figure, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.6), squeeze=False)
    for axis, split in zip(axes.flat, splits):
        for label, rows in records.items():
            chosen = [r for r in rows if r["split"] == split and r["method"] == "argmax"]
            errors = np.sort(evaluation.error_matrix(chosen, landmarks).ravel())
            errors = errors[np.isfinite(errors)]
            if errors.size:
                axis.plot(errors, np.arange(1, errors.size + 1) / errors.size, label=label)
        axis.set_xscale("symlog", linthresh=1.0)
        axis.set_xlabel("landmark error (px, argmax)")
        axis.set_ylabel("fraction of landmarks")
        axis.set_title(split)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(figure, Path(out))


def training_curves_plot(histories: dict[str, dict[str, list[tuple[int, float]]]], out: Path) -> Path:
    """Per label, the training loss and the val RMSE against the epoch."""
    figure, (loss_axis, rmse_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, history in histories.items():
        for axis, key in ((loss_axis, "train_loss"), (rmse_axis, "val_rmse_px")):
            points = sorted(history.get(key, []))
            if points:
                axis.plot([p[0] + 1 for p in points], [p[1] for p in points], marker=".", label=label)
    loss_axis.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
    rmse_axis.set(xlabel="epoch", ylabel="val RMSE (px, argmax)", yscale="log", title="validation")
    for axis in (loss_axis, rmse_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(figure, Path(out))
