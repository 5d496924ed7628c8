"""``study generate``: render a cohort's DRRs in parallel with Ray Data into Parquet shards.

The data set is cut into shards (one subject, one split, up to ``shard_size`` views). Shards not yet
on disk go, grouped by subject, through a Ray Data ``map_batches`` over an actor pool; each actor
keeps one subject's DiffDRR module and writes every shard atomically (temporary name, then rename).
A shard on disk is finished by construction, so a run started again skips it: an interrupted run
resumes with no duplicate and no missing rows.

Ray and the renderers are imported only where rendering starts: checking a complete data set (the
first step of every training command) costs milliseconds, not the seconds those imports take.
"""

import os
import time
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from components import deepfluoro, geometry, manifest
from components.anatomy import DEEPFLUORO, landmark_record, reorder
from components.cohort import (
    SubjectSource,
    annotated_landmarks,
    assign_splits,
    deepfluoro_cohort,
    folder_cohort,
    phantom_cohort,
)
from components.dataset import SPLITS, DatasetError, DRRRows, shard_row_count, write_shard
from components.poses import sample_poses, view_seed
from study import console
from study.config import StudyConfig
from study.runtime import ensure_ray

if TYPE_CHECKING:
    from components.drr import SubjectRenderer

__all__ = ["cohort_splits", "default_out_dir", "generate", "plan_shards"]

FLUORO_STREAM = 7  # tells the fluoroscope's draws apart from the pose draws of the same (seed, subject, view)


@dataclass(frozen=True)
class ShardPlan:
    """One shard to render: views ``[view_start, view_stop)`` of one subject in one split."""

    split: str
    source: SubjectSource
    view_start: int
    view_stop: int

    @property
    def path(self) -> str:
        """The shard's path relative to the data set folder."""
        return f"{self.split}/{self.source.subject_id}_views-{self.view_start:05d}-{self.view_stop:05d}.parquet"

    @property
    def rows(self) -> int:
        return self.view_stop - self.view_start


def cohort_splits(config: StudyConfig) -> dict[str, list[SubjectSource]]:
    """The subjects of the train, val and novel_subject splits (novel phantoms from the shifted distribution
    when ``data.cohort.novel_subject_shift`` is set)."""
    cohort = config.data.cohort
    counts = cohort.subjects.model_dump()
    if cohort.kind == "phantom":
        sources = phantom_cohort(sum(counts.values()), config.seed, cohort.voxel_size_mm)
        splits = assign_splits(sources, counts, config.seed, shuffle=False)
        shifted = [replace(source, phantom_shift=cohort.novel_subject_shift) for source in splits["novel_subject"]]
        return splits | {"novel_subject": shifted}
    if cohort.kind == "deepfluoro":
        return assign_splits(deepfluoro_cohort(cohort.path), counts, config.seed, shuffle=True)
    sources = folder_cohort(cohort.path, cohort.coordinates, cohort.plausibility)
    return assign_splits(sources, counts, config.seed, shuffle=True)


def plan_shards(config: StudyConfig) -> list[ShardPlan]:
    """Every shard of the data set, subject by subject.

    View ids are per subject: a training subject's views ``0..train-1`` are the train split and the
    next ``novel_view`` ids its novel views; val and novel_subject subjects use ids from 0. With
    ``data.fluoro``, the ``fluoro`` split repeats the novel_view and novel_subject views (same ids,
    same poses) through the fluoroscope. A DeepFluoro cohort's specimens, whatever their split, also have
    their real X-rays in the ``real`` split (view id: the X-ray's position in the file's projection order).
    """
    views = config.data.views
    size = config.data.shard_size
    by_split = cohort_splits(config)
    plans = []

    def add(split: str, source: SubjectSource, start: int, stop: int):
        plans.extend(ShardPlan(split, source, a, min(a + size, stop)) for a in range(start, stop, size))

    fluoro = config.data.fluoro is not None
    for source in by_split["train"]:
        add("train", source, 0, views.train)
        add("novel_view", source, views.train, views.train + views.novel_view)
        if fluoro:
            add("fluoro", source, views.train, views.train + views.novel_view)
    for source in by_split["val"]:
        add("val", source, 0, views.val)
    for source in by_split["novel_subject"]:
        add("novel_subject", source, 0, views.novel_subject)
        if fluoro:
            add("fluoro", source, 0, views.novel_subject)
    if config.data.cohort.kind == "deepfluoro":
        for source in [source for split in ("train", "val", "novel_subject") for source in by_split[split]]:
            add("real", source, 0, len(deepfluoro.list_projections(source.ct_path, source.subject_id)))
    return plans


