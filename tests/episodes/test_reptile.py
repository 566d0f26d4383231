"""Reptile: the paper's identity, the meta step's decay, the inner optimizers, every normalizer."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fewnorm.config import RunConfig
from fewnorm.episodes.algorithms import get_algorithm
from fewnorm.episodes.finetune import Steps, minibatches, optimizer_step
from fewnorm.episodes.maml import InnerLoop
from fewnorm.episodes.reinit import FreshHead
from fewnorm.episodes.reptile import Reptile, reptile_evaluate, reptile_train_step
from fewnorm.errors import ConfigError
from fewnorm.norms import list_norms, norm_phase, task_scope
from tests.episodes.test_maml import tiny_episodes, tiny_model


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    config = RunConfig(algo="reptile", lr=lr)
    return get_algorithm(config).optimizer(model, config)


@pytest.mark.parametrize("norm", ["none", "batchnorm", "groupnorm"])
def test_one_sgd_step_on_the_whole_task_moves_along_its_gradient(norm: str) -> None:
    # Nichol et al.: with one inner step of SGD on the whole task, phi - theta = -alpha grad L(theta),
    # so the outer step theta + eps (phi - theta) is a gradient step of size eps * alpha.
    model = tiny_model(norm)
    episode = tiny_episodes(1)[0]
    theta = {k: p.detach().clone() for k, p in model.named_parameters()}
    reference = copy.deepcopy(model).train()
    with task_scope(), norm_phase("support"):
        loss = F.cross_entropy(functional_call(reference, {}, (episode.support,)), episode.support_labels)
    grads = dict(zip(theta, torch.autograd.grad(loss, list(reference.parameters())), strict=True))
    alpha, eps = 0.3, 0.5
    reptile_train_step(
        model,
        _optimizer(model, eps),
        [episode],
        InnerLoop(lr=alpha, steps=1),
        Steps("sgd", alpha, 1),
        total=10,
    )
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), theta[k] - eps * alpha * grads[k], rtol=1e-4, atol=1e-6)


def test_meta_step_decays_linearly_to_zero() -> None:
    model = tiny_model("none")
    optimizer = _optimizer(model, 1.0)
    loop, steps = InnerLoop(lr=0.1, steps=1), Steps("sgd", 0.1, 1)
    rates = []
    for _ in range(4):
        reptile_train_step(model, optimizer, tiny_episodes(1), loop, steps, total=4)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.75, 0.5, 0.25, 0.0])
    restored = _optimizer(tiny_model("none"), 1.0)
    restored.load_state_dict(optimizer.state_dict())  # last.pt restores the schedule
    assert restored.param_groups[0]["meta_steps"] == 4 and restored.param_groups[0]["lr"] == 0.0


def test_mean_over_the_meta_batch() -> None:
    # The outer step moves towards the mean of the tasks' adapted weights.
    episodes = tiny_episodes(2)
    loop, steps = InnerLoop(lr=0.2, steps=2), Steps("sgd", 0.2, 2)
    alone = []
    for e in episodes:
        m = tiny_model("none")
        reptile_train_step(m, _optimizer(m, 1.0), [e], loop, steps, total=100)
        alone.append(dict(m.named_parameters()))
    both = tiny_model("none")
    reptile_train_step(both, _optimizer(both, 1.0), episodes, loop, steps, total=100)
    for k, p in both.named_parameters():
        torch.testing.assert_close(p, (alone[0][k] + alone[1][k]) / 2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("adam", lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.0, 0.999), eps=1e-8)),
        (
            "sgd-momentum",
            lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, dampening=0.9, weight_decay=1e-3),
        ),
        ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.01)),
    ],
)
def test_inner_optimizers_match_torch(kind: str, make: object) -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3)
    grads = [torch.randn(4, 3) for _ in range(3)]
    reference = torch.nn.Parameter(w.clone())
    opt = make([reference])  # type: ignore[operator]
    params, state = {"w": w.clone()}, {}
    for step, g in enumerate(grads, start=1):
        reference.grad = g.clone()
        opt.step()
        params = optimizer_step(kind, params, {"w": g}, state, 0.01, step)
    torch.testing.assert_close(params["w"], reference.detach())


def test_minibatches_cycle_through_shuffles() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = minibatches(10, 4, gen)
    first = torch.cat([next(batches) for _ in range(2)])  # 8 distinct of one shuffle
    assert len(set(first.tolist())) == 8
    assert [len(next(minibatches(5, None, gen)))] == [5]


@pytest.mark.parametrize("norm", [s.name for s in list_norms()])
def test_every_normalizer_trains_inside_reptile(norm: str) -> None:
    model = tiny_model(norm)
    optimizer = _optimizer(model, 1.0)
    loop, steps = InnerLoop(lr=1e-3, steps=2), Steps("adam", 1e-3, 2, batch=3)
    for _ in range(2):
        result = reptile_train_step(model, optimizer, tiny_episodes(2), loop, steps, total=10)
        assert math.isfinite(result.loss), norm
    assert all(torch.isfinite(p).all() for p in model.parameters())
    before = copy.deepcopy(model.state_dict())
    scores = [reptile_evaluate(model, tiny_episodes(1)[0], loop, Steps("adam", 1e-3, 3, 2)) for _ in range(2)]
    assert scores[0] == scores[1] and 0.0 <= scores[0] <= 1.0  # fixed shuffles: repeatable
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "evaluation changed the model"


def test_reptile_fresh_heads_use_its_own_adaptation() -> None:
    config = RunConfig(algo="reptile", dataset="omniglot", hidden=8, inner_steps_test=2, inner_batch_test=3)
    algorithm = get_algorithm(config)
    assert isinstance(algorithm, Reptile)
    model = tiny_model("batchnorm")
    scorer = FreshHead(algorithm, "zero")
    assert 0.0 <= scorer.evaluate(model, tiny_episodes(1)[0]) <= 1.0


def test_reptile_refuses_a_step_schedule() -> None:
    with pytest.raises(ConfigError, match="linearly"):
        get_algorithm(RunConfig(algo="reptile", lr_halve_every=100))


def test_reptile_defaults_are_the_papers() -> None:
    c = RunConfig(algo="reptile")
    assert (c.inner_optimizer, c.inner_lr, c.inner_steps, c.inner_batch) == ("adam", 1e-3, 5, 10)
    assert (c.lr, c.meta_batch, c.inner_steps_test, c.train_shots) == (1.0, 5, 50, 10)
    assert c.norm_options["mode"] == "transductive"
