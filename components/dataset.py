"""The Parquet schema of a DRR data set, and reading shards back into tensors.

One row per DRR. Array columns are Arrow's native fixed-shape tensors (``arrow.fixed_shape_tensor``)
so that plain pyarrow, pandas or DuckDB read them without Ray:

=============  ====================================  =============================================
column         type                                  meaning
=============  ====================================  =============================================
subject_id     string                                the subject of the cohort
view_id        int32                                 the view, unique within a subject
split          string                                train, val, novel_view, novel_subject, fluoro
image          tensor<uint16>[H, W]                  the DRR, min-max scaled to 0..65535, bone bright
landmarks_2d   tensor<float64>[N, 2]                 (u, v) pixels, as in docs/architecture.md
visible        fixed_size_list<bool>[N]              landmark present and inside the image
landmarks_3d   tensor<float64>[N, 3]                 world mm, the subject's centred RAS+ frame
pose           tensor<float64>[6]                    rotation vector (rad), translation (mm)
intrinsics     tensor<float64>[3, 3]                 K at the image's resolution (geometry.make_k)
=============  ====================================  =============================================

N is the size of the data set's landmark set (the manifest's ``landmarks``), in its order. A landmark
the subject lacks is NaN in ``landmarks_2d`` and ``landmarks_3d`` and never visible.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

SPLITS = ("train", "val", "novel_view", "novel_subject", "fluoro", "real")
TEST_SPLITS = ("novel_view", "novel_subject")  # the paper's; never seen by training or sweeps
# fluoro: the novel_view and novel_subject views again, imaged by a simulated fluoroscope (study config's
# ``data.fluoro``); a data set has it only when that is set. real: real X-rays with their true poses (a
# DeepFluoro cohort's, ``components.deepfluoro``), never rendered.
MANIFEST_NAME = "manifest.json"


class DatasetError(ValueError):
    """A shard or data set that is not what this schema expects."""


def make_schema(height: int, width: int, landmarks: int) -> pa.Schema:
    """The Arrow schema of a shard of (height, width) images with ``landmarks`` landmarks each."""
    return pa.schema(
        [
            ("subject_id", pa.string()),
            ("view_id", pa.int32()),
            ("split", pa.string()),
            ("image", pa.fixed_shape_tensor(pa.uint16(), [height, width])),
            ("landmarks_2d", pa.fixed_shape_tensor(pa.float64(), [landmarks, 2])),
            ("visible", pa.list_(pa.bool_(), landmarks)),
            ("landmarks_3d", pa.fixed_shape_tensor(pa.float64(), [landmarks, 3])),
            ("pose", pa.fixed_shape_tensor(pa.float64(), [6])),
            ("intrinsics", pa.fixed_shape_tensor(pa.float64(), [3, 3])),
        ]
    )


@dataclass(frozen=True)
class DRRRows:
    """Rows of a data set as arrays; B rows.

    Attributes:
        subject_id: (B,) str.   view_id: (B,) int.   split: (B,) str.
        image: (B, H, W) uint16.   landmarks_2d: (B, N, 2).   visible: (B, N) bool.
        landmarks_3d: (B, N, 3).   pose: (B, 6).   intrinsics: (B, 3, 3).
    """

    subject_id: np.ndarray
    view_id: np.ndarray
    split: np.ndarray
    image: np.ndarray
    landmarks_2d: np.ndarray
    visible: np.ndarray
    landmarks_3d: np.ndarray
    pose: np.ndarray
    intrinsics: np.ndarray

    def __len__(self) -> int:
        return len(self.view_id)

    def to_table(self) -> pa.Table:
        """A pyarrow table in the shard schema."""
        height, width = self.image.shape[1:]
        landmarks = self.visible.shape[1]
        columns = {
            "subject_id": pa.array(self.subject_id, pa.string()),
            "view_id": pa.array(self.view_id, pa.int32()),
            "split": pa.array(self.split, pa.string()),
            "visible": pa.FixedSizeListArray.from_arrays(pa.array(self.visible.reshape(-1), pa.bool_()), landmarks),
        }
        for name in ("image", "landmarks_2d", "landmarks_3d", "pose", "intrinsics"):
            values = np.ascontiguousarray(getattr(self, name))
            columns[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(values)
        return pa.table(columns, schema=make_schema(height, width, landmarks))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The numeric columns as torch tensors (images as float32 in [0, 1])."""
        return {
            "image": torch.from_numpy(self.image.astype(np.float32) / 65535.0),
            "landmarks_2d": torch.from_numpy(self.landmarks_2d),
            "visible": torch.from_numpy(self.visible),
            "landmarks_3d": torch.from_numpy(self.landmarks_3d),
            "pose": torch.from_numpy(self.pose),
            "intrinsics": torch.from_numpy(self.intrinsics),
        }


