"""``python -m model.convert_release SRC_DIR OUT_DIR``: the MAGREF release's transformer in diffusers' layout.

The release ships its transformer the way Wan2.1 does: a folder with Wan's ``config.json``
(``dim``, ``num_heads``, ``in_dim`` ...) and ``diffusion_pytorch_model*.safetensors`` in
Wan's original key names (``blocks.0.self_attn.q.weight``), the 14B usually split into shards
with an index. This writes OUT_DIR as a diffusers ``WanTransformer3DModel`` folder (its
``config.json``, shards renamed to diffusers' keys, an index when sharded), loadable with
``WanTransformer3DModel.from_pretrained(OUT_DIR)`` or dropped in as a Wan pipeline's
``transformer/``, plus our ``magref.safetensors`` (``magref.alpha`` = 0: the release has no
Eq. 6 term), so ``python -m model.sample --checkpoint OUT_DIR`` loads it.

Every source key must map to a diffusers key and every diffusers key must come from the
source (same shapes); a missing or left-over key stops the conversion naming it, before
anything is written. Shards convert one at a time (peak memory: one shard), into a temporary
folder renamed to OUT_DIR when complete. ``--dtype`` casts (default: keep the source's).

The key mapping is ours, written from Wan's module layout (``wan/modules/model.py``) and
diffusers' ``transformer_wan.py``; the tests check it against diffusers' own single-file
converter.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.weights.checkpoint import (
    ALPHA_FILE,
    ALPHA_KEY,
    FORMAT,
    CheckpointError,
    Weights,
    check_coverage,
    open_weights,
)
from model.weights.wan_keys import BLOCK_KEY, is_original_wan, to_diffusers_key, to_original_key
from schemas.command import Parser, run_command

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
WAN_ROPE_POSITIONS = 1024  # Wan's rope_params(1024, ...) table; diffusers' rope_max_seq_len


def diffusers_config(weights: Weights) -> dict[str, Any]:
    """``WanTransformer3DModel`` arguments for a release folder: shapes, checked against its config.

    Tensor shapes give every size but the head count, which only ``config.json`` has (the
    release ships one); where both give a value they must agree.
    """
    shapes, cfg, where = weights.shapes, weights.config, weights.where

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(f"{where}: no {key!r}, so this is not a Wan2.1 transformer")
        return shapes[key]

    if "num_heads" not in cfg:
        raise CheckpointError(f"{where}: config.json with num_heads is missing (the release ships "
                              f"one; the head count is not visible in any tensor shape)")
    dim, in_dim, *patch = shape("patch_embedding.weight")
    layers = {int(m.group(1)) for k in shapes if (m := BLOCK_KEY.fullmatch(k))}
    image = "img_emb.proj.0.weight" in shapes
    found = {
        "dim": dim, "in_dim": in_dim, "text_dim": shape("text_embedding.0.weight")[1],
        "freq_dim": shape("time_embedding.0.weight")[1],
        "ffn_dim": shape("blocks.0.ffn.0.weight")[0], "num_layers": len(layers),
        "out_dim": shape("head.head.weight")[0] // math.prod(patch),
        "model_type": "i2v" if image else "t2v",
    }
    if layers != set(range(len(layers))):
        raise CheckpointError(f"{where}: block numbers {sorted(layers)} are not 0..{len(layers) - 1}")
    evidence = {"dim": "patch_embedding.weight", "in_dim": "patch_embedding.weight",
                "text_dim": "text_embedding.0.weight", "freq_dim": "time_embedding.0.weight",
                "ffn_dim": "blocks.0.ffn.0.weight", "num_layers": "blocks.N.*",
                "out_dim": "head.head.weight", "model_type": "img_emb.*"}
    for name, value in found.items():
        if name in cfg and cfg[name] != value:
            raise CheckpointError(f"{where}: config.json says {name}={cfg[name]!r} but the weights "
                                  f"({evidence[name]}) have {value!r}")
    heads = int(cfg["num_heads"])
    if dim % heads:
        raise CheckpointError(f"{where}: dim {dim} is not divisible by num_heads {heads}")
    return dict(
        patch_size=tuple(patch), num_attention_heads=heads, attention_head_dim=dim // heads,
        in_channels=in_dim, out_channels=found["out_dim"], text_dim=found["text_dim"],
        freq_dim=found["freq_dim"], ffn_dim=found["ffn_dim"], num_layers=len(layers),
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        qk_norm="rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in shapes else None,
        eps=float(cfg.get("eps", 1e-6)),
        image_dim=shape("img_emb.proj.0.weight")[0] if image else None,
        added_kv_proj_dim=(shape("blocks.0.cross_attn.k_img.weight")[1] if image else None),
        rope_max_seq_len=WAN_ROPE_POSITIONS,
    )


def _shard_name(index: int, count: int) -> str:
    if count == 1:
        return "diffusion_pytorch_model.safetensors"
    return f"diffusion_pytorch_model-{index:05d}-of-{count:05d}.safetensors"


def convert(src: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype | None = None,
            overwrite: bool = False) -> dict[str, Any]:
    """Convert the release folder ``src`` into the diffusers folder ``out``; returns a summary."""
    from diffusers import WanTransformer3DModel

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CheckpointError(f"{src} is not a directory (give the release's transformer folder)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; pass --overwrite to replace it")
    weights = open_weights(src)
    if not is_original_wan(weights.shapes):
        raise CheckpointError(f"{src} is not in Wan's original key names (already diffusers' "
                              f"layout?); python -m model.sample --checkpoint loads it as it is")
    config = diffusers_config(weights)
    with torch.device("meta"):
        target = WanTransformer3DModel(**config)
    target_shapes = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    mapping = check_coverage(weights.shapes, target_shapes, str(src), to_diffusers_key,
                             to_original_key)

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        by_file: dict[str, list[str]] = defaultdict(list)
        for key in sorted(mapping):
            by_file[weights.files[key]].append(key)
        files = sorted(by_file)
        weight_map, total, dtypes = {}, 0, set()
        for n, file in enumerate(files, 1):
            name, tensors = _shard_name(n, len(files)), {}
            with safe_open(file, framework="pt") as f:
                for key in by_file[file]:
                    tensor = f.get_tensor(key)
                    dtypes.add(str(tensor.dtype).removeprefix("torch."))
                    tensor = tensor.to(dtype) if dtype is not None else tensor
                    tensors[mapping[key]] = tensor.contiguous()
                    total += tensor.numel() * tensor.element_size()
                    weight_map[mapping[key]] = name
            save_file(tensors, str(tmp / name), metadata={"format": "pt"})
            del tensors
        if len(files) > 1:
            (tmp / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                indent=2))
        target.save_config(str(tmp))
        save_file({ALPHA_KEY: torch.zeros(config["num_layers"])}, str(tmp / ALPHA_FILE),
                  metadata={"format": FORMAT, "num_layers": str(config["num_layers"]),
                            "converted_from": str(src.resolve())})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"tensors": len(mapping), "shards": len(files), "source_dtypes": sorted(dtypes),
            "dtype": str(dtype).removeprefix("torch.") if dtype else "kept",
            "config": config, "out": str(out)}


def main(argv: Sequence[str] | None = None) -> int:
    """The command: a bad release folder is one line naming the key, exit 2 (the one handler)."""
    return run_command(_convert_command, argv, (CheckpointError,))


def _convert_command(argv: Sequence[str] | None) -> int:
    parser = Parser(prog="python -m model.convert_release", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", metavar="SRC_DIR",
                        help="the release's transformer folder (config.json + *.safetensors)")
    parser.add_argument("out", metavar="OUT_DIR", help="where to write the diffusers folder")
    parser.add_argument("--dtype", choices=["keep", *DTYPES], default="keep",
                        help="cast the weights (default: keep the source's dtype)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    summary = convert(args.src, args.out, DTYPES.get(args.dtype), args.overwrite)
    cfg = summary["config"]
    print(f"converted {summary['tensors']} tensors ({', '.join(summary['source_dtypes'])} -> "
          f"{summary['dtype']}) in {summary['shards']} shard(s): {cfg['num_layers']} blocks, "
          f"dim {cfg['num_attention_heads'] * cfg['attention_head_dim']}, "
          f"{cfg['in_channels']} input channels -> {summary['out']}\n"
          f"sample with: python -m model.sample --checkpoint {summary['out']} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
