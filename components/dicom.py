"""A CT as a DICOM series: a folder of one slice per file, read into HU and a voxel -> RAS+ affine, or written.

Reading (``read_series``): every regular file of the folder that pydicom recognises as DICOM is a
candidate (others, and a DICOMDIR, are skipped); they must form one CT series (one
SeriesInstanceUID, Modality "CT"), each file one slice with pixel data, all with the same size,
pixel spacing and ImageOrientationPatient. The slices are ordered by their position along the slice
normal (never by file name) and must be evenly spaced: each ImagePositionPatient within
``SPACING_TOLERANCE`` of a step of the first-to-last line, so a missing slice is an error, and a
sheared series (a gantry tilt that moves the slices off the normal) keeps its shear in the affine.
Pixels are decoded by SimpleITK (GDCM: every transfer syntax of a CT, compressed ones included) and
rescaled by RescaleSlope and RescaleIntercept to HU.

The array is (I, J, K): I the columns, J the rows, K the slices in position order (Fortran-ordered
in memory, as nibabel returns a NIfTI). DICOM's patient frame is LPS (x towards the patient's left,
y posterior); the affine is RAS+ (x and y negated), as the NIfTI path returns it, so both meet in
``components.volumes`` the same way.

Writing (``write_series``): the inverse, one uncompressed signed 16-bit slice per file, for
tests, benchmarks and exporting phantoms; the folder appears whole or not at all.
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["DicomError", "read_series", "write_series"]

SPACING_TOLERANCE = 0.01  # a slice may sit this fraction of the slice spacing off its place on the line
ORIENTATION_TOLERANCE = 1e-4  # largest difference of two slices' direction cosines
_DICOMDIR = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: an index, not an image
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_INT16 = np.iinfo(np.int16)


class DicomError(ValueError):
    """A folder that does not hold one readable CT series; the message names the folder and the problem."""


@dataclass(frozen=True)
class _Slice:
    """One file of the folder and its header (pixel data left on disk)."""

    path: Path
    header: pydicom.Dataset


# ------------------------------------------------------------------------------------------ read


def read_series(folder) -> tuple[np.ndarray, np.ndarray]:
    """The CT series in ``folder``: (I, J, K) float32 Hounsfield units and the (4, 4) float64 voxel -> RAS+ mm affine.

    Raises DicomError naming the folder for: no DICOM files, several series, a modality other than CT, a
    file without pixel data or with several frames, missing or differing geometry (size, spacing,
    orientation), fewer than two slices, two slices at one position, or unevenly spaced slices.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"DICOM folder {folder}: not found")
    slices = _one_ct_series(folder, _dicom_files(folder))
    rows, columns, spacing, row_direction, column_direction = _plane(folder, slices)
    slices, step = _ordered(folder, slices, np.cross(row_direction, column_direction))
    lps = np.eye(4)
    lps[:3, 0] = row_direction * spacing[1]  # along i: the columns, PixelSpacing[1] apart
    lps[:3, 1] = column_direction * spacing[0]  # along j: the rows, PixelSpacing[0] apart
    lps[:3, 2] = step
    lps[:3, 3] = _position(slices[0])
    return _pixels(folder, slices, rows, columns), _LPS_TO_RAS @ lps


def _dicom_files(folder: Path) -> list[_Slice]:
    """Every DICOM file directly in ``folder`` (not a DICOMDIR), its pixel data left on disk."""
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            header = pydicom.dcmread(path, defer_size=1024)
        except (InvalidDicomError, EOFError, OSError):
            continue
        media = header.file_meta.get("MediaStorageSOPClassUID") if hasattr(header, "file_meta") else None
        if media != _DICOMDIR:
            found.append(_Slice(path, header))
    if not found:
        raise DicomError(f"DICOM folder {folder}: no DICOM files, expected one CT series (one slice a file)")
    return found


def _one_ct_series(folder: Path, slices: list[_Slice]) -> list[_Slice]:
    """``slices`` if they are one CT series of single-frame images with pixel data; else a DicomError."""
    series: dict[str, list[_Slice]] = {}
    for item in slices:
        series.setdefault(str(item.header.get("SeriesInstanceUID", "")), []).append(item)
    if len(series) > 1:
        listed = "; ".join(
            f"{uid or '(no SeriesInstanceUID)'}: {len(items)} file(s), "
            f"{items[0].header.get('Modality', '?')} {str(items[0].header.get('SeriesDescription', '')).strip()!r}"
            for uid, items in series.items()
        )
        raise DicomError(f"DICOM folder {folder}: {len(series)} series ({listed}); expected one CT series a folder")
    for item in slices:
        modality = item.header.get("Modality")
        if modality != "CT":
            raise DicomError(f"DICOM folder {folder}: {item.path.name} has Modality {modality!r}, expected 'CT'")
        if "PixelData" not in item.header:
            raise DicomError(f"DICOM folder {folder}: {item.path.name} has no pixel data")
        if int(item.header.get("NumberOfFrames", 1) or 1) != 1:
            raise DicomError(
                f"DICOM folder {folder}: {item.path.name} holds {item.header.NumberOfFrames} frames; "
                f"multi-frame (enhanced) CT is not supported, expected one slice a file"
            )
    if len(slices) < 2:
        raise DicomError(f"DICOM folder {folder}: 1 slice, expected at least 2 (the slice spacing needs two)")
    return slices


