import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.dataset import DatasetError, DRRRows, concat_rows, read_shard, shard_row_count, write_shard


def make_rows(count=3, size=(6, 5), landmarks=8) -> DRRRows:
    generator = np.random.default_rng(0)
    landmarks_3d = generator.normal(size=(count, landmarks, 3))
    landmarks_3d[:, landmarks // 2] = np.nan  # a landmark the subject lacks
    return DRRRows(
        subject_id=np.array(["s0"] * count, dtype=object),
        view_id=np.arange(count, dtype=np.int32),
        split=np.array(["train"] * count, dtype=object),
        image=generator.integers(0, 65535, (count, *size)).astype(np.uint16),
        landmarks_2d=np.where(np.isnan(landmarks_3d[..., :2]), np.nan, generator.normal(size=(count, landmarks, 2))),
        visible=(generator.random((count, landmarks)) > 0.3) & ~np.isnan(landmarks_3d[..., 0]),
        landmarks_3d=landmarks_3d,
        pose=generator.normal(size=(count, 6)),
        intrinsics=generator.normal(size=(count, 3, 3)),
    )


@pytest.mark.parametrize("landmarks", [8, 14, 3])  # the paper's set, DeepFluoro's, one's own
def test_write_read_round_trip(tmp_path, landmarks):
    rows = make_rows(landmarks=landmarks)
    write_shard(rows, tmp_path / "train" / "a.parquet")
    back = read_shard(tmp_path / "train" / "a.parquet")
    for name in DRRRows.__dataclass_fields__:
        assert np.array_equal(getattr(back, name), getattr(rows, name), equal_nan=name.startswith("landmarks")), name
    assert back.landmarks_2d.shape == (3, landmarks, 2) and back.visible.shape == (3, landmarks)
    assert shard_row_count(tmp_path / "train" / "a.parquet") == 3
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["a.parquet"]


def test_tensors_scale_images_to_unit_range():
    tensors = make_rows().tensors()
    assert tensors["image"].dtype.is_floating_point and tensors["image"].min() >= 0 and tensors["image"].max() <= 1


def test_concat_keeps_order():
    rows = concat_rows([make_rows(2), make_rows(3)])
    assert rows.view_id.tolist() == [0, 1, 0, 1, 2]


def test_corrupt_shard_gets_a_one_line_error(tmp_path):
    path = tmp_path / "broken.parquet"
    write_shard(make_rows(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match=f"{path}: not a readable Parquet file") as error:
        read_shard(path)
    assert "\n" not in str(error.value)
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        shard_row_count(path)


def test_missing_shard(tmp_path):
    with pytest.raises(DatasetError, match="shard not found"):
        read_shard(tmp_path / "none.parquet")


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"x": [1, 2]}), "no 'image' column"),
        (make_rows().to_table().drop_columns(["pose"]), "column 'pose' is missing"),
        (
            make_rows().to_table().set_column(1, "view_id", pa.array(["a", "b", "c"])),
            "column 'view_id' is string, expected int32",
        ),
    ],
)
def test_wrong_schema_names_the_file_and_column(tmp_path, table, message):
    path = tmp_path / "wrong.parquet"
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match=message) as error:
        read_shard(path)
    assert str(path) in str(error.value)
