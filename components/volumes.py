"""Real subjects: a CT (NIfTI or a DICOM series) and its landmarks from a 3D Slicer markups file, an .fcsv or a CSV.

The subject comes back in the world frame of ``components.subject``: RAS+ mm with the origin at
the centre of the voxel grid (the frame DiffDRR renders in).

CT: ``.nii`` or ``.nii.gz``; the NIfTI affine maps voxel indices to RAS+ mm. A 4D volume whose
extra dimensions are all 1 is squeezed to 3D. Or a folder holding one DICOM CT series
(``components.dicom``): the voxels are (column, row, slice in position order), the affine is the
series' LPS geometry turned into RAS+.

Landmark files:

* ``.mrk.json``: 3D Slicer markups JSON. The control points of every ``Fiducial``
  markup are read, each in its markup's ``coordinateSystem`` ("RAS" or "LPS"); control points
  whose ``positionStatus`` is "undefined" or "missing" are skipped. Markups declaring different
  systems are converted to the first one's.
* ``.fcsv``: 3D Slicer fiducial CSV. ``# CoordinateSystem = RAS | LPS | 0 | 1`` (0 is RAS, 1 is
  LPS) is honoured; the ``# columns = ...`` line locates ``label``, ``x``, ``y``, ``z``.
* ``.csv``: a header row with the columns ``name,x,y,z`` (column names ignore case and surrounding
  whitespace; ``label`` is accepted for ``name``; other columns are ignored), then one landmark a
  row, comma separated.

Coordinates are "ras" or "lps" world mm (the CT's world; LPS is RAS with x and y negated) or
"voxel": continuous 0-based indices into the CT array. A Slicer file's own declaration wins;
the ``coordinates`` argument applies to CSV files and to Slicer files that declare nothing.

Names are read against a landmark set (``anatomy.LandmarkSet``, the paper's 8 by default): a label
fills the slot of the set's name it equals, ignoring case and surrounding whitespace; ``name_map`` maps
other labels (matched the same way) to the set's names. A name may appear at most once. Labels that are
not the set's are ignored, all of a file's listed in one warning; a landmark of the set the file lacks
is absent, a row of NaN (the subject lacks it: it is masked everywhere, never guessed). A file must hold
at least one of the set's landmarks.

Plausibility: once loaded, the landmarks go through ``plausibility.PlausibilityChecks`` (each on bone,
left of their right partners, at adult distances); ``plausibility`` says what a finding does: "warn"
logs one warning for the subject listing every finding, "error" raises a VolumeError naming them,
"off" skips the checks.
"""

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from components import dicom
from components.anatomy import PAPER, LandmarkSet
from components.plausibility import PLAUSIBILITY_MODES, PlausibilityChecks, PlausibilityMode, describe
from components.subject import Subject, center_affine, voxel_to_world, world_to_voxel

Frame = Literal["ras", "lps", "voxel"]
FRAMES: tuple[str, ...] = ("ras", "lps", "voxel")
CT_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
LANDMARK_SUFFIXES: tuple[str, ...] = (".mrk.json", ".fcsv", ".csv")

_LPS_FLIP = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS: negate x and y
_FCSV_COLUMNS = (
    "id",
    "x",
    "y",
    "z",
    "ow",
    "ox",
    "oy",
    "oz",
    "vis",
    "sel",
    "lock",
    "label",
    "desc",
    "associatednodeid",
)  # Slicer's, when a file has no "# columns" line
_FCSV_SYSTEMS = {"ras": "ras", "0": "ras", "lps": "lps", "1": "lps"}
_UNPLACED = ("undefined", "missing")
_log = logging.getLogger(__name__)


class VolumeError(ValueError):
    """A CT or landmark file that cannot make a subject; the message names the file and the problem."""


def subject_id_of(ct_path: str | Path) -> str:
    """``<id>`` of a CT file ``<id>.nii`` or ``<id>.nii.gz``, or of a DICOM folder ``<id>/``."""
    name = Path(ct_path).name
    return name.removesuffix(".gz").removesuffix(".nii")


