"""A small DeepFluoro file in the release's layout, written from phantoms and known poses.

``write_deepfluoro_file`` writes what ``components.deepfluoro`` reads, the way the release
(rg2/DeepFluoroLabeling-IPCAI2020, ``hdf5_layouts/Readme.md``) lays it out: ``proj-params``, and per
specimen ``vol`` (row-major (slice, row, column) LPS volume, ``(3, 1)`` origin and spacing), ``vol-seg``,
``vol-landmarks`` (``(3, 1)`` LPS points named ``FH-l``, ...), and ``projections/<index>`` with the raw
image, ``gt-landmarks`` (``(2, 1)`` (column, row) indices), ``gt-poses``, ``gt-seg`` and ``rot-180-for-up``.

Its geometry goes through the release's conventions, not the reader's code: each X-ray is rendered by our
renderer from a known pose, the release's camera frame is built from DiffDRR's own detector (the source and
every pixel centre in the world, in float64): X along the stored image's columns, Y along its rows, Z their
cross product (checked to point at the source, as the release says), the intrinsic K is fitted to those
pixel centres (and must come out the same for every X-ray, turned or not), ``cam-to-pelvis-vol`` is
``T = (LPS -> camera)^-1 E``, and ``gt-landmarks`` are ``K E T^-1 x`` of the LPS landmarks. The stored image is
``I0 exp(-k drr)``, mirrored left-right (the release's images are seen from behind the detector) or, for
``rot-180-for-up`` X-rays, top-bottom (mirrored, then turned by 180 degrees), so the reader's crop, log
transform and turn give back ``k drr``. Matrices and landmarks are written in float64, so poses compare to 1e-6.
"""

import copy
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from diffdrr.pose import convert

from components import geometry
from components.anatomy import DEEPFLUORO
from components.deepfluoro import INITIAL_INTENSITY
from components.drr import SubjectRenderer
from components.geometry import Camera
from components.phantom import phantom_subject
from components.poses import pose_of
from components.subject import Subject

LPS_FLIP = np.diag([-1.0, -1.0, 1.0])
INTENSITY_SCALE = 0.05  # k: the stored intensity is I0 exp(-k drr)
# A world -> camera extrinsic like the release's (a C-arm looking along the LPS y axis), slightly tilted.
EXTRINSIC_ROTATION = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
EXTRINSIC_TRANSLATION = np.array([-157.58, -2.68, -631.78])
EXTRINSIC_TILT = geometry.rotation_vector_to_matrix(torch.tensor([0.01, -0.02, 0.015], dtype=torch.float64)).numpy()
SEGMENTATION_LABELS = ("left-hemipelvis", "right-hemipelvis", "vertebrae", "upper-sacrum", "left-femur", "right-femur")


@dataclass(frozen=True)
class SpecimenSpec:
    """One specimen to write: a phantom seed, where its LPS frame lies, its X-rays, a landmark it lacks."""

    specimen_id: str
    seed: int
    lps_shift: tuple[float, float, float]  # LPS = F world + shift
    views: tuple[tuple[tuple[float, float, float], tuple[float, float, float], bool], ...]  # (deg, mm, rot-180)
    missing: tuple[str, ...] = ()  # release names left out of vol-landmarks and gt-landmarks


SPECIMENS = (
    SpecimenSpec(
        "17-1882",
        seed=1,
        lps_shift=(12.5, -30.25, -940.0),
        views=(((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), False), ((12.0, -6.0, 25.0), (8.0, -30.0, 12.0), True)),
    ),
    SpecimenSpec(
        "18-1109",
        seed=2,
        lps_shift=(-40.0, 15.5, -1210.75),
        views=(((-20.0, 8.0, -10.0), (-12.0, 25.0, -6.0), False), ((5.0, 15.0, 170.0), (4.0, -10.0, 20.0), True)),
        missing=("GSN-r",),
    ),
)


@dataclass(frozen=True)
class WrittenProjection:
    """What one X-ray of the file was made from (the truth a reader must give back)."""

    specimen_id: str
    name: str
    pose: torch.Tensor  # (6,) float64
    rotated: bool
    camera: Camera  # the whole detector, in our orientation (turned when rotated)
    drr: torch.Tensor  # (H0, W0) float32, in our orientation


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    subjects: dict[str, Subject]  # the phantoms
    landmarks: dict[str, np.ndarray]  # (14, 3) world mm in DEEPFLUORO's order, NaN where left out
    projections: tuple[WrittenProjection, ...]
    intrinsic: np.ndarray


def release_name(name: str) -> str:
    """The release's name of one of ours: ``L_FH`` -> ``FH-l``."""
    side, kind = name.split("_", 1)
    return f"{kind}-{side.lower()}"


