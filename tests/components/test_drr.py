import dataclasses
import math

import numpy as np
import pytest
import torch
from diffdrr.data import read
from diffdrr.drr import DRR
from torchio import ScalarImage

from components import geometry
from components.anatomy import DEEPFLUORO, PAPER
from components.drr import (
    AIR_HU,
    HU_RANGE,
    NANODRR_BACKENDS,
    RENDERERS,
    SubjectRenderer,
    clipped_hu,
    diffdrr_density,
    landmark_visibility,
    register,
    to_uint16,
)
from components.fluoroscopy import WATER_MU
from components.geometry import Camera
from components.phantom import make_phantom, phantom_landmarks, phantom_subject, sample_phantom_params
from components.subject import Subject, center_affine, world_to_voxel

SID = 800.0
CAMERA = Camera(sdd=1020.0, height=160, width=160, delx=2.4, dely=2.4)
# Small and fast: a 4 mm phantom on a 48 px detector covering it.
SMALL_CAMERA = Camera(sdd=1020.0, height=48, width=48, delx=8.0, dely=8.0)
BEAD_CAMERA = Camera(sdd=1020.0, height=64, width=64, delx=2.0, dely=2.0)
EULER = {"parameterization": "euler_angles", "convention": "ZXY"}
BATCH_TOLERANCE = 1e-5  # relative to the image's largest value: float32 noise, not a different image


@pytest.fixture(scope="module")
def subject():
    return phantom_subject(seed=3)


@pytest.fixture(scope="module")
def small_subject():
    return phantom_subject(seed=3, voxel_size=4.0)


@pytest.fixture(scope="module")
def metal_free_subject():
    """The small subject without its implant: its brightest voxel is bone, far below HU_RANGE[1]."""
    return make_phantom(dataclasses.replace(sample_phantom_params(3), implant="none"), voxel_size=4.0)


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


def bead_subject(world_point: np.ndarray, shape=(40, 40, 40), voxel_size=2.0) -> Subject:
    """Air (-1000 HU) with one dense Gaussian bead (peak 2000 HU) centred on ``world_point`` (mm)."""
    affine = center_affine(np.diag([voxel_size, voxel_size, voxel_size, 1.0]), shape)
    bead = gaussian_bead(shape, world_to_voxel(affine, world_point[None])[0]).numpy()
    return Subject("bead", (-1000.0 + 3000.0 * bead).astype(np.float32), affine, np.zeros((len(PAPER), 3)))


def ncc(first: torch.Tensor, second: torch.Tensor) -> float:
    """Normalised cross-correlation of two images."""
    a, b = first.double().flatten(), second.double().flatten()
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return float((a * b).mean())


def relative_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    """Largest absolute difference over the largest absolute value of ``first``."""
    return float((first - second).abs().max() / first.abs().max())


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
    plain = drr.render_images(poses)
    for landmark_index in (0, 3, 6):
        landmark = subject.landmarks[landmark_index]
        bead = gaussian_bead(subject.hu.shape, world_to_voxel(subject.affine, landmark[None])[0])
        drr.drr.density += bead
        with_bead = drr.render_images(poses)
        drr.drr.density -= bead
        expected = drr.project_landmarks(poses)[0][:, landmark_index]
        for view in range(len(poses)):
            u, v = peak_position(with_bead[view] - plain[view])
            error = math.hypot(u - expected[view, 0].item(), v - expected[view, 1].item())
            assert error < 0.5, f"{renderer} landmark {landmark_index} view {view}: bead off by {error:.3f} px"


@pytest.mark.parametrize("landmarks", [PAPER, DEEPFLUORO], ids=lambda landmarks: landmarks.name)
def test_all_landmarks_inside_an_ap_drr(subject, landmarks):
    subject = dataclasses.replace(subject, landmarks=phantom_landmarks(sample_phantom_params(3), landmarks))
    drr = SubjectRenderer(subject, CAMERA)
    views = drr.render(geometry.ap_pose(SID))
    assert views.images.shape == (1, CAMERA.height, CAMERA.width)
    assert views.landmarks_2d.shape == (1, len(landmarks), 2)
    assert views.visible.all()


def test_a_landmark_the_subject_lacks_is_invisible_in_every_view(small_subject):
    landmarks = small_subject.landmarks.copy()
    landmarks[2] = np.nan  # L_MOF: not annotated
    lacking = dataclasses.replace(small_subject, landmarks=landmarks)
    poses = random_poses(seed=4, batch_size=6, max_degrees=10.0, max_mm=10.0)
    points, visible = SubjectRenderer(lacking, SMALL_CAMERA).project_landmarks(poses)
    full_points, full_visible = SubjectRenderer(small_subject, SMALL_CAMERA).project_landmarks(poses)
    assert not visible[:, 2].any() and torch.isnan(points[:, 2]).all()
    assert full_visible[:, 2].all()  # it would have been in every image
    others = [0, 1, 3, 4, 5, 6, 7]
    assert torch.equal(visible[:, others], full_visible[:, others])
    assert torch.equal(points[:, others], full_points[:, others])


