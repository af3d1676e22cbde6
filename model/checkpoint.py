"""MAGREF checkpoints: one safetensors file, backbone keys in diffusers' naming + ``magref.*``.

Layout (all tensors, no pickle)::

    transformer.<diffusers WanTransformer3DModel key>   fine-tuned backbone weights (any subset)
    magref.alpha                                        [num_layers] Eq. 6 scales

Loading also accepts a plain diffusers Wan transformer state dict (bare keys, no prefix) —
then the alphas stay 0 and MAGREF equals the backbone — and an original-format Wan
checkpoint (``blocks.0.self_attn.q.weight``, as the MAGREF release ships), converted with
diffusers' own single-file converter. A key that fits neither is an error, not ignored.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file

from model.disentangle import SubjectDisentanglement

ALPHA_KEY = "magref.alpha"
TRANSFORMER_PREFIX = "transformer."
FORMAT = "magref-v1"


class CheckpointError(ValueError):
    """A checkpoint file that does not fit the backbone, with the offending keys."""


def save_checkpoint(path: str, transformer: torch.nn.Module,
                    disentangler: SubjectDisentanglement, include_transformer: bool = True) -> None:
    """Write alphas (and the backbone unless ``include_transformer=False``) atomically."""
    tensors = {ALPHA_KEY: disentangler.alpha.detach().float().cpu().contiguous()}
    if include_transformer:
        for key, value in transformer.state_dict().items():
            tensors[TRANSFORMER_PREFIX + key] = value.detach().cpu().contiguous()
    metadata = {"format": FORMAT, "num_layers": str(disentangler.alpha.numel()),
                "transformer_config": json.dumps(dict(transformer.config), default=str)}
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)  # a killed save never leaves a file that looks complete


def _is_original_wan(keys: set[str]) -> bool:
    return any(".self_attn." in k or ".cross_attn." in k for k in keys)


def load_checkpoint(path: str, transformer: torch.nn.Module,
                    disentangler: SubjectDisentanglement) -> dict[str, int]:
    """Load ``path`` into ``transformer`` and ``disentangler``; returns counts of what loaded."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    state = load_file(path)
    alpha = state.pop(ALPHA_KEY, None)
    backbone = {k[len(TRANSFORMER_PREFIX):] if k.startswith(TRANSFORMER_PREFIX) else k: v
                for k, v in state.items()}
    if backbone and _is_original_wan(set(backbone)):
        from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

        backbone = convert_wan_transformer_to_diffusers(backbone)
    _load_backbone(transformer, backbone, path)
    with torch.no_grad():
        if alpha is None:
            disentangler.alpha.zero_()
        elif alpha.shape != disentangler.alpha.shape:
            raise CheckpointError(f"{path}: {ALPHA_KEY} has shape {tuple(alpha.shape)}, the "
                                  f"transformer has {disentangler.alpha.numel()} blocks")
        else:
            disentangler.alpha.copy_(alpha)
    return {"transformer_tensors": len(backbone), "alpha": int(alpha is not None)}


def _load_backbone(transformer: torch.nn.Module, backbone: Mapping[str, torch.Tensor],
                   path: str) -> None:
    if not backbone:
        return
    own = transformer.state_dict()
    unknown = sorted(set(backbone) - set(own))
    wrong = sorted(k for k in set(backbone) & set(own) if backbone[k].shape != own[k].shape)
    if unknown or wrong:
        detail = [f"unknown keys {unknown[:5]}{'...' if len(unknown) > 5 else ''}"] if unknown else []
        detail += [f"{k}: {tuple(backbone[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]]
        raise CheckpointError(f"{path} does not fit this WanTransformer3DModel: " + "; ".join(detail))
    transformer.load_state_dict(dict(backbone), strict=False)
