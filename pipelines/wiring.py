"""Ray wiring: start or join Ray, and run a ``curation`` operator as a Ray Data step.

* **GPUs by declaration.** A model step declares ``pool.num_gpus``; the job's ``--gpus``
  decides once whether steps ask for them: ``on`` always (an autoscaler then starts GPU
  nodes for the request), ``off`` never, ``auto`` when the cluster has GPUs *or can start
  them* (:func:`gpu_capacity` reads the autoscaler's node types). Deciding from what is up
  at job start would never start a GPU node on a cluster whose GPU workers scale from 0.
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

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Any

import pyarrow as pa

from curation.envelope import group_inputs, ungroup_inputs
from curation.operator import ActorPool, TaskPool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_MODES = ("auto", "on", "off")
USE_GPUS = "magref.use_gpus"  # DataContext key: the job's decision, read by map_operator
GPU_STEPS = "magref.gpu_steps"  # DataContext key: the steps that asked for GPUs (for the wait warning)
# Where `ray up` leaves the autoscaler's config on the head node (ray_cluster.yaml's head
# start command passes it to `ray start --autoscaling-config`); a job driver runs there.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def quiet_ray(verbose: bool) -> None:
    """Ray at WARNING and Ray Data's plans and progress dumps off, unless ``--verbose``.

    Set before ``ray.init``: the driver's C++ core worker reads its log level from the
    environment (its "constructor arguments in the object store" line, one per actor
    pool, is not for users).
    """
    if verbose:
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import ray.data

    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the job shows its own bar (pipelines/progress.py)
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.execution_options.verbose_progress = False


def init_ray(address: str | None, verbose: bool = False) -> bool:
    """Connect to a cluster or start an embedded Ray. Returns whether we started it.

    ``ray.init(address="local")`` never attaches to a stale cluster a killed job left
    in /tmp/ray; RAY_ADDRESS (set by ``ray job submit``) and ``--address`` connect.
    Quiet by default (:func:`quiet_ray`): workers' output reaches the driver only with
    ``verbose``; failures still arrive as exceptions and error rows.
    """
    import ray

    quiet_ray(verbose)
    if ray.is_initialized():
        return False
    level = logging.INFO if verbose else logging.WARNING
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        kwargs: dict[str, Any] = {"address": target}
    else:
        # Embedded: workers must import our packages even when magref is not installed.
        paths = [ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        kwargs = {"address": "local", "include_dashboard": False}
    if verbose:
        ray.init(**kwargs, log_to_driver=True, logging_level=level)
    else:
        with _native_info_dropped():
            ray.init(**kwargs, log_to_driver=False, logging_level=level)
    return True


@contextlib.contextmanager
def _native_info_dropped():
    """Hold back the INFO lines Ray's C++ side writes to stderr while it starts (file descriptor 2,
    out of Python's reach); anything else it writes, and everything on failure, is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if failed or not _NATIVE_INFO.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


_NATIVE_INFO = re.compile(r"^\[[\d\- :,]+ I \d+ \d+\]")  # [2026-12-06 22:25:50,154 I 31412 31412] ...


def has_gpus() -> bool:
    """Whether a GPU is up right now (not whether one can be started: see :func:`gpu_capacity`)."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def gpu_capacity() -> float:
    """GPUs the cluster has now or its autoscaler can start: up nodes, then the declared node types.

    Autoscaler v2 (KubeRay, recent clusters) publishes its node types in the GCS; the v1
    autoscaler that ``ray up`` starts reads ``~/ray_bootstrap_config.yaml`` on the head
    (``MAGREF_CLUSTER_CONFIG`` names another file), where the job's driver runs.
    """
    import ray

    up = ray.cluster_resources().get("GPU", 0)
    if up:
        return up
    try:
        from ray._private.state import state

        declared = (state.get_max_resources_from_cluster_config() or {}).get("GPU", 0)
    except Exception:  # an older Ray, or no autoscaler: nothing declared
        declared = 0
    return declared or declared_gpus()


def declared_gpus() -> float:
    """GPUs the v1 autoscaler's config lets it start: GPU per node type times its max_workers."""
    import yaml

    path = os.path.expanduser(os.environ.get("MAGREF_CLUSTER_CONFIG") or BOOTSTRAP_CONFIG)
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    types = config.get("available_node_types") or {}
    return sum(float((t.get("resources") or {}).get("GPU", 0)) * int(t.get("max_workers", 0) or 0)
               for t in types.values() if isinstance(t, dict))


def use_gpus(mode: str) -> bool:
    """The job's one GPU decision (``--gpus``): model steps then ask for their declared GPUs."""
    if mode not in GPU_MODES:
        raise ValueError(f"--gpus must be one of {GPU_MODES}, got {mode!r}")
    if mode == "auto":
        return gpu_capacity() > 0
    return mode == "on"


def map_operator(ds, operator_cls: type, pool: TaskPool | ActorPool, **init_kwargs: Any):
    """``ds.map_batches`` for a ``curation`` operator, sized by its step's pool.

    ``init_kwargs`` go to the operator's constructor (once per actor, or per task batch for
    a ``TaskPool`` step, whose operators load nothing worth keeping). GPUs are requested
    when the job decided to use them (``--gpus``, :func:`use_gpus`, kept in the dataset's
    DataContext by ``StageJob.dataset``), so one config runs anywhere. An operator that sets
    ``whole_inputs = True`` gets every row of each input in one call (module docstring).
    """
    whole = getattr(operator_cls, "whole_inputs", False)
    if whole:
        ds = ds.map_batches(group_inputs, batch_size=None, batch_format="pyarrow", num_cpus=0.1)
    kwargs: dict[str, Any] = {"batch_size": pool.batch_size, "batch_format": "pyarrow", "num_cpus": pool.num_cpus}
    if isinstance(pool, TaskPool):
        return ds.map_batches(_task(operator_cls, whole), fn_kwargs={"init_kwargs": init_kwargs}, **kwargs)
    from ray.data import ActorPoolStrategy

    gpus = ds.context.get_config(USE_GPUS, None)
    if gpus is None:  # a dataset not made by StageJob: decide as --gpus auto would
        gpus = use_gpus("auto")
        ds.context.set_config(USE_GPUS, gpus)
    if pool.num_gpus and gpus:
        kwargs["num_gpus"] = pool.num_gpus
        ds.context.set_config(GPU_STEPS, [*ds.context.get_config(GPU_STEPS, []), operator_cls.__name__])
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
