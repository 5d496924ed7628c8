"""Failure injection for the resume tests: one worker exits hard, once, in the middle of an epoch.

Tests set ``FAIL_ONCE`` (e.g. with ``monkeypatch``) to ``{"epoch": k, "marker": path}`` before
calling ``driver.train``; the driver hands it to the workers, whose loop calls ``inject``. A file
at ``marker`` records that the failure happened, so a restarted worker goes on.
"""

import os
import time
from pathlib import Path

__all__ = ["FAIL_ONCE", "inject"]

FAIL_ONCE: dict | None = None


def inject(fail_once: dict | None, epoch: int, rank: int, world_size: int) -> None:
    """Exit hard (the last worker of a DDP run, once) a second into epoch ``fail_once["epoch"]``; a run in process
    (one worker, the caller's own process) is never failed."""
    if not fail_once or world_size < 2 or epoch != fail_once["epoch"] or rank != world_size - 1:
        return
    if os.path.exists(fail_once["marker"]):
        return
    Path(fail_once["marker"]).touch()
    time.sleep(1.0)  # as a crash mid-epoch would; the controller registers the last checkpoint meanwhile
    os._exit(1)
