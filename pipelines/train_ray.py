"""Train MAGREF on the Ray cluster that curated the data: Ray Train's ``TorchTrainer``.

    python pipelines/train_ray.py --workers 8 --gpus-per-worker 1 -- \\
        --manifest RUN/samples --base Wan-AI/Wan2.1-I2V-14B-480P-Diffusers \\
        --out /shared/runs/magref --lora-rank 64

Everything after ``--`` is ``python -m model.train``'s command line, checked here before
any worker starts. Each Ray Train worker runs the same loop ``torchrun`` would run
(``model.train.train``); Ray creates the process group (NCCL on GPUs, gloo on CPUs) and
sets RANK / WORLD_SIZE / LOCAL_RANK, so full fine-tuning is FSDP2 and LoRA is DDP exactly
as under ``torchrun``. Each step's loss, lr and gradient norm go to ``ray.train.report``.
Checkpoints are the trainer's own (``--out``): on several nodes ``--out`` must be a
filesystem every node mounts, because every rank writes its shard of the optimiser state.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from model.train.config import UsageError, config_from_args
from model.train.loop import train
from pipelines.cli import Parser, cli
from pipelines.wiring import GPU_MODES, init_ray, use_gpus
from schemas.command import LOG


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the ``model.train`` loop, reporting every logged step."""
    import ray.train

    config = config_from_args(loop_config["argv"])

    def report(metrics: dict) -> None:
        if metrics["step"] % config.log_every == 0 or metrics["step"] == config.steps:
            ray.train.report(metrics)  # every worker calls it; Ray keeps rank 0's

    train(config, on_step=report)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = Parser(prog="python pipelines/train_ray.py", description=__doc__.split("\n\n")[0],
                                epilog="Arguments after -- are model.train's (see python -m model.train --help).")
    p.add_argument("--workers", type=int, default=1, help="training processes (one per GPU)")
    p.add_argument("--gpus", choices=GPU_MODES, default="auto",
                   help="'on': each worker asks for a GPU (an autoscaler starts GPU nodes), 'off': CPU, "
                        "'auto': GPUs when the cluster has them or can start them (default)")
    p.add_argument("--gpus-per-worker", type=int, help="GPUs each worker asks for (default: 1 when --gpus decides GPUs)")
    p.add_argument("--verbose", action="store_true", help="show Ray's own INFO output")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (data decoding threads)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or an embedded Ray)")
    p.add_argument("--storage", help="Ray Train's run storage (default: OUT/ray)")
    args, rest = p.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, train_argv = parse(argv)
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    config = config_from_args(train_argv)  # one-line errors on the driver, not in N workers
    out = os.path.abspath(config.out)  # workers may run in another directory
    train_argv = [*train_argv, "--out", out]
    init_ray(args.address, args.verbose)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else int(use_gpus(args.gpus))
    resources = {"CPU": args.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        train_worker, train_loop_config={"argv": train_argv},
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=gpus > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name="magref-train", storage_path=os.path.abspath(args.storage or os.path.join(out, "ray"))),
    )
    result = trainer.fit()
    if result.error:
        LOG.error(f"error: training failed: {result.error}")
        return 1
    print(f"done: last step {result.metrics}; weights, loss.csv and summary.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
