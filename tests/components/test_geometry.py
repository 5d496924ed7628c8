import math

import numpy as np
import pytest
import torch
from diffdrr.data import read
from diffdrr.drr import DRR
from diffdrr.pose import convert, euler_angles_to_matrix
from torchio import ScalarImage

from components import geometry
from components.geometry import Camera

SID = 800.0


def random_poses(generator: torch.Generator, batch_size: int, max_degrees=45.0, max_mm=50.0):
    """(B, 3) ZXY Euler radians and (B, 3) translations around the AP view."""
    angles = (torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(max_degrees)
    offsets = (torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) * 2 - 1) * max_mm
    return angles, offsets + torch.tensor([0.0, SID, 0.0], dtype=torch.float64)


def diffdrr_module(camera: Camera) -> DRR:
    volume = ScalarImage(tensor=torch.zeros(1, 8, 8, 8), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    subject = read(volume)
    drr = DRR(
        subject,
        sdd=camera.sdd,
        height=camera.height,
        width=camera.width,
        delx=camera.delx,
        dely=camera.dely,
        x0=camera.x0,
        y0=camera.y0,
    )
    return drr.to(torch.float64)


CAMERAS = [
    Camera(sdd=1020.0, height=256, width=256, delx=1.6, dely=1.6),
    Camera(sdd=1020.0, height=1436, width=1436, delx=0.194, dely=0.194),
    Camera(sdd=1020.0, height=128, width=160, delx=2.5, dely=2.0, x0=7.5, y0=-12.0),
    Camera(sdd=900.0, height=101, width=99, delx=3.1, dely=3.1, x0=-20.0, y0=4.0),
]


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"{c.height}x{c.width}-{c.delx}mm-x0{c.x0}")
def test_projection_agrees_with_diffdrr(camera):
    generator = torch.Generator().manual_seed(0)
    angles, translation = random_poses(generator, 16)
    points = (torch.rand(16, 12, 3, generator=generator, dtype=torch.float64) * 2 - 1) * 100

    drr = diffdrr_module(camera)
    diffdrr_pose = convert(angles, translation, parameterization="euler_angles", convention="ZXY")
    expected = drr.perspective_projection(diffdrr_pose, points)

    pose = geometry.pose_from_euler_zxy(angles, translation)
    actual = geometry.project(points, pose, camera)

    assert (actual - expected).abs().max().item() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_keeps_dtype_and_agrees_across_precisions(dtype):
    generator = torch.Generator().manual_seed(1)
    angles, translation = random_poses(generator, 4)
    points = torch.rand(4, 8, 3, generator=generator, dtype=torch.float64) * 100
    pose = geometry.pose_from_euler_zxy(angles, translation)
    reference = geometry.project(points, pose, CAMERAS[0])
    actual = geometry.project(points.to(dtype), pose.to(dtype), CAMERAS[0])
    assert actual.dtype == dtype
    assert torch.allclose(actual.double(), reference, atol=1e-2 if dtype == torch.float32 else 1e-9)


def test_ap_view_puts_isocentre_at_principal_point_in_radiological_display():
    camera = Camera(sdd=1020.0, height=200, width=200, delx=1.0, dely=1.0)
    pose = geometry.ap_pose(SID)
    points = torch.tensor([[[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.0, 10.0]]], dtype=torch.float64)
    uv = geometry.project(points, pose, camera)[0]
    magnification = camera.sdd / SID
    assert torch.allclose(uv[0], torch.tensor([100.0, 100.0], dtype=torch.float64))
    # radiological display: the patient's right (+x in RAS+) moves to the image's left; superior (+z) up.
    assert torch.allclose(uv[1], torch.tensor([100.0 - 10 * magnification, 100.0], dtype=torch.float64))
    assert torch.allclose(uv[2], torch.tensor([100.0, 100.0 - 10 * magnification], dtype=torch.float64))


def test_batched_equals_looped():
    generator = torch.Generator().manual_seed(2)
    angles, translation = random_poses(generator, 8)
    points = torch.rand(8, 5, 3, generator=generator, dtype=torch.float64) * 100
    pose = geometry.pose_from_euler_zxy(angles, translation)
    batched = geometry.project(points, pose, CAMERAS[2])
    looped = torch.cat([geometry.project(points[i : i + 1], pose[i : i + 1], CAMERAS[2]) for i in range(8)])
    assert torch.equal(batched, looped)


def test_pose_matrix_pose_round_trip():
    generator = torch.Generator().manual_seed(3)
    rotvec = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    rotvec = (
        rotvec / rotvec.norm(dim=-1, keepdim=True) * torch.rand(64, 1, generator=generator, dtype=torch.float64) * 3.1
    )
    pose = torch.cat([rotvec, torch.randn(64, 3, generator=generator, dtype=torch.float64) * 100], -1)
    assert torch.allclose(geometry.matrix_to_pose(geometry.pose_to_matrix(pose)), pose, atol=1e-9)


