"""MAGREF forward (with subject disentanglement) vs plain Wan2.1 I2V forward, same process.

Prints seconds per forward for both, their ratio (target <= 1.05) and, on CUDA, peak
memory. Both runs use the same transformer object: "plain" detaches the MAGREF hooks, so
the only difference is Eq. 6's work (one ``to_v`` on K pooled vectors and one masked add
per block) — the 36-channel input itself is what plain Wan I2V already takes.

    python benchmarks/model_forward.py                      # CPU, small shapes
    python benchmarks/model_forward.py --device cuda --real-arch            # 14B, 480p x 81
    python benchmarks/model_forward.py --device cuda --real-arch --low-memory

``--real-arch`` builds Wan2.1-I2V-14B's architecture (40 blocks, dim 5120) with random bf16
weights, so no checkpoint is needed; ``--low-memory`` streams blocks from CPU with
diffusers' block-level group offloading. A step of sampling is two forwards (text CFG).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.disentangle import SubjectDisentanglement, SubjectGuidance  # noqa: E402
from model.velocity import magref_velocity  # noqa: E402

REAL_14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128,
                in_channels=36, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824,
                num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024)
SMALL = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=36,
             out_channels=16, text_dim=64, freq_dim=32, ffn_dim=512, num_layers=4,
             cross_attn_norm=True, image_dim=32, added_kv_proj_dim=128, rope_max_seq_len=256)


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, SubjectDisentanglement]:
    from diffusers import WanTransformer3DModel

    config = dict(REAL_14B if args.real_arch else SMALL)
    if args.layers:
        config["num_layers"] = args.layers
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    build_on = "cpu" if args.low_memory else args.device
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight in bf16: no 56 GB fp32 detour
    try:
        with torch.device(build_on):
            transformer = WanTransformer3DModel(**config).eval()
    finally:
        torch.set_default_dtype(previous)
    dis = SubjectDisentanglement(len(transformer.blocks))
    dis.alpha.data.fill_(0.1)
    if args.low_memory:
        # MAGREF's hooks go on first, so group offloading's onload hook wraps them and the
        # block's weights are on the GPU when Eq. 6 calls attn2.to_v.
        dis.attach(transformer)
        transformer.enable_group_offload(onload_device=torch.device(args.device),
                                         offload_type="block_level", num_blocks_per_group=1,
                                         use_stream=True)
    return transformer, dis


def inputs(transformer: torch.nn.Module, args: argparse.Namespace, subjects: int) -> dict:
    cfg = transformer.config
    t_lat, h, w = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
    g = torch.Generator().manual_seed(0)
    dev, dtype = args.device, transformer.dtype
    n0 = (h // 2) * (w // 2)
    masks = torch.zeros(1, subjects, n0)
    for k in range(subjects):  # side-by-side subject regions, as on a canvas
        masks[0, k, k * n0 // subjects:(k + 1) * n0 // subjects] = 1
    weights = torch.zeros(1, subjects, 512)
    for k in range(subjects):
        weights[0, k, 3 + 4 * k:5 + 4 * k] = 0.5
    return dict(
        noisy_latents=torch.randn(1, 16, t_lat, h, w, generator=g).to(dev, dtype),
        condition=torch.randn(1, cfg.in_channels - 16, t_lat, h, w, generator=g).to(dev, dtype),
        timestep=torch.tensor([500.0], device=dev),
        prompt_embeds=torch.randn(1, 512, cfg.text_dim, generator=g).to(dev, dtype),
        image_embeds=torch.randn(1, 257, cfg.image_dim, generator=g).to(dev, dtype),
        guidance=SubjectGuidance(weights, masks))


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--real-arch", action="store_true", help="Wan2.1-I2V-14B architecture, random bf16")
    p.add_argument("--low-memory", action="store_true", help="block-level group offload (CUDA)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--layers", type=int, default=None, help="override the block count")
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args()
    big = args.real_arch
    args.height = args.height or (480 if big else 160)
    args.width = args.width or (832 if big else 256)
    args.frames = args.frames or (81 if big else 17)
    args.repeats = args.repeats or (2 if big else 15)
    torch.manual_seed(0)

    transformer, dis = build(args)
    toggle = not args.low_memory  # with offload the hooks stay; plain then passes no guidance
    batch = inputs(transformer, args, args.subjects)
    guidance = batch.pop("guidance")

    def plain() -> torch.Tensor:
        return magref_velocity(transformer, None if toggle else dis, **batch, guidance=None)

    def magref() -> torch.Tensor:
        return magref_velocity(transformer, dis, **batch, guidance=guidance)

    times: dict[str, list[float]] = {"plain": [], "magref": []}
    peaks: dict[str, int] = {}
    with torch.no_grad():
        for r in range(args.repeats + 1):  # first round warms up; alternate to share drift
            for name, fn in (("plain", plain), ("magref", magref)):
                if name == "magref" and toggle:
                    dis.attach(transformer)
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                seconds = timed(fn, args.device)
                if args.device.startswith("cuda"):
                    peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
                if toggle:
                    dis.detach()
                if r:
                    times[name].append(seconds)
    tokens = ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16)
    arch = ("Wan2.1-I2V-14B arch" if big else "small Wan I2V arch") + f" (random {transformer.dtype})"
    print(f"{arch}, {len(transformer.blocks)} blocks, {args.width}x{args.height}x{args.frames} "
          f"({tokens} tokens), {args.subjects} subjects, device {args.device}"
          f"{', group offload' if args.low_memory else ''}, {args.repeats} repeats")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in ("plain", "magref"):
        peak = f", peak {peaks[name] / 2**30:.1f} GiB" if name in peaks else ""
        print(f"  {name:>6}: {med[name]:.4f} s/forward (min {min(times[name]):.4f}), "
              f"{2 * med[name]:.3f} s/step with CFG{peak}")
    print(f"ratio magref/plain = {med['magref'] / med['plain']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
