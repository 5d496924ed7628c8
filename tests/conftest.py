import logging

import pytest

TINY_CONFIG = """
name: tiny
seed: 3
data:
  cohort:
    kind: phantom
    subjects: {train: 2, val: 1, novel_subject: 1}
    voxel_size_mm: 4.0
  views: {train: 4, novel_view: 2, val: 3, novel_subject: 3}
  detector: {sdd: 1020.0, height: 1436, delx: 0.3}
  image_size: 48
  poses:
    rotation_deg: [15.0, 15.0, 15.0]
    translation_mm: [20.0, 40.0, 20.0]
    source_to_isocenter: 800.0
  renderer: {name: trilinear}
  shard_size: 2
"""


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (each start costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_config_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path