def test_pose_matrix_is_diffdrr_matrix():
    generator = torch.Generator().manual_seed(4)
    angles, translation = random_poses(generator, 8)
    expected = convert(angles, translation, parameterization="euler_angles", convention="ZXY").matrix
    actual = geometry.pose_to_matrix(geometry.pose_from_euler_zxy(angles, translation))
    assert torch.allclose(actual, expected, atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 0.5, 3.0, math.pi - 1e-6, math.pi])
def test_rotation_vector_round_trip_over_angles(angle):
    axis = torch.tensor([0.3, -0.5, 0.81], dtype=torch.float64)
    rotvec = axis / axis.norm() * angle
    matrix = geometry.rotation_vector_to_matrix(rotvec)
    assert torch.allclose(matrix @ matrix.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    recovered = geometry.rotation_vector_to_matrix(geometry.matrix_to_rotation_vector(matrix))
    assert torch.allclose(recovered, matrix, atol=1e-9)


def test_rodrigues_gradient_is_finite_at_identity():
    rotvec = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    geometry.rotation_vector_to_matrix(rotvec)[0, 1].backward()
    assert torch.isfinite(rotvec.grad).all()
    assert rotvec.grad[2].item() == pytest.approx(-1.0)


def test_euler_zxy_matches_diffdrr_and_round_trips():
    generator = torch.Generator().manual_seed(5)
    angles, _ = random_poses(generator, 32, max_degrees=80)
    matrix = geometry.euler_zxy_to_matrix(angles)
    assert torch.allclose(matrix, euler_angles_to_matrix(angles, "ZXY"), atol=1e-12)
    assert torch.allclose(geometry.matrix_to_euler_zxy(matrix), angles, atol=1e-9)
    pose = geometry.pose_from_euler_zxy(angles, torch.zeros_like(angles))
    back_angles, _ = geometry.pose_to_euler_zxy(pose)
    assert torch.allclose(back_angles, angles, atol=1e-9)


@pytest.mark.parametrize("size", [64, 256, 1000])
def test_rescale_keeps_projection_consistent(size):
    camera = Camera(sdd=1020.0, height=1436, width=1436, delx=0.194, dely=0.194, x0=3.0, y0=-5.0)
    generator = torch.Generator().manual_seed(6)
    angles, translation = random_poses(generator, 4)
    pose = geometry.pose_from_euler_zxy(angles, translation)
    points = torch.rand(4, 8, 3, generator=generator, dtype=torch.float64) * 100
    uv = geometry.project(points, pose, camera)
    small, _, rescaled = geometry.rescale(camera, size, points_2d=uv)
    assert small.height == small.width == size
    assert small.delx * size == pytest.approx(camera.delx * 1436)
    assert torch.allclose(geometry.project(points, pose, small), rescaled, atol=1e-9)


def test_rescale_resizes_images_with_the_grid():
    camera = Camera(sdd=1020.0, height=64, width=64, delx=2.0, dely=2.0)
    image = torch.zeros(2, 64, 64)
    image[:, 20:24, 40:44] = 1.0  # a square centred on pixel corner (42, 22)
    _, small, _ = geometry.rescale(camera, 32, image=image)
    assert small.shape == (2, 32, 32)
    row, col = divmod(int(small[0].argmax()), 32)
    assert (col + 0.5, row + 0.5) in {(20.5, 10.5), (21.5, 11.5), (20.5, 11.5), (21.5, 10.5)}
    assert small.sum().item() == pytest.approx(image.sum().item() / 4, rel=1e-5)


@pytest.mark.parametrize(
    "field, value, message",
    [("sdd", 0.0, "sdd must be > 0"), ("delx", -1.0, "delx must be > 0"), ("height", 0, "height must be a positive")],
)
def test_camera_rejects_bad_values(field, value, message):
    arguments = dict(sdd=1020.0, height=64, width=64, delx=1.0, dely=1.0)
    arguments[field] = value
    with pytest.raises(ValueError, match=message):
        Camera(**arguments)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_projection_on_gpu_matches_cpu():
    generator = torch.Generator().manual_seed(7)
    angles, translation = random_poses(generator, 4)
    pose = geometry.pose_from_euler_zxy(angles, translation)
    points = torch.rand(4, 8, 3, generator=generator, dtype=torch.float64) * 100
    cpu = geometry.project(points, pose, CAMERAS[0])
    gpu = geometry.project(points.cuda(), pose.cuda(), CAMERAS[0]).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-9)
