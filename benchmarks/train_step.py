"""Time per training step: BCE only, BCE + pose loss (implicit registration), BCE + pose loss (unrolled).

Same batch, model and resolution for all three, in one run: 16 DRRs of the demo preset's geometry
at 128 px (phantom landmarks, random poses), the default U-Net, Adam; one step is forward, loss,
backward and optimizer update. On a CPU the threads are left at torch's default, as training runs.

Run: ``python benchmarks/train_step.py [--quick]``; writes ``benchmarks/results/train_step.json``.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import goal, median_seconds, write_result  # noqa: E402
from components import geometry, losses  # noqa: E402
from components.model import make_unet  # noqa: E402
from components.phantom import phantom_subject  # noqa: E402
from components.poses import sample_poses  # noqa: E402
from study.config import load_config  # noqa: E402

VARIANTS = {
    "bce": ({"bce": 1.0}, "implicit"),
    "bce_pose_implicit": ({"bce": 1.0, "pose": 0.01}, "implicit"),
    "bce_pose_unrolled": ({"bce": 1.0, "pose": 0.01}, "unrolled"),
}


def make_batch(batch_size: int, device: torch.device) -> tuple[dict, losses.LossContext]:
    config = load_config("demo")
    camera = config.data.render_camera()
    subject = phantom_subject(0, voxel_size=4.0)
    landmarks_3d = torch.from_numpy(subject.landmarks).expand(batch_size, -1, -1).clone()
    poses = sample_poses(0, subject.subject_id, range(batch_size), config.data.poses.ranges())
    landmarks_2d = geometry.project(landmarks_3d, poses, camera)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(batch_size, 1, camera.height, camera.width, generator=generator),
        "landmarks_2d": landmarks_2d,
        "visible": torch.ones(batch_size, 8, dtype=torch.bool),
        "landmarks_3d": landmarks_3d,
        "pose": poses,
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    return batch, losses.LossContext(camera, config.data.poses.source_to_isocenter)


def step_seconds(weights: dict, solver: str, batch: dict, context: losses.LossContext, repeats: int, device) -> float:
    torch.manual_seed(0)
    model = make_unet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_function = losses.WeightedLoss(weights)
    context = dataclasses.replace(context, settings=dataclasses.replace(context.settings, solver=solver))

    def step():
        optimizer.zero_grad()
        loss, _ = loss_function(model(batch["image"]), batch, context)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return median_seconds(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, context = make_batch(16, device)
    repeats = 3 if args.quick else 9
    results = {"batch_size": 16, "image_px": 128, "device": str(device), "threads": torch.get_num_threads()}
    for name, (weights, solver) in VARIANTS.items():
        results[f"{name}_step_ms"] = step_seconds(weights, solver, batch, context, repeats, device) * 1e3
    results["implicit_pose_overhead_pct"] = 100 * (results["bce_pose_implicit_step_ms"] / results["bce_step_ms"] - 1)
    results["unrolled_pose_overhead_pct"] = 100 * (results["bce_pose_unrolled_step_ms"] / results["bce_step_ms"] - 1)
    overhead = results["implicit_pose_overhead_pct"]
    goals = [goal("implicit pose loss added to the BCE-only step, batch 16, 128 px", overhead, "<=", 15, "%")]
    write_result("train_step", results, goals, threads=results["threads"], gpu_file=device.type == "cuda")


if __name__ == "__main__":
    main()
