"""``python -m model.train``: train MAGREF on a samples table by flow matching (Appendix A).

    python -m model.train --manifest RUN/samples --base Wan-AI/Wan2.1-I2V-14B-480P-Diffusers \\
        --out runs/magref --lora-rank 64            # or full fine-tuning without --lora-rank
    torchrun --nproc-per-node 8 -m model.train ...  # FSDP2 (full) or DDP (LoRA)
    python -m model.train --cache CACHE ...         # latents from pipelines/cache_latents.py

The loss is Eq. 8-10 as written in the paper: x1 the clean clip latents, x0 ~ N(0, I),
x_t = t x1 + (1 - t) x0, target v = x1 - x0, mean squared error. Wan (and so the released
weights and our sampler) uses the opposite time direction: noise level sigma = 1 - t,
timestep 1000 sigma, and the transformer predicts ``x0 - x1``. So the paper's u is minus
the transformer output; the loss is the same number either way.

Noise and t of an example are drawn from a generator seeded by (seed, step, sample id,
augmentation): not by rank or position. Hence 1 process and N processes on the same global
batch draw the same noise, a cached run draws what an uncached one does, and a resumed
run needs no noise-RNG state.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from curation.models import load
from model.conditioning import ConditioningError
from model.disentangle import SubjectDisentanglement
from model.pipeline import check_rope_capacity
from model.train import checkpoints, distributed
from model.train import log as train_log
from model.train.batching import BatchStream, NoUsableSamples, StreamState
from model.train.config import TrainConfig, UsageError, config_from_args, micro_batching, with_cache_data
from model.train.data import SamplesDataset
from model.train.latent_cache import open_cache, read_meta
from model.train.latents import ModelInputs, encode_examples
from model.train.optim import make_optimizer, make_scheduler
from model.train.samples_reader import SamplesTable
from model.train.trainable import MagrefModel, load_transformer, trainable_parameters
from model.weights.lora import add_lora, lora_config
from schemas.command import LOG, run_command

WAN_TIMESTEPS = 1000  # Wan's num_train_timesteps: transformer timestep = 1000 * sigma


# ---- flow matching (Eq. 8-10) -----------------------------------------------------------------

def sample_sigma(u: torch.Tensor, sampling: str, shift: float, normal: torch.Tensor) -> torch.Tensor:
    """Noise level sigma = 1 - t from a uniform ``u`` (or a normal draw for logit-normal).

    ``shift``: Wan's shifted uniform, sigma = s u / (1 + (s - 1) u) (more time at high noise,
    as the sampler's flow shift does); ``uniform``: sigma = u; ``logit-normal``: SD3's
    sigmoid(N(0, 1)).
    """
    if sampling == "shift":
        return shift * u / (1 + (shift - 1) * u)
    if sampling == "uniform":
        return u
    if sampling == "logit-normal":
        return torch.sigmoid(normal)
    raise ValueError(f"unknown timestep sampling {sampling!r}")


def noise_seed(seed: int, step: int, sample_id: str, augmentation: int) -> int:
    key = f"{seed}:{step}:{sample_id}:{augmentation}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def draw_noise(inputs: ModelInputs, step: int, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 [B, ...] and sigma [B], one seeded generator per example (see the module docstring)."""
    device = inputs.latents.device
    noise, sigmas = [], []
    for sample_id, augmentation in zip(inputs.sample_ids, inputs.augmentations):
        g = torch.Generator(device).manual_seed(noise_seed(config.seed, step, sample_id, augmentation))
        u = torch.rand((), generator=g, device=device)
        normal = torch.randn((), generator=g, device=device)
        sigmas.append(sample_sigma(u, config.timestep_sampling, config.shift, normal))
        noise.append(torch.randn(inputs.latents.shape[1:], generator=g, device=device))
    return torch.stack(noise), torch.stack(sigmas)


def flow_matching_loss(model: torch.nn.Module, inputs: ModelInputs, step: int,
                       config: TrainConfig) -> torch.Tensor:
    """Per-example loss [B] of Eq. 10."""
    x1 = inputs.latents
    x0, sigma = draw_noise(inputs, step, config)
    t = (1 - sigma).view(-1, 1, 1, 1, 1)
    x_t = t * x1 + (1 - t) * x0                                  # Eq. 8
    v = x1 - x0                                                  # Eq. 9
    g = inputs.guidance
    u = -model(x_t, inputs.condition, sigma * WAN_TIMESTEPS, inputs.prompt_embeds,
               inputs.image_embeds, None if g is None else g.token_weights,
               None if g is None else g.token_masks)             # Wan predicts x0 - x1
    return ((u.float() - v) ** 2).mean(dim=(1, 2, 3, 4))         # Eq. 10


# ---- building the run ------------------------------------------------------------------------

