"""One way to start or join Ray, for every pipeline.

A pipeline run as ``python pipelines/X.py`` on a laptop starts a local Ray; under ``ray job submit`` (or with
``RAY_ADDRESS`` set) it joins that cluster instead.
"""

from __future__ import annotations

import os

import ray

# Local clusters are started with authentication off (a token written by one local ray.init() would
# otherwise make a later `ray start --head` demand tokens from `ray job submit`).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def init_ray(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True,
             **kwargs) -> None:
    """Join ``address`` / ``$RAY_ADDRESS`` when given (``auto`` = the cluster started on this machine), else start
    a new local Ray (no dashboard, loopback only). ``log_to_driver=False``: the workers' output stays in Ray's
    session logs instead of this process's console (the main job's quiet console)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, **kwargs)
        return
    # address="local": always a fresh local instance. Without it ray.init() silently joins whatever cluster was
    # last started on this machine (another job's, a test's), which makes runs depend on what else is running.
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        _node_ip_address="127.0.0.1",
        **kwargs,
    )
