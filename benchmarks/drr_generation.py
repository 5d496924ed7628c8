"""DRR generation speed: per core at 128 and 256 px, 2 Ray Data workers against 1, and a naive reference.

Per core, every registered renderer is measured with the demo preset's renderer settings (its
name changed): the demo's trilinear (the goal's), DiffDRR's Siddon and nanodrr (the pure-torch
path on a CPU; its Triton kernel on a GPU).

The naive reference does what the public code of the paper's lab does: it rebuilds the DiffDRR
module for every image and finds each 2D landmark by rendering that landmark on its own (a volume
holding only a bright voxel at the landmark) and taking the brightest pixel.

Run: ``python benchmarks/drr_generation.py [--quick]``; writes ``benchmarks/results/drr_generation.json``.
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffdrr.data import read
from diffdrr.drr import DRR
from torchio import ScalarImage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import goal, write_result  # noqa: E402
from components.cohort import phantom_cohort  # noqa: E402
from components.drr import HU_RANGE, RENDERERS, SubjectRenderer  # noqa: E402
from components.poses import sample_poses  # noqa: E402
from components.subject import world_to_voxel  # noqa: E402
from study.config import load_config  # noqa: E402
from study.data.generate import ShardPlan, generate, render_shard  # noqa: E402


def per_core_rate(config, views: int) -> float:
    """DRRs per second of one actor's work (render, project, convert) on one thread, module built once."""
    source = phantom_cohort(1, config.seed, config.data.cohort.voxel_size_mm)[0]
    render = config.data.renderer
    renderer = SubjectRenderer(
        source.load(config.data.landmarks.landmark_set()),
        config.data.render_camera(),
        renderer=render.name,
        patch_size=render.patch_size,
        n_points=render.n_points,
    )
    render_shard(ShardPlan("train", source, 0, 1), renderer, config)  # warm-up
    start = time.perf_counter()
    render_shard(ShardPlan("train", source, 1, 1 + views), renderer, config)
    return views / (time.perf_counter() - start)


def naive_seconds_per_drr(config, views: int) -> float:
    """Seconds per DRR with a module rebuilt per image and one extra render per landmark."""
    source = phantom_cohort(1, config.seed, config.data.cohort.voxel_size_mm)[0]
    subject = source.load(config.data.landmarks.landmark_set())
    camera = config.data.render_camera()
    poses = sample_poses(config.seed, source.subject_id, range(views), config.data.poses.ranges())

    def module(volume: np.ndarray) -> DRR:
        image = ScalarImage(tensor=torch.from_numpy(volume)[None], affine=subject.affine.copy())
        return DRR(
            read(image),
            sdd=camera.sdd,
            height=camera.height,
            width=camera.width,
            delx=camera.delx,
            dely=camera.dely,
            renderer=config.data.renderer.name,
            patch_size=config.data.renderer.patch_size,
        )

    def render(drr: DRR, pose: torch.Tensor) -> torch.Tensor:
        from components.geometry import pose_to_euler_zxy

        angles, translation = pose_to_euler_zxy(pose[None])
        with torch.no_grad():
            return drr(angles.float(), translation.float(), parameterization="euler_angles", convention="ZXY")[0, 0]

    hu = np.clip(subject.hu, *HU_RANGE).astype(np.float32)
    start = time.perf_counter()
    for pose in poses:
        render(module(hu), pose)
        for landmark in subject.landmarks:
            marker = np.zeros(hu.shape, np.float32)  # water everywhere (DiffDRR needs some soft tissue)
            index = np.round(world_to_voxel(subject.affine, landmark[None])[0]).astype(int)
            marker[tuple(index)] = 3000.0
            heatmap = render(module(marker), pose)
            divmod(int(heatmap.argmax()), heatmap.shape[1])
    return (time.perf_counter() - start) / views


def workers_seconds(workers: int, out: Path, quick: bool) -> tuple[float, int]:
    """Wall seconds and DRR count of ``generate`` for the demo data set with ``workers`` Ray Data actors."""
    overrides = [f"data.workers={workers}"]
    if quick:
        overrides += [
            "data.cohort.subjects={train: 2, val: 1, novel_subject: 1}",
            "data.views={train: 8, novel_view: 2, val: 6, novel_subject: 6}",
        ]
    config = load_config("demo", overrides)
    start = time.perf_counter()
    manifest = generate(config, out)
    return time.perf_counter() - start, sum(manifest["rows"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer views (under a minute)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    views = 6 if args.quick else 30
    demo = load_config("demo")

    results = {"per_core_renderer": demo.data.renderer.name}  # the renderer of the unprefixed per-core keys
    for renderer in RENDERERS:
        prefix = "" if renderer == demo.data.renderer.name else f"{renderer}_"
        for size, count in ((128, views), (256, max(3, views // 3))):
            config = load_config("demo", [f"data.image_size={size}", f"data.renderer.name={renderer}"])
            results[f"{prefix}drr_per_s_per_core_{size}px"] = per_core_rate(config, count)
    naive = naive_seconds_per_drr(demo, 2 if args.quick else 4)
    results["naive_reference_drr_per_s_128px"] = 1 / naive
    results["speedup_vs_naive_128px"] = results["drr_per_s_per_core_128px"] * naive

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        one, drrs = workers_seconds(1, Path(scratch) / "one", args.quick)
        two, _ = workers_seconds(2, Path(scratch) / "two", args.quick)
    ray.shutdown()
    results.update(
        {
            "generate_1_worker_s": one,
            "generate_2_workers_s": two,
            "speedup_2_vs_1_workers": one / two,
            "generate_drrs": drrs,
            "generate_workload": "demo preset data set (quick: a 4-subject cut of it)",
            "quick": args.quick,
        }
    )

    goals = [
        goal("DRRs per second per core at 128 px", results["drr_per_s_per_core_128px"], ">=", 4, "DRR/s"),
        goal("2 Ray Data workers over 1", results["speedup_2_vs_1_workers"], ">=", 1.6, "x"),
        goal("speed-up over the naive reference", results["speedup_vs_naive_128px"], ">=", 5, "x"),
    ]
    write_result("drr_generation", results, goals)


if __name__ == "__main__":
    main()