def build_data(config: TrainConfig, cluster: distributed.Cluster,
               micro: int) -> tuple[Any, Callable[[list], ModelInputs], Any]:
    """(batch stream, batch -> ModelInputs, the online pipeline or None)."""
    workers = config.data_workers
    if config.cache:
        _, dataset = open_cache(config.cache)
        encode = (lambda batch: ModelInputs.collate([e.inputs for e in batch]))
        pipe = None
    else:
        on_gpu = cluster.device.type == "cuda"
        pipe = load("video_backbone", config.base, dtype=base_dtype(config, cluster),
                    device=str(load_device(config, cluster)))
        for name in ("text_encoder", "vae", "image_encoder"):  # encoders as sampling runs them
            module = getattr(pipe, name)
            if module is not None and on_gpu:
                module.to(cluster.device)
                if name == "text_encoder" and module.dtype != torch.bfloat16:
                    module.to(torch.bfloat16)
        table = SamplesTable(config.manifest)
        for problem in table.problems:
            print(f"skipped part: {problem}", file=sys.stderr)
        dataset = SamplesDataset(table, config.data, pipe.tokenizer)
        encode = (lambda batch: encode_examples(pipe, batch))
    stream = BatchStream(dataset, micro, config.data.augmentation, seed=config.seed,
                         rank=cluster.rank, world=cluster.world, workers=workers)
    return stream, encode, pipe


def load_device(config: TrainConfig, cluster: distributed.Cluster) -> torch.device:
    """Where the transformer loads. FSDP2 over GPUs: on CPU; ``fully_shard`` moves it block by
    block, so no GPU ever holds the whole fp32 model (56 GB for 14B)."""
    shards_on_gpu = not config.lora and cluster.world > 1 and cluster.device.type == "cuda"
    return torch.device("cpu") if shards_on_gpu else cluster.device


def base_dtype(config: TrainConfig, cluster: distributed.Cluster) -> torch.dtype:
    """Full fine-tuning: fp32 master weights; LoRA on GPU: a frozen bf16 base."""
    return torch.bfloat16 if cluster.device.type == "cuda" and config.lora else torch.float32


def build_model(config: TrainConfig, cluster: distributed.Cluster, pipe: Any) -> MagrefModel:
    """Transformer (full: fp32 master weights; LoRA: frozen base in the compute dtype) + alphas."""
    dtype, place = base_dtype(config, cluster), load_device(config, cluster)
    if pipe is not None:
        transformer, disentangler = pipe.transformer, pipe.disentangler
        if transformer.dtype != dtype:
            transformer.to(dtype=dtype)
    else:
        transformer = load_transformer(config.base, place, dtype)
        disentangler = SubjectDisentanglement.attach_to(transformer)
    if config.lora:
        add_lora(transformer, lora_config(config.lora_rank, config.lora_alpha))
        for p in trainable_parameters(transformer):
            p.data = p.data.float()  # adapters train in fp32 over a bf16 base
    else:
        transformer.requires_grad_(True)
    disentangler.alpha.requires_grad_(True)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    model = MagrefModel(transformer, disentangler).to(place)
    model.train()
    return model


def _check_sizes(config: TrainConfig, transformer: torch.nn.Module) -> None:
    """Every bucket must fit the transformer's rotary table: say so now, not at step 1."""
    for width, height in config.data.buckets:
        try:
            check_rope_capacity(transformer, height, width, config.data.num_frames)
        except ConditioningError as exc:
            raise UsageError(f"--bucket {width}x{height} / --frames {config.data.num_frames}: {exc}") from None


def prepare_out(config: TrainConfig, cluster: distributed.Cluster) -> Path | None:
    """The checkpoint to resume from, after checking OUT is not someone else's run."""
    out = Path(config.out)
    existing = checkpoints.complete_checkpoints(out)
    if config.resume is None and existing:
        raise UsageError(f"{out} already holds checkpoints (newest {existing[-1].name}); "
                         f"add --resume auto to continue it, or choose another --out")
    path = checkpoints.find_checkpoint(out, config.resume) if config.resume else None
    if path is not None:
        diff = config.differences(checkpoints.read_trainer(path)["config"])
        if diff:
            raise UsageError(f"--resume {path}: options differ from that run's: {', '.join(diff)} "
                             f"(only --steps and run options may change on resume)")
    if cluster.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    return path


# ---- the loop --------------------------------------------------------------------------------

def train(config: TrainConfig, on_step: Callable[[dict], None] | None = None,
          on_end: Callable[[MagrefModel], None] | None = None) -> dict[str, Any]:
    """Run (or continue) training; returns the summary.

    ``on_step`` gets each step's metrics (Ray Train reports them); ``on_end`` gets the trained
    ``MagrefModel`` (unwrapped) for callers that go on in the same process, e.g. to sample.
    """
    cluster = distributed.setup(config.device)
    finished = False
    try:
        if config.cache:
            meta = read_meta(config.cache)
            config = with_cache_data(config, meta)
            if meta.get("base") != config.base and cluster.is_main:
                print(f"warning: the cache was encoded with {meta.get('base')!r}, training --base is "
                      f"{config.base!r}; they must share VAE, UMT5 and CLIP", file=sys.stderr)
        micro, accumulation = micro_batching(config, cluster.world)
        resume_from = prepare_out(config, cluster)
        distributed.barrier(cluster)
        start_step = 0
        stream, encode, pipe = build_data(config, cluster, micro)
        model = build_model(config, cluster, pipe)
        _check_sizes(config, model.transformer)
        model = distributed.wrap(model, cluster, shard=not config.lora)
        params = trainable_parameters(model)
        optimizer = make_optimizer(distributed.unwrap(model), config.optim, cluster.device)
        scheduler = make_scheduler(optimizer, config.optim, config.steps)
        if resume_from is not None:
            start_step, data_state = checkpoints.load(resume_from, model, optimizer, scheduler, cluster)
            stream.state = StreamState.from_dict(data_state)
        summary = _loop(config, cluster, model, params, optimizer, scheduler, stream, encode,
                        micro, accumulation, start_step, on_step)
        if on_end is not None:
            on_end(distributed.unwrap(model))
        finished = True
        return summary
    finally:
        distributed.teardown(cluster, finished)


