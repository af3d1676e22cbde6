"""How MAGREF training updates its parameters: the optimiser and the learning-rate schedule.

The paper's settings (section 4.1, "Training details"): AdamW (FusedAdam in the paper;
``fused=True`` on CUDA) with betas (0.9, 0.999), weight decay 0.01, learning rate 1e-5,
cosine annealing with warm restarts, gradient clipping at 1.0. The paper applies decay to
every trained parameter (FusedAdam's decoupled decay), and so do we. There are two named
parameter groups, ``transformer`` (all weights, or the LoRA adapters) and ``alpha`` (the
Eq. 6 scales, zero at start), so the alphas can be given their own learning rate
(``alpha_lr``); by default both groups have the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from model.train.trainable import MagrefModel


@dataclass(frozen=True)
class OptimConfig:
    """The paper's settings by default (section 4.1)."""

    lr: float = 1e-5
    alpha_lr: float | None = None      # learning rate of the Eq. 6 alphas; None = lr
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    restart_steps: int = 1000          # T_0: steps of the first cosine cycle
    restart_mult: int = 1              # T_mult: each cycle is this many times longer
    min_lr: float = 0.0                # eta_min: the floor each cycle anneals to
    max_grad_norm: float = 1.0


def parameter_groups(model: MagrefModel, config: OptimConfig) -> list[dict[str, Any]]:
    """``transformer`` (trainable backbone weights or adapters) and ``alpha``, both decayed."""
    alphas = [model.disentangler.alpha]
    backbone = [p for p in model.transformer.parameters() if p.requires_grad]
    return [
        {"name": "transformer", "params": backbone, "lr": config.lr,
         "weight_decay": config.weight_decay},
        {"name": "alpha", "params": alphas, "lr": config.alpha_lr or config.lr,
         "weight_decay": config.weight_decay},
    ]


def make_optimizer(model: MagrefModel, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    fused = device.type == "cuda"
    return torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, betas=config.betas,
                             eps=config.eps, weight_decay=config.weight_decay,
                             fused=fused or None, foreach=None if fused else True)


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig) -> Any:
    """Cosine annealing with warm restarts, stepped once per optimiser step."""
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=config.restart_steps, T_mult=config.restart_mult, eta_min=config.min_lr)
