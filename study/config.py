"""The schema of a study config: YAML presets plus command-line overrides, validated by pydantic.

A study config has these parts: ``data`` (the DRR data set and its landmark set), ``train`` (model, losses and the
training strategies, each a list of phases), ``tracking`` (MLflow), ``report`` (evaluation and
Table 1) and ``sweep`` (how ``study sweep`` runs trials).

A config is named by a preset (``demo``, ``paper``: ``study/presets/<name>.yaml``) or by a path to
a YAML file. A file may start from another with ``extends:``: a preset's name (``extends: demo``) or
a ``.yaml`` file's path, relative to the extending file; it then names only what differs. Mappings
merge key by key (a key given replaces that key, a nested mapping merges into the base's), lists and
other values replace the base's whole; chains resolve base first, and a cycle is an error. Overrides
are ``dotted.path=value`` strings whose value is parsed as YAML, e.g. ``data.image_size=64`` or
``data.poses.rotation_deg=[10,10,10]``; they apply after the merge. What is validated and recorded
(run params, the ``config.yaml`` artifact, data set manifests) is the resolved config, without ``extends``.
"""

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.anatomy import DEEPFLUORO, LANDMARK_SETS, LandmarkSet, landmark_set
from components.augment import IntensityRanges
from components.dataset import TEST_SPLITS
from components.deepfluoro import RELEASE_CROP
from components.fluoroscopy import Fluoroscope
from components.geometry import Camera, rescale
from components.losses import LOSSES, LossContext, LossSettings
from components.model import UNetSettings
from components.phantom import PHANTOM_LANDMARKS
from components.plausibility import PlausibilityMode
from components.poses import POSE_LEVELS, PoseRanges
from components.registration import MIN_LANDMARKS
from components.training import SELECTION_METRICS

__all__ = [
    "CHECKPOINTS",
    "LAUNCHERS",
    "PRESETS_DIR",
    "SPACES_DIR",
    "ConfigError",
    "CrossValidationConfig",
    "FoldConfig",
    "StudyConfig",
    "find_yaml",
    "load_config",
    "merged",
    "problems",
    "read_config_mapping",
    "read_yaml_mapping",
]

PACKAGE_DIR = Path(str(resources.files("study")))  # presets and search spaces ship inside the package
PRESETS_DIR = PACKAGE_DIR / "presets"
SPACES_DIR = PACKAGE_DIR / "search_spaces"
# Where ``study train`` runs: "process" (this process, all its cores), "ray_train" (DDP workers), "auto" (chosen).
LAUNCHERS = ("auto", "process", "ray_train")
# Which checkpoint of a run stands for it: the end of training, or the best by the selection metric.
CHECKPOINTS = ("last", "best")


