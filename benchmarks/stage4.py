"""Stage 4 speed: variants I' per second (and backgrounds per second), same process.

    python benchmarks/stage4.py                              # CPU, tiny FLUX Kontext / SDXL inpainting
    python benchmarks/stage4.py --device cuda --real-arch    # FLUX.1-Kontext-dev's architecture, random bf16

Tiny (default): the ``Variants`` operator on generated face and object references, against
the bare pipeline calls on the same images in the same process (the ratio is what the
operator adds: PNG decode/encode, prompts, seeds, bookkeeping); the same for backgrounds
with the OpenCV backend and the tiny SDXL inpainter.

``--real-arch`` builds FLUX.1-Kontext-dev's components at full size with random weights
(12B transformer: 19 double + 38 single blocks, width 3072; T5-XXL; CLIP-L; the 16-channel
VAE), so no checkpoint is needed, and times one 512x512 variant at 28 steps (the default
``variants.*``) with ``max_area`` set (the Kontext trap), plus peak GPU memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.envelope import to_table  # noqa: E402
from curation.images import encode_png  # noqa: E402
from curation.pairs.generators import edit, fit_size, size_multiple  # noqa: E402
from curation.pairs.variants import REF, Variants, VariantsConfig, choose_prompt, on_white  # noqa: E402
from schemas.tables import INPUT  # noqa: E402

FLUX_KONTEXT = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                    guidance_embeds=True, axes_dims_rope=[16, 56, 56])


def face_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()[50:190, 160:290]


def references(count: int) -> list[dict]:
    from skimage import data

    face = face_image()
    coffee = np.dstack([data.coffee()[::4, ::4], np.full(data.coffee()[::4, ::4].shape[:2], 255, np.uint8)])
    rows = []
    for i in range(count):
        kind, image = ("face", face) if i % 2 == 0 else ("object", coffee)
        rows.append({INPUT: f"clip{i // 4}", "status": "kept", "kind": kind, "source_id": f"clip{i // 4}-{kind}{i}",
                     "label": "cup", REF: encode_png(image)})
    return rows


def real_editor(device: str, layers: int | None = None):
    """FLUX.1-Kontext-dev's pipeline at full size, random bf16 weights, built on ``device``.

    ``layers`` cuts the transformer's and T5's depth (a smoke test of this code path on a
    small machine; widths stay real)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from curation.pairs.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # random init straight in bf16 (no 48 GB fp32 detour)
    try:
        with torch.device(device):
            clip_tok, t5_tok = tiny_clip_tokenizer(), tiny_t5_tokenizer()
            end = clip_tok.convert_tokens_to_ids("<|endoftext|>")
            clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
                                                max_position_embeddings=77, eos_token_id=end, pad_token_id=end))
            t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=layers or 24,
                                         num_heads=64, feed_forward_proj="gated-gelu"))
            vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                                layers_per_block=2, latent_channels=16, shift_factor=0.1159, scaling_factor=0.3611,
                                use_quant_conv=False, use_post_quant_conv=False)
            config = dict(FLUX_KONTEXT)
            if layers:
                config.update(num_layers=layers, num_single_layers=layers)
            transformer = FluxTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxKontextPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=clip.eval(), tokenizer=clip_tok,
                               text_encoder_2=t5.eval(), tokenizer_2=t5_tok, transformer=transformer.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_real(args: argparse.Namespace) -> None:
    import torch

    cuda = args.device.startswith("cuda")
    pipe = real_editor(args.device, args.layers)
    params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    print(f"FLUX Kontext architecture: transformer {params:.1f}B parameters (random bf16) on {args.device}")
    face = face_image()
    size = (args.size, args.size)
    edit(pipe, [face], ["warm-up"], [0], size, steps=1, guidance=2.5)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        out = edit(pipe, [face] * args.batch, ["Make the person smile"] * args.batch, list(range(args.batch)), size,
                   steps=args.steps, guidance=2.5)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / args.batch)
    assert out[0].shape == (args.size, args.size, 3)  # the Kontext trap did not bite
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if cuda else ""
    print(f"{args.size}x{args.size}, {args.steps} steps, batch {args.batch}: "
          f"{statistics.median(times):.2f} s per variant (median of {args.repeats}){peak}")


