"""Training checkpoints: the weights users load, and the state an exact resume needs.

``OUT/checkpoints/step-00000100/`` holds:

* ``model.safetensors`` (full fine-tuning: every transformer weight + ``magref.alpha``, the
  format ``model.sample --checkpoint`` reads) or ``lora.safetensors`` (adapters + alphas,
  for ``model.sample --lora``);
* ``state/``: the trainable parameters and the AdamW moments as a
  ``torch.distributed.checkpoint`` (each rank writes its own shard, so FSDP2 never gathers
  optimiser state on one rank; frozen weights are not written);
* ``rank<r>.json`` per rank: the data stream's position (epoch, cursor, waiting items,
  skipped records) and ``rank<r>.rng.safetensors`` with the torch RNG states;
* ``trainer.json``: step, scheduler state, world size and the run's config.

The folder is written as ``step-....tmp`` and renamed when every rank has finished, so a
killed save is never taken for a checkpoint; ``--resume auto`` picks the newest complete one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from model.train.distributed import Cluster, barrier, unwrap
from model.weights.checkpoint import ALPHA_KEY, write_checkpoint
from model.weights.lora import save_lora

CHECKPOINTS = "checkpoints"
TRAINER = "trainer.json"
_STEP = re.compile(r"^step-(\d{8})$")


def step_dir(out: str | Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS / f"step-{step:08d}"


def complete_checkpoints(out: str | Path) -> list[Path]:
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP.match(p.name) and (p / TRAINER).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_checkpoint(out: str | Path, resume: str) -> Path | None:
    """``auto``: the newest complete checkpoint in OUT (None if there is none); else a path."""
    if resume == "auto":
        found = complete_checkpoints(out)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / TRAINER).is_file():
        raise FileNotFoundError(f"--resume {resume!r} is not a complete checkpoint folder "
                                f"(no {TRAINER}); checkpoints live in OUT/{CHECKPOINTS}/step-N")
    return path


def _full_weights(model: torch.nn.Module, cluster: Cluster) -> dict[str, torch.Tensor] | None:
    """Every transformer weight + the alphas, gathered on rank 0 (a collective under FSDP2)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(unwrap(model), options=StateDictOptions(
        full_state_dict=True, cpu_offload=True))
    if not cluster.is_main:
        return None
    return {(ALPHA_KEY if k == "disentangler.alpha" else k): v for k, v in full.items()}


def save_weights(path: Path, model: torch.nn.Module, lora: bool, cluster: Cluster) -> None:
    """``model.safetensors`` / ``lora.safetensors`` in the formats ``model.sample`` loads."""
    inner = unwrap(model)
    if lora:
        if cluster.is_main:
            save_lora(str(path), inner.transformer, inner.disentangler)
        return
    tensors = _full_weights(model, cluster)
    if tensors is not None:
        write_checkpoint(str(path), tensors, inner.transformer.config)


def weights_name(lora: bool) -> str:
    return "lora.safetensors" if lora else "model.safetensors"


def _dcp_options() -> Any:
    """Trainable parameters only (LoRA: the frozen base is reloaded from --base, not saved)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=False)


def save(out: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, data_state: dict[str, Any], config: dict[str, Any], lora: bool,
         cluster: Cluster, keep: int | None = None) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it). Returns its folder."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = step_dir(out, step)
    tmp = final.with_name(final.name + ".tmp")
    if cluster.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(cluster)
    save_weights(tmp / weights_name(lora), model, lora, cluster)
    model_state, optim_state = get_state_dict(unwrap(model), optimizer, options=_dcp_options())
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp / "state"))
    rank = cluster.rank
    (tmp / f"rank{rank}.json").write_text(json.dumps(data_state, indent=1))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / f"rank{rank}.rng.safetensors"))
    barrier(cluster)
    if cluster.is_main:
        trainer = {"step": step, "world": cluster.world, "scheduler": scheduler.state_dict(),
                   "config": config}
        (tmp / TRAINER).write_text(json.dumps(trainer, indent=1, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep:
            for old in complete_checkpoints(out)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier(cluster)
    return final


def read_trainer(path: Path) -> dict[str, Any]:
    return json.loads((path / TRAINER).read_text())


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
         cluster: Cluster) -> tuple[int, dict[str, Any]]:
    """Restore a checkpoint into live objects; returns (step, this rank's data state)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    trainer = read_trainer(path)
    if trainer["world"] != cluster.world:
        raise ValueError(f"{path} was written by {trainer['world']} processes; an exact resume "
                         f"needs the same number (this run has {cluster.world})")
    model_state, optim_state = get_state_dict(unwrap(model), optimizer, options=_dcp_options())
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path / "state"))
    set_state_dict(unwrap(model), optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"], options=_dcp_options())
    scheduler.load_state_dict(trainer["scheduler"])
    rank = cluster.rank
    rng = load_file(str(path / f"rank{rank}.rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    data_state = json.loads((path / f"rank{rank}.json").read_text())
    return int(trainer["step"]), data_state
