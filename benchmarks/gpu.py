"""What a GPU does for a study: rendering, training steps, registration, real epochs, and the study's wall time.

On one GPU (at most 8 minutes), in one run:

- **rendering**: DRRs/s at 256 px of every renderer variant the platform offers, in batches:
  DiffDRR's Siddon and trilinear, nanodrr's torch path and its Triton kernel (CUDA only), each
  through ``SubjectRenderer`` as generation uses it (a renderer that is not batch invariant, DiffDRR's
  trilinear, renders one pose per call there);
- **train step**: the U-Net of the paper preset at 256 px, batch 16, BCE alone and BCE + pose loss
  (the registration in the loss), each with bf16 autocast off and on; the pose loss's overhead in %;
- **registration**: microseconds per sample of ``registration.solve`` at batch 4096;
- **epochs**: two epochs of the paper preset's baseline on a subset of its data set, trained by
  ``study.training.driver.train`` as a user's ``study train`` does (the data set generated first);
- **the study**: from those rates, the estimated wall time of the paper-scale study (the paper
  preset's DRRs, its four strategies and the two fine-tune controls, 3 training seeds) on 1 and on
  8 GPUs (runs spread over the GPUs, each fine-tune after its baseline).

It writes ``benchmarks/results/gpu.json`` (another path with ``--out``). ``--dry-run`` runs every part
at tiny sizes on whatever device there is (CPU here, in the tests) and writes nothing unless ``--out``
is given: it checks the benchmark, not the machine.

Run: ``python benchmarks/gpu.py [--dry-run] [--out PATH]``.
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import RESULTS, goal, median_seconds, write_result  # noqa: E402
from components import geometry, losses, registration  # noqa: E402
from components.drr import RENDERERS, SubjectRenderer  # noqa: E402
from components.geometry import rescale  # noqa: E402
from components.model import make_unet  # noqa: E402
from components.phantom import phantom_subject  # noqa: E402
from components.poses import sample_poses  # noqa: E402
from study.config import StudyConfig, load_config  # noqa: E402

# Strategies of the paper-scale study: the paper's four and the fine-tune's two controls (as long as the fine-tune).
STUDY_STRATEGIES = ("baseline", "composite", "pose_only", "finetune", "finetune_bce", "finetune_landmark")
POSE_STRATEGIES = ("composite", "pose_only", "finetune")
FINETUNES = ("finetune", "finetune_bce", "finetune_landmark")
STUDY_SEEDS = 3

SIZES = {
    "full": {
        "image_px": 256,
        "voxel_mm": 2.0,
        "render_batch": 16,
        "render_views": 64,
        "step_batch": 16,
        "step_repeats": 10,
        "registration_batch": 4096,
        "subset": {"train": 4, "val": 1, "novel_subject": 1, "views": 50, "val_views": 20},
    },
    "dry": {
        "image_px": 32,
        "voxel_mm": 4.0,
        "render_batch": 2,
        "render_views": 4,
        "step_batch": 2,
        "step_repeats": 1,
        "registration_batch": 64,
        "subset": {"train": 1, "val": 1, "novel_subject": 1, "views": 4, "val_views": 2},
    },
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def paper_camera(image_px: int):
    camera, _, _ = rescale(load_config("paper").data.detector.camera(), image_px)
    return camera


def renderer_variants(device: torch.device) -> list[tuple[str, str, str | None]]:
    """(label, registered renderer, nanodrr backend) of every variant to time on ``device``."""
    variants = []
    for name in RENDERERS:
        if name == "nanodrr":
            variants.append(("nanodrr_torch", name, "torch"))
            if device.type == "cuda":
                variants.append(("nanodrr_triton", name, "triton"))
        else:
            variants.append((f"diffdrr_{name}", name, None))
    return variants


def rendering(size: dict, device: torch.device) -> dict:
    """DRRs/s of every renderer variant, ``render_views`` poses in calls of ``render_batch``."""
    subject = phantom_subject(0, voxel_size=size["voxel_mm"])
    camera = paper_camera(size["image_px"])
    ranges = load_config("paper").data.poses.ranges()
    poses = sample_poses(0, subject.subject_id, range(size["render_views"]), ranges)
    results = {}
    for label, name, backend in renderer_variants(device):
        renderer = SubjectRenderer(subject, camera, renderer=name, views_per_call=size["render_batch"], device=device)
        if backend is not None:
            renderer.drr.backend = backend
        renderer.render_images(poses[: size["render_batch"]])  # warm-up (and Triton's compilation)
        synchronize(device)
        started = time.perf_counter()
        renderer.render_images(poses)
        synchronize(device)
        seconds = time.perf_counter() - started
        results[label] = {
            "drrs_per_s": len(poses) / seconds,
            "poses_per_call": renderer.poses_per_call,
            "batch_invariant": renderer.batch_invariant,
        }
    return results


def train_steps(size: dict, device: torch.device) -> dict:
    """Milliseconds per U-Net step (forward, loss, backward, Adam) with and without the pose loss and bf16."""
    config = load_config("paper", [f"data.image_size={size['image_px']}"])
    batch_size, camera = size["step_batch"], config.data.render_camera()
    subject = phantom_subject(0, voxel_size=size["voxel_mm"])
    landmarks_3d = torch.from_numpy(subject.landmarks).expand(batch_size, -1, -1).clone()
    poses = sample_poses(0, subject.subject_id, range(batch_size), config.data.poses.ranges())
    generator = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(batch_size, 1, camera.height, camera.width, generator=generator),
        "landmarks_2d": geometry.project(landmarks_3d, poses, camera),
        "visible": torch.ones(batch_size, landmarks_3d.shape[1], dtype=torch.bool),
        "landmarks_3d": landmarks_3d,
        "pose": poses,
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    context = config.train.loss_context(config.data)
    results = {}
    for label, weights in (("bce", {"bce": 1.0}), ("bce_pose", {"bce": 1.0, "pose": 0.001})):
        for amp in (False, True):
            seconds = step_seconds(config, weights, amp, batch, context, size["step_repeats"], device)
            results[f"{label}_{'bf16' if amp else 'fp32'}_ms"] = seconds * 1e3
    for precision in ("fp32", "bf16"):
        results[f"pose_overhead_{precision}_pct"] = 100 * (
            results[f"bce_pose_{precision}_ms"] / results[f"bce_{precision}_ms"] - 1
        )
    return results


def step_seconds(config, weights: dict, amp: bool, batch: dict, context, repeats: int, device) -> float:
    """Median seconds of one training step of a fresh U-Net with the loss ``weights`` (bf16 autocast with ``amp``)."""
    torch.manual_seed(0)
    model = make_unet(config.train.model, config.data.landmarks.landmark_set()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_function = losses.WeightedLoss(weights)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch["image"])
        loss, _ = loss_function(logits.float(), batch, context)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)

    return median_seconds(step, repeats)


def registration_speed(size: dict, device: torch.device) -> dict:
    """Microseconds per sample of ``registration.solve`` (8 landmarks, noisy 2D) at ``registration_batch``."""
    batch = size["registration_batch"]
    camera = paper_camera(size["image_px"])
    subject = phantom_subject(0, voxel_size=size["voxel_mm"])
    poses = sample_poses(0, subject.subject_id, range(batch), load_config("paper").data.poses.ranges())
    landmarks_3d = torch.from_numpy(subject.landmarks).expand(batch, -1, -1).clone()
    landmarks_2d = geometry.project(landmarks_3d, poses, camera)
    landmarks_2d = landmarks_2d + torch.randn(landmarks_2d.shape, generator=torch.Generator().manual_seed(0))
    landmarks_3d, landmarks_2d = landmarks_3d.to(device), landmarks_2d.to(device)

    def solve():
        registration.solve(landmarks_3d, landmarks_2d, camera)
        synchronize(device)

    seconds = median_seconds(solve, 3)
    return {"batch": batch, "us_per_sample": seconds / batch * 1e6}


def subset_config(size: dict, folder: Path) -> StudyConfig:
    """The paper preset on a few subjects (and 2 baseline epochs), stored in ``folder``."""
    subset = size["subset"]
    overrides = [
        "name=gpu-bench",
        f"data.image_size={size['image_px']}",
        f"data.cohort.voxel_size_mm={size['voxel_mm']}",
        f"data.cohort.subjects={{train: {subset['train']}, val: {subset['val']}, "
        f"novel_subject: {subset['novel_subject']}}}",
        f"data.views={{train: {subset['views']}, novel_view: 1, val: {subset['val_views']}, novel_subject: 1}}",
        "data.renderer={name: nanodrr, views_per_call: 16}",
        "train.strategies.baseline.phases=[{losses: {bce: 1.0}, epochs: 2, learning_rate: 0.001}]",
        f"train.storage={folder / 'runs'}",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
        "tracking.overlays=0",
    ]
    if size is SIZES["dry"]:
        overrides.append(f"train.batch_size={size['step_batch']}")
    return load_config("paper", overrides)


def paper_epochs(size: dict) -> dict:
    """Two epochs of the paper preset's baseline on a subset, as ``study train`` runs them."""
    from study.data.generate import generate
    from study.runtime import ensure_ray
    from study.training.driver import resolve_launcher, train

    folder = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    config = subset_config(size, folder)
    ensure_ray()
    started = time.perf_counter()
    manifest = generate(config, folder / "data")
    generation = time.perf_counter() - started
    started = time.perf_counter()
    result = train(config, "baseline", folder / "data")
    run = time.perf_counter() - started
    from mlflow.tracking import MlflowClient

    history = MlflowClient(config.tracking.uri).get_metric_history(result.run_id, "epoch_seconds")
    epochs = [metric.value for metric in sorted(history, key=lambda metric: metric.step)]
    return {
        "launcher": resolve_launcher(config),
        "train_images": manifest["rows"]["train"],
        "generation_s": generation,
        "run_s": run,
        "epoch_s": epochs,
        "seconds_per_train_image": epochs[-1] / manifest["rows"]["train"],
        "status": result.status,
    }


