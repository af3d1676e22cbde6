"""How MAGREF training updates its parameters: the optimiser and the learning-rate schedule.

The paper's settings (section 4.1, "Training details"): AdamW (FusedAdam in the paper;
``fused=True`` on CUDA) with betas (0.9, 0.999), weight decay 0.01, learning rate 1e-5,
cosine annealing with warm restarts, gradient clipping at 1.0. There are two named
parameter groups:

* ``transformer`` (all weights, or the LoRA adapters): the paper's lr and decoupled decay.
* ``alpha`` (the Eq. 6 scales, zero at start so the released weights reproduce exactly):
  their own learning rate ``alpha_lr`` and no weight decay. Adam moves a parameter by about
  its lr per step whatever the gradient's size, so at the backbone's 1e-5 an alpha reaches
  at most ~0.005 in 1,000 steps and subject disentanglement stays a no-op; at 1e-3 it can
  reach ~``alpha_lr * T0 / 2`` (0.1 at T0 = 250) in the first cycle. Decay would pull a
  scalar gate back to 0, against its purpose.

The restart period defaults to a quarter of the run (``restart_steps=None``), so a default
run anneals and restarts four times (the paper: cosine annealing with periodic restarts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from model.train.trainable import MagrefModel

ALPHA_LR = 1e-3  # see the module docstring and README "Training": reaches ~0.1 in a few hundred steps
RESTARTS_PER_RUN = 4


@dataclass(frozen=True)
class OptimConfig:
    """The paper's settings by default (section 4.1), plus the alphas' own rate."""

    lr: float = 1e-5
    alpha_lr: float = ALPHA_LR         # learning rate of the Eq. 6 alphas (no weight decay)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01         # on the transformer group only
    restart_steps: int | None = None   # T_0: steps of the first cosine cycle; None = steps / 4
    restart_mult: int = 1              # T_mult: each cycle is this many times longer
    min_lr: float = 0.0                # eta_min: the floor each cycle anneals to
    max_grad_norm: float = 1.0

    def restart_period(self, steps: int) -> int:
        """T_0 for a run of ``steps`` optimiser steps: the set value, or a quarter of the run."""
        if self.restart_steps is not None:
            return self.restart_steps
        return max(1, steps // RESTARTS_PER_RUN)


def parameter_groups(model: MagrefModel, config: OptimConfig) -> list[dict[str, Any]]:
    """``transformer`` (trainable backbone weights or adapters, decayed) and ``alpha`` (not)."""
    alphas = [model.disentangler.alpha]
    backbone = [p for p in model.transformer.parameters() if p.requires_grad]
    return [
        {"name": "transformer", "params": backbone, "lr": config.lr,
         "weight_decay": config.weight_decay},
        {"name": "alpha", "params": alphas, "lr": config.alpha_lr, "weight_decay": 0.0},
    ]


def make_optimizer(model: MagrefModel, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    fused = device.type == "cuda"
    return torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, betas=config.betas,
                             eps=config.eps, weight_decay=config.weight_decay,
                             fused=fused or None, foreach=None if fused else True)


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, steps: int) -> Any:
    """Cosine annealing with warm restarts, stepped once per optimiser step of a ``steps`` run.

    A resumed run loads the scheduler's state, so it keeps the period it started with even
    when ``--steps`` grows.
    """
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=config.restart_period(steps), T_mult=config.restart_mult, eta_min=config.min_lr)
