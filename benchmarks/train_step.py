"""Seconds per MAGREF training step, LoRA and full, with and without the latent cache.

The step is ``model.train``'s: ``flow_matching_loss`` (Eq. 8-10 through ``magref_velocity``)
under bf16 autocast on GPU, backward with gradient checkpointing, clipping at 1.0, the
paper's AdamW (fused on CUDA) and its cosine schedule. "no cache" adds what an uncached
step also runs: the clip through the VAE, the canvas through the VAE and CLIP, the prompt
through UMT5 (``encode_examples``); "cache" feeds ``ModelInputs`` of the same shapes and
adds the measured time to read one cache entry from disk.

    python benchmarks/train_step.py                                   # tiny, CPU: examples/s
    python benchmarks/train_step.py --device cuda --arch 14b --modes lora --height 480 --width 832 --frames 81
    python benchmarks/train_step.py --device cuda --arch 1.3b --modes lora,full
    torchrun --nproc-per-node 8 benchmarks/train_step.py --device cuda --arch 14b --modes full  # FSDP2

``--arch 14b`` / ``1.3b`` build Wan2.1 I2V's architecture with random bf16 weights (and,
without the cache, UMT5-XXL, the Wan VAE and CLIP ViT-H/14 with random weights), so no
download is needed. Full fine-tuning of 14B does not fit one GPU (fp32 weights, gradients
and AdamW moments: ~220 GB); run it under torchrun, where it is sharded with FSDP2.
Reports s/step (median), examples/s, peak GPU memory, and the cache/no-cache ratio
measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.model_forward import REAL_14B, SMALL  # noqa: E402
from model.train import distributed  # noqa: E402
from model.train.config import TrainConfig  # noqa: E402
from model.train.loop import flow_matching_loss  # noqa: E402
from model.train.optim import OptimConfig, make_optimizer, make_scheduler  # noqa: E402
from model.train.trainable import MagrefModel  # noqa: E402

# Wan2.1's 1.3B shape with the I2V input (36 channels, CLIP image context), as Wan2.1-Fun-1.3B-InP.
REAL_1_3B = dict(REAL_14B, num_attention_heads=12, ffn_dim=8960, num_layers=30, added_kv_proj_dim=1536)


def transformer_config(arch: str) -> dict:
    if arch == "tiny":
        from model.tiny import tiny_wan_components

        return {k: v for k, v in tiny_wan_components()["transformer"].config.items() if not k.startswith("_")}
    return dict({"14b": REAL_14B, "1.3b": REAL_1_3B, "small": SMALL}[arch])


def random_module(cls, *args, dtype: torch.dtype, device: str, **kwargs):
    """Random init straight in ``dtype`` on ``device`` (no 56 GB fp32 detour for 14B)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return cls(*args, **kwargs)
    finally:
        torch.set_default_dtype(previous)


