import math

import numpy as np
import pytest
import torch

from components import geometry
from components.anatomy import N_LANDMARKS
from components.drr import SubjectRenderer, landmark_visibility, to_uint16
from components.geometry import Camera
from components.phantom import phantom_subject
from components.subject import world_to_voxel

SID = 800.0
CAMERA = Camera(sdd=1020.0, height=160, width=160, delx=2.4, dely=2.4)


@pytest.fixture(scope="module")
def subject():
    return phantom_subject(seed=3)


def random_poses(seed: int, batch_size: int, max_degrees=30.0, max_mm=30.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    angles = (torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(max_degrees)
    offsets = (torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) * 2 - 1) * max_mm
    return geometry.pose_from_euler_zxy(angles, offsets + torch.tensor([0.0, SID, 0.0], dtype=torch.float64))


def gaussian_bead(shape, center_index: np.ndarray, sigma_voxels=0.8) -> torch.Tensor:
    """(I, J, K) a unit-peak Gaussian blob centred on a continuous voxel index."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    distance_sq = sum((g - c) ** 2 for g, c in zip(grids, center_index))
    return torch.from_numpy(np.exp(-distance_sq / (2 * sigma_voxels**2))).float()


def peak_position(image: torch.Tensor, radius=3) -> tuple[float, float]:
    """(u, v) intensity centroid, in pixel-centre coordinates, around the brightest pixel."""
    row, col = divmod(int(image.argmax()), image.shape[1])
    window = image[row - radius : row + radius + 1, col - radius : col + radius + 1].double()
    rows = torch.arange(row - radius, row + radius + 1, dtype=torch.float64) + 0.5
    cols = torch.arange(col - radius, col + radius + 1, dtype=torch.float64) + 0.5
    total = window.sum()
    return float((window.sum(0) * cols).sum() / total), float((window.sum(1) * rows).sum() / total)


@pytest.mark.parametrize("renderer", ["trilinear", "siddon"])
def test_bead_at_a_landmark_peaks_at_its_projection(subject, renderer):
    drr = SubjectRenderer(subject, CAMERA, renderer=renderer, patch_size=32)
    poses = random_poses(seed=0, batch_size=3)
    for landmark_index in (0, 3, 6):
        landmark = subject.landmarks[landmark_index]
        bead = gaussian_bead(subject.hu.shape, world_to_voxel(subject.affine, landmark[None])[0])
        plain = drr.render_images(poses)
        drr.drr.density += bead
        with_bead = drr.render_images(poses)
        drr.drr.density -= bead
        expected = drr.project_landmarks(poses)[0][:, landmark_index]
        for view in range(len(poses)):
            u, v = peak_position(with_bead[view] - plain[view])
            error = math.hypot(u - expected[view, 0].item(), v - expected[view, 1].item())
            assert error < 0.5, f"{renderer} landmark {landmark_index} view {view}: bead off by {error:.3f} px"


def test_all_landmarks_inside_an_ap_drr(subject):
    drr = SubjectRenderer(subject, CAMERA)
    views = drr.render(geometry.ap_pose(SID))
    assert views.images.shape == (1, CAMERA.height, CAMERA.width)
    assert views.landmarks_2d.shape == (1, N_LANDMARKS, 2)
    assert views.visible.all()


def test_render_shapes_and_determinism(subject):
    drr = SubjectRenderer(subject, CAMERA, patch_size=32)
    poses = random_poses(seed=1, batch_size=2)
    first, second = drr.render(poses), drr.render(poses)
    assert torch.equal(first.images, second.images)
    assert first.images.dtype == torch.float32 and torch.isfinite(first.images).all()
    assert first.images.std() > 0


def test_visibility_marks_points_outside_the_image_or_behind_the_source():
    uv = torch.tensor([[[10.0, 10.0], [-0.1, 10.0], [10.0, 160.0], [159.9, 159.9], [10.0, 10.0]]])
    depth = torch.tensor([[500.0, 500.0, 500.0, 500.0, -5.0]])
    assert landmark_visibility(uv, depth, CAMERA).tolist() == [[True, False, False, True, False]]


def test_to_uint16_spans_the_full_range():
    images = torch.stack([torch.linspace(2.0, 5.0, 16).reshape(4, 4), torch.full((4, 4), 7.0)])
    out = to_uint16(images)
    assert out.dtype == np.uint16
    assert out[0].min() == 0 and out[0].max() == 65535
    assert (out[1] == 0).all()


@pytest.mark.parametrize(
    "arguments, message",
    [({"renderer": "raymarch"}, "renderer must be"), ({"patch_size": 48}, "patch_size 48 must tile")],
)
def test_bad_settings_are_refused(subject, arguments, message):
    with pytest.raises(ValueError, match=message):
        SubjectRenderer(subject, CAMERA, **arguments)