def _loop(config: TrainConfig, cluster: distributed.Cluster, model: torch.nn.Module,
          params: list, optimizer: Any, scheduler: Any, stream: Any, encode: Callable,
          micro: int, accumulation: int, start_step: int,
          on_step: Callable[[dict], None] | None) -> dict[str, Any]:
    from tqdm import tqdm

    out = Path(config.out)
    log = train_log.LossLog(out, resume_step=start_step if start_step else None) if cluster.is_main else None
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if cluster.device.type == "cuda" and config.mixed_precision == "bf16" else nullcontext())
    per_rank = micro * accumulation
    batches = iter(stream)
    losses: list[float] = []
    bar = tqdm(total=config.steps, initial=start_step, disable=not cluster.is_main,
               desc="train", dynamic_ncols=True, file=sys.stderr)
    started, examples = time.perf_counter(), 0
    for step in range(start_step, config.steps):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=cluster.device)
        for m in range(accumulation):
            inputs = encode(next(batches)).to(cluster.device)
            with distributed.gradient_sync(model, m == accumulation - 1), autocast:
                per_example = flow_matching_loss(model, inputs, step, config)
                (per_example.sum() / per_rank).backward()
            loss_sum += per_example.detach().sum()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        loss = float(distributed.all_sum(loss_sum, cluster)) / config.batch_size
        examples += config.batch_size
        losses.append(loss)
        alpha = alphas(model)  # on every rank: gathering a sharded alpha is a collective
        done = step + 1
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        bar.update()
        if log is not None and (done % config.log_every == 0 or done == config.steps):
            log.append(done, loss, lr, float(grad_norm), done * config.batch_size,
                       time.perf_counter() - started, alpha)
        if on_step is not None:
            on_step({"step": done, "loss": loss, "lr": lr, "grad_norm": float(grad_norm)})
        if done % config.checkpoint_every == 0 or done == config.steps:
            checkpoints.save(out, done, model, optimizer, scheduler, stream.state.to_dict(),
                             config.to_dict(), config.lora, cluster, keep=config.keep_checkpoints)
    bar.close()
    seconds = time.perf_counter() - started
    final = out / checkpoints.weights_name(config.lora)
    checkpoints.save_weights(final, model, config.lora, cluster)
    skipped = _gather_skipped(stream, cluster)
    summary = {
        "first_step": start_step, "last_step": config.steps, "steps_this_run": config.steps - start_step,
        "seconds": seconds, "examples_this_run": examples,
        "examples_per_s": examples / seconds if seconds else 0.0,
        "s_per_step": seconds / max(1, config.steps - start_step),
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": losses[-1] if losses else float("nan"),
        "memory": train_log.peak_memory(cluster.device), "skipped": skipped,
        "world": cluster.world, "mode": f"lora r{config.lora_rank}" if config.lora else "full",
        "trainable_parameters": sum(p.numel() for p in params),  # DTensors count their full size
        "weights": str(final), "cache": bool(config.cache),
        "alpha": [float(a) for a in alphas(model)],  # the Eq. 6 scales per block at the end
    }
    if cluster.is_main:
        train_log.plot(out)
        print(train_log.write_summary(out, summary), file=sys.stderr)
    return summary


def alphas(model: torch.nn.Module) -> torch.Tensor:
    """The Eq. 6 alphas (one per block), whole even when FSDP2 shards them."""
    alpha = distributed.unwrap(model).disentangler.alpha.detach()
    return alpha.full_tensor() if hasattr(alpha, "full_tensor") else alpha


def _gather_skipped(stream: Any, cluster: distributed.Cluster) -> dict[str, int]:
    """Skipped records by reason, over every rank."""
    bad = dict(stream.state.bad)
    if cluster.world > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * cluster.world
        dist.all_gather_object(parts, bad)
        bad = {k: v for part in parts for k, v in part.items()}
    return StreamState(bad=bad).skipped_by_reason()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model.train``: the command-line mistakes are one line and exit 2 (``schemas/command.py``)."""
    return run_command(_train_command, argv, (UsageError, FileNotFoundError))


def _train_command(argv: list[str] | None) -> int:
    config = config_from_args(argv)
    try:
        train(config)
    except NoUsableSamples as exc:
        LOG.error(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
