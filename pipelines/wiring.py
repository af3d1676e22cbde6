"""Ray wiring: start or join Ray, and run a ``curation`` operator as a Ray Data step.

* **Pools.** A step's config owns its pool (``curation.operator``): a ``TaskPool`` step
  runs as Ray tasks, an ``ActorPool`` step on actors that load the model once.
* **Frames before models.** A GPU step's frames are decoded by a ``FrameReader`` task
  step in front of it. Ray fuses a task step into the next actor step only when their
  remote args are equal, i.e. on CPU-only runs (where fusing saves a copy); once the
  model step asks for GPUs the decode step stays a separate operator on CPU slots.
* **Whole inputs.** An operator with ``whole_inputs = True`` is handed every row of each
  input in one call: rows are grouped to one row per input (list columns) in front of it
  and flattened back inside its worker, so ``batch_size`` counts inputs. This relies on
  the block invariant (all rows of an input in one block), which ``StageJob.dataset`` sets up.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from curation.envelope import group_inputs, ungroup_inputs
from curation.operator import ActorPool, TaskPool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def init_ray(address: str | None) -> bool:
    """Connect to a cluster or start an embedded Ray. Returns whether we started it.

    ``ray.init(address="local")`` never attaches to a stale cluster a killed job left
    in /tmp/ray; RAY_ADDRESS (set by ``ray job submit``) and ``--address`` connect.
    """
    import ray

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, log_to_driver=True)
        return True
    # Embedded: workers must import our packages even when magref is not installed.
    paths = [ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    return True


def has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def map_operator(ds, operator_cls: type, pool: TaskPool | ActorPool, **init_kwargs: Any):
    """``ds.map_batches`` for a ``curation`` operator, sized by its step's pool.

    ``init_kwargs`` go to the operator's constructor (once per actor, or per task batch for
    a ``TaskPool`` step, whose operators load nothing worth keeping). GPUs are requested
    only when the cluster has some, so one config runs anywhere. An operator that sets
    ``whole_inputs = True`` gets every row of each input in one call (module docstring).
    """
    whole = getattr(operator_cls, "whole_inputs", False)
    if whole:
        ds = ds.map_batches(group_inputs, batch_size=None, batch_format="pyarrow", num_cpus=0.1)
    kwargs: dict[str, Any] = {"batch_size": pool.batch_size, "batch_format": "pyarrow", "num_cpus": pool.num_cpus}
    if isinstance(pool, TaskPool):
        return ds.map_batches(_task(operator_cls, whole), fn_kwargs={"init_kwargs": init_kwargs}, **kwargs)
    from ray.data import ActorPoolStrategy

    if pool.num_gpus and has_gpus():
        kwargs["num_gpus"] = pool.num_gpus
    return ds.map_batches(_actor(operator_cls, whole), fn_constructor_kwargs=init_kwargs,
                          compute=ActorPoolStrategy(min_size=1, max_size=pool.actors), **kwargs)


def _task(operator_cls: type, whole: bool):
    """A task function that builds the operator per batch, named after it for Ray's progress bars."""

    def run(batch: pa.Table, init_kwargs: dict[str, Any]) -> pa.Table:
        return operator_cls(**init_kwargs)(ungroup_inputs(batch) if whole else batch)

    run.__name__ = run.__qualname__ = operator_cls.__name__
    return run


def _actor(operator_cls: type, whole: bool) -> type:
    """The operator class itself, or (whole inputs) a wrapper that flattens grouped rows first."""
    if not whole:
        return operator_cls

    class WholeInputs:
        def __init__(self, **init_kwargs: Any):
            self.operator = operator_cls(**init_kwargs)

        def __call__(self, batch: pa.Table) -> pa.Table:
            return self.operator(ungroup_inputs(batch))

    WholeInputs.__name__ = WholeInputs.__qualname__ = operator_cls.__name__
    return WholeInputs
