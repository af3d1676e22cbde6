"""Processes and devices for training: one process, ``torchrun``, or Ray Train's workers.

``torchrun`` and Ray Train both start one process per device and set ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; Ray Train also creates the process group itself. So
``setup`` joins a group that exists, makes one when the environment describes several
processes, and otherwise runs alone, and the training loop is the same in all three.

Wrapping follows what each mode needs: full fine-tuning shards parameters, gradients and
optimiser state with FSDP2 (``fully_shard`` per transformer block, then the root), because
a 14B model with AdamW state does not fit one GPU; LoRA trains a few million parameters on
a frozen base that every GPU holds anyway, so plain DDP over the trainable ones is enough.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass
class Cluster:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> Cluster:
    """Join or create the process group described by the environment; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    use_cuda = want.startswith("cuda")
    if use_cuda:
        chosen = torch.device("cuda", local_rank if world > 1 else (torch.device(want).index or 0))
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return Cluster(rank, world, local_rank, chosen, owns)


def teardown(cluster: Cluster, finished: bool = True) -> None:
    """Leave the process group. After a run that finished on every rank, wait for all of
    them first: a rank that destroys its group while a peer's last collectives are still in
    flight can abort at exit ("terminate called without an active exception", seen once
    with gloo on 2 loaded CPU cores). After a failure, no barrier: the peers may be gone."""
    if cluster.owns_group and dist.is_initialized():
        if finished and cluster.world > 1:
            dist.barrier()
        dist.destroy_process_group()


def barrier(cluster: Cluster) -> None:
    if cluster.world > 1:
        dist.barrier()


def all_sum(value: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """Sum over ranks (a copy; the input is untouched)."""
    value = value.detach().clone()
    if cluster.world > 1:
        dist.all_reduce(value)
    return value


def wrap(model: torch.nn.Module, cluster: Cluster, shard: bool) -> torch.nn.Module:
    """FSDP2 (``shard=True``, full fine-tuning) or DDP over trainable parameters (LoRA)."""
    if cluster.world == 1:
        return model
    if shard:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(cluster.device.type, (cluster.world,))
        for block in model.transformer.blocks:  # moves each block to the mesh's device, sharded
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel

    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    frozen += [name for name, _ in model.named_buffers()]
    # The frozen base is loaded identically on every rank; broadcasting 14B of it is waste.
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
    ids = [cluster.device.index] if cluster.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps before the last one."""
    if enabled:
        yield
        return
    if hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
        return
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
        return
    yield


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