def study_estimate(results: dict, gpus: int) -> dict:
    """Estimated wall time (hours) of the paper-scale study on ``gpus`` GPUs from the measured rates."""
    config = load_config("paper")
    data, strategies = config.data, config.train.strategies
    subjects, views = data.cohort.subjects, data.views
    drrs = subjects.train * (views.train + views.novel_view) + subjects.val * views.val
    drrs += subjects.novel_subject * views.novel_subject
    fastest = max(variant["drrs_per_s"] for variant in results["rendering"].values())
    rendering_s = drrs / fastest / gpus
    per_image = results["epochs"]["seconds_per_train_image"]
    overhead = 1 + results["train_steps"]["pose_overhead_bf16_pct"] / 100
    train_images = subjects.train * views.train
    run_seconds = {}
    for strategy in STUDY_STRATEGIES:  # a control not in the preset is as long as the fine-tune
        epochs = sum(phase.epochs for phase in strategies.get(strategy, strategies["finetune"]).phases)
        run_seconds[strategy] = epochs * train_images * per_image * (overhead if strategy in POSE_STRATEGIES else 1.0)
    total = sum(run_seconds.values()) * STUDY_SEEDS
    chain = run_seconds["baseline"] + max(run_seconds[name] for name in FINETUNES)  # a fine-tune waits for its baseline
    training_s = max(total / gpus, chain)
    return {
        "gpus": gpus,
        "drrs": drrs,
        "rendering_h": rendering_s / 3600,
        "training_h": training_s / 3600,
        "total_h": (rendering_s + training_s) / 3600,
        "runs": len(STUDY_STRATEGIES) * STUDY_SEEDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any device; checks the benchmark")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: benchmarks/results/gpu.json)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.dry_run and device.type != "cuda":
        parser.error("no CUDA device: run it on a GPU, or with --dry-run")
    size = SIZES["dry" if args.dry_run else "full"]
    started = time.perf_counter()
    results = {"dry_run": args.dry_run, "device": str(device), "sizes": size}
    results["rendering"] = rendering(size, device)
    results["train_steps"] = train_steps(size, device)
    results["registration"] = registration_speed(size, device)
    results["epochs"] = paper_epochs(size)
    results["study"] = [study_estimate(results, gpus) for gpus in (1, 8)]
    results["benchmark_s"] = time.perf_counter() - started
    goals = [goal("benchmark wall time", results["benchmark_s"], "<=", 480, "s")]
    for estimate in results["study"]:
        print(
            f"paper-scale study ({estimate['drrs']} DRRs, {estimate['runs']} runs) on {estimate['gpus']} GPU(s): "
            f"about {estimate['total_h']:.1f} h ({estimate['rendering_h']:.2f} h rendering, "
            f"{estimate['training_h']:.1f} h training)"
        )
    out = args.out or (None if args.dry_run else RESULTS / "gpu.json")
    if out is not None:
        write_result("gpu", results, goals, threads=torch.get_num_threads(), out=out)
    if not all(math.isfinite(e["total_h"]) for e in results["study"]):
        raise SystemExit("gpu: the study estimate is not finite")


if __name__ == "__main__":
    main()