def test_render_shapes_and_determinism(subject):
    drr = SubjectRenderer(subject, CAMERA, patch_size=32)
    poses = random_poses(seed=1, batch_size=2)
    first, second = drr.render(poses), drr.render(poses)
    assert torch.equal(first.images, second.images)
    assert first.images.dtype == torch.float32 and torch.isfinite(first.images).all()
    assert first.images.std() > 0


def test_visibility_marks_points_outside_the_image_behind_the_source_or_absent():
    nan = math.nan
    uv = torch.tensor([[[10.0, 10.0], [-0.1, 10.0], [10.0, 160.0], [159.9, 159.9], [10.0, 10.0], [nan, nan]]])
    depth = torch.tensor([[500.0, 500.0, 500.0, 500.0, -5.0, nan]])
    assert landmark_visibility(uv, depth, CAMERA).tolist() == [[True, False, False, True, False, False]]


def test_to_uint16_spans_the_full_range():
    images = torch.stack([torch.linspace(2.0, 5.0, 16).reshape(4, 4), torch.full((4, 4), 7.0)])
    out = to_uint16(images)
    assert out.dtype == np.uint16
    assert out[0].min() == 0 and out[0].max() == 65535
    assert (out[1] == 0).all()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"renderer": "raymarch"}, r"unknown renderer 'raymarch'; registered: \['nanodrr', 'siddon', 'trilinear'\]"),
        ({"patch_size": 48}, "patch_size 48 must tile"),
    ],
)
def test_bad_settings_are_refused(subject, arguments, message):
    with pytest.raises(ValueError, match=message):
        SubjectRenderer(subject, CAMERA, **arguments)


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
def test_a_bead_in_air_peaks_at_its_projection(renderer):
    poses = random_poses(seed=4, batch_size=3, max_degrees=15.0, max_mm=15.0)
    for point in (np.array([12.3, -7.1, 5.6]), np.array([-15.2, 9.8, -11.4])):
        drr = SubjectRenderer(bead_subject(point), BEAD_CAMERA, renderer=renderer)
        images = drr.render_images(poses)
        expected = geometry.project(torch.from_numpy(point)[None, None].expand(len(poses), 1, 3), poses, BEAD_CAMERA)
        for view in range(len(poses)):
            u, v = peak_position(images[view])
            error = math.hypot(u - expected[view, 0, 0].item(), v - expected[view, 0, 1].item())
            assert error < 0.5, f"{renderer} bead at {point} view {view}: off by {error:.3f} px"


def test_nanodrr_renders_diffdrr_trilinear_images_in_the_same_units(small_subject):
    poses = random_poses(seed=5, batch_size=3, max_degrees=20.0, max_mm=20.0)
    trilinear = SubjectRenderer(small_subject, SMALL_CAMERA, renderer="trilinear").render_images(poses)
    nanodrr = SubjectRenderer(small_subject, SMALL_CAMERA, renderer="nanodrr").render_images(poses)
    assert nanodrr.shape == trilinear.shape and nanodrr.dtype == torch.float32
    for view in range(len(poses)):
        assert ncc(nanodrr[view], trilinear[view]) > 0.99
        assert nanodrr[view].mean() / trilinear[view].mean() == pytest.approx(1.0, abs=0.01)


def test_the_density_is_diffdrrs_with_its_scale_fixed_in_hu(metal_free_subject):
    """DiffDRR's own conversion, its per-volume zero (the lowest soft tissue) and top (the max) set to -800 and 3071."""
    hu = clipped_hu(metal_free_subject)
    theirs = read(ScalarImage(tensor=torch.from_numpy(hu)[None], affine=metal_free_subject.affine.copy()))
    theirs = theirs.density.data[0].numpy()
    lowest = hu[(hu > AIR_HU) & (hu <= 350)].min()  # DiffDRR's soft tissue: (-800, 350] HU
    assert hu.max() < HU_RANGE[1] - 1000  # no metal: DiffDRR's scale is this volume's own
    expected = np.where(hu > AIR_HU, theirs * (hu.max() - lowest) + lowest - AIR_HU, 0) / (HU_RANGE[1] - AIR_HU)
    np.testing.assert_allclose(diffdrr_density(metal_free_subject.hu), expected, rtol=1e-5, atol=1e-6)
    hu = np.array([[[-3024.0, -1000.0, -800.0, -500.0, 40.0, 1000.0, 3071.0, 25000.0]]])
    expected = [0.0, 0.0, 0.0, 300 / 3871, 840 / 3871, 1800 / 3871, 1.0, 1.0]
    np.testing.assert_allclose(diffdrr_density(hu).ravel(), expected, rtol=1e-6)


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
def test_every_renderer_integrates_the_one_density(small_subject, renderer):
    drr = SubjectRenderer(small_subject, SMALL_CAMERA, renderer=renderer)
    assert np.array_equal(drr.drr.density.numpy(), diffdrr_density(small_subject.hu))