def subject_jobs(plans: list[ShardPlan]) -> list[dict]:
    """Ray Data rows: one per subject, listing its shards, so each subject is loaded by one actor.

    The subjects with most views come first (longest-processing-time order), so the short ones
    fill the tail and the actors finish together.
    """
    jobs: dict[str, dict] = {}
    for plan in plans:
        job = jobs.setdefault(plan.source.subject_id, {**asdict(plan.source), "splits": [], "starts": [], "stops": []})
        job["splits"].append(plan.split)
        job["starts"].append(plan.view_start)
        job["stops"].append(plan.view_stop)
    views = lambda job: sum(stop - start for start, stop in zip(job["starts"], job["stops"]))  # noqa: E731
    return sorted(jobs.values(), key=views, reverse=True)


def plans_of_job(job: dict) -> list[ShardPlan]:
    """The shards of one row made by ``subject_jobs`` (numpy values from a Ray Data batch)."""
    plain = lambda value: value.item() if isinstance(value, np.generic) else value  # noqa: E731
    source = SubjectSource(**{name: plain(job[name]) for name in SubjectSource.__dataclass_fields__})
    return [
        ShardPlan(str(split), source, int(start), int(stop))
        for split, start, stop in zip(job["splits"], job["starts"], job["stops"])
    ]


def render_shard(plan: ShardPlan, renderer: "SubjectRenderer", config: StudyConfig) -> DRRRows:
    """The rows of one shard, rendered with the subject's renderer."""
    from components.drr import to_uint16

    if plan.split == "real":
        return real_shard(plan, renderer.subject.landmarks, config)
    view_ids = list(range(plan.view_start, plan.view_stop))
    poses = sample_poses(config.seed, plan.source.subject_id, view_ids, config.data.poses.ranges())
    landmarks_3d = renderer.subject.landmarks
    if plan.split == "fluoro":
        landmarks_2d, visible = renderer.project_landmarks(poses)
        images = fluoro_images(renderer, poses, config, plan.source.subject_id, view_ids)
    else:
        views = renderer.render(poses)
        images, landmarks_2d, visible = views.images, views.landmarks_2d, views.visible
    if plan.split == "train" and config.data.cohort.annotation_noise_mm > 0:  # training labels only
        sigma = config.data.cohort.annotation_noise_mm
        landmarks_3d = annotated_landmarks(landmarks_3d, sigma, config.seed, plan.source.subject_id)
        landmarks_2d, visible = renderer.project_landmarks(poses, landmarks_3d)
    count = len(view_ids)
    intrinsics = geometry.make_k(renderer.camera).numpy()
    return DRRRows(
        subject_id=np.full(count, plan.source.subject_id, dtype=object),
        view_id=np.asarray(view_ids, dtype=np.int32),
        split=np.full(count, plan.split, dtype=object),
        image=to_uint16(images),
        landmarks_2d=landmarks_2d.numpy(),
        visible=visible.numpy(),
        landmarks_3d=np.broadcast_to(landmarks_3d, (count, *landmarks_3d.shape)).copy(),
        pose=poses.numpy(),
        intrinsics=np.broadcast_to(intrinsics, (count, 3, 3)).copy(),
    )


