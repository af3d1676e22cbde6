"""The one MAGREF forward pass that training and sampling share.

Given the noisy latents Z, the 20 condition channels (``encode_condition``: mask then
reference latents), the text and CLIP image embeddings and, optionally, the subject
guidance of Eq. 6, return the transformer's flow-matching velocity (Appendix A, Eq. 9-10).
Sampling calls it once per branch of classifier-free guidance; training calls it once and
regresses ``x1 - x0``.
"""

from __future__ import annotations

import torch

from model.disentangle import SubjectDisentanglement, SubjectGuidance


def magref_velocity(transformer: torch.nn.Module, disentangler: SubjectDisentanglement | None,
                    noisy_latents: torch.Tensor, condition: torch.Tensor, timestep: torch.Tensor,
                    prompt_embeds: torch.Tensor, image_embeds: torch.Tensor | None,
                    guidance: SubjectGuidance | None = None) -> torch.Tensor:
    """Velocity ``u(x_t, y, t)`` for [B, 16, T, h, w] latents (Eq. 4 input, Eq. 6 inside).

    The input is ``cat([noisy (16), condition (20)])`` = 36 channels, Wan I2V's order. With
    ``guidance=None`` (or no ``disentangler``) this is exactly the plain Wan I2V forward.
    """
    expected = transformer.config.in_channels
    if noisy_latents.shape[1] + condition.shape[1] != expected:
        raise ValueError(
            f"{noisy_latents.shape[1]} latent + {condition.shape[1]} condition channels != the "
            f"transformer's {expected} input channels (Wan I2V: 16 + 4 mask + 16 reference)")
    if noisy_latents.shape[2:] != condition.shape[2:]:
        raise ValueError(f"latents {tuple(noisy_latents.shape)} and condition "
                         f"{tuple(condition.shape)} differ in frames or size")
    if guidance is not None:
        if disentangler is None:
            raise ValueError("subject guidance given but no SubjectDisentanglement is attached")
        _, p_h, p_w = transformer.config.patch_size
        n0 = (noisy_latents.shape[3] // p_h) * (noisy_latents.shape[4] // p_w)
        if guidance.token_masks.shape[-1] != n0:
            raise ValueError(f"subject token masks cover {guidance.token_masks.shape[-1]} "
                             f"tokens, the first latent frame has {n0}")
    if disentangler is not None:
        disentangler.set_guidance(guidance)
    dtype = transformer.dtype
    batch = noisy_latents.shape[0]
    hidden = torch.cat([noisy_latents, condition.to(noisy_latents.device)], dim=1).to(dtype)
    return transformer(
        hidden_states=hidden,
        timestep=timestep.expand(batch) if timestep.ndim <= 1 and timestep.numel() == 1 else timestep,
        encoder_hidden_states=prompt_embeds.to(dtype),
        encoder_hidden_states_image=None if image_embeds is None else image_embeds.to(dtype),
        return_dict=False,
    )[0]