def _tag(folder: Path, item: _Slice, name: str, count: int) -> np.ndarray:
    """(count,) float64 values of the header's ``name``; a DicomError if it is missing or malformed."""
    value = item.header.get(name)
    try:
        values = np.array([float(v) for v in (value if isinstance(value, MultiValue) else [value])])
    except (TypeError, ValueError):
        values = np.array([])
    if len(values) != count or not np.all(np.isfinite(values)):
        raise DicomError(f"DICOM folder {folder}: {item.path.name} has {name} {value!r}, expected {count} numbers")
    return values


def _position(item: _Slice) -> np.ndarray:
    return np.array([float(v) for v in item.header.ImagePositionPatient])


def _plane(folder: Path, slices: list[_Slice]) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, (2,) PixelSpacing, (3,) row direction, (3,) column direction), the same in every slice."""
    first = slices[0]
    reference = None
    for item in slices:
        orientation = _tag(folder, item, "ImageOrientationPatient", 6)
        spacing = _tag(folder, item, "PixelSpacing", 2)
        _tag(folder, item, "ImagePositionPatient", 3)
        size = (int(item.header.get("Rows", 0) or 0), int(item.header.get("Columns", 0) or 0))
        if reference is None:
            reference = (size, spacing, orientation)
            continue
        if size != reference[0]:
            raise DicomError(
                f"DICOM folder {folder}: {item.path.name} is {size[0]} x {size[1]} pixels, "
                f"{first.path.name} {reference[0][0]} x {reference[0][1]}; expected one size"
            )
        if not np.allclose(spacing, reference[1], rtol=1e-4, atol=0):
            raise DicomError(
                f"DICOM folder {folder}: {item.path.name} has PixelSpacing {spacing.tolist()}, "
                f"{first.path.name} {reference[1].tolist()}; expected one spacing"
            )
        if np.abs(orientation - reference[2]).max() > ORIENTATION_TOLERANCE:
            raise DicomError(
                f"DICOM folder {folder}: {item.path.name} has ImageOrientationPatient {orientation.tolist()}, "
                f"{first.path.name} {reference[2].tolist()}; expected parallel slices (a localizer in the series?)"
            )
    (rows, columns), spacing, orientation = reference
    if rows < 1 or columns < 1 or np.any(spacing <= 0):
        raise DicomError(f"DICOM folder {folder}: {rows} x {columns} pixels of {spacing.tolist()} mm")
    row_direction, column_direction = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row_direction) - 1) > 1e-3 or abs(np.linalg.norm(column_direction) - 1) > 1e-3:
        raise DicomError(
            f"DICOM folder {folder}: ImageOrientationPatient {orientation.tolist()} is not two unit vectors"
        )
    return rows, columns, spacing, row_direction, column_direction


def _ordered(folder: Path, slices: list[_Slice], normal: np.ndarray) -> tuple[list[_Slice], np.ndarray]:
    """The slices sorted by position along ``normal``, and the (3,) LPS step from one to the next.

    The step is the first-to-last line divided evenly; every slice must lie on it within
    SPACING_TOLERANCE of the step's length.
    """
    slices = sorted(slices, key=lambda item: float(_position(item) @ normal))
    positions = np.stack([_position(item) for item in slices])
    distances = positions @ normal
    gaps = np.diff(distances)
    if gaps.min() <= 1e-6 * max(1.0, abs(gaps.max())):
        index = int(np.argmin(gaps))
        raise DicomError(
            f"DICOM folder {folder}: {slices[index].path.name} and {slices[index + 1].path.name} lie at the same "
            f"position {positions[index].tolist()}; expected one slice per position"
        )
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    expected = positions[0] + np.arange(len(slices))[:, None] * step
    off = np.linalg.norm(positions - expected, axis=1)
    if off.max() > SPACING_TOLERANCE * np.linalg.norm(step):
        raise DicomError(
            f"DICOM folder {folder}: non-uniform slice spacing, gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
            f"along the slice normal ({slices[int(np.argmax(off))].path.name} lies {off.max():.3g} mm off an even "
            f"step of {np.linalg.norm(step):.4g} mm); a missing slice? expected evenly spaced slices"
        )
    return slices, step


def _pixels(folder: Path, slices: list[_Slice], rows: int, columns: int) -> np.ndarray:
    """(I, J, K) float32 HU, each slice decoded and rescaled by SimpleITK.

    The slices fill a (K, J, I) array one after the other; its transpose is returned, Fortran-ordered,
    as nibabel returns a NIfTI (no copy, and the renderers' trilinear sampling is faster in this order).
    """
    planes = np.empty((len(slices), rows, columns), dtype=np.float32)
    for k, item in enumerate(slices):
        try:
            image = sitk.ReadImage(str(item.path), sitk.sitkFloat32)
        except RuntimeError as error:
            reason = " ".join(str(error).split())[-200:]
            raise DicomError(
                f"DICOM folder {folder}: {item.path.name}: pixel data cannot be decoded ({reason})"
            ) from None
        plane = sitk.GetArrayViewFromImage(image)
        if plane.shape != (1, rows, columns):
            raise DicomError(
                f"DICOM folder {folder}: {item.path.name} decodes to {plane.shape[1:]} pixels, "
                f"expected {(rows, columns)}"
            )
        planes[k] = plane[0]
    n_bad = planes.size - np.count_nonzero(np.isfinite(planes))
    if n_bad:
        raise DicomError(f"DICOM folder {folder}: {n_bad} of {planes.size} voxels are NaN or infinite")
    return planes.transpose(2, 1, 0)


# ----------------------------------------------------------------------------------------- write


def write_series(
    folder,
    hu: np.ndarray,
    affine: np.ndarray,
    *,
    patient_id: str = "phantom",
    description: str = "",
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Path:
    """Write (I, J, K) HU with the (4, 4) voxel -> RAS+ affine as a CT series, one file a slice; return the folder.

    Slice k is ``hu[:, :, k]`` (columns i, rows j), stored as signed 16-bit values ``round((hu - intercept) / slope)``
    uncompressed (Explicit VR Little Endian) with that RescaleSlope and RescaleIntercept. The files are named
    ``slice-00000.dcm``... by k; UIDs follow from ``patient_id`` and ``description``, so writing the same
    volume twice gives the same series. The folder must not exist; it is written under a temporary name and
    renamed when complete.
    """
    folder = Path(folder)
    if folder.exists():
        raise DicomError(f"DICOM folder {folder}: already exists, expected a new folder")
    if hu.ndim != 3 or np.asarray(affine).shape != (4, 4):
        raise DicomError(f"DICOM folder {folder}: expected (I, J, K) HU and a (4, 4) affine, got {hu.shape}")
    stored_range = (np.array([_INT16.min, _INT16.max]) * slope + intercept).tolist()
    low, high = float(hu.min()), float(hu.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise DicomError(f"DICOM folder {folder}: HU are not finite (NaN or infinite voxels)")
    if low < stored_range[0] or high > stored_range[1]:
        raise DicomError(
            f"DICOM folder {folder}: HU in [{low:g}, {high:g}] do not fit 16 bits with slope {slope:g} and "
            f"intercept {intercept:g} (they hold [{stored_range[0]:g}, {stored_range[1]:g}])"
        )
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing_i, spacing_j = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = np.concatenate([lps[:3, 0] / spacing_i, lps[:3, 1] / spacing_j])
    uid = lambda *parts: generate_uid(entropy_srcs=[patient_id, description, *map(str, parts)])  # noqa: E731
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        for k in range(hu.shape[2]):
            stored = np.round((hu[:, :, k].T - intercept) / slope).astype(np.int16)
            header = _slice_header(k, stored, lps, orientation, (spacing_j, spacing_i), uid)
            header.PatientID, header.PatientName, header.SeriesDescription = patient_id, patient_id, description
            header.RescaleSlope, header.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
            header.save_as(temporary / f"slice-{k:05d}.dcm", enforce_file_format=True)
        os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def _slice_header(
    k: int, stored: np.ndarray, lps: np.ndarray, orientation: np.ndarray, spacing, uid
) -> pydicom.Dataset:
    """The CT Image dataset of slice ``k``: (rows, columns) int16 ``stored`` pixels, placed by the LPS affine."""
    header = pydicom.Dataset()
    header.file_meta = FileMetaDataset()
    header.file_meta.MediaStorageSOPClassUID = CTImageStorage
    header.file_meta.MediaStorageSOPInstanceUID = uid("slice", k)
    header.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header.SOPClassUID, header.SOPInstanceUID = CTImageStorage, header.file_meta.MediaStorageSOPInstanceUID
    header.StudyInstanceUID, header.SeriesInstanceUID = uid("study"), uid("series")
    header.FrameOfReferenceUID = uid("frame")
    header.Modality, header.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
    header.SeriesNumber, header.InstanceNumber = 1, k + 1
    header.ImagePositionPatient = [f"{value:.6f}" for value in lps[:3, :3] @ (0.0, 0.0, k) + lps[:3, 3]]
    header.ImageOrientationPatient = [f"{value:.8f}" for value in orientation]
    header.PixelSpacing = [f"{value:.6f}" for value in spacing]
    header.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.6f}"
    header.Rows, header.Columns = stored.shape
    header.SamplesPerPixel, header.PhotometricInterpretation = 1, "MONOCHROME2"
    header.BitsAllocated, header.BitsStored, header.HighBit, header.PixelRepresentation = 16, 16, 15, 1
    header.RescaleType = "HU"
    header.PixelData = np.ascontiguousarray(stored).tobytes()
    return header
