"""MAGREF subject disentanglement (paper section 3.2, Eq. 5-6) as diffusers hooks.

Masked guidance tells the model *where* the references are, not *which words* they are.
Subject disentanglement binds them: for each subject word w_i of the prompt, the value
embedding v_i ∈ R^D of its tokens in a block's cross-attention (``attn2.to_v`` on the text
states, averaged over the word's tokens) is added to the first latent frame's tokens inside
that subject's region mask, in every block (Eq. 6)::

    z0' = z0 + alpha_l * sum_i M_sub^i ⊙ v_i

``alpha_l`` is one learnable scalar per block, initialised at 0, so an untrained MAGREF is
exactly the backbone. The backbone is not copied or changed: a ``diffusers.hooks.ModelHook``
on each ``WanTransformerBlock`` rewrites the block's input ``hidden_states`` before its
self-attention, which is where z0 enters "each layer".

Choices the paper leaves open, and ours:

* *Token positions*: the prompt is cleaned exactly as Wan cleans it, then tokenized with
  offsets; a word's tokens are those whose character span overlaps any whole-word,
  case-insensitive occurrence of the word (all occurrences, so "the man ... the man" uses
  both). A word that is not in the prompt, or only in its truncated tail, is an error.
* *Averaging*: ``mean_j to_v(x_j) = to_v(mean_j x_j)`` for a linear layer, so we pool the
  text states with a [K, L] weight matrix first and project K vectors, not 512 tokens.
* *Mask → tokens*: Wan patchifies latents 1×2×2, so one token covers 16×16 pixels of the
  first frame; M_sub^k is any-pooled at stride 16 (a token partly covered by a reference
  belongs to it), the same rule as the release's latent region mask at stride 8. Tokens on
  a border between two cells may belong to two subjects; Eq. 6 sums them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook

from model.conditioning import any_pool

HOOK_NAME = "magref_subject_disentanglement"
TEXT_LENGTH = 512  # Wan's text context length; WanAttnProcessor hard-codes it for I2V


class SubjectWordError(ValueError):
    """A subject word that cannot be located in the prompt's tokens."""


def clean_prompt(prompt: str) -> str:
    """The exact text Wan tokenizes (ftfy + html unescape + whitespace), so offsets line up."""
    from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean

    return prompt_clean(prompt)


def word_spans(text: str, word: str) -> list[tuple[int, int]]:
    """Character spans of whole-word, case-insensitive occurrences of ``word`` in ``text``."""
    phrase = r"\s+".join(re.escape(part) for part in word.split())
    if not phrase:
        raise SubjectWordError("empty subject word")
    pattern = re.compile(rf"(?<!\w){phrase}(?!\w)", re.IGNORECASE)
    return [m.span() for m in pattern.finditer(text)]