def landmark_file_beside(ct_path: str | Path) -> Path:
    """The one landmark file ``<id>.mrk.json``, ``<id>.fcsv`` or ``<id>.csv`` beside the CT ``<id>.nii[.gz]`` or
    ``<id>/`` (a DICOM folder)."""
    ct_path = Path(ct_path)
    subject_id = subject_id_of(ct_path)
    candidates = [ct_path.with_name(subject_id + suffix) for suffix in LANDMARK_SUFFIXES]
    found = [candidate for candidate in candidates if candidate.is_file()]
    if len(found) != 1:
        problem = "no landmark file" if not found else "several landmark files"
        expected = ", ".join(candidate.name for candidate in candidates)
        raise VolumeError(f"{ct_path}: {problem} for subject '{subject_id}'; expected exactly one of {expected}")
    return found[0]


@dataclass(frozen=True)
class _Point:
    """One labelled point of a landmark file; ``where`` locates it in the file for messages."""

    label: str
    position: np.ndarray  # (3,) float64
    where: str


# ---------------------------------------------------------------------------------------- files


def _check_file(path: Path, suffixes: tuple[str, ...], kind: str) -> str:
    """The suffix of ``path`` among ``suffixes`` (case-insensitive); raises if absent or other."""
    if not path.is_file():
        raise VolumeError(f"{kind} file {path}: not found")
    name = path.name.lower()
    for suffix in suffixes:
        if name.endswith(suffix):
            return suffix
    raise VolumeError(f"{kind} file {path}: unsupported extension, expected one of {', '.join(suffixes)}")


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark dropped)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise VolumeError(f"landmark file {path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _stem(path: Path) -> str:
    """The file name without .nii / .nii.gz."""
    name = path.name
    for suffix in CT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ------------------------------------------------------------------------------------------- CT


def load_ct(path) -> tuple[np.ndarray, np.ndarray]:
    """A CT NIfTI or DICOM folder: (I, J, K) float32 Hounsfield units and the (4, 4) float64 voxel -> RAS+ mm affine.

    Raises VolumeError for a missing or unreadable file, a volume that is not 3D (after dropping
    trailing dimensions of size 1), non-finite voxels, or a non-finite or singular affine; for a
    folder, whatever ``dicom.read_series`` refuses.
    """
    path = Path(path)
    if path.is_dir():
        try:
            hu, affine = dicom.read_series(path)
        except dicom.DicomError as error:
            raise VolumeError(str(error)) from None
        return hu, _checked_affine(path, affine)
    _check_file(path, CT_SUFFIXES, "CT")
    try:
        image = nib.load(path)
        shape = _volume_shape(path, image.shape)
        hu = image.get_fdata(dtype=np.float32).reshape(shape)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError) as error:
        reason = " ".join(str(error).split())
        raise VolumeError(f"CT file {path}: cannot be read as NIfTI ({reason})") from None
    n_bad = hu.size - np.count_nonzero(np.isfinite(hu))
    if n_bad:
        raise VolumeError(
            f"CT file {path}: {n_bad} of {hu.size} voxels are NaN or infinite, expected finite Hounsfield units"
        )
    return hu, _checked_affine(path, image.affine)


