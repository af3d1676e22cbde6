"""Wan2.1's original parameter names <-> diffusers' ``WanTransformer3DModel`` names.

A leaf module: the checkpoint loader (which reads either naming) and the release converter
(which rewrites one into the other) both import it. The mapping is ours, written from Wan's
module layout (``wan/modules/model.py``) and diffusers' ``transformer_wan.py``; the tests
check it against diffusers' own single-file converter.
"""

from __future__ import annotations

import re
from typing import Mapping

# Wan module path -> diffusers module path (a parameter name .weight / .bias follows).
_TOP_MODULES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out",
}
_BLOCK_MODULES = {
    **{f"{wan}.{a}": f"{ours}.{b}"
       for wan, ours in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for a, b in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
                    ("norm_q", "norm_q"), ("norm_k", "norm_k"))},
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",  # Wan's cross-attention norm is diffusers' norm2 (Wan's norm1/2 have no weights)
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
# Whole parameters (no .weight/.bias): the AdaLN modulation tables.
_TOP_PARAMS = {"head.modulation": "scale_shift_table"}
_BLOCK_PARAMS = {"modulation": "scale_shift_table"}
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
_INVERSE = [{v: k for k, v in table.items()}
            for table in (_TOP_MODULES, _BLOCK_MODULES, _TOP_PARAMS, _BLOCK_PARAMS)]



def _rename(key: str, modules: Mapping[str, str], top: Mapping[str, str],
            block_modules: Mapping[str, str], block_params: Mapping[str, str]) -> str | None:
    if key in top:
        return top[key]
    match = BLOCK_KEY.fullmatch(key)
    prefix, rest = (f"blocks.{match.group(1)}.", match.group(2)) if match else ("", key)
    table = block_modules if match else modules
    if match and rest in block_params:
        return prefix + block_params[rest]
    module, dot, param = rest.rpartition(".")
    if not dot or module not in table:
        return None
    return f"{prefix}{table[module]}.{param}"


def to_diffusers_key(key: str) -> str | None:
    """Wan's original parameter name → diffusers' (None: Wan2.1 T2V/I2V has no such key)."""
    return _rename(key, _TOP_MODULES, _TOP_PARAMS, _BLOCK_MODULES, _BLOCK_PARAMS)


def to_original_key(key: str) -> str | None:
    """diffusers' parameter name → Wan's original (for naming missing keys)."""
    top, blocks, top_params, block_params = _INVERSE
    return _rename(key, top, top_params, blocks, block_params)


def is_original_wan(keys) -> bool:
    """Original Wan naming (``self_attn`` / ``cross_attn``) rather than diffusers'."""
    return any(".self_attn." in k or ".cross_attn." in k for k in keys)
