import math

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from components import geometry, metrics, registration
from components.geometry import Camera
from components.phantom import phantom_subject

CAMERA = Camera(sdd=1020.0, height=256, width=256, delx=431 / 256, dely=431 / 256)
SID = 800.0


@pytest.fixture(scope="module")
def landmarks():
    """(4, 8, 3) landmarks of four phantom subjects."""
    return torch.stack([torch.from_numpy(phantom_subject(seed, voxel_size=4.0).landmarks) for seed in range(4)])


def random_poses(seed: int, batch_size: int, max_degrees=45.0, max_mm=100.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    angles = (torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(max_degrees)
    offsets = (torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) * 2 - 1) * max_mm
    return geometry.pose_from_euler_zxy(angles, offsets + torch.tensor([0.0, SID, 0.0], dtype=torch.float64))


def scene(landmarks, seed: int, batch_size: int, noise_px=0.0, **ranges):
    """(B, 8, 3) landmarks, (B, 8, 2) their projections (plus noise) and the (B, 6) true poses."""
    poses = random_poses(seed, batch_size, **ranges)
    points = landmarks[torch.arange(batch_size) % len(landmarks)]
    generator = torch.Generator().manual_seed(seed + 1000)
    observed = geometry.project(points, poses, CAMERA)
    observed = observed + noise_px * torch.randn(observed.shape, generator=generator, dtype=torch.float64)
    return points, observed, poses


def test_exact_projections_are_recovered_from_the_default_start(landmarks):
    points, observed, poses = scene(landmarks, seed=0, batch_size=128)
    result = registration.solve(points, observed, CAMERA)
    assert result.converged.all()
    assert metrics.rotation_error_deg(result.pose, poses).max() < 1e-6
    assert metrics.translation_error_mm(result.pose, poses).max() < 1e-6
    assert result.residuals.abs().max() < 1e-6


@pytest.mark.parametrize("noise_px", [1.0, 2.0, 3.0])
def test_noisy_fit_is_as_good_as_scipy_started_at_the_truth(landmarks, noise_px):
    points, observed, poses = scene(landmarks, seed=int(noise_px), batch_size=12, noise_px=noise_px)
    result = registration.solve(points, observed, CAMERA)
    ours = result.residuals.pow(2).sum(-1).mean(-1).sqrt()
    for sample in range(len(points)):

        def residual(pose, sample=sample):
            pose = torch.from_numpy(pose)[None]
            return (
                (geometry.project(points[sample : sample + 1], pose, CAMERA)[0] - observed[sample]).reshape(-1).numpy()
            )

        reference = least_squares(residual, poses[sample].numpy(), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
        scipy_rmse = math.sqrt(np.mean(reference.fun.reshape(-1, 2) ** 2) * 2)
        assert ours[sample].item() <= scipy_rmse + 1e-6


def central_difference(function, tensor: torch.Tensor, index, eps: float) -> torch.Tensor:
    plus, minus = tensor.clone(), tensor.clone()
    plus[index] += eps
    minus[index] -= eps
    return (function(plus) - function(minus)) / (2 * eps)


def test_implicit_gradient_matches_finite_differences_of_the_whole_solve(landmarks):
    points, observed, _ = scene(landmarks, seed=5, batch_size=2, noise_px=2.0, max_degrees=30.0, max_mm=50.0)
    weights = torch.linspace(0.5, 1.5, 16, dtype=torch.float64).reshape(2, 8)
    observed_grad, weights_grad = observed.clone().requires_grad_(), weights.clone().requires_grad_()
    pose = registration.solve(points, observed_grad, CAMERA, weights=weights_grad).pose
    jacobians = [
        torch.autograd.grad(pose[:, k].sum(), (observed_grad, weights_grad), retain_graph=True) for k in range(6)
    ]

    def solved(observed_=observed, weights_=weights):
        with torch.no_grad():
            return registration.solve(points, observed_, CAMERA, weights=weights_).pose

    for sample, landmark, axis in [(0, 0, 0), (0, 3, 1), (1, 6, 0), (1, 7, 1)]:
        expected = central_difference(lambda o: solved(observed_=o), observed, (sample, landmark, axis), 1e-4)[sample]
        actual = torch.stack([jacobian[0][sample, landmark, axis] for jacobian in jacobians])
        assert (actual - expected).norm() / expected.norm() < 1e-4
    for sample, landmark in [(0, 2), (1, 5)]:
        expected = central_difference(lambda w: solved(weights_=w), weights, (sample, landmark), 1e-4)[sample]
        actual = torch.stack([jacobian[1][sample, landmark] for jacobian in jacobians])
        assert (actual - expected).norm() / expected.norm() < 1e-4


@pytest.mark.parametrize("robust", ["huber", "cauchy"])
def test_one_landmark_off_by_50_px_does_not_ruin_the_pose(landmarks, robust):
    points, observed, poses = scene(landmarks, seed=7, batch_size=16, max_degrees=30.0, max_mm=50.0)
    observed[:, 2] += torch.tensor([30.0, 40.0], dtype=torch.float64)  # 50 px
    result = registration.solve(points, observed, CAMERA, robust=robust, robust_scale=1.0)
    assert metrics.rotation_error_deg(result.pose, poses).max() < 1.0
    assert metrics.translation_error_mm(result.pose, poses).max() < 2.0
    plain = registration.solve(points, observed, CAMERA)
    assert metrics.translation_error_mm(plain.pose, poses).max() > 2.0  # the outlier matters without it


def test_invisible_landmarks_are_ignored(landmarks):
    points, observed, poses = scene(landmarks, seed=8, batch_size=8)
    weights = torch.ones(8, 8, dtype=torch.float64)
    weights[:, [0, 4]] = 0.0
    observed[:, [0, 4]] = torch.nan
    result = registration.solve(points, observed, CAMERA, weights=weights)
    assert result.converged.all()
    assert metrics.rotation_error_deg(result.pose, poses).max() < 1e-6
    assert torch.isnan(result.residuals[:, [0, 4]]).all() and torch.isfinite(result.residuals[:, [1, 2, 3]]).all()


def test_four_landmarks_suffice(landmarks):
    points, observed, poses = scene(landmarks, seed=9, batch_size=8, max_degrees=30.0)
    weights = torch.zeros(8, 8, dtype=torch.float64)
    weights[:, [0, 1, 4, 7]] = 1.0
    result = registration.solve(points, observed, CAMERA, weights=weights)
    assert result.converged.all()
    assert metrics.rotation_error_deg(result.pose, poses).max() < 1e-6


def test_bad_samples_are_flagged_without_harming_the_others(landmarks):
    points, observed, poses = scene(landmarks, seed=10, batch_size=6)
    weights = torch.ones(6, 8, dtype=torch.float64)
    weights[1, 3:] = 0.0  # 3 usable landmarks
    observed[2] = torch.nan  # no usable landmark
    points[3, :, 1] = 5.0  # coplanar landmarks
    points[4] = torch.linspace(-100, 100, 8, dtype=torch.float64)[:, None] * torch.tensor(
        [1.0, 0.2, 0.5], dtype=torch.float64
    )  # collinear
    observed_grad = observed.clone().requires_grad_()
    result = registration.solve(points, observed_grad, CAMERA, weights=weights)
    assert result.converged.tolist() == [True, False, False, False, False, True]
    assert torch.isnan(result.pose[1:5]).all()
    good = torch.tensor([0, 5])
    assert metrics.rotation_error_deg(result.pose[good], poses[good]).max() < 1e-6
    result.pose[good].sum().backward()
    assert torch.isfinite(observed_grad.grad[good]).all() and observed_grad.grad[good].abs().sum() > 0
    assert (observed_grad.grad[1:5].nan_to_num(1.0) == 0).all()


@pytest.mark.parametrize("minimum", [4, 6, 8])
def test_fewer_usable_landmarks_than_the_minimum_is_a_pose_failure_not_an_error(landmarks, minimum):
    points, observed, poses = scene(landmarks, seed=18, batch_size=5)
    points[:, 5] = torch.nan  # a landmark no subject has (absent: NaN)
    weights = torch.ones(5, 8, dtype=torch.float64)
    for sample, usable in enumerate((7, 6, 5, 4, 7)):  # sample k keeps ``usable`` of its 7 present landmarks
        weights[sample, [slot for slot in range(8) if slot != 5][usable:]] = 0.0
    for solve in (
        lambda: registration.solve(points, observed, CAMERA, weights=weights, min_landmarks=minimum),
        lambda: registration.solve_unrolled(
            points, observed, CAMERA, geometry.ap_pose(SID, 5), weights=weights, min_landmarks=minimum
        ),
    ):
        result = solve()
        solved = torch.isfinite(result.pose).all(-1)
        assert solved.tolist() == [usable >= minimum for usable in (7, 6, 5, 4, 7)]
        assert result.converged[~solved].logical_not().all()
    exact = registration.solve(points, observed, CAMERA, weights=weights, min_landmarks=4)
    assert metrics.rotation_error_deg(exact.pose, poses).max() < 1e-6  # the absent landmark never mattered


def test_absent_landmarks_send_no_nan_into_the_unrolled_solvers_gradients(landmarks):
    points, observed, _ = scene(landmarks, seed=19, batch_size=3, noise_px=1.0, max_degrees=10.0, max_mm=20.0)
    points[:, 2] = torch.nan  # absent: NaN in 3D and 2D, weight 1 as a data set's visibility never gives it
    observed[:, 2] = torch.nan
    weights = torch.ones(3, 8, dtype=torch.float64)
    weights[0, 3:] = 0.0  # sample 0: 2 usable landmarks, a pose failure
    observed_grad = observed.clone().requires_grad_()
    result = registration.solve_unrolled(points, observed_grad, CAMERA, geometry.ap_pose(SID, 3), weights=weights)
    assert torch.isnan(result.pose[0]).all() and torch.isfinite(result.pose[1:]).all()
    result.pose[1:].sum().backward()
    assert torch.isfinite(observed_grad.grad).all() and (observed_grad.grad[:, 2] == 0).all()
    assert observed_grad.grad[1:, [0, 1, 3]].abs().sum() > 0


@pytest.mark.parametrize("minimum", [3, 0, 4.5, True])
def test_a_minimum_below_four_landmarks_is_refused(landmarks, minimum):
    points, observed, _ = scene(landmarks, seed=20, batch_size=1)
    for solve in (
        registration.solve,
        lambda p, o, c, **k: registration.solve_unrolled(p, o, c, geometry.ap_pose(SID), **k),
    ):
        with pytest.raises(ValueError, match=f"min_landmarks must be an integer >= 4, got {minimum!r}"):
            solve(points, observed, CAMERA, min_landmarks=minimum)


def test_batched_equals_one_at_a_time(landmarks):
    points, observed, _ = scene(landmarks, seed=11, batch_size=6, noise_px=2.0)
    batched = registration.solve(points, observed, CAMERA).pose
    looped = torch.cat([registration.solve(points[i : i + 1], observed[i : i + 1], CAMERA).pose for i in range(6)])
    assert torch.allclose(batched, looped, atol=1e-9)


def test_float32_in_float32_out(landmarks):
    points, observed, poses = scene(landmarks, seed=12, batch_size=4)
    result = registration.solve(points.float(), observed.float(), CAMERA)
    assert result.pose.dtype == torch.float32 and result.residuals.dtype == torch.float32
    assert metrics.rotation_error_deg(result.pose.double(), poses).max() < 1e-3


def test_the_papers_identity_start_stays_available(landmarks):
    points, observed, poses = scene(landmarks, seed=13, batch_size=8, max_degrees=15.0, max_mm=40.0)
    result = registration.solve(points, observed, CAMERA, init=geometry.ap_pose(SID, 8))
    assert result.converged.all() and metrics.rotation_error_deg(result.pose, poses).max() < 1e-6


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_unrolled_solver_from_the_ap_view_is_differentiable_and_bounded(landmarks, optimizer):
    points, observed, _ = scene(landmarks, seed=14, batch_size=4, noise_px=1.0, max_degrees=10.0, max_mm=20.0)
    low = torch.tensor([-0.5, -0.5, -0.5, -30.0, SID - 30.0, -30.0], dtype=torch.float64)
    high = torch.tensor([0.5, 0.5, 0.5, 30.0, SID + 30.0, 30.0], dtype=torch.float64)
    observed_grad = observed.clone().requires_grad_()
    result = registration.solve_unrolled(
        points, observed_grad, CAMERA, geometry.ap_pose(SID, 4), optimizer=optimizer, iterations=100, bounds=(low, high)
    )
    best = registration.solve(points, observed, CAMERA)
    rmse = lambda r: r.residuals.pow(2).sum(-1).mean(-1).sqrt()  # noqa: E731
    assert (rmse(result) < rmse(best) + (0.5 if optimizer == "adam" else 1e-3)).all()
    assert ((result.pose >= low - 1e-12) & (result.pose <= high + 1e-12)).all()
    result.pose.sum().backward()
    assert torch.isfinite(observed_grad.grad).all() and observed_grad.grad.abs().sum() > 0


def test_unrolled_solver_stops_at_its_bounds(landmarks):
    points, observed, _ = scene(landmarks, seed=15, batch_size=2, max_degrees=0.0, max_mm=0.0)
    observed = observed + torch.tensor([60.0, 0.0], dtype=torch.float64)  # wants a large x translation
    high = torch.tensor([0.5, 0.5, 0.5, 5.0, SID + 30.0, 5.0], dtype=torch.float64)
    result = registration.solve_unrolled(points, observed, CAMERA, geometry.ap_pose(SID, 2), bounds=(-high, high))
    assert torch.allclose(result.pose[:, 3].abs(), torch.full((2,), 5.0, dtype=torch.float64))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, o: registration.solve(p, o, CAMERA, robust="tukey"), "robust must be None, 'huber' or 'cauchy'"),
        (
            lambda p, o: registration.solve_unrolled(p, o, CAMERA, geometry.ap_pose(SID, 1), optimizer="sgd"),
            "optimizer must be",
        ),
    ],
)
def test_bad_options_are_refused(landmarks, call, message):
    points, observed, _ = scene(landmarks, seed=16, batch_size=1)
    with pytest.raises(ValueError, match=message):
        call(points, observed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_matches_cpu(landmarks):
    points, observed, _ = scene(landmarks, seed=17, batch_size=32, noise_px=2.0)
    cpu = registration.solve(points, observed, CAMERA)
    observed_gpu = observed.cuda().requires_grad_()
    gpu = registration.solve(points.cuda(), observed_gpu, CAMERA)
    gpu.pose.sum().backward()
    assert torch.allclose(gpu.pose.detach().cpu(), cpu.pose, atol=1e-8)
    assert torch.isfinite(observed_gpu.grad).all()
