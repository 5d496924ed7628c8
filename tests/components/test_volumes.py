import dataclasses
import json
import logging
import math

import nibabel as nib
import numpy as np
import pytest

from components.anatomy import DEEPFLUORO, PAPER, LandmarkSet
from components.dicom import write_series
from components.phantom import clinical_ct, sample_phantom_params
from components.subject import center_affine, voxel_to_world, world_to_voxel
from components.volumes import VolumeError, load_ct, load_landmarks, load_subject

SHAPE = (20, 24, 16)
CENTER_INDEX = (np.array(SHAPE) - 1) / 2
LANDMARK_NAMES = PAPER.names
SPS = PAPER.index("SPS")


def ras_affine() -> np.ndarray:
    """(4, 4) spacing (1.5, 2, 2.5), rotated 10 degrees about z, far from the origin."""
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.5, 2.0, 2.5])
    affine[:3, 3] = (-160.0, 90.0, -140.0)
    return affine.astype(np.float32).astype(np.float64)  # as a NIfTI stores it


def lps_style_affine() -> np.ndarray:
    """(4, 4) as a DICOM-converted CT: voxel axes run towards L and P (negative diagonal)."""
    return np.array(
        [
            [-1.5, 0.0, 0.0, 150.0],
            [0.0, -2.0, 0.0, 120.0],
            [0.0, 0.0, 2.5, -300.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


AFFINES = {"ras": ras_affine(), "lps-style": lps_style_affine()}

# (8, 3) voxel indices, SPS at the grid centre.
INDICES = np.array(
    [
        [2.0, 3.5, 1.0],
        [4.25, 20.0, 14.0],
        [7.0, 9.0, 3.5],
        CENTER_INDEX,
        [10.0, 2.0, 12.75],
        [13.5, 17.0, 6.0],
        [16.0, 6.0, 9.0],
        [18.5, 22.0, 15.0],
    ]
)

# Rows are written in this order, odd slots in lower case, to exercise name matching.
WRITE_ORDER = (5, 2, 7, 0, 3, 6, 1, 4)
FILE_LABELS = [name.lower() if slot % 2 else name for slot, name in enumerate(LANDMARK_NAMES)]


def points_in(frame: str, affine: np.ndarray, indices: np.ndarray = INDICES) -> np.ndarray:
    """(N, 3) ``indices`` expressed in ``frame`` of the CT of ``affine``."""
    if frame == "voxel":
        return indices.copy()
    ras = voxel_to_world(affine, indices)
    return ras * np.array([-1.0, -1.0, 1.0]) if frame == "lps" else ras


def write_ct(path, affine, hu=None):
    hu = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) - 1000 if hu is None else hu
    nib.save(nib.Nifti1Image(hu, affine), path)
    return path


def write_csv(path, labels, points):
    rows = [f"{label},{x!r},{y!r},{z!r}" for label, (x, y, z) in zip(labels, points.tolist())]
    path.write_text("\n".join(["name,x,y,z", *rows]) + "\n")
    return path


def write_fcsv(path, labels, points, system="LPS"):
    lines = ["# Markups fiducial file version = 4.11"]
    if system is not None:
        lines.append(f"# CoordinateSystem = {system}")
    lines.append("# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID")
    lines += [
        f"{i + 1},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,{label},,vtkMRMLScalarVolumeNode1"
        for i, (label, (x, y, z)) in enumerate(zip(labels, points.tolist()))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def markup(labels, points, system="LPS", kind="Fiducial"):
    """One markup of a Slicer markups JSON, as Slicer 5 writes it."""
    body = {"type": kind, "coordinateUnits": "mm", "locked": False, "labelFormat": "%N-%d"}
    if system is not None:
        body["coordinateSystem"] = system
    body["controlPoints"] = [
        {
            "id": str(i + 1),
            "label": label,
            "description": "",
            "associatedNodeID": "",
            "position": list(map(float, position)),
            "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        }
        for i, (label, position) in enumerate(zip(labels, points))
    ]
    body["measurements"] = []
    return body


def write_mrk_json(path, *markups):
    schema = (
        "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
        "markups-schema-v1.0.3.json#"
    )
    path.write_text(json.dumps({"@schema": schema, "markups": list(markups)}, indent=4))
    return path


def write_landmarks(path, fmt, points, system, labels=FILE_LABELS):
    """``points`` (8, 3) in slot order, written in ``WRITE_ORDER`` in format ``fmt``."""
    labels = [labels[slot] for slot in WRITE_ORDER]
    points = points[list(WRITE_ORDER)]
    if fmt == "csv":
        return write_csv(path, labels, points)
    if fmt == "fcsv":
        return write_fcsv(path, labels, points, system)
    return write_mrk_json(path, markup(labels, points, system))


def expected_landmarks(affine):
    """(8, 3) the landmarks of ``INDICES`` in the centred world frame."""
    return voxel_to_world(center_affine(affine, SHAPE), INDICES)


# (format, frame the numbers are in, what the file declares, the coordinates argument)
ROUND_TRIPS = [
    ("csv", "ras", None, "ras"),
    ("csv", "lps", None, "lps"),
    ("csv", "voxel", None, "voxel"),
    ("fcsv", "ras", "RAS", "lps"),  # the file's declaration wins
    ("fcsv", "lps", "LPS", "ras"),
    ("fcsv", "ras", "0", "voxel"),
    ("fcsv", "lps", "1", "ras"),
    ("fcsv", "voxel", None, "voxel"),  # no declaration: the argument applies
    ("mrk.json", "ras", "RAS", "lps"),
    ("mrk.json", "lps", "LPS", "ras"),
    ("mrk.json", "lps", None, "lps"),
    ("mrk.json", "voxel", None, "voxel"),
]


@pytest.mark.parametrize("affine_name", AFFINES)
@pytest.mark.parametrize("fmt,frame,system,coordinates", ROUND_TRIPS)
def test_every_format_and_frame_loads_the_same_centred_landmarks(
    tmp_path, affine_name, fmt, frame, system, coordinates
):
    affine = AFFINES[affine_name]
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    landmarks = write_landmarks(tmp_path / f"points.{fmt}", fmt, points_in(frame, affine), system)

    subject = load_subject(ct, landmarks, coordinates=coordinates)

    np.testing.assert_allclose(subject.landmarks, expected_landmarks(affine), rtol=0, atol=1e-6)
    points, loaded_frame = load_landmarks(landmarks, coordinates=coordinates)
    assert loaded_frame == frame
    np.testing.assert_allclose(points, points_in(frame, affine), rtol=0, atol=1e-9)


@pytest.mark.parametrize("affine_name", AFFINES)
def test_subject_is_in_the_centred_frame(tmp_path, affine_name):
    affine = AFFINES[affine_name]
    ct = write_ct(tmp_path / "pelvis_01.nii.gz", affine)
    landmarks = write_landmarks(tmp_path / "points.csv", "csv", points_in("ras", affine), None)

    subject = load_subject(ct, landmarks)

    assert subject.subject_id == "pelvis_01"
    np.testing.assert_allclose(subject.landmarks[SPS], 0.0, atol=1e-9)
    np.testing.assert_allclose(subject.affine @ np.append(CENTER_INDEX, 1.0), [0, 0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(subject.affine[:3, :3], affine[:3, :3])
    assert subject.hu.dtype == np.float32 and subject.hu.shape == SHAPE
    assert subject.hu[1, 2, 3] == 1 * 24 * 16 + 2 * 16 + 3 - 1000
    assert subject.landmarks.dtype == np.float64


def test_subject_id_defaults_to_the_file_name_and_can_be_given(tmp_path):
    affine = ras_affine()
    landmarks = write_landmarks(tmp_path / "points.csv", "csv", points_in("voxel", affine), None)
    ct = write_ct(tmp_path / "Case.7.nii", affine)

    assert load_subject(ct, landmarks, coordinates="voxel").subject_id == "Case.7"
    assert load_subject(ct, landmarks, coordinates="voxel", subject_id="s7").subject_id == "s7"


def test_name_map_maps_the_users_labels(tmp_path):
    affine = ras_affine()
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    labels = ["ASIS left", "IOF left", "MOF left", "SPS", "IPS", "MOF right", "IOF right", "ASIS right"]
    landmarks = write_landmarks(tmp_path / "points.fcsv", "fcsv", points_in("lps", affine), "LPS", labels)
    name_map = {
        "asis LEFT": "L_ASIS",
        "IOF left": "l_iof",
        "MOF left": "L_MOF",
        "MOF right": "R_MOF",
        "IOF right": "R_IOF",
        "ASIS right": "R_ASIS",
    }

    subject = load_subject(ct, landmarks, name_map=name_map)

    np.testing.assert_allclose(subject.landmarks, expected_landmarks(affine), rtol=0, atol=1e-6)


def test_markups_json_reads_each_fiducial_markup_in_its_own_system(tmp_path):
    affine = lps_style_affine()
    write_ct(tmp_path / "pelvis.nii.gz", affine)
    ras, lps = points_in("ras", affine), points_in("lps", affine)
    unplaced = markup(["R_ASIS"], [[0.0, 0.0, 0.0]])["controlPoints"][0] | {"positionStatus": "undefined"}
    left = markup(LANDMARK_NAMES[:4], lps[:4], "LPS")
    left["controlPoints"].append(unplaced)
    landmarks = write_mrk_json(
        tmp_path / "points.mrk.json",
        left,
        markup(["Line-1", "Line-2"], [[0, 0, 0], [1, 1, 1]], "LPS", kind="Line"),
        markup(LANDMARK_NAMES[4:], ras[4:], "RAS"),
    )

    points, frame = load_landmarks(landmarks)

    assert frame == "lps"
    np.testing.assert_allclose(points, lps, rtol=0, atol=1e-9)


def test_csv_header_is_lenient(tmp_path):
    affine = ras_affine()
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    points = points_in("ras", affine)
    rows = [f" {name} , {x!r}, {y!r} ,{z!r},note" for name, (x, y, z) in zip(LANDMARK_NAMES, points.tolist())]
    landmarks = tmp_path / "points.CSV"
    landmarks.write_text("\ufeff Label ,X, y ,Z ,Comment\n\n" + "\n".join(rows) + "\n\n")

    subject = load_subject(ct, landmarks)

    np.testing.assert_allclose(subject.landmarks, expected_landmarks(affine), rtol=0, atol=1e-6)


def test_fcsv_without_header_lines_uses_slicers_columns_and_the_argument(tmp_path):
    affine = lps_style_affine()
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    landmarks = write_fcsv(tmp_path / "points.fcsv", LANDMARK_NAMES, INDICES, system=None)
    rows = [line for line in landmarks.read_text().splitlines() if not line.startswith("#")]
    landmarks.write_text("\n".join(rows) + "\n")

    subject = load_subject(ct, landmarks, coordinates="voxel")

    np.testing.assert_allclose(subject.landmarks, expected_landmarks(affine), rtol=0, atol=1e-6)


def ignored_labels(caplog) -> list[str]:
    """The log's warnings about labels a landmark file holds outside the set."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "ignored" in r.getMessage()]


def test_extra_names_are_ignored_with_one_warning_and_missing_ones_are_absent(tmp_path, caplog):
    affine = ras_affine()
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    points = points_in("ras", affine)
    labels = ["ASIS left", *LANDMARK_NAMES[1:3], "coccyx", *LANDMARK_NAMES[5:], "Coccyx tip", "coccyx"]
    rows = np.vstack([points[:3], points[:1], points[5:], points[:2]])
    landmarks = write_csv(tmp_path / "points.csv", labels, rows)  # no L_ASIS (mislabelled), SPS, IPS

    with caplog.at_level(logging.WARNING, logger="components.volumes"):
        subject = load_subject(ct, landmarks, plausibility="off")

    warned = ignored_labels(caplog)
    assert len(warned) == 1
    message = warned[0]
    assert str(landmarks) in message and "landmark set 'paper'" in message
    assert "'ASIS left', 'coccyx', 'Coccyx tip'" in message and message.count("'coccyx'") == 1
    absent = [PAPER.index(name) for name in ("L_ASIS", "SPS", "IPS")]
    assert np.isnan(subject.landmarks[absent]).all()  # never guessed
    present = [slot for slot in range(len(PAPER)) if slot not in absent]
    np.testing.assert_allclose(subject.landmarks[present], expected_landmarks(affine)[present], rtol=0, atol=1e-6)
    assert subject.present.tolist() == [slot in present for slot in range(len(PAPER))]


def test_a_file_is_read_against_the_set_it_is_given(tmp_path, caplog):
    affine = ras_affine()
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    landmarks = write_landmarks(tmp_path / "points.fcsv", "fcsv", points_in("lps", affine), "LPS")

    with caplog.at_level(logging.WARNING, logger="components.volumes"):
        subject = load_subject(ct, landmarks, landmarks=DEEPFLUORO, plausibility="off")

    (message,) = ignored_labels(caplog)
    assert message.endswith("ignored 2 label(s) not in the landmark set 'deepfluoro': 'sps', 'IPS'")

    assert subject.landmarks.shape == (len(DEEPFLUORO), 3)
    expected = expected_landmarks(affine)
    for slot, name in enumerate(DEEPFLUORO.names):
        if name in PAPER.names:
            np.testing.assert_allclose(subject.landmarks[slot], expected[PAPER.index(name)], rtol=0, atol=1e-6)
        else:
            assert np.isnan(subject.landmarks[slot]).all(), name


# (14, 3) voxel indices of DeepFluoro's landmarks, inside the grid.
DEEPFLUORO_INDICES = np.random.default_rng(16).uniform(0.5, np.array(SHAPE) - 1.5, size=(len(DEEPFLUORO), 3))


@pytest.mark.parametrize("landmarks", [PAPER, DEEPFLUORO, LandmarkSet("mine", ("IPS", "R_FH", "SPS", "L_FH"))])
@pytest.mark.parametrize("fmt,frame,system,coordinates", [ROUND_TRIPS[0], ROUND_TRIPS[4], ROUND_TRIPS[8]])
def test_every_set_round_trips_through_every_format(tmp_path, landmarks, fmt, frame, system, coordinates):
    affine = ras_affine()
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    indices = DEEPFLUORO_INDICES[: len(landmarks)]
    points = points_in(frame, affine, indices)[::-1]  # written in reverse order, in lower case
    labels = [name.lower() for name in landmarks.names][::-1]
    path = tmp_path / f"points.{fmt}"
    if fmt == "csv":
        write_csv(path, labels, points)
    elif fmt == "fcsv":
        write_fcsv(path, labels, points, system)
    else:
        write_mrk_json(path, markup(labels, points, system))

    subject = load_subject(ct, path, coordinates=coordinates, landmarks=landmarks)

    expected = voxel_to_world(center_affine(affine, SHAPE), indices)
    np.testing.assert_allclose(subject.landmarks, expected, rtol=0, atol=1e-6)


def test_a_4d_volume_with_a_trailing_singleton_is_squeezed(tmp_path):
    hu = np.zeros(SHAPE + (1,), dtype=np.int16)
    hu[..., 0] = -1000
    write_ct(tmp_path / "pelvis.nii.gz", ras_affine(), hu)

    loaded, affine = load_ct(tmp_path / "pelvis.nii.gz")

    assert loaded.shape == SHAPE and loaded.dtype == np.float32 and np.all(loaded == -1000)
    np.testing.assert_allclose(affine, ras_affine())


# ------------------------------------------------------------------------------------ errors
#
# Each case writes a valid CT "pelvis.nii.gz" and landmark file "points.csv" (RAS), spoils one of
# them, and returns (ct path, landmark path, load_subject keyword arguments, the name of the file
# the message must name, a pattern the message must match).


def valid_files(tmp_path, fmt="csv", frame="ras", system=None, points=None):
    affine = ras_affine()
    ct = write_ct(tmp_path / "pelvis.nii.gz", affine)
    points = points_in(frame, affine) if points is None else points
    return ct, write_landmarks(tmp_path / f"points.{fmt}", fmt, points, system), affine


def spoil_ct(hu=None, name="pelvis.nii.gz", content=None):
    def case(tmp_path):
        ct, landmarks, affine = valid_files(tmp_path)
        ct.unlink()
        ct = tmp_path / name
        if content is not None:
            ct.write_bytes(content)
        elif hu is not None:
            write_ct(ct, affine, hu)
        return ct, landmarks, {}, name

    return case


def singular_affine(tmp_path):
    ct, landmarks, _ = valid_files(tmp_path)
    header = nib.Nifti1Header()
    header.set_sform(np.diag([1.5, 2.0, 0.0, 1.0]), code="aligned")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), None, header), ct)
    return ct, landmarks, {}, "pelvis.nii.gz"


def spoil_csv(content, **kwargs):
    def case(tmp_path):
        ct, _, _ = valid_files(tmp_path)
        landmarks = tmp_path / "points.csv"
        landmarks.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ct, landmarks, kwargs, "points.csv"

    return case


def csv_text(labels=LANDMARK_NAMES, points=None):
    points = points_in("ras", ras_affine()) if points is None else points
    return "\n".join(["name,x,y,z", *(f"{label},{x},{y},{z}" for label, (x, y, z) in zip(labels, points))])


def spoil_json(document, **kwargs):
    def case(tmp_path):
        ct, _, _ = valid_files(tmp_path)
        landmarks = tmp_path / "points.mrk.json"
        landmarks.write_text(document if isinstance(document, str) else json.dumps(document))
        return ct, landmarks, kwargs, "points.mrk.json"

    return case


def landmarks_case(fmt="csv", frame="ras", system=None, voxel_offset=None, name=None, **kwargs):
    def case(tmp_path):
        indices = INDICES.copy()
        if voxel_offset is not None:
            indices[-1] += voxel_offset
        ct, landmarks, _ = valid_files(tmp_path, fmt, frame, system, points_in(frame, ras_affine(), indices))
        if name is not None:
            landmarks = landmarks.rename(tmp_path / name)
        return ct, landmarks, kwargs, landmarks.name

    return case


def missing_landmarks_file(tmp_path):
    ct, landmarks, _ = valid_files(tmp_path)
    landmarks.unlink()
    return ct, landmarks, {}, "points.csv"


NAN_HU = np.zeros(SHAPE, dtype=np.float32)
NAN_HU[0, 0, :3] = np.nan
NAN_HU[5, 5, 5] = np.inf
POINTS = points_in("ras", ras_affine())
GOOD_MARKUP = markup(LANDMARK_NAMES, POINTS, "RAS")
BAD_POSITION = markup(LANDMARK_NAMES, POINTS, "RAS")
BAD_POSITION["controlPoints"][2]["position"] = [1.0, None, 2.0]
SHORT_POSITION = markup(LANDMARK_NAMES, POINTS, "RAS")
SHORT_POSITION["controlPoints"][0]["position"] = [1.0, 2.0]

ERROR_CASES = {
    "ct-missing": (spoil_ct(), "not found"),
    "ct-extension": (spoil_ct(name="pelvis.nrrd", content=b"NRRD0004"), r"unsupported extension.*\.nii\.gz, \.nii"),
    "ct-2d": (spoil_ct(np.zeros((20, 24), np.float32)), r"shape \(20, 24\) is not 3D"),
    "ct-4d": (spoil_ct(np.zeros(SHAPE + (2,), np.float32)), r"shape \(20, 24, 16, 2\) is not 3D"),
    "ct-non-finite": (spoil_ct(NAN_HU), "4 of 7680 voxels are NaN or infinite"),
    "ct-garbage": (spoil_ct(content=b"not a nifti at all"), "cannot be read as NIfTI"),
    "ct-singular-affine": (singular_affine, "affine is not a finite invertible voxel -> world map"),
    "landmarks-missing": (missing_landmarks_file, "not found"),
    "landmarks-extension": (landmarks_case(name="points.txt"), r"unsupported extension.*\.mrk\.json.*\.fcsv.*\.csv"),
    "coordinates-argument": (landmarks_case(coordinates="xyz"), "coordinates='xyz', expected one of"),
    "no-landmark-of-the-set": (
        spoil_csv(csv_text(("ASIS left", "Tip"))),
        r"none of the landmarks of the set 'paper' \(L_ASIS, L_IOF, .*, R_ASIS, any case\) is in it",
    ),
    "duplicated-name": (
        spoil_csv(csv_text(LANDMARK_NAMES + ("l_asis",), np.vstack([POINTS, POINTS[:1]]))),
        r"duplicated landmark L_ASIS: 'L_ASIS' \(line 2\) and 'l_asis' \(line 10\)",
    ),
    "name-map-target": (
        spoil_csv(csv_text(), name_map={"ASIS left": "LEFT_ASIS"}),
        r"name_map maps 'ASIS left' to 'LEFT_ASIS', expected one of the landmark set 'paper': L_ASIS",
    ),
    "name-map-target-of-another-set": (
        spoil_csv(csv_text(), name_map={"ASIS left": "L_FH"}),
        r"name_map maps 'ASIS left' to 'L_FH', expected one of the landmark set 'paper'",
    ),
    "outside-lps-hint": (
        landmarks_case(frame="lps"),
        r"8 landmark\(s\) outside the volume of shape \(20, 24, 16\) of .*pelvis\.nii\.gz "
        r"\(read as RAS\): L_ASIS at voxel .*did you mean coordinates='lps'\?",
    ),
    "outside-voxel-hint": (landmarks_case(frame="voxel"), r"did you mean coordinates='voxel'\?"),
    "outside-declared": (
        landmarks_case("fcsv", "lps", "RAS"),
        "the file declares RAS, but all landmarks lie inside read as LPS",
    ),
    "outside-one": (
        landmarks_case(frame="voxel", voxel_offset=(11.5, -16.0, -10.0), coordinates="voxel"),
        r"1 landmark\(s\) outside the volume .*\(read as VOXEL\): R_ASIS at voxel \(30\.0, 6\.0, 5\.0\)$",
    ),
    "invalid-json": (spoil_json('{"markups": [{"type": "Fiducial",'), r"invalid JSON \(line 1: "),
    "json-not-markups": (spoil_json({"points": []}), 'no "markups" list'),
    "json-no-fiducial": (
        spoil_json({"markups": [markup(["a"], [[0, 0, 0]], kind="Line")]}),
        'no markup of type "Fiducial"',
    ),
    "json-non-numeric": (
        spoil_json({"markups": [BAD_POSITION]}),
        r"markup 1 control point 3 \('L_MOF'\): y is None, expected a finite number",
    ),
    "json-short-position": (spoil_json({"markups": [SHORT_POSITION]}), r"position \[1\.0, 2\.0\], expected 3 numbers"),
    "json-units": (
        spoil_json({"markups": [GOOD_MARKUP | {"coordinateUnits": "um"}]}),
        "coordinateUnits 'um', expected 'mm'",
    ),
    "json-mixed-voxel": (
        spoil_json(
            {"markups": [markup(LANDMARK_NAMES[:4], POINTS[:4], None), markup(LANDMARK_NAMES[4:], POINTS[4:], "RAS")]},
            coordinates="voxel",
        ),
        "markups mix RAS and VOXEL coordinates",
    ),
    "csv-not-utf8": (spoil_csv(b"name,x,y,z\nL_ASIS,1,2,\xff\n"), r"not UTF-8 text \(invalid start byte at byte 22\)"),
    "csv-columns": (spoil_csv("name,x,y\nL_ASIS,1,2\n"), r"lacks column\(s\) z, expected name,x,y,z"),
    "csv-empty": (spoil_csv("\n\n"), "empty, expected a header row"),
    "csv-non-numeric": (
        spoil_csv(csv_text().replace("SPS,", "SPS,1e400,", 1)),
        r"line 5 \('SPS'\): x is '1e400', expected a finite number",
    ),
    "csv-short-row": (spoil_csv("name,x,y,z\nL_ASIS,1,2\n"), r"line 2: 3 field\(s\), expected at least 4"),
    "fcsv-system": (landmarks_case("fcsv", system="IJK"), r"CoordinateSystem = 'IJK', expected RAS, LPS, 0 or 1"),
}


@pytest.mark.parametrize("case,pattern", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_errors_name_the_subject_the_file_and_the_problem(tmp_path, case, pattern):
    ct, landmarks, kwargs, file_name = case(tmp_path)

    with pytest.raises(VolumeError, match=pattern) as error:
        load_subject(ct, landmarks, **kwargs)

    message = str(error.value)
    assert message.startswith("subject pelvis")  # the CT name without .nii.gz
    assert str(tmp_path / file_name) in message
    assert "\n" not in message


def test_outside_without_a_fitting_frame_gives_no_hint(tmp_path):
    ct, landmarks, _ = valid_files(tmp_path, points=points_in("ras", ras_affine(), INDICES + (30.0, 0.0, 0.0)))

    with pytest.raises(VolumeError, match="outside the volume") as error:
        load_subject(ct, landmarks)

    assert "did you mean" not in str(error.value) and "declares" not in str(error.value)


def test_load_ct_and_load_landmarks_raise_without_a_subject(tmp_path):
    with pytest.raises(VolumeError, match=r"^CT file .*absent\.nii\.gz: not found$"):
        load_ct(tmp_path / "absent.nii.gz")
    with pytest.raises(VolumeError, match=r"^landmark file .*absent\.fcsv: not found$"):
        load_landmarks(tmp_path / "absent.fcsv")


def test_a_truncated_nifti_is_reported_on_one_line(tmp_path):
    ct = write_ct(tmp_path / "pelvis.nii", ras_affine())
    ct.write_bytes(ct.read_bytes()[:-1000])

    with pytest.raises(VolumeError, match=r"pelvis\.nii: cannot be read as NIfTI") as error:
        load_ct(ct)

    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def scanned():
    """A small clinical-style CT (LPS voxel order, an oblique grid, table and metal), moved to a scanner's origin."""
    params = dataclasses.replace(sample_phantom_params(2), table=True, implant="sacroiliac_screws")
    ct = clinical_ct(params, shape=(80, 72, 48), voxel_size=5.0)
    scanner = np.eye(4)
    scanner[:3, 3] = (-12.0, 180.0, -1150.0)  # the table position of a DICOM series' patient frame
    return ct, scanner @ ct.affine, ct.landmarks + scanner[:3, 3]


@pytest.mark.parametrize("fmt, system", [("mrk.json", "LPS"), ("fcsv", "RAS")])
def test_a_dicom_series_loads_as_the_nifti_of_the_same_volume(tmp_path, scanned, fmt, system):
    """HU, affine and the landmarks' world places agree between a DICOM folder and a NIfTI of one volume."""
    ct, affine, landmarks = scanned
    nib.save(nib.Nifti1Image(ct.hu, affine), tmp_path / "pelvis.nii.gz")
    write_series(tmp_path / "pelvis-dicom", ct.hu, affine)
    points = landmarks * (np.array([-1.0, -1.0, 1.0]) if system == "LPS" else 1.0)
    landmark_file = write_landmarks(tmp_path / f"pelvis.{fmt}", fmt, points, system)

    from_nifti = load_subject(tmp_path / "pelvis.nii.gz", landmark_file)
    from_dicom = load_subject(tmp_path / "pelvis-dicom", landmark_file)

    assert from_dicom.subject_id == "pelvis-dicom" and from_dicom.hu.shape == ct.hu.shape
    assert np.abs(from_dicom.hu - from_nifti.hu).max() <= 0.5  # DICOM stores whole HU
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    np.testing.assert_allclose(from_dicom.affine, ct.affine, atol=1e-4)  # the centred frame of the phantom
    np.testing.assert_allclose(from_dicom.landmarks, from_nifti.landmarks, atol=1e-4)
    np.testing.assert_allclose(from_dicom.landmarks, ct.landmarks, atol=1e-4)
    indices = world_to_voxel(from_dicom.affine, from_dicom.landmarks)
    np.testing.assert_allclose(indices, world_to_voxel(ct.affine, ct.landmarks), atol=1e-4)


def test_a_dicom_folder_that_is_no_series_is_a_volume_error_naming_the_subject(tmp_path):
    (tmp_path / "pelvis").mkdir()
    landmarks = write_landmarks(tmp_path / "pelvis.csv", "csv", points_in("ras", ras_affine()), None)

    with pytest.raises(VolumeError, match=f"^subject pelvis: DICOM folder {tmp_path / 'pelvis'}: no DICOM files"):
        load_subject(tmp_path / "pelvis", landmarks)
