"""MAGREF checkpoints: what ``--checkpoint`` loads, always with full coverage of the backbone.

Accepted forms (all safetensors, no pickle):

* our single file (``save_checkpoint``): ``transformer.<diffusers WanTransformer3DModel key>``
  for the *whole* backbone or none of it, plus ``magref.alpha`` ([num_layers], Eq. 6);
* a plain transformer state dict in one file, diffusers or original Wan key names
  (``blocks.0.self_attn.q.weight``); the alphas then stay 0 and MAGREF equals that backbone;
* a directory of ``*.safetensors`` shards (with a ``*.safetensors.index.json`` when
  sharded): the MAGREF release as shipped (original Wan names, its ``config.json``), a
  diffusers transformer folder (what ``python -m model.convert_release`` writes, or a Wan
  pipeline's ``transformer/``), or a pipeline folder holding ``transformer/``; a
  ``magref.safetensors`` beside the shards supplies ``magref.alpha``.

Coverage: every transformer tensor must come from the checkpoint and every checkpoint tensor
must land in the transformer with the same shape. A missing or left-over key is a
``CheckpointError`` that names it in the checkpoint's own naming. The check runs on names and
shapes before any weight is copied, so a failed load leaves the model as it was; tensors are
then copied one at a time, so a 14B release never sits in memory twice.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.disentangle import SubjectDisentanglement
from model.weights.wan_keys import is_original_wan, to_diffusers_key, to_original_key
from schemas.io import Location, atomic_write

ALPHA_KEY = "magref.alpha"
TRANSFORMER_PREFIX = "transformer."
FORMAT = "magref-v1"
ALPHA_FILE = "magref.safetensors"  # beside the shards of a checkpoint directory
SHOW = 8  # key names quoted per kind of problem in an error


class CheckpointError(ValueError):
    """A checkpoint that does not fit the backbone, with the offending keys."""


@dataclass
class Weights:
    """Where each tensor of a file or a (sharded) directory lives, with its shape."""

    where: str                                   # the path, for messages
    files: dict[str, str] = field(default_factory=dict)        # key -> safetensors file
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)   # config.json of a directory, if any
    metadata: dict[str, str] = field(default_factory=dict)     # of a single file


def save_checkpoint(path: str, transformer: torch.nn.Module,
                    disentangler: SubjectDisentanglement, include_transformer: bool = True) -> None:
    """Write alphas (and the backbone unless ``include_transformer=False``) atomically."""
    tensors = {ALPHA_KEY: disentangler.alpha}
    if include_transformer:
        for key, value in transformer.state_dict().items():
            tensors[TRANSFORMER_PREFIX + key] = value
    write_checkpoint(path, tensors, transformer.config)


def write_checkpoint(path: str, tensors: Mapping[str, torch.Tensor], transformer_config: Mapping) -> None:
    """The single-file format from tensors already named ``transformer.*`` / ``magref.alpha``
    (training gathers them itself under FSDP2); the alphas are stored in fp32."""
    tensors = {k: (v.float() if k == ALPHA_KEY else v).detach().cpu().contiguous()
               for k, v in tensors.items()}
    metadata = {"format": FORMAT, "num_layers": str(tensors[ALPHA_KEY].numel()),
                "transformer_config": json.dumps(dict(transformer_config), default=str)}
    with atomic_write(Location.of(path)) as tmp:  # a killed save never leaves a file that looks complete
        save_file(tensors, tmp.path, metadata=metadata)


def _shapes(path: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    with safe_open(path, framework="pt") as f:
        return ({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, f.metadata() or {})


def open_weights(path: str | os.PathLike) -> Weights:
    """Index a checkpoint file or directory (names and shapes only; no tensor is read).

    A directory's index is authoritative: a key it lists that its shard lacks, or a key a
    shard holds that it does not list, is an error naming both. Without an index every
    ``*.safetensors`` file but ``magref.safetensors`` is a shard, and a key in two is an error.
    """
    path = Path(path)
    if path.is_file():
        shapes, metadata = _shapes(str(path))
        return Weights(str(path), dict.fromkeys(shapes, str(path)), shapes, metadata=metadata)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    shards = sorted(p for p in path.glob("*.safetensors") if p.name != ALPHA_FILE)
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if not shards and not indexes and (path / "transformer").is_dir():
        return open_weights(path / "transformer")  # a pipeline folder
    if len(indexes) > 1:
        raise CheckpointError(f"{path}: more than one index file {[p.name for p in indexes]}")
    weights = Weights(str(path))
    config_file = path / "config.json"
    if config_file.is_file():
        try:
            weights.config = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from exc
    if indexes:
        _read_index(indexes[0], weights)
    else:
        if not shards:
            raise CheckpointError(f"{path}: no *.safetensors weights in this directory")
        for shard in shards:
            shapes, _ = _shapes(str(shard))
            for key, shape in shapes.items():
                if key in weights.files:
                    raise CheckpointError(f"{path}: {key!r} is in both "
                                          f"{Path(weights.files[key]).name} and {shard.name}")
                weights.files[key], weights.shapes[key] = str(shard), shape
    return weights


def _read_index(index: Path, weights: Weights) -> None:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a safetensors index with a weight_map ({exc})") from exc
    by_file: dict[str, set[str]] = defaultdict(set)
    for key, name in weight_map.items():
        by_file[name].add(key)
    for name, listed in sorted(by_file.items()):
        shard = index.parent / name
        if not shard.is_file():
            raise CheckpointError(f"{index} lists {len(listed)} tensors in {name}, which does not "
                                  f"exist (e.g. {sorted(listed)[0]!r})")
        shapes, _ = _shapes(str(shard))
        lacking, unlisted = sorted(listed - set(shapes)), sorted(set(shapes) - listed)
        if lacking:
            raise CheckpointError(f"{shard}: lacks {_names(lacking)}, which {index.name} "
                                  f"places there")
        if unlisted:
            raise CheckpointError(f"{shard}: holds {_names(unlisted)}, which {index.name} does "
                                  f"not list (left over)")
        for key in listed:
            weights.files[key], weights.shapes[key] = str(shard), shapes[key]


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:SHOW])
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''} [{shown}{', ...' if len(keys) > SHOW else ''}]"


def check_coverage(shapes: Mapping[str, tuple[int, ...]], target: Mapping[str, tuple[int, ...]],
                   where: str, rename: Callable[[str], str | None] = lambda k: k,
                   name_back: Callable[[str], str | None] = lambda k: k) -> dict[str, str]:
    """Map every checkpoint key onto exactly one target key, or raise naming what does not fit.

    ``rename`` turns a checkpoint key into the target's naming (None: it has no counterpart);
    ``name_back`` names a missing target key in the checkpoint's naming for the message.
    Returns {checkpoint key: target key}.
    """
    mapping: dict[str, str] = {}
    claimed: dict[str, str] = {}
    left_over, doubled, wrong = [], [], []
    for key in sorted(shapes):
        new = rename(key)
        if new is None or new not in target:
            left_over.append(key)
        elif new in claimed:
            doubled.append(f"{claimed[new]!r} and {key!r} both give {new!r}")
        else:
            mapping[key], claimed[new] = new, key
            if tuple(shapes[key]) != tuple(target[new]):
                wrong.append(f"{key!r} is {tuple(shapes[key])}, the transformer's "
                             f"{tuple(target[new])}")
    missing = sorted((name_back(k) or k) for k in target if k not in claimed)
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if left_over:
        problems.append(f"left over (no place in the transformer) {_names(left_over)}")
    if doubled:
        problems.append("duplicated: " + "; ".join(doubled[:SHOW]))
    if wrong:
        problems.append("shapes differ: " + "; ".join(wrong[:SHOW])
                        + (" ..." if len(wrong) > SHOW else ""))
    if problems:
        raise CheckpointError(f"{where} does not cover this WanTransformer3DModel exactly: "
                              + "; ".join(problems))
    return mapping


def _check_heads(config: Mapping, transformer: torch.nn.Module, where: str) -> None:
    """Head count is the one architecture field that no tensor shape reveals."""
    heads = config.get("num_heads", config.get("num_attention_heads"))
    own = transformer.config.num_attention_heads
    if heads is not None and int(heads) != own:
        raise CheckpointError(f"{where}: its config has {heads} attention heads, this "
                              f"transformer {own}")


def load_checkpoint(path: str | os.PathLike, transformer: torch.nn.Module,
                    disentangler: SubjectDisentanglement) -> dict[str, int | str]:
    """Load ``path`` into ``transformer`` and ``disentangler``; returns what loaded.

    The transformer is either covered completely or not touched (an alpha-only file).
    """
    weights = open_weights(path)
    alpha_source = weights if Path(path).is_file() else None
    if alpha_source is None and (Path(weights.where) / ALPHA_FILE).is_file():
        alpha_source = open_weights(Path(weights.where) / ALPHA_FILE)
    alpha = None
    if alpha_source is not None and ALPHA_KEY in alpha_source.shapes:
        with safe_open(alpha_source.files[ALPHA_KEY], framework="pt") as f:
            alpha = f.get_tensor(ALPHA_KEY)
        weights.files.pop(ALPHA_KEY, None)
        weights.shapes.pop(ALPHA_KEY, None)
    if alpha_source is not None and alpha_source is not weights:
        stray = sorted(set(alpha_source.shapes) - {ALPHA_KEY})
        if stray:
            raise CheckpointError(f"{alpha_source.where}: holds {_names(stray)}; beside shards "
                                  f"it may hold only {ALPHA_KEY}")
    if alpha is not None and alpha.shape != disentangler.alpha.shape:
        raise CheckpointError(f"{path}: {ALPHA_KEY} has shape {tuple(alpha.shape)}, the "
                              f"transformer has {disentangler.alpha.numel()} blocks")

    keys = list(weights.shapes)
    prefixed = [k for k in keys if k.startswith(TRANSFORMER_PREFIX)]
    if prefixed and len(prefixed) != len(keys):
        bare = sorted(set(keys) - set(prefixed))
        raise CheckpointError(f"{path}: mixes '{TRANSFORMER_PREFIX}' keys with {_names(bare)}")
    strip = len(TRANSFORMER_PREFIX) if prefixed else 0
    shapes = {k[strip:]: s for k, s in weights.shapes.items()}
    config = dict(weights.config)
    if weights.metadata.get("transformer_config"):
        config.update(json.loads(weights.metadata["transformer_config"]))
    _check_heads(config, transformer, str(path))
    naming = "diffusers"
    rename, name_back = (lambda k: k), (lambda k: k)
    if is_original_wan(shapes):
        naming, rename, name_back = "wan-original", to_diffusers_key, to_original_key
    copied = 0
    if shapes:
        own = transformer.state_dict()
        target = {k: tuple(v.shape) for k, v in own.items()}
        mapping = check_coverage(shapes, target, str(path), rename, name_back)
        stored = {key: (TRANSFORMER_PREFIX + key if strip else key) for key in mapping}
        by_file: dict[str, list[str]] = defaultdict(list)
        for key in mapping:
            by_file[weights.files[stored[key]]].append(key)
        with torch.no_grad():
            for file, file_keys in by_file.items():
                with safe_open(file, framework="pt") as f:
                    for key in file_keys:
                        own[mapping[key]].copy_(f.get_tensor(stored[key]))
                        copied += 1
    with torch.no_grad():
        if alpha is None:
            disentangler.alpha.zero_()
        else:
            disentangler.alpha.copy_(alpha)
    return {"transformer_tensors": copied, "alpha": int(alpha is not None), "naming": naming}
