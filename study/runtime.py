"""Connecting to Ray: a cluster when ``RAY_ADDRESS`` names one, else a local instance.

A process starts or joins Ray once (``ensure_ray``); a command that started it shuts it down at its
end (``release_ray``), so that Ray's shutdown messages land in the command's log file. Ray is
imported only here, when it is needed: a command that trains in process never pays for it.
"""

import logging
import os

from study import console

__all__ = ["ensure_ray", "ray_is_running", "release_ray"]

_started_here = False


def ensure_ray() -> None:
    """Start or join Ray once per process (tests start it themselves, once per session).

    Inside a command's session Ray logs at INFO (into the log file, or to the terminal with
    ``--verbose``); otherwise at WARNING.
    """
    import ray

    global _started_here
    quiet_data_context()
    # Ray Train's controller polls its workers this often; the default 2 s adds up to 2 s per epoch.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    if not ray.is_initialized():
        level = logging.INFO if console.in_session() else logging.WARNING
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=level)
        _started_here = True
    console.listen_to_ray()


def release_ray() -> None:
    """Shut Ray down if this process started it (a command's last step)."""
    global _started_here
    if _started_here:
        import ray

        ray.shutdown()
    _started_here = False


def quiet_data_context() -> None:
    """Ray Data without progress bars or execution banners: our commands print their own progress.

    Datasets carry the context of the process that made them, so this also quiets Ray Train workers.
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def ray_is_running() -> bool:
    """Whether this process is connected to Ray (without importing Ray when it was never imported)."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()