class ConfigError(ValueError):
    """A config that cannot be read or does not validate; the message names the file and field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubjectCounts(Strict):
    """Subjects per subject split (novel_view uses the train subjects)."""

    train: int = Field(ge=1)
    val: int = Field(ge=0)
    novel_subject: int = Field(ge=0)


class ViewCounts(Strict):
    """Views per subject of each split."""

    train: int = Field(ge=1)
    novel_view: int = Field(ge=0)
    val: int = Field(ge=0)
    novel_subject: int = Field(ge=0)


class CohortConfig(Strict):
    """Where subjects come from: the procedural phantom, or a folder of real CTs + landmark files."""

    kind: Literal["phantom", "folder", "deepfluoro"] = "phantom"
    subjects: SubjectCounts
    voxel_size_mm: float = Field(2.0, gt=0.5, le=5.0)
    path: str | None = Field(
        None, description="folder: the folder of CTs and landmark files; deepfluoro: ipcai_2020_full_res_data.h5"
    )
    crop: int = Field(
        RELEASE_CROP,
        ge=0,
        description="deepfluoro: pixels cropped from every border of a real X-ray (the collimator's shadow)",
    )
    coordinates: Literal["ras", "lps", "voxel"] = "ras"
    plausibility: PlausibilityMode = Field(
        "warn",
        description="a folder's landmark files are checked against adult anatomy when each subject is loaded "
        "(components.plausibility): warn logs the findings, error refuses the subject, off skips the checks",
    )
    annotation_noise_mm: float = Field(
        0.0, ge=0, le=20, description="sigma of the 3D placement error of the train split's landmarks (hand placement)"
    )
    novel_subject_shift: float = Field(
        0.0,
        ge=0,
        le=1,
        description="phantoms only: novel subjects drawn from a shifted shape distribution (0: the training "
        "subjects' own; 1: the most shifted, components.phantom.sampling_ranges)",
    )

    @model_validator(mode="after")
    def files_need_a_path(self):
        if self.kind != "phantom" and not self.path:
            raise ValueError(f"cohort.path is required when cohort.kind is {self.kind!r}")
        if self.kind != "phantom" and self.novel_subject_shift:
            raise ValueError(f"cohort.novel_subject_shift applies to phantoms only, not to a {self.kind} cohort")
        return self


class LandmarksConfig(Strict):
    """The landmark set a study detects, and how many of its landmarks a registration needs.

    ``name`` alone is a set of ``anatomy.LANDMARK_SETS`` (``paper``: the paper's 8, the default;
    ``deepfluoro``: DeepFluoro's 14); with ``names`` (and ``pairs``) it is a set of one's own. A bare
    string stands for ``{name: <string>}``. The model's channels, the data set's rows, the losses, the
    registration, the metrics and Table 1's columns follow the set, in its order.
    """

    name: str = "paper"
    names: list[str] | None = Field(None, description="a set of one's own: its landmarks, in the order of every tensor")
    pairs: list[tuple[str, str]] = Field(
        default_factory=list, description="a set of one's own: its (left, right) landmark pairs; the rest are midline"
    )
    min_for_registration: int = Field(
        MIN_LANDMARKS,
        ge=MIN_LANDMARKS,
        description="visible landmarks a registration needs; with fewer, the pose is a failure (NaN), not an error",
    )

    @model_validator(mode="before")
    @classmethod
    def a_name_alone_is_a_registered_set(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def a_set_that_holds_enough_landmarks(self):
        if self.names is None and self.name not in LANDMARK_SETS:
            raise ValueError(
                f"unknown landmark set {self.name!r}; registered: {', '.join(LANDMARK_SETS)}; or give names "
                "(and pairs) for a set of your own"
            )
        if self.names is None and self.pairs:
            raise ValueError(f"pairs belong to a set of one's own, with names; {self.name!r} has its own")
        if self.names is not None and self.name in LANDMARK_SETS:
            raise ValueError(f"{self.name!r} is a registered landmark set; give your own set another name")
        size = len(self.landmark_set())
        if self.min_for_registration > size:
            raise ValueError(
                f"min_for_registration {self.min_for_registration} is more than the set's {size} landmarks"
            )
        return self

    def in_words(self) -> str:
        """E.g. "8 pelvic landmarks (the landmark set 'paper')", for descriptions."""
        return f"{len(self.landmark_set())} pelvic landmarks (the landmark set '{self.name}')"

    def landmark_set(self) -> LandmarkSet:
        """The set itself (a ValueError names what is wrong with one's own)."""
        if self.names is None:
            return landmark_set(self.name)
        return LandmarkSet(self.name, tuple(self.names), tuple(self.pairs))


class DetectorConfig(Strict):
    """The physical C-arm detector (before rescaling to the training resolution)."""

    sdd: float = Field(1020.0, gt=0)
    height: int = Field(gt=0)
    width: int | None = Field(None, gt=0)
    delx: float = Field(gt=0)
    dely: float | None = Field(None, gt=0)
    x0: float = 0.0
    y0: float = 0.0

    def camera(self) -> Camera:
        return Camera(
            sdd=self.sdd,
            height=self.height,
            width=self.width or self.height,
            delx=self.delx,
            dely=self.dely or self.delx,
            x0=self.x0,
            y0=self.y0,
        )


class PosesConfig(Strict):
    """Uniform pose ranges around the AP view: a named difficulty ``level`` (``poses.POSE_LEVELS``: the
    paper's ±15°, medium ±30°, hard ±45/±45/±15° with ±50 mm) or the half-ranges themselves."""

    level: Literal[tuple(POSE_LEVELS)] | None = None
    rotation_deg: tuple[float, float, float] | None = None
    translation_mm: tuple[float, float, float] | None = None
    source_to_isocenter: float = Field(gt=0)

    @model_validator(mode="after")
    def a_level_or_ranges(self):
        given = [name for name in ("rotation_deg", "translation_mm") if getattr(self, name) is not None]
        if self.level is not None and given:
            raise ValueError(f"poses.level {self.level!r} sets the ranges: drop {', '.join(given)}")
        if self.level is None and len(given) < 2:
            raise ValueError("poses needs a level or both rotation_deg and translation_mm")
        return self

    def ranges(self) -> PoseRanges:
        if self.level is not None:
            rotation, translation = POSE_LEVELS[self.level]
            return PoseRanges(rotation, translation, self.source_to_isocenter)
        return PoseRanges(self.rotation_deg, self.translation_mm, self.source_to_isocenter)


class RendererConfig(Strict):
    name: Literal["trilinear", "siddon", "nanodrr"] = "trilinear"
    patch_size: int | None = Field(None, gt=0)
    n_points: int | None = Field(None, gt=1)
    views_per_call: int = Field(1, ge=1)


class DataConfig(Strict):
    cohort: CohortConfig
    views: ViewCounts
    landmarks: LandmarksConfig = LandmarksConfig()
    detector: DetectorConfig
    image_size: int = Field(gt=7, description="training resolution, pixels (square)")
    poses: PosesConfig
    renderer: RendererConfig = RendererConfig()
    shard_size: int = Field(25, ge=1, description="views per Parquet shard")
    workers: int | None = Field(None, ge=1, description="rendering actors (default: one per CPU)")
    use_gpu: bool | None = Field(None, description="render on GPUs (default: when Ray has any)")
    fluoro: Fluoroscope | None = Field(
        None,
        description="the fluoro test split: the novel_view and novel_subject views again, rendered as attenuation "
        "and imaged by this fluoroscope, one fixed draw per image (None: no fluoro split)",
    )

    @model_validator(mode="after")
    def the_phantom_places_the_landmarks(self):
        if self.cohort.kind == "phantom":
            unknown = [name for name in self.landmarks.landmark_set().names if name not in PHANTOM_LANDMARKS]
            if unknown:
                raise ValueError(
                    f"landmarks: the phantom cannot place {', '.join(unknown)}; it places "
                    f"{', '.join(PHANTOM_LANDMARKS)}"
                )
        return self

    @model_validator(mode="after")
    def deepfluoro_has_the_landmarks(self):
        if self.cohort.kind == "deepfluoro":
            unknown = [name for name in self.landmarks.landmark_set().names if name not in DEEPFLUORO.names]
            if unknown:
                raise ValueError(
                    f"landmarks: the DeepFluoro release has no {', '.join(unknown)}; it has "
                    f"{', '.join(DEEPFLUORO.names)}"
                )
        return self

    def test_splits(self) -> tuple[str, ...]:
        """The splits a model is tested on: the paper's two, ``fluoro`` when the data set has it, and ``real`` (real
        X-rays) for a DeepFluoro cohort."""
        fluoro = ("fluoro",) if self.fluoro is not None else ()
        real = ("real",) if self.cohort.kind == "deepfluoro" else ()
        return (*TEST_SPLITS, *fluoro, *real)

    def render_camera(self) -> Camera:
        """The detector rescaled to the training resolution (rendering happens at that size)."""
        camera, _, _ = rescale(self.detector.camera(), self.image_size)
        return camera


class PhaseConfig(Strict):
    """One phase of a strategy: its losses and weights, length and optimizer."""

    losses: dict[str, float]
    epochs: int = Field(ge=1)
    steps_per_epoch: int | None = Field(None, ge=1, description="cut each epoch to this many steps")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def losses_are_registered(self):
        unknown = sorted(set(self.losses) - set(LOSSES))
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}; registered: {sorted(LOSSES)}")
        if not self.losses or any(not weight > 0 for weight in self.losses.values()):
            raise ValueError(f"losses need at least one entry, each with a weight > 0, got {self.losses}")
        return self


class StrategyConfig(Strict):
    """A training strategy: where its weights start, then its phases in order.

    ``init``: None (random weights), the name of another strategy of the config (its best
    checkpoint, trained first if it has no finished run), a checkpoint path or an MLflow run id.
    """

    init: str | None = None
    phases: list[PhaseConfig] = Field(min_length=1)
    randomize: Fluoroscope | None = Field(
        None,
        description="domain randomization: each training image through this fluoroscope, drawn per "
        "(seed, epoch, image) (None: the clean DRRs)",
    )


class FoldConfig(Strict):
    """One fold of a cross-validation by subject: training subjects held out of a run's training and val rows.

    ``study reproduce`` sets it on each run of ``report.cross_validation``; set by hand (``study train``), it
    trains that one fold. The fold's run is tested on its held-out subjects' rows of every test split.
    """

    number: int = Field(ge=1, description="the fold's number, from 1: its runs are named <name>-<strategy>-fold<n>")
    held_out: list[str] = Field(
        min_length=1, description="subject ids of the train split that the fold never trains or validates on"
    )
    val: Literal["val", "novel_view"] = Field(
        "val",
        description="the fold's val rows: the val split (subjects of its own), or, for a cohort without val "
        "subjects, the novel_view views of the fold's training subjects; never the held-out subjects'",
    )


class TrainConfig(Strict):
    """How to train: the model, losses, strategies, and the Ray Train resources."""

    strategies: dict[str, StrategyConfig]
    seed: int | None = Field(None, description="training seed (default: the study's seed, which also made the data)")
    model: UNetSettings = UNetSettings()
    loss: LossSettings = LossSettings()
    augment: IntensityRanges | None = Field(None, description="intensity augmentation (None: off)")
    batch_size: int = Field(8, ge=1, description="images per optimizer step (split evenly over DDP workers)")
    launcher: Literal[LAUNCHERS] = Field(
        "auto", description="auto: in this process without GPUs on one node, else ray_train (DDP over 'workers')"
    )
    workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes) of launcher ray_train")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs per Ray Train worker")
    use_gpu: bool | None = Field(None, description="default: when Ray has GPUs")
    amp: bool = Field(True, description="mixed precision on GPU")
    divergence_factor: float | None = Field(
        10.0, gt=1, description="diverged when the running (median of 5 steps) loss exceeds this times its start"
    )
    selection_metric: Literal[SELECTION_METRICS] = "val_rmse_px"
    checkpoint: Literal[CHECKPOINTS] = Field(
        "last",
        description="the checkpoint that stands for a run: where a strategy started from it continues, what "
        "study reproduce measures; last: the end of training (the paper's), best: the best by selection_metric",
    )
    max_failures: int = Field(2, ge=0, description="worker failures survived by restarting from the last checkpoint")
    storage: str = Field("runs", description="Ray Train storage folder (or URI on a cluster)")
    fold: FoldConfig | None = Field(None, description="train one fold of a cross-validation (None: all the rows)")

    def loss_context(self, data: DataConfig) -> LossContext:
        """What the losses need: the settings, the detector at the training resolution, the unrolled
        solver's bounds: the box of every pose the data's ranges can draw (``poses.pose_bounds``; a box on
        the solver's rotation vector that contains the ZXY Euler ranges), None with ``unrolled_bounds`` off,
        and the visible landmarks a registration needs (``data.landmarks.min_for_registration``)."""
        from components.poses import pose_bounds  # here: this method is all of the config that needs it

        bounds = pose_bounds(data.poses.ranges()) if self.loss.unrolled_bounds else None
        minimum = data.landmarks.min_for_registration
        return LossContext(data.render_camera(), data.poses.source_to_isocenter, self.loss, bounds, minimum)

    @model_validator(mode="after")
    def batches_split_over_the_workers(self):
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over {self.workers} workers")
        return self

    @model_validator(mode="after")
    def inits_name_known_strategies(self):
        for name, strategy in self.strategies.items():
            seen, init = [name], strategy.init
            while init in self.strategies:
                if init in seen:
                    raise ValueError(f"strategy {name!r}: init chain {seen + [init]} is a cycle")
                seen.append(init)
                init = self.strategies[init].init
        return self


