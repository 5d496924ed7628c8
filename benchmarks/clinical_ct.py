"""A CT at clinical size, from a DICOM series: loading, rendering at 256 px and training, with their time and memory.

The CT is ``phantom.clinical_ct`` of one subject with a table and a total hip (metal): 512 x 512 x 320
voxels of 0.8 mm in LPS order on a grid tilted by a few degrees, as a scanner stores it. It is written
as a DICOM series (one file a slice) and as a NIfTI (.nii) into a cohort folder, each beside a 3D
Slicer markups file of its landmarks (LPS, in the scanner's frame), and then:

- **loading**: ``volumes.load_subject`` of the DICOM folder and of the NIfTI;
- **rendering**: for each registered renderer (DiffDRR's trilinear and Siddon, nanodrr's torch path),
  with the demo preset's renderer settings, and Siddon again in patches (``PATCHED``: its memory bounded),
  the renderer built for the CT and ``views`` DRRs of the demo's poses at 256 px, one at a time on one
  thread (a generation actor's work); the reference is the same on the demo's first phantom (2 mm voxels),
  measured in the same run. Work per DRR grows with the samples per
  ray (trilinear, nanodrr: ``drr.default_n_points``) or the voxel planes a ray crosses (Siddon: I + J + K),
  so each renderer's time ratio is also given per unit of that work;
- **training**: ``study generate`` (Ray Data, 2 actors) of a few DRRs of the CT, one subject from each file
  (the DICOM series trains, the NIfTI validates, or the other way round), at the demo's 64 px, then
  ``study train`` of the demo's baseline for ``epochs`` epochs; the reference is the same two commands on
  two demo phantoms.

Memory: each load and each renderer runs in a fresh process of its own, and its peak is that process's
``VmHWM`` (the kernel's high-water mark of its resident set, read from ``/proc/self/status`` as it ends;
``ru_maxrss`` would not do: Linux carries it over fork and exec, so every child would report at least the
parent's resident set), so peaks do not mix; a process that only imports the same modules gives the baseline
all of them pay. A ``study`` command
starts Ray, whose workers are other processes: its peak is the largest sum of the proportional set
size (PSS: shared pages split between their users) over the command's process tree, sampled every
``SAMPLE_S`` seconds.

Goals (on 2 cores): every renderer's peak at most ``PEAK_GOAL_GIB`` (a 2-core laptop's memory, 8 GB,
less the system's share); each renderer's time per unit of work at most 2x the demo phantom's
(the volume no longer fits the caches); loading the DICOM series at most 3x the NIfTI; the training
commands' peak at most ``PEAK_GOAL_GIB``, and an epoch at most 1.25x the demo's (training sees only the
images, whatever the CT).

Run: ``python benchmarks/clinical_ct.py [--quick] [--out PATH]``; writes ``benchmarks/results/clinical_ct.json``
(``--quick``: a 128 x 128 x 80 CT, 64 px, 2 views, no training commands and two measuring processes at a time,
about a minute on an idle 2-core machine; it checks the benchmark, not the machine, and writes only with ``--out``).
"""

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import goal, write_result  # noqa: E402

SUBJECT_SEED = 0
SCANNER_ORIGIN = (-12.0, 180.0, -1150.0)  # mm: where a scanner's patient frame puts the grid's centre
SAMPLE_S = 0.25
PEAK_GOAL_GIB = 6.0
THREADS = 1  # per renderer process, as each generation actor renders
SIZES = {
    # processes: measuring processes at a time (one, so that timings do not overlap; two for the quick check)
    "full": {
        "shape": (512, 512, 320),
        "voxel_mm": 0.8,
        "image_px": 256,
        "views": 6,
        "train_px": 64,
        "epochs": 2,
        "processes": 1,
    },
    "quick": {
        "shape": (128, 128, 80),
        "voxel_mm": 3.2,
        "image_px": 64,
        "views": 2,
        "train_px": None,
        "epochs": 0,
        "processes": 2,
    },
}
TRAIN_VIEWS = {"train": 16, "novel_view": 0, "val": 8, "novel_subject": 0}
PATCHED = {"siddon_patch_64": ("siddon", 64)}  # label: (renderer, data.renderer.patch_size)