def write_shard(rows: DRRRows, path: Path) -> None:
    """Write ``rows`` to ``path`` atomically: a temporary name in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(rows.to_table(), temporary)
    os.replace(temporary, path)


def read_shard(path: Path) -> DRRRows:
    """The rows of one shard, with its schema checked; a clear ``DatasetError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: shard not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{path}: not a readable Parquet file ({error})") from error
    check_schema(table.schema, path)
    column = lambda name: table.column(name).combine_chunks()  # noqa: E731
    landmarks = table.schema.field("visible").type.list_size
    visible = column("visible").flatten().to_numpy(zero_copy_only=False).reshape(-1, landmarks)
    return DRRRows(
        subject_id=np.asarray(column("subject_id").to_pylist(), dtype=object),
        view_id=column("view_id").to_numpy(),
        split=np.asarray(column("split").to_pylist(), dtype=object),
        visible=visible.astype(bool),
        **{
            name: column(name).to_numpy_ndarray()
            for name in ("image", "landmarks_2d", "landmarks_3d", "pose", "intrinsics")
        },
    )


def shard_row_count(path: Path) -> int:
    """The number of rows of a shard, from its footer, with the schema checked (no data is read)."""
    try:
        metadata = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{path}: not a readable Parquet file ({error})") from error
    check_schema(schema, path)
    return metadata.num_rows


def check_schema(schema: pa.Schema, path: Path) -> None:
    """Raise ``DatasetError`` naming ``path`` and the first column that differs from the shard schema."""
    for name in ("image", "landmarks_2d"):
        if name not in schema.names or not isinstance(schema.field(name).type, pa.FixedShapeTensorType):
            raise DatasetError(f"{path}: not a DRR shard: no '{name}' column of fixed-shape tensors")
    height, width = schema.field("image").type.shape
    expected = make_schema(height, width, schema.field("landmarks_2d").type.shape[0])
    for field in expected:
        if field.name not in schema.names:
            raise DatasetError(f"{path}: not a DRR shard: column '{field.name}' is missing")
        actual = schema.field(field.name).type
        if actual != field.type:
            raise DatasetError(f"{path}: column '{field.name}' is {actual}, expected {field.type}")


def concat_rows(parts: list[DRRRows]) -> DRRRows:
    """One ``DRRRows`` of several, in order."""
    if not parts:
        raise DatasetError("no rows to concatenate")
    names = DRRRows.__dataclass_fields__
    return DRRRows(**{name: np.concatenate([getattr(part, name) for part in parts]) for name in names})


def read_split(folder: str | Path, split: str) -> DRRRows:
    """All rows of one split of a generated data set, in the manifest's shard order."""
    folder = Path(folder)
    if split not in SPLITS:
        raise DatasetError(f"split '{split}' is not one of {SPLITS}")
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DatasetError(f"{folder}: no {MANIFEST_NAME}; is this a data set made by 'study generate'?")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{manifest_path}: not a valid manifest ({error})") from error
    if manifest.get("status") != "complete":
        raise DatasetError(f"{folder}: the data set is not complete; run 'study generate' again to finish it")
    shards = [shard["path"] for shard in manifest["shards"] if shard["split"] == split]
    if not shards:
        raise DatasetError(f"{folder}: split '{split}' has no rows")
    return concat_rows([read_shard(folder / path) for path in shards])