def _volume_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(I, J, K) of a NIfTI of ``shape``: 3D, or 3D followed by dimensions of size 1."""
    if len(shape) < 3 or any(size != 1 for size in shape[3:]):
        raise VolumeError(f"CT file {path}: volume of shape {tuple(shape)} is not 3D")
    return tuple(int(size) for size in shape[:3])


def _checked_affine(path: Path, affine: np.ndarray) -> np.ndarray:
    """(4, 4) float64 copy of a NIfTI affine, which must be finite and invertible."""
    affine = np.array(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"CT file {path}: affine is not a finite invertible voxel -> world map: {affine.tolist()}")
    return affine


# ------------------------------------------------------------------------------------ landmarks


def load_landmarks(
    path,
    *,
    coordinates: Frame = "ras",
    name_map: dict[str, str] | None = None,
    landmarks: LandmarkSet = PAPER,
) -> tuple[np.ndarray, str]:
    """The landmarks of the set ``landmarks`` in a .mrk.json, .fcsv or .csv file and the frame they are in.

    Args:
        path: the landmark file (see the module docstring for the formats).
        coordinates: "ras", "lps" or "voxel"; the frame of a CSV, or of a Slicer file that
            declares none.
        name_map: the user's label -> a name of the set.
        landmarks: the set the file is read against; other labels are ignored with one warning.

    Returns:
        (N, 3) float64 points in the set's order, as written in the file (a NaN row for a landmark the
        file lacks), and their frame: "ras", "lps" or "voxel".
    """
    points, frame, _ = _read_landmarks(Path(path), coordinates, name_map, landmarks)
    return points, frame


def _read_landmarks(
    path: Path, coordinates: str, name_map: dict[str, str] | None, landmarks: LandmarkSet
) -> tuple[np.ndarray, str, bool]:
    """(N, 3) slot-ordered points, their frame, and whether the file itself declared the frame."""
    suffix = _check_file(path, LANDMARK_SUFFIXES, "landmark")
    if coordinates not in FRAMES:
        raise VolumeError(f"landmark file {path}: coordinates={coordinates!r}, expected one of {FRAMES}")
    if suffix == ".csv":
        points, frame, declared = _read_csv(path), coordinates, False
    elif suffix == ".fcsv":
        points, frame, declared = _read_fcsv(path, coordinates)
    else:
        points, frame, declared = _read_markups_json(path, coordinates)
    return _slot_order(path, points, name_map, landmarks), frame, declared


def _position(path: Path, values, label: str, where: str) -> np.ndarray:
    """(3,) float64 from three finite numbers (or numeric strings)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 3:
        raise VolumeError(f"landmark file {path}: {where} ({label!r}): position {values!r}, expected 3 numbers")
    position = [_finite_float(value) for value in values]
    for axis, (value, number) in enumerate(zip(values, position)):
        if number is None:
            raise VolumeError(
                f"landmark file {path}: {where} ({label!r}): {'xyz'[axis]} is {value!r}, expected a finite number"
            )
    return np.array(position, dtype=np.float64)


def _finite_float(value) -> float | None:
    """``value`` as a finite float, or None when it is not a finite number."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _read_csv(path: Path) -> list[_Point]:
    """The points of a ``name,x,y,z`` CSV."""
    rows = _csv_rows(path, _read_text(path).splitlines())
    if not rows:
        raise VolumeError(f"landmark file {path}: empty, expected a header row name,x,y,z")
    _, header = rows[0]
    columns = [column.strip().lower() for column in header]
    name_column = "label" if "label" in columns and "name" not in columns else "name"
    missing = [column for column in (name_column, "x", "y", "z") if column not in columns]
    if missing:
        raise VolumeError(
            f"landmark file {path}: header {','.join(header)!r} lacks column(s) {', '.join(missing)}, "
            f"expected name,x,y,z"
        )
    indices = [columns.index(column) for column in (name_column, "x", "y", "z")]
    return [_row_point(path, line, row, indices) for line, row in rows[1:]]


def _csv_rows(path: Path, lines: list[str]) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of each non-blank line."""
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, next(csv.reader([line]))))
        except csv.Error as error:
            raise VolumeError(f"landmark file {path}: line {number}: malformed CSV ({error})") from None
    return rows


def _row_point(path: Path, line: int, row: list[str], indices: list[int]) -> _Point:
    """The point of one CSV row; ``indices`` are the columns of label, x, y, z."""
    if len(row) <= max(indices):
        raise VolumeError(
            f"landmark file {path}: line {line}: {len(row)} field(s), expected at least {max(indices) + 1}"
        )
    label_index, *xyz = indices
    label, where = row[label_index].strip(), f"line {line}"
    return _Point(label, _position(path, [row[index].strip() for index in xyz], label, where), where)