class TrackingConfig(Strict):
    """MLflow; ``MLFLOW_TRACKING_URI`` wins over ``uri``; default: ``sqlite:///<cwd>/mlflow.db``."""

    uri: str | None = None
    experiment: str | None = Field(None, description="default: the study's name")
    overlays: int = Field(4, ge=0, description="val images drawn with true and predicted landmarks")


class CrossValidationConfig(Strict):
    """How ``study reproduce`` cross-validates: ``leave_one_subject_out`` (as Grupp et al. evaluate DeepFluoro),
    one fold per subject of the train split. Written as the kind alone or as ``{kind: ...}``."""

    kind: Literal["leave_one_subject_out"]

    @model_validator(mode="before")
    @classmethod
    def a_kind_alone(cls, value):
        return {"kind": value} if isinstance(value, str) else value


class ReportConfig(Strict):
    """How ``study evaluate`` and ``study reproduce`` measure and report."""

    strategies: list[str] | None = Field(
        None, min_length=1, description="the strategies study reproduce trains and compares (default: all of train's)"
    )
    seeds: list[int] | None = Field(
        None, min_length=1, description="training seeds of a reproduction (default: the training seed)"
    )
    success_mm: float = Field(10.0, gt=0, description="a registration succeeds when its mTRE is below this")
    bootstrap_resamples: int = Field(1000, ge=10)
    examples: int = Field(4, ge=0, description="images per strategy drawn with their predictions")
    cross_validation: CrossValidationConfig | None = Field(
        None,
        description="study reproduce by folds over the train split's subjects, Table 1 pooled over the folds "
        "(None: the data set's fixed splits)",
    )