@pytest.mark.parametrize("renderer", ["trilinear", "siddon"])
def test_diffdrrs_module_renders_the_subject_as_reads_would(small_subject, renderer):
    """Skipping diffdrr.data.read (and its conversion) leaves DiffDRR's frame and detector as they were."""
    poses = random_poses(seed=8, batch_size=2)
    ours = SubjectRenderer(small_subject, SMALL_CAMERA, renderer=renderer)
    volume = ScalarImage(tensor=torch.from_numpy(clipped_hu(small_subject))[None], affine=small_subject.affine.copy())
    camera = SMALL_CAMERA
    theirs = DRR(read(volume), sdd=camera.sdd, height=camera.height, delx=camera.delx, renderer=renderer)
    theirs.density.copy_(ours.drr.density)
    angles, translation = geometry.pose_to_euler_zxy(poses)
    kwargs = ours.drr.render_kwargs
    for view in range(len(poses)):
        image = theirs(angles[view : view + 1].float(), translation[view : view + 1].float(), **EULER, **kwargs)
        assert torch.equal(image[0, 0], ours.render_images(poses[view : view + 1])[0])


def bright_voxel_pixels(renderer: SubjectRenderer, voxel: tuple[int, int, int], poses: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the pixels within 3 px of the projection of one voxel's centre."""
    point = torch.from_numpy(renderer.subject.affine[:3, :3] @ voxel + renderer.subject.affine[:3, 3])
    u, v = geometry.project(point.expand(len(poses), 1, 3), poses, renderer.camera)[:, 0].unbind(-1)
    rows, columns = torch.meshgrid(
        torch.arange(renderer.camera.height), torch.arange(renderer.camera.width), indexing="ij"
    )
    distance = torch.hypot(columns[None] + 0.5 - u[:, None, None], rows[None] + 0.5 - v[:, None, None])
    return distance <= 3


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
@pytest.mark.parametrize("bright_hu", [3071.0, 30000.0])  # the 12-bit top, and metal on an extended HU scale
def test_one_bright_voxel_changes_only_its_own_rays(metal_free_subject, renderer, bright_hu):
    """DiffDRR's own scaling would have dimmed this subject's whole DRR by a third for one 3071 HU voxel."""
    voxel = (40, 30, 20)  # soft tissue near the body's centre, no landmark near it
    assert metal_free_subject.hu[voxel] < 100 and metal_free_subject.hu.max() < 2000
    hu = metal_free_subject.hu.copy()
    hu[voxel] = bright_hu
    poses = random_poses(seed=9, batch_size=3)
    plain = SubjectRenderer(metal_free_subject, SMALL_CAMERA, renderer=renderer)
    bright = SubjectRenderer(
        Subject("bright", hu, metal_free_subject.affine, metal_free_subject.landmarks), SMALL_CAMERA, renderer=renderer
    )
    near = bright_voxel_pixels(plain, voxel, poses)
    before, after = plain.render_images(poses), bright.render_images(poses)
    assert (after - before)[near].max() > 0.01 * before.max()  # the voxel shows where it projects
    assert (after - before)[~near].abs().max() <= 1e-5 * before.max()  # and nowhere else
    soft_before, bone_before = plain.render_attenuation(poses)
    soft_after, bone_after = bright.render_attenuation(poses)
    assert (bone_after - bone_before)[~near].abs().max() <= 1e-5 * bone_before.max()  # physical units: fixed anyway
    assert (soft_after - soft_before)[~near].abs().max() <= 1e-5 * soft_before.max()


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
def test_a_table_and_a_truncated_field_render_on_the_same_scale(renderer):
    """A CT cut off at its field's edge (the body and table cut at both sides) renders; its middle is unchanged."""
    params = dataclasses.replace(sample_phantom_params(6), table=True, implant="none")
    whole = make_phantom(params, voxel_size=4.0)
    cut = (whole.hu.shape[0] - 40) // 2  # keep the middle 40 or 41 columns: 160 mm of a wider body and table
    hu = np.ascontiguousarray(whole.hu[cut : whole.hu.shape[0] - cut])
    affine = whole.affine.copy()
    affine[:3, 3] += whole.affine[:3, :3] @ (cut, 0, 0)  # every kept voxel where it was
    truncated = Subject("truncated", hu, affine, whole.landmarks)
    assert (hu[[0, -1]] > -200).mean() > 0.3  # the body and table reach the field's edges
    pose = geometry.ap_pose(SID)
    kwargs = {"renderer": renderer, "n_points": 200}
    full = SubjectRenderer(whole, SMALL_CAMERA, **kwargs).render_images(pose)[0]
    image = SubjectRenderer(truncated, SMALL_CAMERA, **kwargs).render_images(pose)[0]
    assert torch.isfinite(image).all() and image.min() >= 0
    middle = slice(20, 28)  # the 8 middle columns: rays that never leave the 160 mm kept
    assert image[:, middle].min() > 0.05 * full.max()
    assert (image[:, middle] - full[:, middle]).abs().max() <= 1e-5 * full[:, middle].max()  # the same scale
    assert image[:, :4].max() < 0.9 * full[:, :4].max()  # the cut-off sides are missing


def test_nanodrr_uses_triton_on_cuda_and_torch_on_a_cpu(small_subject):
    assert NANODRR_BACKENDS == {"cuda": "triton"}
    assert SubjectRenderer(small_subject, SMALL_CAMERA, renderer="nanodrr").drr.backend == "torch"


def test_nanodrr_patches_render_the_same_image(small_subject):
    poses = random_poses(seed=6, batch_size=2)
    whole = SubjectRenderer(small_subject, SMALL_CAMERA, renderer="nanodrr").render_images(poses)
    bands = SubjectRenderer(small_subject, SMALL_CAMERA, renderer="nanodrr", patch_size=8).render_images(poses)
    assert relative_difference(whole, bands) <= BATCH_TOLERANCE


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
def test_batch_invariance_is_what_each_renderer_declares(small_subject, renderer):
    poses = random_poses(seed=7, batch_size=4)
    drr = SubjectRenderer(small_subject, SMALL_CAMERA, renderer=renderer, views_per_call=len(poses))
    alone = torch.cat([drr.drr(pose[None]) for pose in poses])
    together = drr.drr(poses)
    difference = relative_difference(alone, together)
    measured = difference <= BATCH_TOLERANCE
    assert measured == RENDERERS[renderer].batch_invariant, (
        f"{renderer} declares batch_invariant={RENDERERS[renderer].batch_invariant}, "
        f"but a pose alone and in a batch differ by {difference:.2e} of the peak"
    )
    # SubjectRenderer batches only where that changes nothing.
    assert drr.poses_per_call == (len(poses) if measured else 1)
    assert relative_difference(alone, drr.render_images(poses)) <= BATCH_TOLERANCE


def test_a_renderer_name_is_registered_once():
    with pytest.raises(ValueError, match="renderer 'nanodrr' is registered twice"):
        register("nanodrr", batch_invariant=True)(lambda *arguments: None)


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
def test_an_edit_of_a_renderers_density_shows_in_its_next_render(small_subject, renderer):
    drr = SubjectRenderer(small_subject, SMALL_CAMERA, renderer=renderer)
    pose = geometry.ap_pose(SID)
    assert drr.drr.density.shape == small_subject.hu.shape and drr.render_images(pose).max() > 10
    drr.drr.density.zero_()
    assert drr.render_images(pose).abs().max() == 0


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
def test_attenuation_renders_in_physical_units_and_leaves_the_drr_alone(renderer):
    """A 40 mm water cube with an 8 mm bone core (1100 HU): the central ray's depths are mu * length."""
    hu = np.full((40, 40, 40), -1000.0, dtype=np.float32)
    hu[10:30, 10:30, 10:30], hu[18:22, 18:22, 18:22] = 0.0, 1100.0
    cube = Subject("cube", hu, center_affine(np.diag([2.0, 2.0, 2.0, 1.0]), hu.shape), np.zeros((8, 3)))
    drr = SubjectRenderer(cube, Camera(sdd=1020.0, height=32, width=32, delx=4.0, dely=4.0), renderer=renderer)
    pose = geometry.ap_pose(800.0)
    before = drr.render_images(pose)
    soft, bone = drr.render_attenuation(pose)
    assert soft.max().item() == pytest.approx(WATER_MU * (32 + 8 * 1.1), rel=0.03)
    assert bone.max().item() == pytest.approx(WATER_MU * 1.0 * 8, rel=0.03)
    assert torch.equal(drr.render_images(pose), before)