def _read_fcsv(path: Path, fallback: str) -> tuple[list[_Point], str, bool]:
    """The points of a Slicer .fcsv, their frame, and whether the file declared it."""
    lines = _read_text(path).splitlines()
    frame, declared, columns = fallback, False, list(_FCSV_COLUMNS)
    for line in lines:
        if not line.startswith("#"):
            continue
        key, _, value = line[1:].partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "coordinatesystem":
            frame, declared = _fcsv_frame(path, value), True
        elif key == "columns":
            columns = [column.strip().lower() for column in value.split(",")]
    missing = [column for column in ("label", "x", "y", "z") if column not in columns]
    if missing:
        raise VolumeError(f"landmark file {path}: '# columns' line lacks {', '.join(missing)}")
    indices = [columns.index(column) for column in ("label", "x", "y", "z")]
    body = ["" if line.startswith("#") else line for line in lines]  # keeps line numbers
    return [_row_point(path, number, row, indices) for number, row in _csv_rows(path, body)], frame, declared


def _fcsv_frame(path: Path, value: str) -> str:
    """ "ras" or "lps" from an .fcsv CoordinateSystem value."""
    frame = _FCSV_SYSTEMS.get(value.lower())
    if frame is None:
        raise VolumeError(f"landmark file {path}: CoordinateSystem = {value!r}, expected RAS, LPS, 0 or 1")
    return frame


def _read_markups_json(path: Path, fallback: str) -> tuple[list[_Point], str, bool]:
    """The points of a Slicer markups JSON, their frame, and whether the file declared it."""
    try:
        document = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise VolumeError(f"landmark file {path}: invalid JSON (line {error.lineno}: {error.msg})") from None
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list):
        raise VolumeError(f'landmark file {path}: no "markups" list, expected a 3D Slicer markups JSON')
    fiducials = [
        (number, markup)
        for number, markup in enumerate(markups, start=1)
        if isinstance(markup, dict) and markup.get("type") == "Fiducial"
    ]
    if not fiducials:
        raise VolumeError(f'landmark file {path}: no markup of type "Fiducial"')
    frames = [_markup_frame(path, number, markup, fallback) for number, markup in fiducials]
    frame, declared = frames[0]
    points = []
    for (number, markup), (markup_frame, _) in zip(fiducials, frames):
        factors = _world_conversion(path, markup_frame, frame)
        points += [_Point(p.label, p.position * factors, p.where) for p in _markup_points(path, number, markup)]
    return points, frame, declared


def _markup_frame(path: Path, number: int, markup: dict, fallback: str) -> tuple[str, bool]:
    """The frame of one markup and whether it declares it; its units must be mm."""
    units = markup.get("coordinateUnits", "mm")
    if units != "mm":
        raise VolumeError(f"landmark file {path}: markup {number}: coordinateUnits {units!r}, expected 'mm'")
    system = markup.get("coordinateSystem")
    if system is None:
        return fallback, False
    if str(system).lower() not in ("ras", "lps"):
        raise VolumeError(f"landmark file {path}: markup {number}: coordinateSystem {system!r}, expected RAS or LPS")
    return str(system).lower(), True


def _world_conversion(path: Path, source: str, target: str) -> np.ndarray:
    """(3,) factors taking points from frame ``source`` to ``target`` (both world, or equal)."""
    if source == target:
        return np.ones(3)
    if "voxel" in (source, target):
        raise VolumeError(f"landmark file {path}: markups mix {source.upper()} and {target.upper()} coordinates")
    return _LPS_FLIP


