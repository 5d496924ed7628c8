"""The DeepFluoro release (Grupp et al. 2020): its CTs, landmarks, real X-rays and true poses, in our conventions.

Reads the full-resolution HDF5 file ``ipcai_2020_full_res_data.h5`` of the IPCAI 2020 release (6 cadaveric
specimens, 366 real X-rays of 1536 x 1536 pixels at 0.194 mm, CTs at 1 mm, 14 landmarks), laid out as
rg2/DeepFluoroLabeling-IPCAI2020's ``hdf5_layouts/Readme.md`` describes:

- ``proj-params``: ``intrinsic`` K (3, 3), ``extrinsic`` E (4, 4, world -> camera), ``num-rows``, ``num-cols``,
  ``pixel-row-spacing``, ``pixel-col-spacing`` (mm), shared by every projection;
- per specimen (every other top-level group, e.g. ``17-1882``): ``vol`` (``pixels`` row-major (slice, row,
  column) in HU, ``origin`` and ``spacing`` in LPS mm, ``dir-mat`` the identity), ``vol-landmarks/<name>``
  (3 LPS mm), and ``projections/<index>`` with ``image/pixels`` (raw intensities), ``gt-landmarks/<name>``
  ((column, row) pixel indices, pixel centres at integers), ``gt-poses/cam-to-pelvis-vol`` T (4, 4) and
  ``rot-180-for-up``.

The release's camera frame has its origin at the source, X along the columns, Y along the rows and Z towards
the source, and ``K`` has negative focal lengths: an LPS point ``x`` lands on the pixel indices
``(col, row, 1) ~ K E T^-1 x``. That image is the one seen from behind the detector, the mirror image of the one
seen from the source, which is what our renderer makes (``geometry``'s camera: x right, y down, z the viewing
direction). So an X-ray is mirrored left-right here, and then turned by 180 degrees where ``rot-180-for-up``
says so (together: mirrored top-bottom). Both are one sign matrix ``S = diag(a_x, a_y, -1)`` on the camera
frame, ``(a_x, a_y) = (-1, 1)``, or ``(1, -1)`` when turned, and the same signs on the pixels about the image
centre. With ``F = diag(-1, -1, 1)`` (LPS <-> RAS) and ``m`` the centre of the CT's voxel grid in LPS (our
world's origin, ``subject``), for an X-ray of W0 x H0 pixels cropped to W x H:

    world -> camera:  S E T^-1 A,  A = [[F, m], [0, 1]]  (world -> LPS)
    pixels:           u = a_x (col - (W0 - 1) / 2) + W / 2,  v = a_y (row - (H0 - 1) / 2) + H / 2
    camera:           sdd = -K00 col_spacing,  x0 = a_x (K02 - (W0 - 1) / 2) col_spacing,
                      y0 = a_y (K12 - (H0 - 1) / 2) row_spacing

(docs/architecture.md, "DeepFluoro").

Preprocessing is the lab's: crop ``crop`` pixels from every border (the collimator; 50, as DiffDRR, gives
1436 x 1436), the log transform ``log(I0) - log(I)`` (line integrals, bone bright; ``I0`` is DiffDRR's),
the mirror and turn, then a resize to the model's resolution with the camera rescaled (``geometry.rescale``).

Landmark names ``<KIND>-l`` / ``<KIND>-r`` are ``anatomy.DEEPFLUORO``'s ``L_<KIND>`` / ``R_<KIND>``; a landmark
a file lacks is a NaN row (3D) or a NaN, invisible point (2D). The platform never downloads the file.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from components import geometry
from components.anatomy import DEEPFLUORO
from components.geometry import Camera
from components.subject import Subject, center_affine

__all__ = [
    "INITIAL_INTENSITY",
    "RELEASE_CROP",
    "DeepFluoroError",
    "ProjectionParams",
    "RealXray",
    "landmark_name",
    "list_projections",
    "list_specimens",
    "load_specimen",
    "projection_params",
    "real_xrays",
]

RELEASE_CROP = 50  # pixels cropped from every border: the collimator's shadow (1536 -> 1436, as DiffDRR)
INITIAL_INTENSITY = 65487.0  # I0 of the log transform log(I0) - log(I) (DiffDRR's, the release's brightest)
_PARAMS = "proj-params"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_NAME = re.compile(r"^(?P<kind>[A-Z]+)-(?P<side>[lr])$")  # a release landmark name: FH-l, ASIS-r, ...
_RELEASE_NAMES = ", ".join(f"{name[2:]}-{name[0].lower()}" for name in DEEPFLUORO.names)


class DeepFluoroError(ValueError):
    """A DeepFluoro file that cannot be read; the message names the file, the group and what was expected."""


def landmark_name(release_name: str) -> str:
    """Our name of a release landmark name: ``FH-l`` -> ``L_FH`` (the name itself when it has no ``-l``/``-r``)."""
    match = _NAME.match(release_name)
    if match is None:
        return release_name
    return f"{match['side'].upper()}_{match['kind']}"


@dataclass(frozen=True)
class ProjectionParams:
    """The file's ``proj-params``: one C-arm geometry for every X-ray.

    Attributes:
        intrinsic: (3, 3) K, camera frame -> (column, row) pixel indices; negative focal lengths.
        extrinsic: (4, 4) E, the release's world -> camera frame.
        num_rows, num_cols: the X-rays' size H0, W0 in pixels.
        row_spacing, col_spacing: pixel size in mm.
    """

    intrinsic: np.ndarray
    extrinsic: np.ndarray
    num_rows: int
    num_cols: int
    row_spacing: float
    col_spacing: float

    def camera(self, crop: int = RELEASE_CROP, rotated: bool = False) -> Camera:
        """Our camera of an X-ray cropped by ``crop`` pixels per border, turned by 180 degrees or not."""
        a_x, a_y = _image_signs(rotated)
        return Camera(
            sdd=float(-self.intrinsic[0, 0] * self.col_spacing),
            height=self.num_rows - 2 * crop,
            width=self.num_cols - 2 * crop,
            delx=self.col_spacing,
            dely=self.row_spacing,
            x0=float(a_x * (self.intrinsic[0, 2] - (self.num_cols - 1) / 2) * self.col_spacing),
            y0=float(a_y * (self.intrinsic[1, 2] - (self.num_rows - 1) / 2) * self.row_spacing),
        )

    def to_pixels(self, points: np.ndarray, crop: int = RELEASE_CROP, rotated: bool = False) -> np.ndarray:
        """(N, 2) our (u, v) of (N, 2) release (column, row) pixel indices, in the cropped (turned) X-ray."""
        a_x, a_y = _image_signs(rotated)
        u = a_x * (points[:, 0] - (self.num_cols - 1) / 2) + (self.num_cols - 2 * crop) / 2
        v = a_y * (points[:, 1] - (self.num_rows - 1) / 2) + (self.num_rows - 2 * crop) / 2
        return np.stack([u, v], -1)


@dataclass(frozen=True)
class RealXray:
    """One real X-ray, preprocessed, with its true pose and landmarks in our conventions.

    Attributes:
        specimen_id: the specimen's group name, e.g. ``17-1882``.
        projection: the projection's group name, e.g. ``005``.
        image: (H, W) float32 line integrals (bone bright), at the requested resolution.
        pose: (6,) float64 the true pose (rotation vector, translation mm) in the specimen's world.
        landmarks_2d: (N, 2) float64 pixel (u, v) of ``DEEPFLUORO``'s landmarks; NaN where the file has none.
        visible: (N,) bool, the landmark is annotated and inside the image.
        camera: the detector at the image's resolution.
        rotated: whether the release's ``rot-180-for-up`` turned the image.
    """

    specimen_id: str
    projection: str
    image: torch.Tensor
    pose: torch.Tensor
    landmarks_2d: torch.Tensor
    visible: torch.Tensor
    camera: Camera
    rotated: bool


# ------------------------------------------------------------------------------------------- listing


def list_specimens(path: str | Path) -> list[str]:
    """The specimen ids of the file (its top-level groups but ``proj-params``), sorted."""
    with _open(path) as file:
        return sorted(key for key in file if key != _PARAMS)


def list_projections(path: str | Path, specimen_id: str) -> list[str]:
    """The projection indices of a specimen (``000``, ``001``, ...), in order."""
    with _open(path) as file:
        return _projection_names(_group(file, f"{specimen_id}/projections"))


def _projection_names(projections: h5py.Group) -> list[str]:
    """Projection group names, numerically ordered when they are numbers."""
    return sorted(projections, key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name))


# ------------------------------------------------------------------------------------ the C-arm


def projection_params(path: str | Path) -> ProjectionParams:
    """The file's projection parameters, checked (see ``ProjectionParams``)."""
    with _open(path) as file:
        return _projection_params(file)