def bench_tiny(args: argparse.Namespace) -> None:
    rows = references(args.count)
    config = VariantsConfig(size=args.size, steps=args.steps)
    operator = Variants(config, models="tiny", device=args.device)
    operator(to_table(rows[:2]))  # warm-up
    from curation.images import decode_png

    multiple = size_multiple(operator.pipe)
    jobs = []
    for row in rows:
        ref = on_white(decode_png(row[REF]))
        prompt, seed = choose_prompt(config, row["kind"], row["source_id"], row["label"])
        jobs.append((ref, prompt, seed, fit_size(ref.shape[1], ref.shape[0], args.size ** 2, multiple)))
    bare, full = [], []
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
        start = time.perf_counter()
        for ref, prompt, seed, size in jobs:
            edit(operator.pipe, [ref], [prompt], [seed], size, args.steps, config.guidance)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        for row in rows:  # one row per call: the default pool batch (bit-identical reruns)
            operator(to_table([row]))
        full.append(time.perf_counter() - start)
    b, f = statistics.median(bare), statistics.median(full)
    print(f"tiny editor, {args.count} references at ~{args.size}px, {args.steps} steps: "
          f"operator {args.count / f:.1f} variants/s, bare pipeline {args.count / b:.1f} calls/s, ratio {f / b:.2f}")
    bench_backgrounds(args)


def bench_backgrounds(args: argparse.Namespace) -> None:
    from curation.pairs.backgrounds import BackgroundConfig, augment, composite, dilate, inpaint_opencv
    from curation.pairs.generators import inpaint
    from curation.pairs.tiny import tiny_inpainter

    rng = np.random.default_rng(0)
    for side in (256, 1024):
        image = rng.integers(0, 255, (side * 9 // 16, side, 3), dtype=np.uint8)
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[side // 8:side // 3, side // 4:side // 2] = 255
        mask = dilate(mask, 0.02)
        start = time.perf_counter()
        for _ in range(args.repeats):
            augment(composite(image, inpaint_opencv(image, mask), mask), 0, BackgroundConfig())
        per = (time.perf_counter() - start) / args.repeats
        print(f"opencv background {side}x{side * 9 // 16}: {1 / per:.1f} backgrounds/s")
    pipe = tiny_inpainter(args.device)
    image, mask = image[:64, :112], mask[:64, :112]
    inpaint(pipe, image, mask, "empty", "person", 0, args.steps, 7.0, 0.99)
    start = time.perf_counter()
    for _ in range(args.repeats):
        inpaint(pipe, image, mask, "empty", "person", 0, args.steps, 7.0, 0.99)
    print(f"tiny SDXL inpainting 112x64, {args.steps} steps: {args.repeats / (time.perf_counter() - start):.1f} backgrounds/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--real-arch", action="store_true", help="FLUX.1-Kontext-dev's full-size architecture (GPU)")
    parser.add_argument("--size", type=int, default=None, help="variant side (default 64 tiny, 512 real)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 2 tiny, 28 real)")
    parser.add_argument("--count", type=int, default=16, help="tiny: references per repeat")
    parser.add_argument("--batch", type=int, default=1, help="real: references per editor call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=None,
                        help="real-arch: transformer and T5 depth (default: the real 19+38 / 24); a CPU smoke test")
    args = parser.parse_args()
    if args.real_arch:
        if not args.device.startswith("cuda") and not args.layers:
            parser.error("--real-arch needs --device cuda (a 12B transformer in bf16 needs ~24 GB), "
                         "or --layers N for a CPU smoke test")
        args.size, args.steps = args.size or 512, args.steps or 28
        bench_real(args)
    else:
        args.size, args.steps = args.size or 64, args.steps or 2
        bench_tiny(args)


if __name__ == "__main__":
    main()