def _markup_points(path: Path, number: int, markup: dict) -> list[_Point]:
    """The placed control points of one markup."""
    control_points = markup.get("controlPoints", [])
    if not isinstance(control_points, list):
        raise VolumeError(f'landmark file {path}: markup {number}: "controlPoints" is not a list')
    points = []
    for index, control_point in enumerate(control_points, start=1):
        where = f"markup {number} control point {index}"
        if not isinstance(control_point, dict):
            raise VolumeError(f"landmark file {path}: {where}: expected an object, got {control_point!r}")
        if control_point.get("positionStatus") in _UNPLACED:
            continue
        label = str(control_point.get("label", "")).strip()
        points.append(_Point(label, _position(path, control_point.get("position"), label, where), where))
    return points


def _label_lookup(path: Path, name_map: dict[str, str] | None, landmarks: LandmarkSet) -> dict[str, str]:
    """Normalised label -> the set's name: the set's names themselves, then ``name_map``."""
    canonical = {name.lower(): name for name in landmarks.names}
    lookup = dict(canonical)
    for label, target in (name_map or {}).items():
        if str(target).strip().lower() not in canonical:
            raise VolumeError(
                f"landmark file {path}: name_map maps {label!r} to {target!r}, expected one of the landmark set "
                f"{landmarks.name!r}: {', '.join(landmarks.names)}"
            )
        lookup[str(label).strip().lower()] = canonical[str(target).strip().lower()]
    return lookup


def _slot_order(
    path: Path, points: list[_Point], name_map: dict[str, str] | None, landmarks: LandmarkSet
) -> np.ndarray:
    """(N, 3) the positions of ``points`` in the set's order, NaN for a landmark the file lacks; each at most
    once; labels not of the set are ignored, with one warning that lists them."""
    lookup = _label_lookup(path, name_map, landmarks)
    slots: dict[str, _Point] = {}
    ignored: list[str] = []
    for point in points:
        name = lookup.get(point.label.lower())
        if name is None:
            ignored.append(point.label)
            continue
        if name in slots:
            first = slots[name]
            raise VolumeError(
                f"landmark file {path}: duplicated landmark {name}: {first.label!r} ({first.where}) and "
                f"{point.label!r} ({point.where})"
            )
        slots[name] = point
    if not slots:
        raise VolumeError(
            f"landmark file {path}: none of the landmarks of the set {landmarks.name!r} "
            f"({', '.join(landmarks.names)}, any case) is in it (map other labels with name_map)"
        )
    if ignored:
        _log.warning(
            f"landmark file {path}: ignored {len(ignored)} label(s) not in the landmark set {landmarks.name!r}: "
            + ", ".join(repr(label) for label in dict.fromkeys(ignored))
        )
    absent = np.full(3, np.nan)
    return np.stack([slots[name].position if name in slots else absent for name in landmarks.names])


# -------------------------------------------------------------------------------------- subject


def load_subject(
    ct_path,
    landmarks_path,
    *,
    coordinates: Frame = "ras",
    name_map: dict[str, str] | None = None,
    subject_id: str | None = None,
    plausibility: PlausibilityMode = "warn",
    landmarks: LandmarkSet = PAPER,
) -> Subject:
    """A subject in the centred RAS+ world frame from a CT (NIfTI or DICOM folder) and a landmark file.

    Args:
        ct_path: .nii or .nii.gz, or a folder of one DICOM CT series.
        landmarks_path: .mrk.json, .fcsv or .csv (see the module docstring).
        coordinates: "ras", "lps" or "voxel": the frame of a CSV, or of a Slicer file that declares none.
        name_map: the user's label -> a name of the set ``landmarks``.
        subject_id: defaults to the CT file or folder name without .nii / .nii.gz.
        plausibility: what implausible landmarks do: "warn" (log a warning), "error" or "off" (not checked).
        landmarks: the landmark set the file is read against (the module docstring says how).

    Returns:
        Subject with (I, J, K) float32 HU, the centred (4, 4) affine and (N, 3) landmarks in mm, in the set's
        order, a NaN row for each the file lacks.

    Raises:
        VolumeError: naming the subject and the file, for any problem with either file, including
        a landmark outside the volume, and with ``plausibility="error"`` implausible landmarks.
    """
    if plausibility not in PLAUSIBILITY_MODES:
        raise ValueError(f"plausibility={plausibility!r}, expected one of {PLAUSIBILITY_MODES}")
    ct_path, landmarks_path = Path(ct_path), Path(landmarks_path)
    subject_id = _stem(ct_path) if subject_id is None else subject_id
    try:
        hu, affine = load_ct(ct_path)
        points, frame, declared = _read_landmarks(landmarks_path, coordinates, name_map, landmarks)
        indices = _landmark_voxels(ct_path, landmarks_path, points, frame, declared, affine, hu.shape, landmarks)
    except VolumeError as error:
        raise VolumeError(f"subject {subject_id}: {error}") from None
    centered = center_affine(affine, hu.shape)
    subject = Subject(subject_id, hu, centered, voxel_to_world(centered, indices))
    _check_plausibility(subject, landmarks_path, plausibility, landmarks)
    return subject