def _projection_params(file: h5py.File) -> ProjectionParams:
    group = _group(file, _PARAMS)
    intrinsic = _array(group, "intrinsic", (3, 3))
    extrinsic = _rigid(group, "extrinsic")
    sizes = [_scalar(group, key) for key in ("num-rows", "num-cols")]
    spacings = [_scalar(group, key) for key in ("pixel-row-spacing", "pixel-col-spacing")]
    if any(size != int(size) or size < 1 for size in sizes) or not all(spacing > 0 for spacing in spacings):
        raise _error(group, f"num-rows, num-cols {sizes} and pixel spacings {spacings} must be positive")
    focal_row_mm, focal_col_mm = -intrinsic[1, 1] * spacings[0], -intrinsic[0, 0] * spacings[1]
    pinhole = np.allclose(intrinsic[[0, 1, 2, 2], [1, 0, 0, 1]], 0.0) and np.isclose(intrinsic[2, 2], 1.0)
    if not (pinhole and focal_col_mm > 0 and np.isclose(focal_row_mm, focal_col_mm, rtol=1e-6)):
        raise _error(
            group,
            f"intrinsic is {intrinsic.tolist()}, expected [[-f / col spacing, 0, cx], [0, -f / row spacing, cy], "
            "[0, 0, 1]] with one focal length f > 0 (the release's camera looks along -Z)",
        )
    return ProjectionParams(intrinsic, extrinsic, int(sizes[0]), int(sizes[1]), spacings[0], spacings[1])


