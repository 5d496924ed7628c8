"""Connecting to Ray: a cluster when ``RAY_ADDRESS`` names one, else a local instance."""

import logging
import os

import ray


def ensure_ray() -> None:
    """Start or join Ray once per process (tests start it themselves, once per session)."""
    if ray.is_initialized():
        return
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or None,
        logging_level=logging.WARNING,
        include_dashboard=False if not os.environ.get("RAY_ADDRESS") else None,
    )
