"""``study preview``: a PNG contact sheet of DRRs with their landmarks drawn and numbered."""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.anatomy import LANDMARK_NAMES  # noqa: E402
from components.dataset import SPLITS, DatasetError, concat_rows, read_split  # noqa: E402

COLORS = plt.get_cmap("tab10")


def pick_rows(folder: Path, count: int):
    """Up to ``count`` rows spread evenly over the splits that have rows."""
    parts = []
    for split in SPLITS:
        try:
            parts.append(read_split(folder, split))
        except DatasetError as error:
            if "has no rows" not in str(error):
                raise
    rows = concat_rows(parts)
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
    return rows, picks


def write_preview(folder: str | Path, out: str | Path, count: int = 12, columns: int = 4) -> Path:
    """Draw ``count`` DRRs of the data set in ``folder`` into the PNG ``out`` (written atomically)."""
    folder, out = Path(folder), Path(out)
    rows, picks = pick_rows(folder, count)
    lines = int(np.ceil(len(picks) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3 * columns, 3.2 * lines), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, picks):
        height, width = rows.image[index].shape
        axis.imshow(rows.image[index], cmap="gray", extent=(0, width, height, 0))
        for slot, ((u, v), visible) in enumerate(zip(rows.landmarks_2d[index], rows.visible[index])):
            if visible:
                axis.scatter([u], [v], s=18, color=COLORS(slot), edgecolors="black", linewidths=0.5)
                axis.annotate(str(slot + 1), (u, v), xytext=(3, -3), textcoords="offset points",
                              color=COLORS(slot), fontsize=8, fontweight="bold")
        axis.set_title(f"{rows.split[index]} {rows.subject_id[index]} v{rows.view_id[index]}", fontsize=7)
    legend = "  ".join(f"{i + 1} {name}" for i, name in enumerate(LANDMARK_NAMES))
    figure.suptitle(legend, fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, out)
    return out