def _image_signs(rotated: bool) -> tuple[int, int]:
    """(a_x, a_y): the release's image mirrored left-right, then turned by 180 degrees when ``rotated``."""
    return (1, -1) if rotated else (-1, 1)


# ------------------------------------------------------------------------------------- specimens


def load_specimen(path: str | Path, specimen_id: str) -> Subject:
    """A specimen's CT (HU, RAS+ world centred on its voxel grid) and its (14, 3) landmarks in ``DEEPFLUORO``'s
    order (world mm, NaN where the file has none)."""
    with _open(path) as file:
        specimen = _group(file, specimen_id)
        hu, affine, center = _volume(_group(specimen, "vol"))
        landmarks = np.full((len(DEEPFLUORO), 3), np.nan)
        for slot, point in _landmarks(_group(specimen, "vol-landmarks"), 3).items():
            landmarks[slot] = _lps_to_world(point, center)
        return Subject(specimen_id, hu, affine, landmarks)


def _volume(vol: h5py.Group) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(I, J, K) float32 HU with RAS+ index axes, its centred affine, and the grid's centre in LPS mm.

    The release's voxel ``pixels[k, j, i]`` lies at LPS ``origin + spacing * (i, j, k)``; the i and j axes are
    reversed so the affine is ``diag(spacing)`` in RAS+ (the LPS -> RAS flip of x and y).
    """
    spacing, center, pixels = _volume_grid(vol)
    hu = np.ascontiguousarray(pixels[()].transpose(2, 1, 0)[::-1, ::-1, :], dtype=np.float32)
    if not np.all(np.isfinite(hu)):
        raise _error(pixels, f"has {np.count_nonzero(~np.isfinite(hu))} non-finite voxels, expected HU")
    return hu, center_affine(np.diag([*spacing, 1.0]), hu.shape), center


def _volume_grid(vol: h5py.Group) -> tuple[np.ndarray, np.ndarray, h5py.Dataset]:
    """(3,) spacing and (3,) centre of the voxel grid in LPS mm, and the (unread) pixels of a ``vol`` group."""
    direction = _array(vol, "dir-mat", (3, 3))
    if not np.allclose(direction, np.eye(3), atol=1e-6):
        raise _error(vol, f"dir-mat is {direction.tolist()}, expected the identity (volume axes along LPS)")
    origin = _array(vol, "origin", (3,))
    spacing = _array(vol, "spacing", (3,))
    if not np.all(spacing > 0):
        raise _error(vol, f"spacing is {spacing.tolist()}, expected 3 positive mm")
    pixels = _dataset(vol, "pixels")
    if pixels.ndim != 3:
        raise _error(pixels, f"has shape {pixels.shape}, expected (slices, rows, columns)")
    shape_ijk = np.asarray(pixels.shape[::-1], dtype=np.float64)
    return spacing, origin + spacing * (shape_ijk - 1) / 2, pixels


def _lps_to_world(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    """(..., 3) our world (RAS+, centred) of (..., 3) LPS mm."""
    return (points - center) @ _LPS_TO_RAS


def _world_to_lps(center: np.ndarray) -> np.ndarray:
    """(4, 4) our world -> LPS mm: ``x = F w + c``."""
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS
    matrix[:3, 3] = center
    return matrix


def _landmarks(group: h5py.Group, size: int) -> dict[int, np.ndarray]:
    """Slot in ``DEEPFLUORO`` -> (size,) point of each ``<KIND>-<l|r>`` dataset of ``group``."""
    points = {}
    for release_name in group:
        name = landmark_name(release_name)
        if name not in DEEPFLUORO.names:
            raise _error(group, f"landmark {release_name!r} is not one of the release's 14 ({_RELEASE_NAMES})")
        points[DEEPFLUORO.index(name)] = _array(group, release_name, (size,))
    return points


# -------------------------------------------------------------------------------------- X-rays


def real_xrays(
    path: str | Path,
    specimen_id: str,
    height: int,
    width: int | None = None,
    crop: int = RELEASE_CROP,
    projections: list[str] | None = None,
) -> Iterator[RealXray]:
    """A specimen's X-rays, in projection order, preprocessed and resized to ``height`` x ``width`` pixels.

    Args:
        path: the release's HDF5 file.
        specimen_id: a name of ``list_specimens``.
        height, width: the resolution to resize to (width defaults to height).
        crop: pixels cropped from every border before anything else.
        projections: the projections to read (names of ``list_projections``); default: all.
    """
    with _open(path) as file:
        params = _projection_params(file)
        if not 0 <= crop < min(params.num_rows, params.num_cols) / 2:
            raise _error(file[_PARAMS], f"crop {crop} leaves no image of {params.num_rows}x{params.num_cols}")
        specimen = _group(file, specimen_id)
        _, center, _ = _volume_grid(_group(specimen, "vol"))
        group = _group(specimen, "projections")
        for name in _projection_names(group) if projections is None else projections:
            yield _real_xray(params, _group(group, name), specimen_id, center, crop, height, width)


def _real_xray(
    params: ProjectionParams,
    projection: h5py.Group,
    specimen_id: str,
    center: np.ndarray,
    crop: int,
    height: int,
    width: int | None,
) -> RealXray:
    rotated = bool(_scalar(projection, "rot-180-for-up"))
    image = _log_image(projection, params, crop, rotated)
    cam_to_pelvis = _rigid(_group(projection, "gt-poses"), "cam-to-pelvis-vol")
    pose = _pose(params, cam_to_pelvis, center, rotated)
    landmarks = np.full((len(DEEPFLUORO), 2), np.nan)
    for slot, point in _landmarks(_group(projection, "gt-landmarks"), 2).items():
        landmarks[slot] = params.to_pixels(point[None], crop, rotated)[0]
    camera, image, landmarks_2d = geometry.rescale(
        params.camera(crop, rotated), height, width, torch.from_numpy(image), torch.from_numpy(landmarks)
    )
    u, v = landmarks_2d.unbind(-1)
    visible = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    name = projection.name.rsplit("/", 1)[-1]
    return RealXray(specimen_id, name, image.float(), pose, landmarks_2d, visible, camera, rotated)


def _log_image(projection: h5py.Group, params: ProjectionParams, crop: int, rotated: bool) -> np.ndarray:
    """(H, W) float32 ``log(I0) - log(I)`` of the cropped X-ray, mirrored and turned into our orientation."""
    group = _group(projection, "image")
    pixels = _dataset(group, "pixels")
    if pixels.shape != (params.num_rows, params.num_cols):
        raise _error(
            group,
            f"pixels has shape {pixels.shape}, expected ({params.num_rows}, {params.num_cols}) "
            f"(proj-params num-rows, num-cols)",
        )
    intensity = pixels[crop : params.num_rows - crop, crop : params.num_cols - crop].astype(np.float64)
    if not np.all(np.isfinite(intensity) & (intensity > 0)):
        bad = np.count_nonzero(~(np.isfinite(intensity) & (intensity > 0)))
        raise _error(group, f"pixels has {bad} zero, negative or non-finite intensities inside the crop")
    a_x, a_y = _image_signs(rotated)
    line_integrals = np.log(INITIAL_INTENSITY) - np.log(intensity)
    return np.ascontiguousarray(line_integrals[::a_y, ::a_x], dtype=np.float32)


def _pose(params: ProjectionParams, cam_to_pelvis: np.ndarray, center: np.ndarray, rotated: bool) -> torch.Tensor:
    """(6,) our pose of the release's ``cam-to-pelvis-vol``: world -> camera is ``S E T^-1 A``."""
    a_x, a_y = _image_signs(rotated)
    signs = np.diag([a_x, a_y, -1.0, 1.0])
    world_to_camera = signs @ params.extrinsic @ _inverse_rigid(cam_to_pelvis) @ _world_to_lps(center)
    matrix = torch.from_numpy(world_to_camera)
    return geometry.extrinsic_to_pose(matrix[None, :3, :3], matrix[None, :3, 3])[0]


