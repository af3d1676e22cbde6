"""What MAGREF training updates, and how: the trainable module, the optimiser, the schedule.

``MagrefModel`` holds the Wan transformer and the disentanglement alphas in one
``nn.Module`` so DDP and FSDP2 see both, and its ``forward`` is ``magref_velocity``: the
same function sampling calls, so training and sampling cannot drift apart.

The optimiser and schedule are the paper's (section 4.1, "Training details"): AdamW
(FusedAdam in the paper; ``fused=True`` on CUDA) with betas (0.9, 0.999), weight decay
0.01, learning rate 1e-5, cosine annealing with warm restarts, gradient clipping at 1.0.
The paper applies decay to every trained parameter (FusedAdam's decoupled decay), and so
do we. There are two named parameter groups, ``transformer`` (all weights, or the LoRA
adapters) and ``alpha`` (the Eq. 6 scales, zero at start), so the alphas can be given
their own learning rate (``alpha_lr``); by default both groups have the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from model.disentangle import SubjectDisentanglement, SubjectGuidance
from model.velocity import magref_velocity


class MagrefModel(torch.nn.Module):
    """Transformer + alphas; ``forward`` is the one MAGREF velocity (Eq. 4, 6, 9)."""

    def __init__(self, transformer: torch.nn.Module, disentangler: SubjectDisentanglement) -> None:
        super().__init__()
        self.transformer = transformer
        self.disentangler = disentangler

    def forward(self, noisy: torch.Tensor, condition: torch.Tensor, timestep: torch.Tensor,
                prompt_embeds: torch.Tensor, image_embeds: torch.Tensor | None,
                token_weights: torch.Tensor | None = None,
                token_masks: torch.Tensor | None = None) -> torch.Tensor:
        guidance = None if token_weights is None else SubjectGuidance(token_weights, token_masks)
        velocity = magref_velocity(self.transformer, self.disentangler, noisy, condition, timestep,
                                   prompt_embeds, image_embeds, guidance)
        if guidance is None:
            # The alphas act only through subject guidance. Keep them in the graph (gradient
            # 0) so every rank reduces the same parameters and a batch without subject words
            # updates Adam's state exactly as it does in a single process.
            velocity = velocity + 0.0 * self.disentangler.alpha.sum()
        return velocity


def load_transformer(base: str, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Only the Wan transformer (training from the latent cache needs nothing else)."""
    if base == "tiny":
        from model.tiny import tiny_wan_components

        return tiny_wan_components()["transformer"].to(device=device, dtype=dtype)
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(base, subfolder="transformer",
                                                 torch_dtype=dtype).to(device)


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


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
