"""Registration speed and accuracy: our batched solver against OpenCV's solvePnP and the paper's solver.

All on the same noisy inputs: phantom landmarks, poses within +-15 degrees and the demo's
translation ranges around the AP view, 2D landmarks with 2 px Gaussian noise on a 256 px image.

- ours: ``registration.solve`` at batch sizes 1, 16, 256 and 4096, forward and forward plus backward
  (implicit gradients to the 2D landmarks), time per sample;
- OpenCV ``solvePnP`` with SOLVEPNP_ITERATIVE and SOLVEPNP_SQPNP, time per call (one image);
- the paper's solver: unrolled Adam, 100 iterations from the AP view, forward plus backward, per
  image as the paper runs it (and batched, for reference).

Run: ``python benchmarks/registration.py [--quick]`` (needs the ``bench`` extra: opencv-python-headless);
writes ``benchmarks/results/registration.json``.
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import goal, median_seconds, write_result  # noqa: E402
from components import geometry, metrics, registration  # noqa: E402
from components.geometry import Camera  # noqa: E402
from components.phantom import phantom_subject  # noqa: E402

CAMERA = Camera(sdd=1020.0, height=256, width=256, delx=431 / 256, dely=431 / 256)
SID = 800.0
NOISE_PX = 2.0


def inputs(count: int, seed: int = 0):
    """(count, 8, 3) landmarks, (count, 8, 2) noisy projections, (count, 6) true poses."""
    generator = torch.Generator().manual_seed(seed)
    subjects = torch.stack([torch.from_numpy(phantom_subject(s, voxel_size=4.0).landmarks) for s in range(8)])
    points = subjects[torch.arange(count) % len(subjects)]
    angles = (torch.rand(count, 3, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(15)
    offsets = (torch.rand(count, 3, generator=generator, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [20.0, 40.0, 20.0], dtype=torch.float64
    )
    poses = geometry.pose_from_euler_zxy(angles, offsets + torch.tensor([0.0, SID, 0.0], dtype=torch.float64))
    observed = geometry.project(points, poses, CAMERA)
    observed = observed + NOISE_PX * torch.randn(observed.shape, generator=generator, dtype=torch.float64)
    return points, observed, poses


def accuracy(pose: torch.Tensor, points: torch.Tensor, observed: torch.Tensor, truth: torch.Tensor) -> dict:
    rmse = (geometry.project(points, pose, CAMERA) - observed).pow(2).sum(-1).mean(-1).sqrt()
    return {
        "reprojection_rmse_px_mean": rmse.mean().item(),
        "rotation_error_deg_median": metrics.rotation_error_deg(pose, truth).median().item(),
        "translation_error_mm_median": metrics.translation_error_mm(pose, truth).median().item(),
        "mtre_mm_median": metrics.mean_target_registration_error_mm(pose, truth, points).median().item(),
        "failures": int((~torch.isfinite(pose).all(-1)).sum()),
    }


def ours(points, observed, batch_size: int, repeats: int) -> dict:
    batch_points, batch_observed = points[:batch_size], observed[:batch_size]

    def forward():
        with torch.no_grad():
            registration.solve(batch_points, batch_observed, CAMERA)

    def forward_backward():
        landmarks = batch_observed.clone().requires_grad_()
        registration.solve(batch_points, landmarks, CAMERA).pose.sum().backward()

    forward_s, both_s = median_seconds(forward, repeats), median_seconds(forward_backward, repeats)
    return {
        "forward_ms": forward_s * 1e3,
        "forward_backward_ms": both_s * 1e3,
        "forward_us_per_sample": forward_s / batch_size * 1e6,
        "forward_backward_us_per_sample": both_s / batch_size * 1e6,
    }


def opencv(points, observed, flag) -> tuple[float, torch.Tensor]:
    """Seconds per call and (B, 6) poses of solvePnP on each sample."""
    k = geometry.make_k(CAMERA).numpy()
    poses, seconds = [], []
    for sample_points, sample_observed in zip(points.numpy(), observed.numpy()):
        start = time.perf_counter()
        ok, rvec, tvec = cv2.solvePnP(sample_points, sample_observed, k, None, flags=flag)
        seconds.append(time.perf_counter() - start)
        rotation = torch.from_numpy(cv2.Rodrigues(rvec)[0])[None]
        pose = (
            geometry.extrinsic_to_pose(rotation, torch.from_numpy(tvec[:, 0])[None])[0]
            if ok
            else torch.full((6,), math.nan)
        )
        poses.append(pose.to(torch.float64))
    return statistics.median(seconds), torch.stack(poses)


def paper_solver(points, observed, batch_size: int, repeats: int) -> float:
    """Seconds per sample of forward plus backward through 100 unrolled Adam iterations."""
    batch_points, batch_observed = points[:batch_size], observed[:batch_size]

    def forward_backward():
        landmarks = batch_observed.clone().requires_grad_()
        registration.solve_unrolled(
            batch_points, landmarks, CAMERA, geometry.ap_pose(SID, batch_size)
        ).pose.sum().backward()

    return median_seconds(forward_backward, repeats) / batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    repeats = 3 if args.quick else 7
    points, observed, truth = inputs(4096)

    results = {"threads": 1, "noise_px": NOISE_PX, "image_px": CAMERA.height, "landmarks": 8}
    for batch_size in (1, 16, 256, 4096):
        for name, value in ours(
            points, observed, batch_size, repeats if batch_size < 4096 else max(3, repeats // 2)
        ).items():
            results[f"ours_batch{batch_size}_{name}"] = value
    evaluated = 512 if args.quick else 4096  # the same samples for every method's accuracy
    with torch.no_grad():
        solved = registration.solve(points[:evaluated], observed[:evaluated], CAMERA).pose
    results["ours_accuracy"] = accuracy(solved, points[:evaluated], observed[:evaluated], truth[:evaluated])

    for name, flag in (("iterative", cv2.SOLVEPNP_ITERATIVE), ("sqpnp", cv2.SOLVEPNP_SQPNP)):
        seconds, poses = opencv(points[:evaluated], observed[:evaluated], flag)
        results[f"opencv_{name}_us_per_call"] = seconds * 1e6
        results[f"opencv_{name}_accuracy"] = accuracy(
            poses, points[:evaluated], observed[:evaluated], truth[:evaluated]
        )

    results["paper_adam100_per_image_forward_backward_us_per_sample"] = paper_solver(points, observed, 1, repeats) * 1e6
    results["paper_adam100_batch256_forward_backward_us_per_sample"] = (
        paper_solver(points, observed, 256, max(3, repeats // 2)) * 1e6
    )
    with torch.no_grad():
        paper_poses = registration.solve_unrolled(
            points[:evaluated], observed[:evaluated], CAMERA, geometry.ap_pose(SID, evaluated)
        ).pose
    results["paper_adam100_accuracy"] = accuracy(
        paper_poses, points[:evaluated], observed[:evaluated], truth[:evaluated]
    )

    fastest_opencv = min(results["opencv_iterative_us_per_call"], results["opencv_sqpnp_us_per_call"])
    best_opencv_rmse = min(
        results["opencv_iterative_accuracy"]["reprojection_rmse_px_mean"],
        results["opencv_sqpnp_accuracy"]["reprojection_rmse_px_mean"],
    )
    paper_speedup = (
        results["paper_adam100_per_image_forward_backward_us_per_sample"]
        / results["ours_batch256_forward_backward_us_per_sample"]
    )
    goals = [
        goal(
            "batch 256 forward plus backward, one CPU core",
            results["ours_batch256_forward_backward_ms"],
            "<=",
            50,
            "ms",
        ),
        goal(
            "time per sample at batch 256 against OpenCV's fastest call",
            results["ours_batch256_forward_us_per_sample"],
            "<=",
            fastest_opencv,
            "us",
        ),
        goal(
            "time per sample at batch 4096 against OpenCV's fastest call",
            results["ours_batch4096_forward_us_per_sample"],
            "<=",
            fastest_opencv,
            "us",
        ),
        goal(
            "speed-up per sample over the paper's solver (forward plus backward, per image as in the paper)",
            paper_speedup,
            ">=",
            100,
            "x",
        ),
        goal(
            "reprojection RMSE against OpenCV's best, same inputs",
            results["ours_accuracy"]["reprojection_rmse_px_mean"],
            "<=",
            best_opencv_rmse + 1e-6,
            "px",
        ),
    ]
    write_result("registration", results, goals)


if __name__ == "__main__":
    main()
