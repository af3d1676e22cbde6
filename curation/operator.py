"""What a step asks of the cluster, as data its config owns and ``pipelines/`` reads.

An operator is a plain class: ``__init__(config, ...)`` loads what it needs once,
``__call__(batch: pyarrow.Table) -> pyarrow.Table`` transforms a batch. It knows nothing
of Ray. Each step's config dataclass (next to its operator) owns the step's pool in a
field ``pool``, so every step is tuned the same way (``--set caption.pool.actors=4``)
and each number has one owner:

* ``TaskPool``: a step with no model to keep loaded runs as plain Ray tasks, which start
  in milliseconds (an actor pool costs seconds). It has no ``actors`` or ``num_gpus``.
* ``ActorPool``: a step that loads a model runs on up to ``actors`` actors, each loading
  it once; ``num_gpus`` is its declaration, asked for when the job's ``--gpus`` decides
  GPUs (``pipelines/wiring.py``: on a cluster that has or can start GPU nodes), so one
  config runs anywhere.

``batch_size`` is the rows per call, or, for an operator that declares
``whole_inputs = True``, the *inputs* per call: the wiring then hands it every row of
each input together (see ``pipelines/job.py``, ``map_operator``).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, ClassVar


def setting(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its ``--help`` text in the field's metadata.

    ``pipelines/config.py`` ``key_help`` lists every key with this text, so the meaning is
    written once, on the field, where code and help cannot drift apart. ``factory`` is
    ``default_factory`` (nested configs, lists); neither default nor factory: a required key.
    """
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TaskPool:
    """Stateless step: plain Ray tasks of ``batch_size`` rows (or inputs), ``num_cpus`` each."""

    batch_size: int = setting(8, help="rows (or whole inputs) per task")
    num_cpus: float = setting(0.5, help="CPUs each task asks of Ray")

    # Keys of ActorPool that mean nothing here; the config loader says why when one is set.
    REJECTED: ClassVar[dict[str, str]] = {
        "actors": "this step loads no model, so it runs as Ray tasks (as many as the CPUs allow), not on actors",
        "num_gpus": "this step runs on CPUs only",
    }

    def __post_init__(self) -> None:
        _check(self.batch_size, self.num_cpus)


@dataclass
class ActorPool:
    """Model step: up to ``actors`` actors, each asking ``num_cpus`` and (when the job uses GPUs) ``num_gpus``."""

    actors: int = setting(1, help="at most this many actors, each loading the model once")
    batch_size: int = setting(8, help="rows (or whole inputs) per call: the model's batch")
    num_cpus: float = setting(0.5, help="CPUs each actor asks of Ray")
    num_gpus: float = setting(0.0, help="GPUs each actor asks when the job uses GPUs (--gpus; fractions share one)")

    def __post_init__(self) -> None:
        _check(self.batch_size, self.num_cpus)
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0, got {self.num_gpus}")


def _check(batch_size: int, num_cpus: float) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_cpus <= 0:
        raise ValueError(f"num_cpus must be > 0, got {num_cpus}")