# ------------------------------------------------------------------------------------- the CT


def make_cohort(folder: Path, size: dict) -> dict:
    """The clinical CT as ``folder/clinical/`` (DICOM) and ``folder/clinical-nifti.nii``, each with a .mrk.json."""
    import nibabel as nib

    from components.dicom import write_series
    from components.phantom import clinical_ct, sample_phantom_params

    params = dataclasses.replace(sample_phantom_params(SUBJECT_SEED), table=True, implant="left_hip")
    started = time.perf_counter()
    ct = clinical_ct(params, shape=size["shape"], voxel_size=size["voxel_mm"])
    made = time.perf_counter() - started
    scanner = np.eye(4)
    scanner[:3, 3] = SCANNER_ORIGIN
    affine, landmarks = scanner @ ct.affine, ct.landmarks + SCANNER_ORIGIN
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_series(folder / "clinical", ct.hu, affine, patient_id="clinical", description="benchmark")
    written = time.perf_counter() - started
    image = nib.Nifti1Image(np.round(ct.hu).astype(np.int16), affine)  # whole HU, as the series stores them
    nib.save(image, folder / "clinical-nifti.nii")
    for name in ("clinical", "clinical-nifti"):
        write_markups(folder / f"{name}.mrk.json", landmarks)
    return {
        "shape": list(ct.hu.shape),
        "voxel_mm": size["voxel_mm"],
        "voxels_millions": ct.hu.size / 1e6,
        "float32_mib": ct.hu.nbytes / 2**20,
        "max_hu": float(ct.hu.max()),
        "make_s": made,
        "dicom_write_s": written,
        "dicom_files": len(list((folder / "clinical").iterdir())),
        "dicom_mib": sum(path.stat().st_size for path in (folder / "clinical").iterdir()) / 2**20,
    }


def write_markups(path: Path, landmarks_ras: np.ndarray) -> None:
    """A 3D Slicer markups JSON of the 8 landmarks in LPS, as Slicer saves them for a DICOM volume."""
    from components.anatomy import PAPER

    points = [
        {"label": name, "position": (point * (-1.0, -1.0, 1.0)).tolist(), "positionStatus": "defined"}
        for name, point in zip(PAPER.names, landmarks_ras)
    ]
    markup = {"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm", "controlPoints": points}
    path.write_text(json.dumps({"markups": [markup]}, indent=1))


# ------------------------------------------------------------------------ one process a measure


def child(task: dict) -> dict:
    """In a fresh process: load a subject (a CT and its landmarks, or a demo phantom), optionally build a renderer
    and render ``views`` DRRs; the seconds of each step."""
    import torch

    from components.anatomy import PAPER
    from components.cohort import phantom_cohort
    from components.drr import SubjectRenderer, default_n_points
    from components.poses import sample_poses
    from components.volumes import load_subject
    from study.config import load_config

    torch.set_num_threads(THREADS)
    overrides = [f"data.image_size={task['image_px']}", f"data.renderer.name={task['renderer']}"]
    if task["patch_size"]:
        overrides.append(f"data.renderer.patch_size={task['patch_size']}")
    config = load_config("demo", overrides)
    result = {}
    if task["ct"] is None:
        return result | {"peak_mib": peak_resident_mib()}
    started = time.perf_counter()
    if task["ct"] == "demo":
        subject = phantom_cohort(1, config.seed, config.data.cohort.voxel_size_mm)[0].load(PAPER)
    else:
        subject = load_subject(task["ct"], task["landmarks"])
    result["load_s"] = time.perf_counter() - started
    result["shape"] = list(subject.hu.shape)
    if task["views"] == 0:
        return result | {"peak_mib": peak_resident_mib()}
    render = config.data.renderer
    started = time.perf_counter()
    renderer = SubjectRenderer(
        subject,
        config.data.render_camera(),
        renderer=render.name,
        patch_size=render.patch_size,
        n_points=render.n_points,
    )
    result["build_s"] = time.perf_counter() - started
    poses = sample_poses(config.seed, subject.subject_id, range(task["views"] + 1), config.data.poses.ranges())
    renderer.render_images(poses[:1])  # warm-up
    seconds = []
    for pose in poses[1:]:
        started = time.perf_counter()
        image = renderer.render_images(pose[None])
        seconds.append(time.perf_counter() - started)
    result["s_per_drr"] = statistics.median(seconds)
    result["samples_per_ray"] = render.n_points or default_n_points(subject)
    result["voxel_planes"] = int(sum(subject.hu.shape))
    result["image_max"] = float(image.max())
    return result | {"peak_mib": peak_resident_mib()}