def _check_plausibility(
    subject: Subject, landmarks_path: Path, plausibility: PlausibilityMode, landmarks: LandmarkSet
) -> None:
    """Warn about or refuse (``plausibility`` "warn" or "error") a subject whose landmarks are implausible."""
    checks = PlausibilityChecks()
    findings = [] if plausibility == "off" else checks.findings(subject, str(landmarks_path), landmarks)
    if not findings:
        return
    message = f"{describe(findings)} (plausibility='off' skips these checks)"
    if plausibility == "error":
        raise VolumeError(message)
    _log.warning(message)


def _to_voxel(points: np.ndarray, frame: str, affine: np.ndarray) -> np.ndarray:
    """(N, 3) continuous voxel indices of (N, 3) points in ``frame`` of the CT's ``affine``."""
    if frame == "voxel":
        return points
    world = points * _LPS_FLIP if frame == "lps" else points
    return world_to_voxel(affine, world)


def _outside(indices: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(N,) bool: the (N, 3) continuous indices outside [-0.5, size - 0.5] on some axis (an absent, NaN, one
    is not)."""
    upper = np.asarray(shape, dtype=np.float64) - 0.5
    return np.any((indices < -0.5) | (indices > upper), axis=1)


def _landmark_voxels(
    ct_path: Path,
    landmarks_path: Path,
    points: np.ndarray,
    frame: str,
    declared: bool,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    landmarks: LandmarkSet,
) -> np.ndarray:
    """(N, 3) voxel indices of the landmarks (NaN where absent); raises if any lies outside the volume."""
    indices = _to_voxel(points, frame, affine)
    outside = _outside(indices, shape)
    if not outside.any():
        return indices
    listed = "; ".join(
        f"{name} at voxel ({i:.1f}, {j:.1f}, {k:.1f})"
        for name, (i, j, k), out in zip(landmarks.names, indices, outside)
        if out
    )
    raise VolumeError(
        f"landmark file {landmarks_path}: {np.count_nonzero(outside)} landmark(s) outside the volume of shape "
        f"{tuple(shape)} of {ct_path} "
        f"(read as {frame.upper()}): {listed}{_frame_hint(points, frame, declared, affine, shape)}"
    )


def _frame_hint(points: np.ndarray, frame: str, declared: bool, affine: np.ndarray, shape: tuple[int, int, int]) -> str:
    """A suggestion of the other frames that would put all landmarks inside the volume, or ""."""
    candidates = ("ras", "lps") if declared else FRAMES
    fits = [
        other for other in candidates if other != frame and not _outside(_to_voxel(points, other, affine), shape).any()
    ]
    if not fits:
        return ""
    if declared:
        return (
            f"; the file declares {frame.upper()}, but all landmarks lie inside read as "
            f"{fits[0].upper()}: is its coordinate system right?"
        )
    return f"; did you mean {' or '.join(f'coordinates={other!r}' for other in fits)}?"
