"""What an operator declares about itself, as data the job wiring reads.

An operator is a plain class: ``__init__(config)`` loads what it needs once,
``__call__(batch: pyarrow.Table) -> pyarrow.Table`` transforms a batch. It knows
nothing of Ray; ``pipelines/`` reads ``resources`` to size the actor pool.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """Per-worker needs. ``num_gpus`` applies only when the cluster has GPUs.

    ``stateless`` operators load nothing worth keeping (no model), so they run as
    plain Ray tasks: starting an actor pool costs seconds that a probe does not.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 8
    stateless: bool = False