def peak_resident_mib() -> float:
    """This process's peak resident set since it started (``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM: the benchmark measures memory on Linux only")


def measured(task: dict) -> dict:
    """``child(task)`` in a fresh Python process, with that process's peak resident set (``peak_mib``)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(task)]
    environment = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(THREADS)}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the commands


def tree_pss_mib(process: psutil.Process) -> float:
    """The summed PSS (MiB) of ``process`` and every process under it (those that vanish meanwhile count 0)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total / 2**20


def run_command(command: list[str], cwd: Path, environment: dict) -> dict:
    """Run a ``study`` command; its wall time and the peak summed PSS of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watched, peak = psutil.Process(process.pid), [0.0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], tree_pss_mib(watched))
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.stdout.read().decode(errors="replace")
    process.wait()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-4000:]}")
    return {"wall_s": time.perf_counter() - started, "peak_pss_mib": peak[0]}


def training(cohort: Path | None, scratch: Path, size: dict) -> dict:
    """``study generate`` and ``study train`` (the demo baseline) on the cohort folder, or on two demo phantoms."""
    name = "clinical" if cohort else "demo"
    folder = scratch / f"train-{name}"
    folder.mkdir()
    views = "{" + ", ".join(f"{split}: {count}" for split, count in TRAIN_VIEWS.items()) + "}"
    sets = [f"data.image_size={size['train_px']}", f"data.views={views}", "data.workers=2"]
    subjects = "{train: 1, val: 1, novel_subject: 0}"
    if cohort:
        sets += ["data.cohort.kind=folder", f"data.cohort.path={cohort}", f"data.cohort.subjects={subjects}"]
    else:
        sets += [f"data.cohort.subjects={subjects}"]
    phases = f"[{{losses: {{bce: 1.0}}, epochs: {size['epochs']}, learning_rate: 0.002}}]"
    study = [str(Path(sys.executable).parent / "study")]
    environment = os.environ | {"PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    environment.pop("RAY_ADDRESS", None)  # each command starts its own Ray: its processes are the command's
    generate = study + ["generate", "--preset", "demo", "--out", str(folder / "data")]
    generate += [f"--set={value}" for value in sets]
    train = study + ["train", "--preset", "demo", "--strategy", "baseline", "--data", str(folder / "data")]
    train += ["--name", name] + [f"--set={value}" for value in [*sets, f"train.strategies.baseline.phases={phases}"]]
    train += [f"--set=train.storage={folder / 'runs'}"]
    result = {"generate": run_command(generate, folder, environment), "train": run_command(train, folder, environment)}
    result["train"]["epoch_s"] = epoch_seconds(folder)
    result["drrs"] = TRAIN_VIEWS["train"] + TRAIN_VIEWS["val"]
    return result


def epoch_seconds(folder: Path) -> float:
    """The median time between consecutive epochs' train_loss in MLflow (the demo config's experiment)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("demo").experiment_id])[0]
    times = sorted(metric.timestamp / 1000 for metric in client.get_metric_history(run.info.run_id, "train_loss"))
    return statistics.median(np.diff(times).tolist())


# ----------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small CT, 64 px, 2 views, no training (under a minute)")
    parser.add_argument("--out", type=Path, default=None, help="the result file (default: benchmarks/results/)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    size = SIZES["quick" if args.quick else "full"]
    scratch = Path(tempfile.mkdtemp(prefix="clinical-ct-"))
    try:
        results = measure(size, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["quick"] = args.quick
    if args.quick and args.out is None:
        print(json.dumps(results, indent=2))
        return
    write_result("clinical_ct", results, goals_of(results), threads=THREADS, gpu_file=False, out=args.out)


def measure(size: dict, scratch: Path) -> dict:
    """Every measure of one run: the CT, its loads, each renderer against the demo phantom, the training commands."""
    from components.drr import RENDERERS

    cohort = scratch / "cohort"
    results = {"ct": make_cohort(cohort, size), "image_px": size["image_px"], "views": size["views"]}
    base = {"image_px": size["image_px"], "renderer": "trilinear", "patch_size": None, "views": 0}
    dicom = {"ct": str(cohort / "clinical"), "landmarks": str(cohort / "clinical.mrk.json")}
    tasks = {
        "imports": base | {"ct": None},
        "dicom": base | dicom,
        "nifti": base | dicom | {"ct": str(cohort / "clinical-nifti.nii")},
    }
    variants = {name: (name, None) for name in RENDERERS} | PATCHED
    for label, (renderer, patch_size) in variants.items():
        task = base | {"renderer": renderer, "patch_size": patch_size, "views": size["views"]}
        tasks |= {(label, "clinical"): task | dicom, (label, "demo"): task | {"ct": "demo"}}
    with ThreadPoolExecutor(size["processes"]) as pool:
        done = dict(zip(tasks, pool.map(measured, tasks.values())))
    results["imports_only_peak_mib"] = done["imports"]["peak_mib"]
    results["load"] = {"dicom": done["dicom"], "nifti": done["nifti"]}
    results["renderers"] = {}
    for label, (renderer, _) in variants.items():
        clinical, demo = done[label, "clinical"], done[label, "demo"]
        work = "voxel_planes" if renderer == "siddon" else "samples_per_ray"
        results["renderers"][label] = {
            "clinical": clinical,
            "demo": demo,
            "time_vs_demo": clinical["s_per_drr"] / demo["s_per_drr"],
            "work_vs_demo": clinical[work] / demo[work],
            "time_per_work_vs_demo": (clinical["s_per_drr"] / clinical[work]) / (demo["s_per_drr"] / demo[work]),
        }
    if size["epochs"]:
        results["training"] = {"clinical": training(cohort, scratch, size), "demo": training(None, scratch, size)}
        clinical, demo = results["training"]["clinical"]["train"], results["training"]["demo"]["train"]
        results["training"]["epoch_vs_demo"] = clinical["epoch_s"] / demo["epoch_s"]
    return results


def goals_of(results: dict) -> list[dict]:
    goals = []
    for label, measures in results["renderers"].items():
        peak = measures["clinical"]["peak_mib"] / 1024
        goals.append(goal(f"{label}: peak memory, clinical CT at 256 px", peak, "<=", PEAK_GOAL_GIB, "GiB"))
        ratio = measures["time_per_work_vs_demo"]
        goals.append(goal(f"{label}: time per unit of work against the demo phantom", ratio, "<=", 2.0, "x"))
    load = results["load"]
    ratio = load["dicom"]["load_s"] / load["nifti"]["load_s"]
    goals.append(goal("loading the DICOM series against the NIfTI", ratio, "<=", 3.0, "x"))
    if "training" in results:
        training = results["training"]
        peak = max(training["clinical"][step]["peak_pss_mib"] for step in ("generate", "train")) / 1024
        goals.append(goal("generate and train on the clinical CT: peak memory", peak, "<=", PEAK_GOAL_GIB, "GiB"))
        goals.append(goal("an epoch against the demo phantoms'", training["epoch_vs_demo"], "<=", 1.25, "x"))
    return goals


if __name__ == "__main__":
    main()