def write_deepfluoro_file(
    path: Path,
    size: int = 96,
    spacing_mm: float = 3.1,
    sdd: float = 1020.0,
    offsets_mm: tuple[float, float] = (4.0, -2.5),
    source_to_isocenter: float = 700.0,
    voxel_size: float = 4.0,
) -> WrittenFile:
    """Write the two ``SPECIMENS`` as a release file of ``size`` x ``size`` X-rays at ``path``.

    ``offsets_mm`` are our camera's (x0, y0) for an X-ray that is not turned (a turned one has them negated:
    the principal point turns with the image), so the file's K has its principal point off the centre.
    """
    extrinsic = np.eye(4)
    extrinsic[:3, :3] = EXTRINSIC_ROTATION @ EXTRINSIC_TILT
    extrinsic[:3, 3] = EXTRINSIC_TRANSLATION
    subjects, landmarks, projections, intrinsics = {}, {}, [], []
    with h5py.File(path, "w") as file:
        for spec in SPECIMENS:
            subject = phantom_subject(spec.seed, voxel_size, spec.specimen_id, DEEPFLUORO)
            points = subject.landmarks.copy()
            present = [name for name in DEEPFLUORO.names if release_name(name) not in spec.missing]
            points[[release_name(name) in spec.missing for name in DEEPFLUORO.names]] = np.nan
            subjects[spec.specimen_id], landmarks[spec.specimen_id] = subject, points
            shift = np.asarray(spec.lps_shift)
            group = file.create_group(spec.specimen_id)
            _write_volume(group, subject, shift)
            for name in present:
                lps = LPS_FLIP @ points[DEEPFLUORO.index(name)] + shift
                group.create_dataset(f"vol-landmarks/{release_name(name)}", data=lps.reshape(3, 1))
            for index, (angles, offsets, rotated) in enumerate(spec.views):
                pose = pose_of(np.radians(angles), np.asarray(offsets), source_to_isocenter)
                sign = -1.0 if rotated else 1.0
                camera = Camera(sdd, size, size, spacing_mm, spacing_mm, sign * offsets_mm[0], sign * offsets_mm[1])
                renderer = SubjectRenderer(subject, camera, "trilinear")
                drr = renderer.render_images(pose[None])[0]
                source, grid = _stored_pixel_centres(renderer, pose, rotated)
                cam_to_pelvis, intrinsic = _release_geometry(source, grid, shift, extrinsic)
                intrinsics.append(intrinsic)
                name = f"{index:03d}"
                _write_projection(
                    group.create_group(f"projections/{name}"),
                    _stored_image(drr.numpy(), rotated),
                    cam_to_pelvis,
                    {release_name(n): LPS_FLIP @ points[DEEPFLUORO.index(n)] + shift for n in present},
                    extrinsic,
                    intrinsic,
                    rotated,
                    spacing_mm,
                )
                projections.append(WrittenProjection(spec.specimen_id, name, pose, rotated, camera, drr))
        for intrinsic in intrinsics:
            assert np.allclose(intrinsic, intrinsics[0], rtol=0, atol=1e-6), "one K for every X-ray"
        _write_params(file.create_group("proj-params"), intrinsics[0], extrinsic, size, spacing_mm)
    return WrittenFile(Path(path), subjects, landmarks, tuple(projections), intrinsics[0])


def _write_image(group: h5py.Group, pixels: np.ndarray, spacing, origin) -> None:
    """An ITK-like image group: pixels (row-major), dir-mat (identity), origin and spacing (column vectors)."""
    dims = pixels.ndim
    group.create_dataset("pixels", data=pixels)
    group.create_dataset("dir-mat", data=np.eye(dims))
    group.create_dataset("origin", data=np.asarray(origin, dtype=np.float64).reshape(dims, 1))
    group.create_dataset("spacing", data=np.asarray(spacing, dtype=np.float64).reshape(dims, 1))


