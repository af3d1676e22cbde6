"""Training as the release was trained (issue 20): the target's first frame, the project's own
loss and optimiser, the default schedule. Each test calls the code under test, not a copy."""

from __future__ import annotations

import math

import pytest
import torch
from training_data import clip, sample_row

from model.disentangle import SubjectDisentanglement
from model.tiny import tiny_components, tiny_wan_components
from model.train.config import TrainConfig, config_from_args
from model.train.data import DataConfig, make_example
from model.train.latents import ModelInputs, encode_examples
from model.train.loop import WAN_TIMESTEPS, draw_noise, flow_matching_loss
from model.train.optim import ALPHA_LR, OptimConfig, make_optimizer, make_scheduler, parameter_groups
from model.train.trainable import MagrefModel

SMALL = DataConfig(num_frames=9, min_frames=5, buckets=((64, 48),))


@pytest.fixture(scope="module")
def pipe():
    return tiny_components("cpu")


@pytest.fixture(scope="module")
def row(tmp_path_factory) -> dict:
    uri, frames = clip(tmp_path_factory.mktemp("fidelity") / "c.mp4", frames=13)
    return sample_row("a", str(uri), frames)


def test_the_targets_first_latent_frame_is_the_conditions(pipe, row) -> None:
    """--first-frame canvas: VAE(target)[:, :, 0] == VAE([canvas, 0, ...])[:, :, 0], as in Wan I2V's
    training; with --first-frame clip it is the clip's own (different) frame."""
    inputs = encode_examples(pipe, [make_example(row, 0, SMALL, pipe.tokenizer)])
    reference_latents = inputs.condition[:, 4:]            # after the 4 mask channels
    torch.testing.assert_close(inputs.latents[:, :, 0], reference_latents[:, :, 0], rtol=0, atol=1e-6)
    assert inputs.latents[:, :, 1:].abs().mean() > 0.1    # later frames are the clip's, not zeros
    clip_first = encode_examples(pipe, [make_example(row, 0, DataConfig(
        num_frames=9, min_frames=5, buckets=((64, 48),), first_frame="clip"), pipe.tokenizer)])
    gap = (clip_first.latents[:, :, 0] - clip_first.condition[:, 4:, 0]).abs().mean()
    assert gap > 10 * (inputs.latents[:, :, 0] - reference_latents[:, :, 0]).abs().mean() + 1e-3
    assert config_from_args(["--out", "o", "--manifest", "."]).data.first_frame == "canvas"
    assert config_from_args(["--out", "o", "--manifest", ".", "--first-frame", "clip"]).data.first_frame == "clip"


# ---- the flow-matching loss itself (Eq. 8-10) -------------------------------------------------

def _inputs() -> ModelInputs:
    g = torch.Generator().manual_seed(1)
    return ModelInputs(["s0", "s1"], [0, 3], torch.randn(2, 16, 3, 4, 4, generator=g),
                       torch.randn(2, 20, 3, 4, 4, generator=g), torch.randn(2, 512, 8, generator=g),
                       None, None)


class WanConventionStub(torch.nn.Module):
    """Knows x1 and the noise the loss will draw; returns Wan's prediction x0 - x1 from x_t.

    It reads sigma from the timestep (1000 sigma) and recovers x0 from x_t = (1-s) x1 + s x0:
    so it is exact only if the loss builds x_t and the timestep in Wan's convention.
    """

    def __init__(self, x1: torch.Tensor, sign: float = 1.0, swap: bool = False) -> None:
        super().__init__()
        self.x1, self.sign, self.swap = x1, sign, swap

    def forward(self, x_t, condition, timestep, prompt_embeds, image_embeds, weights=None, masks=None):
        sigma = (timestep / WAN_TIMESTEPS).view(-1, 1, 1, 1, 1)
        if self.swap:
            sigma = 1 - sigma                                # reads t where sigma is meant
        x0 = (x_t - (1 - sigma) * self.x1) / sigma
        return self.sign * (x0 - self.x1)


