"""What MAGREF training updates: the Wan transformer and the Eq. 6 alphas as one module.

``MagrefModel`` holds the Wan transformer and the disentanglement alphas in one
``nn.Module`` so DDP and FSDP2 see both, and its ``forward`` is ``magref_velocity``: the
same function sampling calls, so training and sampling cannot drift apart. The optimiser
and schedule that update it are in ``model.train.optim``.
"""

from __future__ import annotations

import torch

from model.disentangle import SubjectDisentanglement, SubjectGuidance
from model.tiny import tiny_wan_components
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
        return tiny_wan_components()["transformer"].to(device=device, dtype=dtype)
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(base, subfolder="transformer",
                                                 torch_dtype=dtype).to(device)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
