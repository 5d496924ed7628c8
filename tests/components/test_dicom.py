import math
import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from components.dicom import DicomError, read_series, write_series

SHAPE = (7, 5, 6)  # columns, rows, slices


def turn(degrees_x: float, degrees_y: float) -> np.ndarray:
    """(3, 3) rotation about x, then about y."""
    cx, sx = math.cos(math.radians(degrees_x)), math.sin(math.radians(degrees_x))
    cy, sy = math.cos(math.radians(degrees_y)), math.sin(math.radians(degrees_y))
    return np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def affine_of(linear: np.ndarray, origin=(40.0, -25.0, 310.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, origin
    return affine


SPACING = np.diag([0.7, 0.9, 2.5])
AFFINES = {
    # columns towards the patient's left, rows posterior, slices superior: a DICOM series' usual order
    "lps": affine_of(np.diag([-1.0, -1.0, 1.0]) @ SPACING),
    "oblique": affine_of(turn(4.0, -3.0) @ np.diag([-1.0, -1.0, 1.0]) @ SPACING),
    "slices towards the feet": affine_of(np.diag([-1.0, -1.0, -1.0]) @ SPACING),
    "ras": affine_of(SPACING),
    # a gantry tilt: slice planes turned about x, their positions still stepping along z (a sheared grid)
    "gantry tilt": affine_of(np.column_stack([[-0.7, 0, 0], turn(-12.0, 0) @ [0, -0.9, 0], [0, 0, 2.5]])),
}


def volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 3071, shape).astype(np.float32)


def in_position_order(hu: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same volume with its slices ascending along the normal (columns x rows direction), as a series is read."""
    if np.cross(affine[:3, 0], affine[:3, 1]) @ affine[:3, 2] > 0:
        return hu, affine
    flipped = affine.copy()
    flipped[:3, 3] += affine[:3, 2] * (hu.shape[2] - 1)
    flipped[:3, 2] *= -1
    return hu[:, :, ::-1], flipped


def shuffle_file_names(folder, seed: int = 0) -> None:
    """Give the slices each other's names at random, so name order is not position order."""
    names = sorted(folder.iterdir())
    order = np.random.default_rng(seed).permutation(len(names))
    for path in names:
        path.rename(path.with_name("moving-" + path.name))
    for path, target in zip(names, order):
        path.with_name("moving-" + path.name).rename(names[target])


def edit_slice(path, **values) -> None:
    """Rewrite one file with its header elements set (None: deleted)."""
    header = pydicom.dcmread(path)
    for name, value in values.items():
        if value is None:
            delattr(header, name)
        else:
            setattr(header, name, value)
    header.save_as(path)


@pytest.mark.parametrize("name", AFFINES)
@pytest.mark.parametrize("slope, intercept", [(1.0, -1024.0), (0.5, -2048.0), (2.0, 0.0)])
def test_a_written_series_reads_back_in_position_order_whatever_the_file_names(tmp_path, name, slope, intercept):
    folder = write_series(tmp_path / "ct", volume(), AFFINES[name], slope=slope, intercept=intercept)
    shuffle_file_names(folder)
    hu, affine = in_position_order(volume(), AFFINES[name])
    loaded, loaded_affine = read_series(folder)
    assert loaded.dtype == np.float32 and loaded.shape == SHAPE
    assert np.abs(loaded - hu).max() <= slope / 2  # stored as integers of ``slope`` HU
    np.testing.assert_allclose(loaded_affine, affine, atol=1e-5)


@pytest.mark.parametrize("name", ["lps", "oblique", "slices towards the feet"])
def test_the_geometry_is_simpleitks_turned_from_lps_to_ras(tmp_path, name):
    """SimpleITK's own series reader (GDCM's position sort) agrees on every voxel and on the affine."""
    folder = write_series(tmp_path / "ct", volume(1), AFFINES[name])
    shuffle_file_names(folder, seed=1)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * image.GetSpacing()
    lps[:3, 3] = image.GetOrigin()
    hu, affine = read_series(folder)
    if np.linalg.det(affine[:3, :3]) * np.linalg.det(lps[:3, :3]) < 0:  # GDCM sorted the slices the other way
        lps[:3, 3] += lps[:3, 2] * (SHAPE[2] - 1)
        lps[:3, 2] *= -1
        hu = hu[:, :, ::-1]
    np.testing.assert_allclose(affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, atol=1e-5)
    assert np.array_equal(hu, sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def test_files_that_are_not_dicom_are_left_out(tmp_path):
    folder = write_series(tmp_path / "ct", volume(), AFFINES["lps"])
    (folder / "README.txt").write_text("exported by a workstation\n")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    assert read_series(folder)[0].shape == SHAPE


@pytest.mark.parametrize(
    "value, message",
    [(40000.0, r"HU in \[-?\d+, 40000\] do not fit 16 bits with slope 1 and intercept -1024"), (np.nan, "not finite")],
)
def test_hu_that_16_bits_cannot_hold_are_refused(tmp_path, value, message):
    with pytest.raises(DicomError, match=message):
        write_series(tmp_path / "ct", np.where(volume() > 3000, value, volume()), AFFINES["lps"])
    assert list(tmp_path.iterdir()) == []


def test_the_series_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    written = []

    def save_then_fail(header, path, **kwargs):
        if len(written) == 3:
            raise OSError("disk full")
        written.append(path)
        save_as(header, path, **kwargs)

    save_as = pydicom.Dataset.save_as
    monkeypatch.setattr(pydicom.Dataset, "save_as", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_series(tmp_path / "ct", volume(), AFFINES["lps"])
    assert len(written) == 3 and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_series(tmp_path / "ct", volume(), AFFINES["lps"])
    with pytest.raises(DicomError, match="already exists"):
        write_series(tmp_path / "ct", volume(), AFFINES["lps"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ct"]


def spoil(folder, case: str) -> None:
    """Turn a good series of SHAPE[2] slices into a bad one."""
    files = sorted(folder.iterdir())
    if case == "empty":
        for path in files:
            path.unlink()
        (folder / "notes.txt").write_text("no images here\n")
    elif case == "two series":
        other = write_series(folder.with_name("other"), volume(), AFFINES["lps"], description="bone kernel")
        for path in sorted(other.iterdir()):
            os.rename(path, folder / f"other-{path.name}")
    elif case == "not CT":
        edit_slice(files[2], Modality="MR")
    elif case == "no pixel data":
        edit_slice(files[3], PixelData=None)
    elif case == "missing slice":
        files[2].unlink()
    elif case == "same position":
        edit_slice(files[4], ImagePositionPatient=pydicom.dcmread(files[3]).ImagePositionPatient)
    elif case == "one slice":
        for path in files[1:]:
            path.unlink()
    elif case == "no position":
        edit_slice(files[1], ImagePositionPatient=None)
    elif case == "localizer":
        edit_slice(files[5], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    elif case == "other size":
        edit_slice(files[0], Rows=4, PixelData=np.zeros((4, SHAPE[0]), np.int16).tobytes())
    elif case == "multi-frame":
        edit_slice(files[0], NumberOfFrames=3)


ERRORS = {
    "empty": "no DICOM files, expected one CT series",
    "two series": r"2 series \(.*'bone kernel'.*\); expected one CT series a folder",
    "not CT": r"slice-00002.dcm has Modality 'MR', expected 'CT'",
    "no pixel data": "slice-00003.dcm has no pixel data",
    "missing slice": r"non-uniform slice spacing, gaps from 2.5 to 5 mm .* a missing slice\?",
    "same position": "slice-0000[34].dcm and slice-0000[34].dcm lie at the same position",
    "one slice": "1 slice, expected at least 2",
    "no position": "slice-00001.dcm has ImagePositionPatient None, expected 3 numbers",
    "localizer": r"slice-00005.dcm has ImageOrientationPatient .* expected parallel slices \(a localizer",
    "other size": r"slice-0000[0-5].dcm is \d x 7 pixels, slice-0000[0-5].dcm \d x 7; expected one size",
    "multi-frame": "slice-00000.dcm holds 3 frames; multi-frame",
}


@pytest.mark.parametrize("case", ERRORS)
def test_a_folder_that_is_not_one_ct_series_is_refused_naming_the_folder(tmp_path, case):
    folder = write_series(tmp_path / "ct", volume(), AFFINES["lps"])
    spoil(folder, case)
    with pytest.raises(DicomError, match=f"^DICOM folder {folder}: {ERRORS[case]}") as error:
        read_series(folder)
    assert "\n" not in str(error.value)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(DicomError, match=f"DICOM folder {tmp_path / 'nowhere'}: not found"):
        read_series(tmp_path / "nowhere")


def test_a_compressed_series_reads_the_same(tmp_path):
    """RLE Lossless, one of the transfer syntaxes SimpleITK decodes (GDCM: JPEG, JPEG-LS and JPEG 2000 too).

    64 x 64 slices: the GDCM of SimpleITK 2.5.7 fails on RLE slices of a few pixels (not at clinical sizes)."""
    hu = volume(shape=(64, 64, 3))
    plain = write_series(tmp_path / "plain", hu, AFFINES["oblique"])
    compressed = write_series(tmp_path / "compressed", hu, AFFINES["oblique"])
    for path in compressed.iterdir():
        header = pydicom.dcmread(path)
        header.compress(pydicom.uid.RLELossless)
        header.save_as(path)
    assert pydicom.dcmread(next(compressed.iterdir())).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    for got, expected in zip(read_series(compressed), read_series(plain)):
        assert np.array_equal(got, expected)