def real_shard(plan: ShardPlan, landmarks_3d: np.ndarray, config: StudyConfig) -> DRRRows:
    """The rows of a shard of a DeepFluoro specimen's real X-rays (``components.deepfluoro``: cropped by
    ``data.cohort.crop``, log-transformed, upright, at ``data.image_size``), with their true poses, the 2D landmarks
    of the study's set and the specimen's (N, 3) ``landmarks_3d``. Every X-ray's camera must be the config's
    detector at that size (``data.detector``), else a DatasetError names both."""
    from components.drr import to_uint16

    path, specimen, size = plan.source.ct_path, plan.source.subject_id, config.data.image_size
    names = deepfluoro.list_projections(path, specimen)[plan.view_start : plan.view_stop]
    crop, camera = config.data.cohort.crop, config.data.render_camera()
    xrays = list(deepfluoro.real_xrays(path, specimen, size, crop=crop, projections=names))
    for xray in xrays:
        if not np.allclose(astuple(xray.camera), astuple(camera), rtol=1e-4, atol=1e-6):
            raise DatasetError(
                f"DeepFluoro file {path}: specimen {specimen} projection {xray.projection}: its camera {xray.camera} "
                f"differs from data.detector's at {size} px, {camera}; set data.detector to the file's (README, "
                "DeepFluoro)"
            )
    landmarks = config.data.landmarks.landmark_set()
    count = len(xrays)
    intrinsics = geometry.make_k(camera).numpy()
    stacked = lambda name: torch.stack([getattr(xray, name) for xray in xrays]).numpy()  # noqa: E731
    return DRRRows(
        subject_id=np.full(count, specimen, dtype=object),
        view_id=np.arange(plan.view_start, plan.view_stop, dtype=np.int32),
        split=np.full(count, plan.split, dtype=object),
        image=to_uint16(torch.stack([xray.image for xray in xrays])),
        landmarks_2d=reorder(stacked("landmarks_2d"), DEEPFLUORO, landmarks, axis=1),
        visible=reorder(stacked("visible"), DEEPFLUORO, landmarks, axis=1, fill=False),
        landmarks_3d=np.broadcast_to(landmarks_3d, (count, *landmarks_3d.shape)).copy(),
        pose=stacked("pose"),
        intrinsics=np.broadcast_to(intrinsics, (count, 3, 3)).copy(),
    )


def fluoro_images(
    renderer: "SubjectRenderer", poses: torch.Tensor, config: StudyConfig, subject_id: str, view_ids: list[int]
) -> torch.Tensor:
    """(B, H, W) the fluoroscope's images of the views: soft-tissue and bone attenuation rendered, then one draw of
    ``data.fluoro`` per image, seeded by (study seed, subject, view), so every model meets the same images."""
    fluoroscope = config.data.fluoro
    tau_soft, tau_bone = renderer.render_attenuation(poses)
    images = []
    for index, view_id in enumerate(view_ids):
        entropy = [*view_seed(config.seed, subject_id, view_id), FLUORO_STREAM]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        images.append(fluoroscope.of_attenuation(tau_soft[index], tau_bone[index], fluoroscope.sample(seed)))
    return torch.stack(images)


class ShardWriter:
    """A Ray Data actor: renders a subject's shards and writes each one as it is done.

    It keeps one subject's DiffDRR module at a time; each Ray Data row is one subject's pending
    shards, so a subject is loaded by one actor only.
    """

    def __init__(self, config_json: str, out_dir: str, device: str):
        if device == "cpu":
            torch.set_num_threads(1)  # one core per actor: deterministic sums, no oversubscription
        self.config = StudyConfig.model_validate_json(config_json)
        self.out_dir = Path(out_dir)
        self.device = device
        self.subject_id = None
        self.renderer = None

    def renderer_for(self, source: SubjectSource) -> "SubjectRenderer":
        from components.drr import SubjectRenderer

        if source.subject_id != self.subject_id:
            self.renderer = None  # free the previous module before building the next
            render = self.config.data.renderer
            self.renderer = SubjectRenderer(
                source.load(self.config.data.landmarks.landmark_set()),
                self.config.data.render_camera(),
                renderer=render.name,
                patch_size=render.patch_size,
                n_points=render.n_points,
                views_per_call=render.views_per_call,
                device=self.device,
            )
            self.subject_id = source.subject_id
        return self.renderer

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Render and write every shard of the subjects in ``batch``; one result row per shard."""
        results = {"path": [], "rows": [], "seconds": [], "error": []}
        for index in range(len(batch["subject_id"])):
            for plan in plans_of_job({key: values[index] for key, values in batch.items()}):
                start, error = time.perf_counter(), ""
                try:
                    rows = render_shard(plan, self.renderer_for(plan.source), self.config)
                    write_shard(rows, self.out_dir / plan.path)
                except ValueError as problem:  # VolumeError, DatasetError, a bad landmark or pose
                    name = f"subject {plan.source.subject_id}:"
                    error = str(problem) if str(problem).startswith(name) else f"{name} {problem}"
                results["path"].append(plan.path)
                results["rows"].append(plan.rows)
                results["seconds"].append(time.perf_counter() - start)
                results["error"].append(error)
        return {key: np.asarray(values) for key, values in results.items()}


def finished(plan: ShardPlan, out_dir: Path) -> bool:
    """True when the shard is on disk with all its rows (a corrupt or short file is rendered again)."""
    path = out_dir / plan.path
    if not path.is_file():
        return False
    try:
        return shard_row_count(path) == plan.rows
    except DatasetError:
        return False


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete half-written shards left by an interrupted run (they never got their final name)."""
    for temporary in out_dir.glob("*/.*.tmp"):
        temporary.unlink(missing_ok=True)


