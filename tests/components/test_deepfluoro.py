import shutil

import h5py
import numpy as np
import pytest
import torch

from components import geometry
from components.anatomy import DEEPFLUORO
from components.deepfluoro import (
    DeepFluoroError,
    landmark_name,
    list_projections,
    list_specimens,
    load_specimen,
    projection_params,
    real_xrays,
)
from components.drr import SubjectRenderer
from tests.deepfluoro_file import INTENSITY_SCALE, SPECIMENS, write_deepfluoro_file

SIZE, CROP = 96, 8  # the written X-rays, and the border the reader crops
CROPPED = SIZE - 2 * CROP
RESIZED = 48


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_deepfluoro_file(tmp_path_factory.mktemp("deepfluoro") / "full_res.h5", size=SIZE)


def xrays(written, specimen_id: str, size: int = CROPPED) -> dict[str, object]:
    return {xray.projection: xray for xray in real_xrays(written.path, specimen_id, size, crop=CROP)}


PROJECTIONS = [(spec.specimen_id, f"{index:03d}") for spec in SPECIMENS for index in range(len(spec.views))]


def truth(written, specimen_id: str, name: str):
    return next(p for p in written.projections if (p.specimen_id, p.name) == (specimen_id, name))


@pytest.mark.parametrize(("release", "ours"), [("FH-l", "L_FH"), ("ASIS-r", "R_ASIS"), ("SPS-l", "L_SPS")])
def test_release_names_map_to_the_deepfluoro_set(release, ours):
    assert landmark_name(release) == ours
    assert ours in DEEPFLUORO.names


def test_specimens_and_projections_are_listed(written):
    assert list_specimens(written.path) == sorted(spec.specimen_id for spec in SPECIMENS)
    for spec in SPECIMENS:
        assert list_projections(written.path, spec.specimen_id) == [f"{i:03d}" for i in range(len(spec.views))]


@pytest.mark.parametrize("specimen_id", [spec.specimen_id for spec in SPECIMENS])
def test_specimen_is_its_ct_and_landmarks_in_our_world(written, specimen_id):
    subject, phantom = load_specimen(written.path, specimen_id), written.subjects[specimen_id]
    assert subject.subject_id == specimen_id
    np.testing.assert_array_equal(subject.hu, phantom.hu)
    np.testing.assert_allclose(subject.affine, phantom.affine, atol=1e-9)
    assert subject.landmarks.shape == (len(DEEPFLUORO), 3)
    np.testing.assert_allclose(subject.landmarks, written.landmarks[specimen_id], atol=1e-9)  # NaN where left out
    missing = {landmark_name(name) for spec in SPECIMENS if spec.specimen_id == specimen_id for name in spec.missing}
    assert {DEEPFLUORO.names[slot] for slot in np.flatnonzero(np.isnan(subject.landmarks).any(1))} == missing


@pytest.mark.parametrize("rotated", [False, True])
def test_cameras_are_the_rendering_detector(written, rotated):
    rendered = next(p.camera for p in written.projections if p.rotated == rotated)
    params = projection_params(written.path)
    full, cropped = params.camera(crop=0, rotated=rotated), params.camera(crop=CROP, rotated=rotated)
    for camera in (full, cropped):
        for field in ("sdd", "delx", "dely", "x0", "y0"):
            assert getattr(camera, field) == pytest.approx(getattr(rendered, field), rel=1e-6, abs=1e-6)
    assert (full.height, full.width) == (SIZE, SIZE)
    assert (cropped.height, cropped.width) == (CROPPED, CROPPED)


@pytest.mark.parametrize(("specimen_id", "name"), PROJECTIONS)
def test_true_poses_come_back(written, specimen_id, name):
    xray = xrays(written, specimen_id)[name]
    known = truth(written, specimen_id, name)
    assert xray.rotated == known.rotated
    assert xray.pose.dtype == torch.float64
    torch.testing.assert_close(xray.pose, known.pose, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("specimen_id", "name"), PROJECTIONS)
@pytest.mark.parametrize("size", [CROPPED, RESIZED])
def test_landmarks_project_onto_the_annotations(written, specimen_id, name, size):
    xray = xrays(written, specimen_id, size)[name]
    landmarks = torch.from_numpy(load_specimen(written.path, specimen_id).landmarks)
    projected = geometry.project(landmarks[None], xray.pose[None], xray.camera)[0]
    annotated = ~torch.isnan(xray.landmarks_2d).any(-1)
    assert torch.equal(annotated, ~torch.isnan(landmarks).any(-1))
    assert (projected - xray.landmarks_2d)[annotated].abs().max() < 0.01 * size / CROPPED
    u, v = xray.landmarks_2d.unbind(-1)
    assert torch.equal(xray.visible, annotated & (u >= 0) & (u < size) & (v >= 0) & (v < size))
    assert 0 < xray.visible.sum() < annotated.sum()  # some landmarks fall outside these small X-rays
    full = xrays(written, specimen_id)[name]
    torch.testing.assert_close(xray.landmarks_2d, full.landmarks_2d * size / CROPPED, equal_nan=True)