def _write_volume(group: h5py.Group, subject: Subject, shift: np.ndarray) -> None:
    """The phantom as an LPS volume: index axes along L, P, S (ours reversed in x and y), identity dir-mat."""
    lps_voxels = subject.hu[::-1, ::-1, :]  # [i, j, k] with i towards L, j towards P
    corner = subject.affine @ np.array([subject.hu.shape[0] - 1, subject.hu.shape[1] - 1, 0, 1.0])
    origin = LPS_FLIP @ corner[:3] + shift
    _write_image(
        group.create_group("vol"), np.ascontiguousarray(lps_voxels.transpose(2, 1, 0)), subject.spacing, origin
    )
    bone = (lps_voxels > 300).transpose(2, 1, 0)
    right_half = np.zeros_like(bone)
    right_half[:, :, : bone.shape[2] // 2] = True  # low LPS x: the patient's right
    labels = np.where(bone, np.where(right_half, 2, 1), 0).astype(np.uint8)
    _write_image(group.create_group("vol-seg/image"), labels, subject.spacing, origin)
    for number, label in enumerate(SEGMENTATION_LABELS, start=1):
        group.create_dataset(f"vol-seg/labels-def/{number}", data=np.bytes_(label))


def _stored_pixel_centres(
    renderer: SubjectRenderer, pose: torch.Tensor, rotated: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The source (3,) and the (H0, W0, 3) pixel centres of the stored image in our world, from DiffDRR's detector."""
    detector = copy.deepcopy(renderer.drr.module.detector).double()
    angles, translation = geometry.pose_to_euler_zxy(pose[None])
    with torch.no_grad():
        source, target = detector(convert(angles, translation, parameterization="euler_angles", convention="ZXY"), None)
    camera = renderer.camera
    grid = target[0].reshape(camera.height, camera.width, 3).numpy()  # DRR pixel [r, c]
    stored = grid[::-1, :] if rotated else grid[:, ::-1]
    return source[0, 0].numpy(), stored


def _stored_image(drr: np.ndarray, rotated: bool) -> np.ndarray:
    """(H0, W0) float32 raw intensities I0 exp(-k drr), laid out as the release stores the X-ray."""
    intensity = INITIAL_INTENSITY * np.exp(-INTENSITY_SCALE * drr.astype(np.float64))
    return np.ascontiguousarray((intensity[::-1, :] if rotated else intensity[:, ::-1]).astype(np.float32))


def _release_geometry(
    source: np.ndarray, grid: np.ndarray, shift: np.ndarray, extrinsic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(cam-to-pelvis-vol T, intrinsic K) of a stored image whose pixel [r, c] is centred at ``grid[r, c]``."""
    source_lps = LPS_FLIP @ source + shift
    grid_lps = grid @ LPS_FLIP + shift
    x_axis = grid_lps[0, 1] - grid_lps[0, 0]
    y_axis = grid_lps[1, 0] - grid_lps[0, 0]
    x_axis, y_axis = x_axis / np.linalg.norm(x_axis), y_axis / np.linalg.norm(y_axis)
    rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])  # rows: the camera axes in LPS
    middle = grid_lps[grid.shape[0] // 2, grid.shape[1] // 2]
    assert rotation[2] @ (source_lps - middle) > 0, "Z points at the source: the stored image is the DRR mirrored"
    lps_to_camera = np.eye(4)
    lps_to_camera[:3, :3] = rotation
    lps_to_camera[:3, 3] = -rotation @ source_lps
    camera_points = (grid_lps - source_lps) @ rotation.T
    rows, columns = np.indices(grid.shape[:2])
    intrinsic = np.eye(3)
    for axis, index in ((0, columns), (1, rows)):
        ratio = (camera_points[..., axis] / camera_points[..., 2]).ravel()
        design = np.stack([ratio, np.ones_like(ratio)], -1)
        (focal, principal), *_ = np.linalg.lstsq(design, index.ravel().astype(np.float64), rcond=None)
        assert np.abs(design @ [focal, principal] - index.ravel()).max() < 1e-6, "a pinhole camera"
        intrinsic[axis, axis], intrinsic[axis, 2] = focal, principal
    return np.linalg.inv(lps_to_camera) @ extrinsic, intrinsic


def _project(intrinsic: np.ndarray, extrinsic: np.ndarray, cam_to_pelvis: np.ndarray, lps: np.ndarray) -> np.ndarray:
    """(2,) the release's (column, row) of an LPS point: K E T^-1 x, dehomogenised."""
    camera = extrinsic @ np.linalg.inv(cam_to_pelvis) @ np.append(lps, 1.0)
    pixel = intrinsic @ camera[:3]
    return pixel[:2] / pixel[2]


def _write_projection(
    group: h5py.Group,
    image: np.ndarray,
    cam_to_pelvis: np.ndarray,
    landmarks_lps: dict[str, np.ndarray],
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    rotated: bool,
    spacing_mm: float,
) -> None:
    _write_image(group.create_group("image"), image, (spacing_mm, spacing_mm), (0.0, 0.0))
    _write_image(group.create_group("gt-seg"), np.zeros(image.shape, np.uint8), (spacing_mm, spacing_mm), (0.0, 0.0))
    for name, point in landmarks_lps.items():
        pixel = _project(intrinsic, extrinsic, cam_to_pelvis, point)
        group.create_dataset(f"gt-landmarks/{name}", data=pixel.reshape(2, 1))
    for key in ("cam-to-pelvis-vol", "cam-to-left-femur-vol", "cam-to-right-femur-vol"):
        group.create_dataset(f"gt-poses/{key}", data=cam_to_pelvis)
    for key in ("left-femur-good-fov", "right-femur-good-fov"):
        group.create_dataset(f"gt-poses/{key}", data=np.uint8(1))
    group.create_dataset("rot-180-for-up", data=np.uint8(rotated))


def _write_params(
    group: h5py.Group, intrinsic: np.ndarray, extrinsic: np.ndarray, size: int, spacing_mm: float
) -> None:
    group.create_dataset("intrinsic", data=intrinsic)
    group.create_dataset("extrinsic", data=extrinsic)
    for key in ("num-rows", "num-cols"):
        group.create_dataset(key, data=np.int64(size))
    for key in ("pixel-row-spacing", "pixel-col-spacing"):
        group.create_dataset(key, data=np.float64(spacing_mm))