def subject_token_weights(tokenizer: Any, prompt: str, words: Sequence[str],
                          max_length: int = TEXT_LENGTH) -> torch.Tensor:
    """[K, max_length] averaging weights: row i is 1/n on the n tokens of ``words[i]``.

    The tokenizer call is the one Wan's text encoder path makes (``max_length`` padding and
    truncation, special tokens added), so positions index the same 512 text states.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise SubjectWordError(
            f"{type(tokenizer).__name__} gives no character offsets; subject disentanglement "
            "needs a fast tokenizer (tokenizer.json), as Wan's UMT5 tokenizer ships")
    text = clean_prompt(prompt)
    enc = tokenizer(text, padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    offsets, special = enc["offset_mapping"], enc["special_tokens_mask"]
    weights = torch.zeros(len(words), max_length)
    for i, word in enumerate(words):
        spans = word_spans(text, word)
        if not spans:
            raise SubjectWordError(
                f"subject word {word!r} does not occur in the prompt {text!r}; a subject word "
                "must be a word of the prompt (whole word, case-insensitive)")
        hits = [t for t, (s, e) in enumerate(offsets)
                if not special[t] and e > s and any(s < b and e > a for a, b in spans)]
        if not hits:
            raise SubjectWordError(
                f"subject word {word!r} lies beyond the first {max_length} tokens of the prompt "
                "and is truncated away; move it earlier or shorten the prompt")
        weights[i, hits] = 1.0 / len(hits)
    return weights


def subject_token_masks(subject_masks: np.ndarray | torch.Tensor,
                        patch_pixels: int = 16) -> torch.Tensor:
    """[K, H, W] pixel masks M_sub^k (Eq. 5) → [K, (H/16)(W/16)] first-frame token masks.

    Tokens are ordered row-major over the latent grid, as Wan's patch embedding flattens.
    """
    masks = torch.as_tensor(np.asarray(subject_masks) if isinstance(subject_masks, np.ndarray)
                            else subject_masks)
    return any_pool(masks, patch_pixels).flatten(-2)


@dataclass
class SubjectGuidance:
    """What Eq. 6 needs per sample, padded over subjects: text weights and token masks.

    ``token_weights`` [B, K, L_text] pools each subject word's text states; ``token_masks``
    [B, K, N0] marks its first-frame tokens. A padded subject (all-zero rows) adds nothing.
    """

    token_weights: torch.Tensor
    token_masks: torch.Tensor

    @classmethod
    def stack(cls, items: Sequence["SubjectGuidance | None"]) -> "SubjectGuidance":
        """Batch per-sample guidance (``None`` = no subjects, e.g. the CFG negative branch)."""
        present = [g for g in items if g is not None]
        if not present:
            raise ValueError("SubjectGuidance.stack needs at least one non-empty item")
        k = max(g.token_weights.shape[1] for g in present)
        length, n0 = present[0].token_weights.shape[2], present[0].token_masks.shape[2]
        weights = torch.zeros(len(items), k, length)
        masks = torch.zeros(len(items), k, n0)
        for b, g in enumerate(items):
            if g is not None:
                kk = g.token_weights.shape[1]
                weights[b, :kk] = g.token_weights[0]
                masks[b, :kk] = g.token_masks[0]
        return cls(weights, masks)

    @classmethod
    def build(cls, tokenizer: Any, prompt: str, subjects: Sequence[tuple[str, int]],
              subject_masks: np.ndarray | torch.Tensor,
              max_length: int = TEXT_LENGTH) -> "SubjectGuidance":
        """One sample: ``subjects`` pairs each word with the index of its reference."""
        words = [w for w, _ in subjects]
        masks = torch.as_tensor(subject_masks)
        for word, k in subjects:
            if not 0 <= k < masks.shape[0]:
                raise SubjectWordError(
                    f"subject {word!r} names reference {k}, but there are {masks.shape[0]}")
        token_masks = subject_token_masks(masks[[k for _, k in subjects]])
        weights = subject_token_weights(tokenizer, prompt, words, max_length)
        return cls(weights[None], token_masks[None])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "SubjectGuidance":
        return SubjectGuidance(self.token_weights.to(device, dtype), self.token_masks.to(device, dtype))


def _value_projection(attn: torch.nn.Module, states: torch.Tensor) -> torch.Tensor:
    """``attn2.to_v`` — or its half of the fused ``to_kv`` after ``fuse_projections()``."""
    if getattr(attn, "fused_projections", False) and hasattr(attn, "to_kv"):
        return attn.to_kv(states).chunk(2, dim=-1)[1]
    return attn.to_v(states)


class _InjectionHook(ModelHook):
    """Eq. 6 for one block: adds ``alpha_l * sum_i M_sub^i v_i`` to the block's z0 tokens."""

    def __init__(self, owner: "SubjectDisentanglement", index: int) -> None:
        super().__init__()
        self.owner, self.index = owner, index

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        guidance = self.owner.guidance
        if guidance is None:
            return args, kwargs
        args = list(args)
        hidden = args[0] if args else kwargs["hidden_states"]
        context = args[1] if len(args) > 1 else kwargs["encoder_hidden_states"]
        g = guidance.to(hidden.device, hidden.dtype)
        if g.token_weights.shape[0] != hidden.shape[0]:
            raise ValueError(f"subject guidance has batch {g.token_weights.shape[0]}, "
                             f"the transformer input {hidden.shape[0]}")
        text = context[:, -g.token_weights.shape[-1]:]             # image tokens come first
        values = _value_projection(module.attn2, torch.bmm(g.token_weights, text))  # [B, K, D]
        delta = torch.bmm(g.token_masks.transpose(1, 2), values)   # [B, N0, D]
        alpha = self.owner.alpha[self.index].to(hidden.device, hidden.dtype)
        n0 = delta.shape[1]
        if torch.is_grad_enabled():
            hidden = torch.cat([hidden[:, :n0] + alpha * delta, hidden[:, n0:]], dim=1)
        else:  # sampling: no autograd graph to protect, skip a full-size copy
            hidden[:, :n0] += alpha * delta
        if args:
            args[0] = hidden
        else:
            kwargs["hidden_states"] = hidden
        return tuple(args), kwargs


class SubjectDisentanglement(torch.nn.Module):
    """The parameters MAGREF adds to Wan (one alpha per block) and the hooks that use them.

    Set the per-call inputs with :meth:`set_guidance` (``model.velocity.magref_velocity``
    does it); they stay set until the next call, so gradient checkpointing's recompute in
    backward sees the same guidance as the forward did.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.zeros(num_layers))
        self.guidance: SubjectGuidance | None = None
        self._blocks: list[torch.nn.Module] = []

    @classmethod
    def attach_to(cls, transformer: torch.nn.Module) -> "SubjectDisentanglement":
        """A fresh (alpha = 0) module hooked into every block of ``transformer``."""
        module = cls(len(transformer.blocks))
        module.attach(transformer)
        return module

    def attach(self, transformer: torch.nn.Module) -> None:
        if len(transformer.blocks) != self.alpha.numel():
            raise ValueError(f"{self.alpha.numel()} alphas for {len(transformer.blocks)} blocks")
        self.detach()
        for index, block in enumerate(transformer.blocks):
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.register_hook(_InjectionHook(self, index), HOOK_NAME)
            self._blocks.append(block)

    def detach(self) -> None:
        for block in self._blocks:
            block._diffusers_hook.remove_hook(HOOK_NAME, recurse=False)
        self._blocks = []

    def set_guidance(self, guidance: SubjectGuidance | None) -> None:
        self.guidance = guidance