@pytest.mark.parametrize(("specimen_id", "name"), PROJECTIONS)
def test_images_are_the_drrs_they_came_from(written, specimen_id, name):
    known = truth(written, specimen_id, name)
    xray = xrays(written, specimen_id)[name]
    assert xray.image.shape == (CROPPED, CROPPED) and xray.image.dtype == torch.float32
    expected = INTENSITY_SCALE * known.drr[CROP:-CROP, CROP:-CROP]
    torch.testing.assert_close(xray.image, expected, rtol=0, atol=1e-5)
    small = xrays(written, specimen_id, RESIZED)[name]
    renderer = SubjectRenderer(written.subjects[specimen_id], small.camera, "trilinear")
    drr = renderer.render_images(known.pose[None])[0]
    correlation = torch.corrcoef(torch.stack([small.image.flatten(), drr.flatten()]))[0, 1]
    assert correlation > 0.99


def break_copy(written, tmp_path, edit) -> str:
    path = tmp_path / "broken.h5"
    shutil.copy(written.path, path)
    with h5py.File(path, "r+") as file:
        edit(file)
    return str(path)


def read_everything(path: str) -> None:
    projection_params(path)
    for specimen_id in list_specimens(path):
        load_specimen(path, specimen_id)
        list(real_xrays(path, specimen_id, RESIZED, crop=CROP))


def replace(file, key: str, data) -> None:
    del file[key]
    file[key] = data


BAD_FILES = {
    "missing group": (
        lambda f: f.__delitem__("18-1109/projections/001/gt-poses"),
        "/18-1109/projections/001: has no 'gt-poses'",
    ),
    "missing dataset": (lambda f: f.__delitem__("proj-params/intrinsic"), "/proj-params: has no 'intrinsic'"),
    "unknown 3D landmark": (
        lambda f: f.move("17-1882/vol-landmarks/FH-l", "17-1882/vol-landmarks/TROCH-l"),
        "/17-1882/vol-landmarks: landmark 'TROCH-l' is not one of the release's 14",
    ),
    "unknown 2D landmark": (
        lambda f: f.move("18-1109/projections/000/gt-landmarks/MOF-r", "18-1109/projections/000/gt-landmarks/MOF"),
        "/18-1109/projections/000/gt-landmarks: landmark 'MOF' is not one of the release's 14",
    ),
    "non-identity dir-mat": (
        lambda f: replace(f, "17-1882/vol/dir-mat", np.diag([-1.0, -1.0, 1.0])),
        "/17-1882/vol: dir-mat is .*, expected the identity",
    ),
    "image size": (
        lambda f: replace(f, "17-1882/projections/001/image/pixels", np.ones((SIZE - 6, SIZE), np.float32)),
        r"/17-1882/projections/001/image: pixels has shape \(90, 96\), expected \(96, 96\)",
    ),
    "non-finite pose": (
        lambda f: f["18-1109/projections/000/gt-poses/cam-to-pelvis-vol"].__setitem__((0, 3), np.nan),
        "/18-1109/projections/000/gt-poses/cam-to-pelvis-vol: is .*, expected finite numbers",
    ),
    "zero intensity": (
        lambda f: f["17-1882/projections/000/image/pixels"].__setitem__((SIZE // 2, SIZE // 2), 0.0),
        "/17-1882/projections/000/image: pixels has 1 zero, negative or non-finite intensities",
    ),
    "positive focal length": (
        lambda f: replace(f, "proj-params/intrinsic", -f["proj-params/intrinsic"][()] * [1, 1, -1]),
        "/proj-params: intrinsic is .*, expected",
    ),
    "non-rigid extrinsic": (
        lambda f: replace(f, "proj-params/extrinsic", np.diag([1.0, 1.0, -1.0, 1.0])),
        "/proj-params/extrinsic: is .*, expected a rigid 4x4 transform",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_gets_one_clear_error(written, tmp_path, case):
    edit, message = BAD_FILES[case]
    path = break_copy(written, tmp_path, edit)
    with pytest.raises(DeepFluoroError, match=message) as raised:
        read_everything(path)
    assert str(raised.value).startswith(f"DeepFluoro file {path}: ")
    assert "\n" not in str(raised.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DeepFluoroError, match=r"nowhere\.h5: not found"):
        list_specimens(tmp_path / "nowhere.h5")