def test_flow_matching_loss_is_zero_for_the_wan_velocity_and_not_otherwise() -> None:
    inputs, config = _inputs(), TrainConfig(out="x")
    exact = flow_matching_loss(WanConventionStub(inputs.latents), inputs, 5, config)
    assert exact.shape == (2,) and float(exact.max()) < 1e-8
    flipped = flow_matching_loss(WanConventionStub(inputs.latents, sign=-1.0), inputs, 5, config)
    swapped = flow_matching_loss(WanConventionStub(inputs.latents, swap=True), inputs, 5, config)
    assert float(flipped.min()) > 1.0 and float(swapped.min()) > 1e-3


def test_draw_noise_is_seeded_by_example_not_position() -> None:
    inputs, config = _inputs(), TrainConfig(out="x")
    x0, sigma = draw_noise(inputs, 7, config)
    assert x0.shape == inputs.latents.shape and sigma.shape == (2,)
    assert bool(((sigma > 0) & (sigma < 1)).all())
    single = ModelInputs(["s1"], [3], inputs.latents[1:], inputs.condition[1:], inputs.prompt_embeds[1:],
                         None, None)
    x0_alone, sigma_alone = draw_noise(single, 7, config)
    torch.testing.assert_close(x0_alone[0], x0[1], rtol=0, atol=0)
    assert float(sigma_alone[0]) == float(sigma[1])
    other_step, _ = draw_noise(inputs, 8, config)
    assert not torch.equal(other_step, x0)
    assert abs(float(x0.std()) - 1.0) < 0.1


# ---- the optimiser and schedule themselves ----------------------------------------------------

@pytest.fixture(scope="module")
def model() -> MagrefModel:
    transformer = tiny_wan_components()["transformer"]
    return MagrefModel(transformer, SubjectDisentanglement.attach_to(transformer))


def test_parameter_groups_give_alphas_their_own_rate_and_no_decay(model: MagrefModel) -> None:
    config = TrainConfig(out="x").optim
    groups = parameter_groups(model, config)
    assert [g["name"] for g in groups] == ["transformer", "alpha"]
    assert (groups[0]["lr"], groups[0]["weight_decay"]) == (1e-5, 0.01)
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (ALPHA_LR, 0.0)
    opt = make_optimizer(model, config, torch.device("cpu"))
    assert [g["lr"] for g in opt.param_groups] == [1e-5, ALPHA_LR]
    # One real step with zero gradients: decay shrinks the backbone, leaves the alphas alone.
    with torch.no_grad():
        model.disentangler.alpha.fill_(0.5)
    weight = next(p for p in model.transformer.parameters() if p.abs().sum() > 0)
    before = weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model.disentangler.alpha.detach(), torch.full_like(model.disentangler.alpha, 0.5))
    torch.testing.assert_close(weight.detach(), before * (1 - 1e-5 * 0.01))
    # Adam moves an alpha by ~its lr per step whatever the gradient's scale.
    opt = make_optimizer(model, config, torch.device("cpu"))
    for p in model.parameters():
        p.grad = None
    model.disentangler.alpha.grad = torch.full_like(model.disentangler.alpha, 1e-6)
    opt.step()
    moved = 0.5 - model.disentangler.alpha.detach()
    assert torch.allclose(moved, torch.full_like(moved, ALPHA_LR), rtol=0.02)
    with torch.no_grad():
        model.disentangler.alpha.zero_()


def test_the_default_schedule_restarts_within_a_default_run(model: MagrefModel) -> None:
    config = config_from_args(["--out", "o", "--manifest", "."])
    assert config.optim.restart_steps is None and config.optim.restart_period(config.steps) == config.steps // 4
    opt = make_optimizer(model, config.optim, torch.device("cpu"))
    sched = make_scheduler(opt, config.optim, config.steps)
    lrs = []
    for _ in range(config.steps):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    restarts = [s for s in range(1, len(lrs)) if lrs[s] > lrs[s - 1] * 10]
    assert restarts == [250, 500, 750]
    assert lrs[125] == pytest.approx(1e-5 * (1 + math.cos(math.pi * 0.5)) / 2)
    assert make_scheduler(opt, OptimConfig(restart_steps=7), 1000).T_0 == 7
    assert config_from_args(["--out", "o", "--manifest", ".", "--steps", "40"]).optim.restart_period(40) == 10
