"""Connecting to Ray: a cluster when ``RAY_ADDRESS`` names one, else a local instance."""

import logging
import os

import ray
from ray.data import DataContext


def ensure_ray() -> None:
    """Start or join Ray once per process (tests start it themselves, once per session).

    A local instance gets its dashboard on 127.0.0.1 (Ray Train's state queries need it).
    """
    quiet_data_context()
    # Ray Train's controller polls its workers this often; the default 2 s adds up to 2 s per epoch.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING)


def quiet_data_context() -> None:
    """Ray Data without progress bars or execution banners: our commands print their own progress.

    Datasets carry the context of the process that made them, so this also quiets Ray Train workers.
    """
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