def render_pending(config: StudyConfig, pending: list[ShardPlan], out_dir: Path, progress: console.Progress) -> None:
    """Render ``pending`` shards on a Ray Data actor pool; raise ``DatasetError`` on a bad subject."""
    import ray

    ensure_ray()
    use_gpu = config.data.use_gpu if config.data.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    available = int(ray.cluster_resources().get("GPU" if use_gpu else "CPU", 0))
    if available == 0:
        console.say(
            "no GPU in the Ray cluster yet: waiting for an autoscaled GPU worker (data.use_gpu=false renders on CPUs)"
        )
    jobs = subject_jobs(pending)
    workers = max(1, min(config.data.workers or available, available, len(jobs)))
    rows = ray.data.from_items(jobs, override_num_blocks=len(jobs))
    written = rows.map_batches(
        ShardWriter,
        fn_constructor_kwargs={
            "config_json": config.model_dump_json(),
            "out_dir": str(out_dir),
            "device": "cuda" if use_gpu else "cpu",
        },
        batch_size=1,
        # One subject at a time per actor: a queued subject waits for whichever actor frees up first.
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        num_cpus=0 if use_gpu else 1,
        num_gpus=1 if use_gpu else 0,
    )
    errors = []
    for result in written.iter_rows():
        if result["error"]:
            errors.append(str(result["error"]))
        else:
            progress.update(int(result["rows"]))
    progress.close()
    if errors:
        raise DatasetError("; ".join(sorted(set(errors))))


def generate(config: StudyConfig, out_dir: str | Path) -> dict:
    """Render the data set of ``config`` into ``out_dir`` (resuming what is there); return its manifest."""
    out_dir = Path(out_dir)
    data_manifest = manifest.claim_folder(out_dir, config.data_part(), tolerate=(console.LOG_NAME,))
    remove_stale_temporaries(out_dir)
    plans = plan_shards(config)
    pending = [plan for plan in plans if not finished(plan, out_dir)]
    total_rows = sum(plan.rows for plan in plans)
    done_rows = total_rows - sum(plan.rows for plan in pending)
    start = time.perf_counter()
    if pending:
        to_render = total_rows - done_rows
        console.say(f"data set: {out_dir}: {to_render} of {total_rows} DRRs to render ({len(pending)} shards)")
        progress = console.Progress("rendering", total_rows, "DRRs", done=done_rows)
        render_pending(config, pending, out_dir, progress)
    shards = [
        {
            "path": plan.path,
            "split": plan.split,
            "subject_id": plan.source.subject_id,
            "rows": plan.rows,
            "views": [plan.view_start, plan.view_stop],
            "sha256": manifest.file_sha256(out_dir / plan.path),
        }
        for plan in plans
    ]
    rows_per_split = {split: sum(s["rows"] for s in shards if s["split"] == split) for split in SPLITS}
    camera = config.data.render_camera()
    data_manifest.update(
        status="complete",
        shards=shards,
        rows=rows_per_split,
        subjects={split: sorted({s["subject_id"] for s in shards if s["split"] == split}) for split in rows_per_split},
        dataset_hash=manifest.dataset_hash(shards),
        landmarks=landmark_record(config.data.landmarks.landmark_set()),
        render_camera=asdict(camera),
        intrinsics=geometry.make_k(camera).tolist(),
        seconds_last_run=round(time.perf_counter() - start, 3),
    )
    manifest.write_manifest(out_dir, data_manifest)
    console.say(f"data set: {out_dir}: {sum(rows_per_split.values())} DRRs {rows_per_split}, complete")
    return data_manifest


def default_out_dir(config: StudyConfig) -> Path:
    return Path(os.environ.get("STUDY_DATA_DIR", "data")) / config.name
