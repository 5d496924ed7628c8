import logging

import pytest

from tests.helpers import TINY_CONFIG


def pytest_collection_modifyitems(config, items):
    """A test that starts Ray (fixture ``ray_session``) belongs to the slow tier."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(f"{item.nodeid} starts Ray (fixture ray_session) but is not marked slow")


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
