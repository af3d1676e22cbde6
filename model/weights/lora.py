"""LoRA for MAGREF through ``peft``: add adapters to the Wan blocks, save them small, load them.

A LoRA file is one safetensors with the adapter weights under diffusers' pipeline naming
(``transformer.blocks.0.attn1.to_q.lora_A.weight``), the disentanglement alphas under
``magref.alpha`` (they are trained in every mode) and the ``LoraConfig`` in the header
(``lora_adapter_metadata``, as diffusers writes it). So ``model.sample --lora`` restores
exactly what was trained, and diffusers' own ``WanImageToVideoPipeline.load_lora_weights``
can read the same file (without the alphas, which plain Wan has no place for).

Targets default to every projection of the blocks' attention (self, cross, and the image
keys/values of I2V) and feed-forward, the set musubi-tuner and DiffSynth train; the
embedders and the output head stay frozen.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import torch

from model.disentangle import SubjectDisentanglement
from model.weights.checkpoint import ALPHA_KEY, TRANSFORMER_PREFIX, CheckpointError
from schemas.io import Location, atomic_write

ADAPTER = "magref"
FORMAT = "magref-lora-v1"
METADATA_KEY = "lora_adapter_metadata"
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj",
                   "ffn.net.0.proj", "ffn.net.2")


def lora_config(rank: int, alpha: float | None = None, targets: Sequence[str] = DEFAULT_TARGETS,
                dropout: float = 0.0) -> Any:
    """A ``LoraConfig`` on the blocks' ``targets`` (suffixes of module names)."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank {rank} must be >= 1")
    names = "|".join(re.escape(t) for t in targets)
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                      target_modules=rf"blocks\.\d+\.(?:.*\.)?(?:{names})", init_lora_weights=True)


def add_lora(transformer: torch.nn.Module, config: Any) -> None:
    """Inject the adapter; peft freezes every other transformer weight."""
    transformer.add_adapter(config, adapter_name=ADAPTER)


def lora_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=ADAPTER)


def save_lora(path: str, transformer: torch.nn.Module, disentangler: SubjectDisentanglement) -> None:
    """Write adapters + alphas + config atomically (a killed save leaves no complete-looking file)."""
    from safetensors.torch import save_file

    config = transformer.peft_config[ADAPTER].to_dict()
    tensors = {TRANSFORMER_PREFIX + k: v.detach().float().cpu().contiguous()
               for k, v in lora_state_dict(transformer).items()}
    tensors[ALPHA_KEY] = disentangler.alpha.detach().float().cpu().contiguous()
    metadata = {"format": FORMAT, "num_layers": str(disentangler.alpha.numel()),
                METADATA_KEY: json.dumps(config, default=_jsonable, sort_keys=True)}
    with atomic_write(Location.of(path)) as tmp:
        save_file(tensors, tmp.path, metadata=metadata)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return str(value)


def load_lora(path: str, transformer: torch.nn.Module,
              disentangler: SubjectDisentanglement) -> dict[str, int]:
    """Add the file's adapter to ``transformer`` and load it and the alphas; every key must fit."""
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise CheckpointError(f"LoRA file {path!r} does not exist")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: no {METADATA_KEY} header; not a LoRA file written by model.train")
    state = load_file(path)
    alpha = state.pop(ALPHA_KEY, None)
    foreign = sorted(k for k in state if not k.startswith(TRANSFORMER_PREFIX))
    if foreign:
        raise CheckpointError(f"{path}: keys outside transformer.* and {ALPHA_KEY}: {foreign[:5]}")
    fields = json.loads(metadata[METADATA_KEY])
    config = LoraConfig(**{k: v for k, v in fields.items() if k in LoraConfig.__dataclass_fields__})
    if ADAPTER in getattr(transformer, "peft_config", {}):
        raise CheckpointError(f"this transformer already has a {ADAPTER!r} adapter")
    add_lora(transformer, config)
    weights = {k[len(TRANSFORMER_PREFIX):]: v for k, v in state.items()}
    expected = set(lora_state_dict(transformer))
    missing, unknown = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unknown:
        raise CheckpointError(f"{path} does not fit this transformer: missing {missing[:5]}, "
                              f"unknown {unknown[:5]}")
    set_peft_model_state_dict(transformer, weights, adapter_name=ADAPTER)
    if alpha is not None:
        if alpha.shape != disentangler.alpha.shape:
            raise CheckpointError(f"{path}: {ALPHA_KEY} has shape {tuple(alpha.shape)}, the "
                                  f"transformer has {disentangler.alpha.numel()} blocks")
        with torch.no_grad():
            disentangler.alpha.copy_(alpha)
    return {"lora_tensors": len(weights), "alpha": int(alpha is not None)}