class SweepConfig(Strict):
    """How ``study sweep`` runs its trials (what it samples is a search space file, ``search_spaces/``).

    A trial with one worker trains in its own Tune process (no Ray Train start-up: small CPU
    trials); with more it runs a ``TorchTrainer`` of that many DDP workers (multi-GPU trials).
    """

    workers_per_trial: int = Field(
        1, ge=1, description="1: train in the trial's process; more: DDP workers of a TorchTrainer"
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float | None = Field(None, ge=0, description="default: 1 when Ray has GPUs, else 0")
    max_concurrent: int | None = Field(None, ge=1, description="default: as many trials as the resources allow")
    seed: int | None = Field(None, description="the TPE sampler's seed (default: the study's seed)")
    grace_epochs: int = Field(1, ge=1, description="ASHA: epochs every trial runs before it may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor of the trials at each rung")
    storage: str = Field("sweeps", description="Ray Tune's experiment folder (or URI on a cluster)")
    register_model: str | None = Field(None, description="registered model name (default: '<study name>-landmarks')")


class StudyConfig(Strict):
    name: str
    seed: int = 0
    data: DataConfig
    train: TrainConfig | None = None
    tracking: TrackingConfig = TrackingConfig()
    report: ReportConfig = ReportConfig()
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def reported_strategies_are_trained(self):
        listed = self.report.strategies or []
        known = self.train.strategies if self.train is not None else {}
        unknown = [name for name in listed if name not in known]
        if unknown:
            raise ValueError(f"report.strategies {unknown} are not in train.strategies ({', '.join(known) or 'none'})")
        if len(set(listed)) != len(listed):
            raise ValueError(f"report.strategies lists a strategy twice: {listed}")
        return self

    @model_validator(mode="after")
    def folds_fit_the_cohort(self):
        subjects, views = self.data.cohort.subjects, self.data.views
        fold = self.train.fold if self.train is not None else None
        if fold is not None and fold.val == "val" and subjects.val == 0:
            raise ValueError("train.fold.val 'val': the cohort has no val subjects (data.cohort.subjects.val is 0)")
        if fold is not None and fold.val == "novel_view" and views.novel_view == 0:
            raise ValueError("train.fold.val 'novel_view': there are no novel views (data.views.novel_view is 0)")
        if self.report.cross_validation is None:
            return self
        kind = self.report.cross_validation.kind
        if self.train is None:
            raise ValueError(f"report.cross_validation {kind!r} needs a train section")
        if fold is not None:
            raise ValueError("train.fold: report.cross_validation sets the fold of each run; leave train.fold unset")
        if subjects.train < 3:
            raise ValueError(
                f"report.cross_validation {kind!r} needs at least 3 training subjects (each fold trains on all but "
                f"one), data.cohort.subjects.train is {subjects.train}"
            )
        if views.novel_view == 0:
            raise ValueError(
                f"report.cross_validation {kind!r} tests each held-out subject on its novel views: "
                "data.views.novel_view must be at least 1"
            )
        return self

    def reported_strategies(self) -> list[str]:
        """The strategies ``study reproduce`` runs: ``report.strategies``, else every strategy of ``train``."""
        return list(self.report.strategies or (self.train.strategies if self.train is not None else []))

    def training_seed(self) -> int:
        return self.seed if self.train is None or self.train.seed is None else self.train.seed

    def run_name(self, strategy: str) -> str:
        """A strategy's default run name: ``<name>-<strategy>``, plus ``-fold<n>`` for a fold of a cross-validation
        and ``-seed<k>`` for another training seed."""
        seed, fold = self.training_seed(), self.train.fold if self.train is not None else None
        return (
            f"{self.name}-{strategy}"
            + (f"-fold{fold.number}" if fold is not None else "")
            + (f"-seed{seed}" if seed != self.seed else "")
        )

    def data_part(self) -> dict:
        """What defines the data set (and nothing else): the generated folder is claimed by this. How many
        landmarks a registration needs is not: it changes the measures, not the rows."""
        exclude = {"data": {"landmarks": {"min_for_registration"}}}
        return self.model_dump(mode="json", include={"name", "seed", "data"}, exclude=exclude)


def find_yaml(name_or_path: str | Path, shipped: Path, what: str, kind: str) -> Path:
    """A YAML file: a path as given, else ``<name>.yaml`` in the package folder ``shipped``.

    ``what`` and ``kind`` name the file in errors, e.g. "config" and "preset".
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: {what} file not found")
        return candidate
    packaged = shipped / f"{name_or_path}.yaml"
    if not packaged.is_file():
        names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
        raise ConfigError(f"{name_or_path}: neither a {what} file nor a {kind} ({kind}s: {names})")
    return packaged


def apply_override(raw: dict, override: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in the nested dict ``raw``."""
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected dotted.path=value")
    path, value = override.split("=", 1)
    keys = path.strip().split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{override}': '{key}' is not a section")
    node[keys[-1]] = yaml.safe_load(value)


def read_yaml_mapping(path: Path) -> dict:
    """The mapping at the top of a YAML file (empty for an empty file)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def merged(base: dict, override: dict) -> dict:
    """``override`` laid over ``base``: nested mappings merge key by key; any other value (a list too) replaces."""
    result = dict(base)
    for key, value in override.items():
        both_mappings = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both_mappings else value
    return result


def read_config_mapping(path: Path, extended_by: tuple[Path, ...] = ()) -> dict:
    """The raw config of a YAML file with its ``extends`` chain resolved (the merged mapping, no ``extends`` key).

    ``extended_by``: the files that extend this one, closest last (to tell a cycle).
    """
    raw = read_yaml_mapping(path)
    if "extends" not in raw:
        return raw
    base = raw.pop("extends")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: extends must name a preset or a .yaml file, got {base!r}")
    base_path = _extended_file(path, base.strip())
    chain = (*extended_by, path)
    if base_path.resolve() in {file.resolve() for file in chain}:
        cycle = " -> ".join(str(file) for file in (*chain, base_path))
        raise ConfigError(f"{path}: extends {base!r} closes a cycle of config files: {cycle}")
    return merged(read_config_mapping(base_path, chain), raw)


def _extended_file(path: Path, base: str) -> Path:
    """The file ``extends: base`` of the config file ``path`` names: a .yaml path relative to it, or a preset."""
    if Path(base).suffix in (".yaml", ".yml"):
        extended = path.parent / base
        if not extended.is_file():
            raise ConfigError(f"{path}: extends {base!r}, but {extended} is not a file")
        return extended
    preset = PRESETS_DIR / f"{base}.yaml"
    if not preset.is_file():
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"{path}: extends {base!r}, which is neither a preset ({names}) nor a .yaml file")
    return preset


def problems(error: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: message; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())


def load_config(name_or_path: str, overrides: list[str] = ()) -> StudyConfig:
    """The validated study config of a preset or YAML file, its ``extends`` resolved, with overrides applied."""
    path = find_yaml(name_or_path, PRESETS_DIR, "config", "preset")
    raw = read_config_mapping(path)
    for override in overrides:
        apply_override(raw, override)
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {problems(error)}") from error
