"""The paper's optimiser and schedule, and the flow-matching objective's conventions."""

from __future__ import annotations

import math

import pytest
import torch

from model.train.config import TrainConfig, UsageError, config_from_args, micro_batching
from model.train.optim import OptimConfig, make_optimizer, make_scheduler
from model.train.trainable import MagrefModel


@pytest.fixture(scope="module")
def model() -> MagrefModel:
    from model.disentangle import SubjectDisentanglement
    from model.tiny import tiny_wan_components

    transformer = tiny_wan_components()["transformer"]
    return MagrefModel(transformer, SubjectDisentanglement.attach_to(transformer))


def test_adamw_is_the_papers(model: MagrefModel) -> None:
    """Section 4.1: AdamW, betas (0.9, 0.999), weight decay 0.01, lr 1e-5 on the transformer;
    the alphas in their own group (own rate, no decay: tests/test_train_fidelity.py)."""
    config = TrainConfig(out="x").optim
    opt = make_optimizer(model, config, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["name"] for g in opt.param_groups] == ["transformer", "alpha"]
    for group in opt.param_groups:
        assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
        assert not group["fused"]  # fused only on CUDA
    assert opt.param_groups[0]["lr"] == 1e-5 and opt.param_groups[0]["weight_decay"] == 0.01
    transformer_params = {id(p) for p in model.transformer.parameters()}
    assert {id(p) for p in opt.param_groups[0]["params"]} == transformer_params
    assert opt.param_groups[1]["params"] == [model.disentangler.alpha]
    assert config.max_grad_norm == 1.0
    faster = make_optimizer(model, OptimConfig(alpha_lr=3e-3), torch.device("cpu"))
    assert [g["lr"] for g in faster.param_groups] == [1e-5, 3e-3]


def test_cosine_annealing_with_warm_restarts_over_a_restart(model: MagrefModel) -> None:
    """lr(step) = eta_min + (lr0 - eta_min) (1 + cos(pi * (step mod T) / T)) / 2, written out here."""
    config = OptimConfig(lr=1e-5, alpha_lr=4e-5, restart_steps=10, min_lr=1e-6)
    opt = make_optimizer(model, config, torch.device("cpu"))
    sched = make_scheduler(opt, config, 25)
    seen = []
    for _ in range(25):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    for step, (lr, alpha_lr) in enumerate(seen):
        phase = (step % 10) / 10
        assert lr == pytest.approx(1e-6 + (1e-5 - 1e-6) * (1 + math.cos(math.pi * phase)) / 2, rel=1e-9)
        assert alpha_lr == pytest.approx(1e-6 + (4e-5 - 1e-6) * (1 + math.cos(math.pi * phase)) / 2, rel=1e-9)
    assert seen[9][0] < 1.1e-6 * 1.3 and seen[10][0] == pytest.approx(1e-5)  # the warm restart


def test_training_target_is_the_velocity_the_sampler_integrates() -> None:
    """Eq. 8-9 with sigma = 1 - t: a model that outputs minus the paper's v = x1 - x0 (what
    Wan predicts) takes diffusers' flow-matching Euler step from x_t straight to x1."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from model.train.loop import WAN_TIMESTEPS

    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=[0.7], device="cpu")
    sigma = float(sched.sigmas[0])
    t = 1 - sigma
    x_t = t * x1 + (1 - t) * x0                       # Eq. 8
    v = x1 - x0                                       # Eq. 9
    out = sched.step(-v, sched.timesteps[0], x_t).prev_sample
    torch.testing.assert_close(out, x1)
    assert float(sched.timesteps[0]) == pytest.approx(sigma * WAN_TIMESTEPS)


def test_shifted_timestep_sampling_matches_wan() -> None:
    from model.train.loop import sample_sigma

    u = torch.linspace(0, 1, 11)
    shifted = sample_sigma(u, "shift", 3.0, torch.zeros(11))
    assert torch.allclose(shifted, 3 * u / (1 + 2 * u))
    assert torch.equal(sample_sigma(u, "uniform", 3.0, torch.zeros(11)), u)
    assert torch.allclose(sample_sigma(u, "logit-normal", 3.0, torch.zeros(11)), torch.full((11,), 0.5))


def test_global_batch_splits_over_ranks_and_micro_batches() -> None:
    assert micro_batching(TrainConfig(out="x", batch_size=8), 2) == (4, 1)
    assert micro_batching(TrainConfig(out="x", batch_size=8, micro_batch=1), 2) == (1, 4)
    with pytest.raises(UsageError, match="multiple of 3"):
        micro_batching(TrainConfig(out="x", batch_size=8), 3)
    with pytest.raises(UsageError, match="does not divide"):
        micro_batching(TrainConfig(out="x", batch_size=8, micro_batch=3), 2)


@pytest.mark.parametrize("argv,message", [
    (["--out", "o", "--base", "tiny"], "--manifest"),
    (["--out", "o", "--manifest", "/no/such/table"], "does not exist"),
    (["--out", "o", "--cache", "/no/such/cache"], "not a folder"),
    (["--out", "o", "--manifest", ".", "--frames", "10"], "4k\\+1"),
    (["--out", "o", "--manifest", ".", "--bucket", "100x64"], "divisible by 16"),
    (["--out", "o", "--manifest", ".", "--variant-prob", "1.5"], "probability"),
    (["--out", "o", "--manifest", ".", "--steps", "0"], "--steps"),
])
def test_command_line_mistakes_are_usage_errors(argv, message) -> None:
    with pytest.raises(UsageError, match=message):
        config_from_args(argv)


def test_cli_mistake_exits_2_with_one_line(tmp_path, capsys) -> None:
    from model.train.loop import main

    assert main(["--out", str(tmp_path / "o"), "--manifest", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: --manifest" in err[0] and "Traceback" not in err[0]
