"""The schema of a study config: YAML presets plus command-line overrides, validated by pydantic.

A config is named by a preset (``demo``, ``paper``: ``study/presets/<name>.yaml``) or by a path to
a YAML file. Overrides are ``dotted.path=value`` strings whose value is parsed as YAML, e.g.
``data.image_size=64`` or ``data.poses.rotation_deg=[10,10,10]``.
"""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.geometry import Camera, rescale
from components.poses import PoseRanges

PRESETS_DIR = Path(__file__).parent / "presets"


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

    kind: Literal["phantom", "folder"] = "phantom"
    subjects: SubjectCounts
    voxel_size_mm: float = Field(2.0, gt=0.5, le=5.0)
    path: str | None = None
    coordinates: Literal["ras", "lps", "voxel"] = "ras"

    @model_validator(mode="after")
    def folder_needs_a_path(self):
        if self.kind == "folder" and not self.path:
            raise ValueError("cohort.path is required when cohort.kind is 'folder'")
        return self


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
            sdd=self.sdd, height=self.height, width=self.width or self.height,
            delx=self.delx, dely=self.dely or self.delx, x0=self.x0, y0=self.y0,
        )


class PosesConfig(Strict):
    """Uniform pose ranges around the AP view."""

    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    source_to_isocenter: float = Field(gt=0)

    def ranges(self) -> PoseRanges:
        return PoseRanges(self.rotation_deg, self.translation_mm, self.source_to_isocenter)


class RendererConfig(Strict):
    name: Literal["trilinear", "siddon"] = "trilinear"
    patch_size: int | None = Field(None, gt=0)
    n_points: int | None = Field(None, gt=1)
    views_per_call: int = Field(1, ge=1)


class DataConfig(Strict):
    cohort: CohortConfig
    views: ViewCounts
    detector: DetectorConfig
    image_size: int = Field(gt=7, description="training resolution, pixels (square)")
    poses: PosesConfig
    renderer: RendererConfig = RendererConfig()
    shard_size: int = Field(25, ge=1, description="views per Parquet shard")
    workers: int | None = Field(None, ge=1, description="rendering actors (default: one per CPU)")
    use_gpu: bool | None = Field(None, description="render on GPUs (default: when Ray has any)")

    def render_camera(self) -> Camera:
        """The detector rescaled to the training resolution (rendering happens at that size)."""
        camera, _, _ = rescale(self.detector.camera(), self.image_size)
        return camera


class StudyConfig(Strict):
    name: str
    seed: int = 0
    data: DataConfig


def resolve_path(name_or_path: str) -> Path:
    """A preset name or a YAML path -> the YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: config file not found")
        return candidate
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"{name_or_path}: neither a config file nor a preset (presets: {names})")
    return preset


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


def load_config(name_or_path: str, overrides: list[str] = ()) -> StudyConfig:
    """The validated study config of a preset or YAML file, with overrides applied."""
    path = resolve_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for override in overrides:
        apply_override(raw, override)
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"{path}: {problems}") from error