def _inverse_rigid(matrix: np.ndarray) -> np.ndarray:
    """(4, 4) inverse of a (4, 4) rigid transform."""
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse


# ------------------------------------------------------------------------------------- HDF5 access


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise DeepFluoroError(f"DeepFluoro file {path}: not found")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DeepFluoroError(f"DeepFluoro file {path}: cannot be read as HDF5 ({error})") from None


def _error(node: h5py.HLObject, problem: str) -> DeepFluoroError:
    """An error naming the file and the group or dataset ``node`` (its path holds specimen and projection)."""
    return DeepFluoroError(f"DeepFluoro file {node.file.filename}: {node.name}: {problem}")


def _member(group: h5py.Group, key: str) -> h5py.HLObject:
    if key not in group:
        raise _error(group, f"has no {key!r}, expected the release's layout (hdf5_layouts/Readme.md)")
    return group[key]


def _group(group: h5py.Group, key: str) -> h5py.Group:
    node = _member(group, key)
    if not isinstance(node, h5py.Group):
        raise _error(node, "is a dataset, expected a group")
    return node


def _dataset(group: h5py.Group, key: str) -> h5py.Dataset:
    node = _member(group, key)
    if not isinstance(node, h5py.Dataset):
        raise _error(node, "is a group, expected a dataset")
    return node


def _array(group: h5py.Group, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """A finite float64 array of ``shape`` (a column vector ``(n, 1)`` reads as ``(n,)``)."""
    dataset = _dataset(group, key)
    if dataset.size != int(np.prod(shape)) or (len(shape) == 2 and dataset.shape != shape):
        raise _error(dataset, f"has shape {dataset.shape}, expected {shape}")
    try:
        values = np.asarray(dataset[()], dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise _error(dataset, f"holds {dataset.dtype}, expected numbers") from None
    if not np.all(np.isfinite(values)):
        raise _error(dataset, f"is {values.tolist()}, expected finite numbers")
    return values


def _scalar(group: h5py.Group, key: str) -> float:
    return float(_array(group, key, (1,))[0])


def _rigid(group: h5py.Group, key: str) -> np.ndarray:
    """A (4, 4) rigid transform: a rotation (to 1e-4, float32 files), a translation, a last row (0, 0, 0, 1)."""
    matrix = _array(group, key, (4, 4))
    rotation = matrix[:3, :3]
    rigid = np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4) and np.linalg.det(rotation) > 0
    if not (rigid and np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0])):
        raise _error(group[key], f"is {matrix.tolist()}, expected a rigid 4x4 transform")
    return matrix