def build_pipeline(arch: str, device: str, lora: bool, with_encoders: bool):
    """A MagrefPipeline: the transformer (and, for uncached steps, the frozen encoders)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    from model.pipeline import MagrefPipeline
    from model.tiny import tiny_tokenizer, tiny_wan_components

    on_gpu = device.startswith("cuda")
    base_dtype = torch.bfloat16 if on_gpu and lora else torch.float32
    if arch == "tiny":
        parts = tiny_wan_components()
        parts["transformer"] = parts["transformer"].to(device)
        if base_dtype != torch.float32:
            parts["transformer"].to(dtype=base_dtype)
    else:
        parts = {"transformer": random_module(WanTransformer3DModel, dtype=base_dtype, device=device,
                                              **transformer_config(arch)),
                 "tokenizer": tiny_tokenizer(), "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}
        if with_encoders:
            text_dtype = torch.bfloat16 if on_gpu else torch.float32
            parts["text_encoder"] = random_module(UMT5EncoderModel, UMT5Config(
                vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu"), dtype=text_dtype, device=device).eval()
            parts["vae"] = random_module(AutoencoderKLWan, dtype=torch.float32, device=device).eval()
            parts["image_encoder"] = random_module(CLIPVisionModel, CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14), dtype=torch.float32, device=device).eval()
            parts["image_processor"] = CLIPImageProcessor()
        else:
            parts.update(text_encoder=None, vae=None)
    if not with_encoders:
        return None, parts["transformer"]
    pipe = MagrefPipeline.from_components(parts, device=device, dtype=base_dtype)
    return pipe, pipe.transformer


def random_examples(count: int, height: int, width: int, frames: int, seed: int):
    from PIL import Image

    from model.conditioning import compose_canvas
    from model.train.data import Example

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        refs = [Image.fromarray(rng.integers(0, 255, (200, 160, 3), dtype=np.uint8)) for _ in range(2)]
        canvas = compose_canvas(refs, height, width, rng=rng)
        clip = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
        out.append(Example(f"bench{i}", 0, clip, canvas, "a man walks a dog in the park",
                           [("man", 0), ("dog", 1)]))
    return out


def random_inputs(transformer, batch: int, height: int, width: int, frames: int, device: str):
    from model.disentangle import SubjectGuidance
    from model.train.latents import ModelInputs

    cfg = transformer.config
    t, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    g = torch.Generator().manual_seed(0)
    n0 = (h // 2) * (w // 2)
    weights = torch.zeros(batch, 2, 512)
    weights[:, 0, 3], weights[:, 1, 6] = 1.0, 1.0
    masks = torch.zeros(batch, 2, n0)
    masks[:, 0, : n0 // 2], masks[:, 1, n0 // 2:] = 1.0, 1.0
    image = None if cfg.image_dim is None else torch.randn(batch, 257, cfg.image_dim, generator=g)
    return ModelInputs([f"bench{i}" for i in range(batch)], [0] * batch,
                       torch.randn(batch, 16, t, h, w, generator=g), torch.randn(batch, 20, t, h, w, generator=g),
                       torch.randn(batch, 512, cfg.text_dim, generator=g), image,
                       SubjectGuidance(weights, masks)).to(device)


def cache_read_seconds(one, repeats: int = 3) -> tuple[float, int]:
    """Time to read one entry (batch-1 ``one``) back (bf16, as the cache job stores by default)."""
    from model.train.latents import read_entry, write_entry

    with tempfile.TemporaryDirectory() as root:
        path, size = write_entry(root, one, torch.bfloat16)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            read_entry(root, path)
            times.append(time.perf_counter() - start)
    return min(times), size


def run(args: argparse.Namespace, mode: str, cached: bool, cluster) -> dict:
    from model.weights.lora import add_lora, lora_config

    device = str(cluster.device)
    lora = mode == "lora"
    pipe, transformer = build_pipeline(args.arch, device, lora, with_encoders=not cached)
    from model.disentangle import SubjectDisentanglement

    disentangler = pipe.disentangler if pipe is not None else SubjectDisentanglement.attach_to(transformer)
    if lora:
        add_lora(transformer, lora_config(args.rank))
        for p in transformer.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if args.checkpointing:
        transformer.enable_gradient_checkpointing()
    model = MagrefModel(transformer, disentangler).to(device).train()
    model = distributed.wrap(model, cluster, shard=not lora)
    optimizer = make_optimizer(distributed.unwrap(model), OptimConfig(), cluster.device)
    scheduler = make_scheduler(optimizer, OptimConfig(), args.warmup + args.steps)
    params = [p for p in model.parameters() if p.requires_grad]
    config = TrainConfig(out="-")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    if cached:
        inner = distributed.unwrap(model).transformer
        fixed = random_inputs(inner, args.batch, args.height, args.width, args.frames, device)
        read_s, entry_bytes = cache_read_seconds(random_inputs(inner, 1, args.height, args.width,
                                                               args.frames, "cpu"))
        batches = lambda: fixed  # noqa: E731
    else:
        from model.train.latents import encode_examples

        examples = random_examples(args.batch, args.height, args.width, args.frames, seed=cluster.rank)
        batches = lambda: encode_examples(pipe, examples).to(device)  # noqa: E731
        read_s, entry_bytes = 0.0, 0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        inputs = batches()
        with autocast:
            loss = flow_matching_loss(model, inputs, step, config).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start + read_s * args.batch)
    s_step = statistics.median(times)
    result = {"arch": args.arch, "mode": f"lora r{args.rank}" if lora else "full", "cache": cached,
              "size": f"{args.width}x{args.height}x{args.frames}", "batch": args.batch * cluster.world,
              "s_per_step": s_step, "examples_per_s": args.batch * cluster.world / s_step,
              "cache_read_s": read_s, "cache_entry_mb": entry_bytes / 2**20,
              "gradient_checkpointing": args.checkpointing, "world": cluster.world}
    if device.startswith("cuda"):
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model, optimizer, pipe, transformer
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("tiny", "small", "1.3b", "14b"), default="tiny")
    p.add_argument("--device", default=None)
    p.add_argument("--modes", default="lora,full", help="comma list of lora, full")
    p.add_argument("--cache", choices=("both", "yes", "no"), default="both")
    p.add_argument("--rank", type=int, default=64, help="LoRA rank (the published anchor uses 64)")
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--batch", type=int, default=1, help="examples per process per step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    cluster = distributed.setup(args.device)
    try:
        results = []
        for mode in args.modes.split(","):
            for cached in {"both": (False, True), "yes": (True,), "no": (False,)}[args.cache]:
                results.append(run(args, mode.strip(), cached, cluster))
                if cluster.is_main:
                    print(json.dumps(results[-1]), flush=True)
        if cluster.is_main:
            for mode in {r["mode"] for r in results}:
                pair = {r["cache"]: r["s_per_step"] for r in results if r["mode"] == mode}
                if len(pair) == 2:
                    print(f"{mode}: cached step / uncached step = {pair[True] / pair[False]:.3f}")
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        distributed.teardown(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
