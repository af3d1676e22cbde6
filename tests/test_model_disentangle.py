"""Subject disentanglement (Eq. 5-6): identity at alpha=0, exact locality, words, checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from model.conditioning import compose_canvas, encode_condition
from model.disentangle import (
    SubjectDisentanglement,
    SubjectGuidance,
    SubjectWordError,
    subject_token_masks,
    subject_token_weights,
)
from model.tiny import tiny_wan_components
from model.velocity import magref_velocity

H, W, FRAMES = 64, 96, 5
PROMPT = "a man and a woman walk a dog in the park, the man wears a red hat"


def ref(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 200, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def setup() -> dict:
    """Two identical tiny backbones (same seed): one plain, one with MAGREF hooks."""
    plain = tiny_wan_components()
    comps = tiny_wan_components()
    for a, b in zip(plain["transformer"].state_dict().values(), comps["transformer"].state_dict().values()):
        assert torch.equal(a, b)
    transformer = comps["transformer"]
    dis = SubjectDisentanglement.attach_to(transformer)
    canvas = compose_canvas([ref(30, 60, 0), ref(60, 30, 1), ref(20, 20, 2)], H, W)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cond = encode_condition(comps["vae"], canvas.image, canvas.region_mask, FRAMES)
    latents = torch.randn(1, 16, *cond.shape[2:], generator=gen)
    text = torch.randn(1, 512, 32, generator=gen)
    image = torch.randn(1, 17, 16, generator=gen)
    guidance = SubjectGuidance.build(comps["tokenizer"], PROMPT, [("man", 0), ("woman", 1)],
                                     canvas.subject_masks)
    return dict(plain=plain["transformer"], transformer=transformer, dis=dis, canvas=canvas,
                cond=cond, latents=latents, text=text, image=image, guidance=guidance,
                tokenizer=comps["tokenizer"], t=torch.tensor([700.0]))


def run(s: dict, guidance: SubjectGuidance | None, transformer=None) -> torch.Tensor:
    with torch.no_grad():
        return magref_velocity(transformer or s["transformer"], None if transformer else s["dis"],
                               s["latents"], s["cond"], s["t"], s["text"], s["image"], guidance)


def test_alpha_zero_equals_plain_wan_i2v(setup: dict) -> None:
    s = setup
    s["dis"].alpha.data.zero_()
    ours = run(s, s["guidance"])
    with torch.no_grad():
        theirs = s["plain"](hidden_states=torch.cat([s["latents"], s["cond"]], 1), timestep=s["t"],
                            encoder_hidden_states=s["text"], encoder_hidden_states_image=s["image"],
                            return_dict=False)[0]
    assert ours.shape == s["latents"].shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def capture_block_inputs(transformer) -> tuple[list, list]:
    """What each block actually computes on: the input of its norm1 (after our hook)."""
    seen: list = [None] * len(transformer.blocks)
    handles = [b.norm1.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, a[0].clone()))
               for i, b in enumerate(transformer.blocks)]
    return seen, handles


def test_nonzero_alpha_changes_only_first_frame_region_tokens_by_eq6(setup: dict) -> None:
    s = setup
    transformer, dis, g = s["transformer"], s["dis"], s["guidance"]
    seen, handles = capture_block_inputs(transformer)
    context: dict = {}

    def keep_context(module, args):  # returns None: observe, do not replace the inputs
        context["ctx"] = args[1].clone()

    h2 = transformer.blocks[0].attn2.register_forward_pre_hook(keep_context)
    try:
        dis.alpha.data.zero_()
        base_out = run(s, g)
        base = [x.clone() for x in seen]
        dis.alpha.data = torch.tensor([0.7, 0.0])
        out = run(s, g)
    finally:
        for h in handles + [h2]:
            h.remove()
        dis.alpha.data.zero_()
    n0 = (H // 16) * (W // 16)
    diff = (seen[0] - base[0]).abs().sum(-1)[0]                     # [L] per token
    region = subject_token_masks(s["canvas"].subject_masks[:2]).amax(0) > 0
    assert region.any() and not region.all()
    changed = diff > 0
    assert changed[:n0].equal(region)                              # exactly the subjects' tokens
    assert not changed[n0:].any()                                  # later frames untouched
    # The change is alpha * sum_i M_i v_i with v_i = mean of attn2.to_v over word i's tokens,
    # built here independently: our own token search and 16x16 any-pooling, not the helpers.
    text = context["ctx"][:, -512:]                                # image tokens come first
    attn2 = transformer.blocks[0].attn2
    enc = s["tokenizer"](PROMPT, return_offsets_mapping=True)
    expected = torch.zeros(n0, seen[0].shape[-1])
    for word, k in [("man", 0), ("woman", 1)]:
        spans = [m.span() for m in re.finditer(rf"\b{word}\b", PROMPT)]
        positions = [t for t, (a, b) in enumerate(enc["offset_mapping"])
                     if b > a and any(a < e and b > st for st, e in spans)]
        assert positions and (word != "man" or len(spans) == 2)  # both "man"s, not "woMAN"
        v = attn2.to_v(text[0, positions]).mean(0)
        mask = np.asarray(s["canvas"].subject_masks[k]) > 0
        tokens = mask.reshape(H // 16, 16, W // 16, 16).any(axis=(1, 3)).reshape(-1)
        expected += torch.from_numpy(tokens.astype(np.float32))[:, None] * v
    torch.testing.assert_close(seen[0][0, :n0] - base[0][0, :n0], 0.7 * expected, atol=1e-5, rtol=1e-4)
    assert not torch.equal(out, base_out)


def test_alpha_on_second_block_leaves_first_block_untouched(setup: dict) -> None:
    s = setup
    seen, handles = capture_block_inputs(s["transformer"])
    try:
        s["dis"].alpha.data.zero_()
        run(s, s["guidance"])
        base = [x.clone() for x in seen]
        s["dis"].alpha.data = torch.tensor([0.0, 0.5])
        run(s, s["guidance"])
    finally:
        for h in handles:
            h.remove()
        s["dis"].alpha.data.zero_()
    assert torch.equal(seen[0], base[0])
    assert not torch.equal(seen[1], base[1])


def test_guidance_none_after_a_guided_call_is_plain(setup: dict) -> None:
    """The CFG negative branch passes no guidance; nothing from the positive call leaks."""
    s = setup
    s["dis"].alpha.data = torch.tensor([0.9, 0.9])
    try:
        guided = run(s, s["guidance"])
        unguided = run(s, None)
    finally:
        s["dis"].alpha.data.zero_()
    plain = run(s, None, transformer=s["plain"])
    assert not torch.equal(guided, plain)
    torch.testing.assert_close(unguided, plain, rtol=0, atol=0)


def test_alpha_gets_gradients_and_batched_guidance_pads(setup: dict) -> None:
    s = setup
    g = SubjectGuidance.stack([s["guidance"], None])
    assert g.token_weights.shape[0] == 2 and g.token_weights[1].abs().sum() == 0
    s["dis"].alpha.data.fill_(0.1)
    s["dis"].alpha.grad = None
    try:
        out = magref_velocity(s["transformer"], s["dis"], s["latents"].repeat(2, 1, 1, 1, 1),
                              s["cond"].repeat(2, 1, 1, 1, 1), s["t"], s["text"].repeat(2, 1, 1),
                              s["image"].repeat(2, 1, 1), g)
        out.pow(2).mean().backward()
    finally:
        s["dis"].alpha.data.zero_()
        s["transformer"].zero_grad(set_to_none=True)
    assert s["dis"].alpha.grad is not None and (s["dis"].alpha.grad != 0).all()


def test_subject_tokens_follow_the_word(setup: dict) -> None:
    tok = setup["tokenizer"]
    weights = subject_token_weights(tok, PROMPT, ["man", "woman", "red hat"])
    ids = tok(PROMPT, padding="max_length", max_length=512, truncation=True)["input_ids"]
    for row, word in zip(weights, ["man", "woman", "red hat"]):
        positions = row.nonzero().flatten().tolist()
        assert abs(row.sum().item() - 1) < 1e-6
        text = "".join(tok.decode([ids[p]]) for p in positions)
        assert text.replace(" ", "").lower().count(word.replace(" ", "")) >= 1
    # "man" occurs twice and never picks up "woman"'s tokens
    assert set(weights[0].nonzero().flatten().tolist()).isdisjoint(weights[1].nonzero().flatten().tolist())


def test_absent_subject_word_is_a_clear_error(setup: dict) -> None:
    with pytest.raises(SubjectWordError, match="'cat' does not occur in the prompt"):
        SubjectGuidance.build(setup["tokenizer"], PROMPT, [("man", 0), ("cat", 1)],
                              setup["canvas"].subject_masks)
    with pytest.raises(SubjectWordError, match="'man'"):  # 'man' is not a whole word here
        subject_token_weights(setup["tokenizer"], "a woman walks", ["man"])
    with pytest.raises(SubjectWordError, match="names reference 5"):
        SubjectGuidance.build(setup["tokenizer"], PROMPT, [("man", 5)], setup["canvas"].subject_masks)


def test_checkpoint_roundtrip_plain_wan_and_bad_keys(setup: dict, tmp_path) -> None:
    from safetensors.torch import save_file

    from model.weights.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    s = setup
    src = SubjectDisentanglement(2)
    src.alpha.data = torch.tensor([0.25, -0.5])
    path = tmp_path / "magref.safetensors"
    save_checkpoint(str(path), s["plain"], src)
    fresh = tiny_wan_components()["transformer"]
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    dst = SubjectDisentanglement.attach_to(fresh)
    counts = load_checkpoint(str(path), fresh, dst)
    assert counts["alpha"] == 1 and torch.equal(dst.alpha.data, src.alpha.data)
    for (k, a), b in zip(s["plain"].state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    # A plain diffusers Wan transformer file loads; alphas go back to 0.
    s["plain"].save_pretrained(tmp_path / "wan")
    load_checkpoint(str(tmp_path / "wan" / "diffusion_pytorch_model.safetensors"), fresh, dst)
    assert (dst.alpha == 0).all()
    save_file({"transformer.not_a_key": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="not_a_key"):
        load_checkpoint(str(tmp_path / "bad.safetensors"), fresh, dst)
    save_file({"magref.alpha": torch.zeros(3)}, str(tmp_path / "bad2.safetensors"))
    with pytest.raises(CheckpointError, match="2 blocks"):
        load_checkpoint(str(tmp_path / "bad2.safetensors"), fresh, dst)
