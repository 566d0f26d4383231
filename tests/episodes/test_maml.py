"""MAML, first-order MAML and ANIL: meta-gradients, buffers, phases, evaluation, configuration."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from typer.testing import CliRunner

from fewnorm.backbones import Conv4
from fewnorm.cli.main import app
from fewnorm.config import RunConfig, resolve_config
from fewnorm.episodes.algorithms import MAX_META_BATCH, check_maml_config, get_algorithm
from fewnorm.episodes.heads import FewShotClassifier, build_head, canonical_head
from fewnorm.episodes.maml import (
    InnerLoop,
    adapted_query_logits,
    inner_loop,
    maml_evaluate,
    maml_task_loss,
    maml_train_step,
    task_buffers,
)
from fewnorm.episodes.sampler import Episode, EpisodeSampler
from fewnorm.errors import ConfigError, UnknownNameError
from fewnorm.norms import list_norms, task_scope
from tests.episodes.test_sampler import make_store


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread avoids oversubscription on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs" / "maml").glob("*.yaml"))


def tiny_model(
    norm: str = "batchnorm",
    *,
    head: str = "linear",
    dtype: torch.dtype = torch.float32,
    **options: object,
) -> FewShotClassifier:
    """Conv-4 with two blocks of 8 filters on 8x8 images (D = 8*2*2), a 5-way head."""
    torch.manual_seed(0)
    model = FewShotClassifier(Conv4(1, 8, norm, options, depth=2), build_head(head, 32, 5))
    return model.to(dtype)


def tiny_episodes(
    n: int = 2, queries: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32
) -> list[Episode]:
    store = make_store(classes=10, per_class=20, size=8)
    noise = torch.randint(0, 60, store.images.shape, generator=torch.Generator().manual_seed(1))
    store.images = (store.images.int() + noise).clamp(0, 255).to(torch.uint8)
    sampler = EpisodeSampler(store, ways=5, shots=1, queries=queries)
    episodes = [sampler.fixed(i, seed) for i in range(n)]
    return [
        Episode(e.support.to(dtype), e.support_labels, e.query.to(dtype), e.query_labels, 5, 1, queries)
        for e in episodes
    ]


def meta_grads(model: nn.Module, episode: Episode, loop: InnerLoop) -> dict[str, Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = maml_task_loss(model, episode, loop)
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


# -- meta-gradients -------------------------------------------------------------------------------


def test_first_order_gradient_is_the_query_gradient_at_the_adapted_weights() -> None:
    model, (episode, _) = tiny_model(dtype=torch.float64), tiny_episodes(dtype=torch.float64)
    loop = InnerLoop(lr=0.4, steps=2, first_order=True)
    got = meta_grads(model, episode, loop)
    # by hand: two SGD steps on detached weights, then the query gradient there
    fast = {k: p.detach().clone() for k, p in model.named_parameters()}
    with task_scope():
        for _ in range(2):
            fast = {k: v.requires_grad_(True) for k, v in fast.items()}
            loss = F.cross_entropy(functional_call(model, fast, (episode.support,)), episode.support_labels)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {k: (v - 0.4 * g).detach() for (k, v), g in zip(fast.items(), grads, strict=True)}
        fast = {k: v.requires_grad_(True) for k, v in fast.items()}
        query_loss = F.cross_entropy(functional_call(model, fast, (episode.query,)), episode.query_labels)
        expected = dict(zip(fast, torch.autograd.grad(query_loss, list(fast.values())), strict=True))
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_second_order_differs_from_first_order_by_the_inner_hessian_term(norm: str) -> None:
    """One step: MAML grad = (I - lr H_support) g_query(theta'); FOMAML drops the Hessian term."""
    model, (episode, _) = tiny_model(norm, dtype=torch.float64), tiny_episodes(dtype=torch.float64)
    lr = 0.4
    second = meta_grads(model, episode, InnerLoop(lr=lr, steps=1))
    first = meta_grads(model, episode, InnerLoop(lr=lr, steps=1, first_order=True))
    params = dict(model.named_parameters())
    with task_scope():
        loss = F.cross_entropy(functional_call(model, params, (episode.support,)), episode.support_labels)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        hvp = torch.autograd.grad(grads, list(params.values()), grad_outputs=[first[k] for k in params])
    for (k, _), h in zip(params.items(), hvp, strict=True):
        torch.testing.assert_close(second[k], first[k] - lr * h, rtol=1e-8, atol=1e-10)
    differs = [k for k in params if not torch.allclose(second[k], first[k], rtol=1e-6, atol=1e-9)]
    assert differs, "second- and first-order meta-gradients should differ where the Hessian acts"


def test_anil_adapts_only_the_head() -> None:
    model, (episode, _) = tiny_model(), tiny_episodes()
    params, buffers = dict(model.named_parameters()), task_buffers(model, "per_task")
    with task_scope():
        fast = inner_loop(
            model,
            params,
            buffers,
            episode.support,
            episode.support_labels,
            InnerLoop(lr=0.4, steps=3, head_only=True),
            create_graph=True,
        )
    for k, p in params.items():
        if k.startswith("head."):
            assert not torch.equal(fast[k], p), k
        else:
            assert fast[k] is p, f"ANIL changed body weight {k}"
    grads = meta_grads(model, episode, InnerLoop(lr=0.4, steps=1, head_only=True))
    assert any(k.startswith("embedding.") and g.abs().sum() > 0 for k, g in grads.items())


# -- buffers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "moves"), [("per_task", False), ("global", True)])
def test_buffer_policy(policy: str, moves: bool) -> None:
    model = tiny_model("batchnorm", mode="running")
    before = {k: b.clone() for k, b in model.named_buffers()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    maml_train_step(model, opt, tiny_episodes(), InnerLoop(lr=0.4, steps=2, buffer_policy=policy))
    changed = [k for k, b in model.named_buffers() if not torch.equal(b, before[k])]
    assert bool(changed) is moves, changed


def test_unknown_buffer_policy_is_rejected() -> None:
    with pytest.raises(ConfigError, match="buffer_policy"):
        task_buffers(tiny_model(), "shared")


# -- evaluation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("norm", "options"),
    [
        ("batchnorm", {"mode": "running"}),
        ("batchnorm", {"mode": "support"}),
        ("tasknorm-i", {}),
        ("swbn", {}),
    ],
)
def test_evaluation_is_idempotent_and_leaves_the_model_unchanged(norm: str, options: dict) -> None:
    model = tiny_model(norm, **options)
    model.train()  # a forward in this mode would move running buffers
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loop, episodes = InnerLoop(lr=0.4, steps=3, buffer_policy="global"), tiny_episodes(4)
    first = [maml_evaluate(model, e, loop) for e in episodes]
    second = [maml_evaluate(model, e, loop) for e in episodes]
    assert first == second
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


def _query_logits(norm: str, one_at_a_time: bool, **options: object) -> Tensor:
    model, (episode, _) = tiny_model(norm, **options), tiny_episodes(queries=4)
    model.eval()
    params = {k: p.detach().requires_grad_() for k, p in model.named_parameters()}
    return adapted_query_logits(
        model,
        params,
        task_buffers(model, "per_task"),
        episode,
        InnerLoop(lr=0.4, steps=2),
        create_graph=False,
        one_at_a_time=one_at_a_time,
        differentiable=False,
    )


def test_query_one_at_a_time_exposes_only_transductive_normalizers() -> None:
    together, alone = _query_logits("batchnorm", False), _query_logits("batchnorm", True)
    assert not torch.allclose(together, alone, atol=1e-4)
    for norm, options in (("batchnorm", {"mode": "support"}), ("tasknorm-i", {}), ("tasknorm-l", {})):
        torch.testing.assert_close(
            _query_logits(norm, False, **options), _query_logits(norm, True, **options), msg=norm
        )


def test_support_statistics_are_recomputed_with_the_adapted_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Support-mode BN: the query is normalized with support moments of the final fast weights.

    With the support set as its own query, the query logits must equal a plain
    forward of the support set with the adapted weights (its own batch moments).
    """
    model, (episode, _) = tiny_model("batchnorm", mode="support"), tiny_episodes()
    model.eval()
    params = {k: p.detach().requires_grad_() for k, p in model.named_parameters()}
    loop = InnerLoop(lr=0.4, steps=2)
    own = Episode(episode.support, episode.support_labels, episode.support, episode.support_labels, 5, 1, 1)
    with task_scope():
        fast = inner_loop(model, params, {}, own.support, own.support_labels, loop, create_graph=False)
    with torch.no_grad():
        reference = functional_call(model, fast, (own.support,))  # no phase: its own batch moments
    logits = adapted_query_logits(model, params, {}, own, loop, create_graph=False, differentiable=False)
    torch.testing.assert_close(logits, reference)
    monkeypatch.setattr("fewnorm.episodes.passes.keeps_task_state", lambda model: False)
    stale = adapted_query_logits(model, params, {}, own, loop, create_graph=False, differentiable=False)
    assert not torch.allclose(stale, reference, atol=1e-4), "the refresh pass should matter here"


# -- every normalizer -----------------------------------------------------------------------------


@pytest.mark.parametrize("norm", [s.name for s in list_norms()])
def test_every_normalizer_trains_inside_maml(norm: str) -> None:
    model = tiny_model(norm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loop = InnerLoop(lr=0.4, steps=2)
    for _ in range(2):
        result = maml_train_step(model, opt, tiny_episodes(2), loop)
        assert math.isfinite(result.loss), norm
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert 0.0 <= maml_evaluate(model, tiny_episodes(1)[0], loop) <= 1.0


@pytest.mark.parametrize("algo", ["maml", "fomaml", "anil"])
def test_algorithms_reduce_the_training_loss(algo: str) -> None:
    config = RunConfig(algo=algo, dataset="omniglot", hidden=8, meta_batch=2, inner_steps=1)
    algorithm = get_algorithm(config)
    torch.manual_seed(0)
    model = algorithm.build(config, 1)
    opt = algorithm.optimizer(model, config)
    store = make_store(classes=10, per_class=20, size=28)
    sampler = EpisodeSampler(store, 5, 1, 3)
    gen = torch.Generator().manual_seed(0)
    losses = [
        algorithm.train_step(model, opt, [sampler.sample(gen) for _ in range(2)]).loss for _ in range(16)
    ]
    assert sum(losses[-4:]) < sum(losses[:4]), losses


# -- heads and configuration ----------------------------------------------------------------------


def test_heads() -> None:
    zero = build_head("linear-zero", 16, 5)
    assert isinstance(zero, nn.Linear) and not zero.weight.any() and not zero.bias.any()
    assert canonical_head(None) == "linear" and canonical_head("Linear_Zero") == "linear-zero"
    assert build_head("linear", 16, 5).weight.any()
    assert build_head("affine-divergence", 16, 5)(torch.randn(3, 16)).shape == (3, 5)
    with pytest.raises(UnknownNameError, match="Did you mean 'linear'"):
        canonical_head("lineer")


def test_build_sizes_the_head_for_the_dataset() -> None:
    for dataset, hidden, features in (("omniglot-minimal", 16, 16), ("mini-imagenet", 4, 100)):
        config = RunConfig(algo="maml", dataset=dataset, hidden=hidden)
        model = get_algorithm(config).build(config, 3)
        assert isinstance(model, FewShotClassifier)
        assert model.head.in_features == features and model.head.out_features == 5
    with pytest.raises(UnknownNameError, match="unknown dataset 'cifar'"):  # its image shape is the spec's
        RunConfig(algo="maml", dataset="cifar")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_ways": 20}, "--train-ways must equal --ways"),
        ({"meta_batch": MAX_META_BATCH + 1}, "exceeds maml's limit"),
        ({"head": "mlp"}, "unknown head 'mlp'"),
    ],
)
def test_bad_maml_settings_are_rejected(overrides: dict, message: str) -> None:
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        check_maml_config(RunConfig(algo="maml", **overrides))


def test_evaluating_with_other_ways_than_the_head_is_rejected() -> None:
    model = tiny_model()
    store = make_store(classes=10, per_class=20, size=8)
    episode = EpisodeSampler(store, ways=3, shots=1, queries=2).fixed(0, 0)
    with pytest.raises(ConfigError, match="same --ways"):
        maml_evaluate(model, episode, InnerLoop(lr=0.4, steps=1))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_resolve(preset: Path) -> None:
    config = resolve_config(preset)
    check_maml_config(config)
    assert config.algo == "maml" and config.effective_train_ways == config.ways
    # cbfinn/maml main.py and the paper: 20-way Omniglot adapts with 5 steps of 0.1
    expected = {
        ("omniglot", 5): (0.4, 1, 3, 32, 64),
        ("omniglot", 20): (0.1, 5, 5, 16, 64),
        ("mini-imagenet", 5): (0.01, 5, 10, 4 if config.shots == 1 else 2, 32),
    }[(config.dataset, config.ways)]
    got = (config.inner_lr, config.inner_steps, config.inner_steps_test, config.meta_batch, config.hidden)
    assert got == expected
    assert config.lr == 1e-3 and config.norm_options == {"mode": "transductive"}


def test_there_are_six_presets() -> None:
    assert len(PRESETS) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-ways", "10"], "--train-ways must equal --ways"),
        (["--meta-batch", "1000"], "exceeds maml's limit"),
        (["--inner-lr", "0"], "inner_lr"),
        (["--inner-steps", "-1"], "inner_steps"),
        (["--buffer-policy", "shared"], "buffer_policy"),
        (["--head", "mlp"], "unknown head"),
    ],
)
@pytest.mark.data
def test_cli_rejects_bad_maml_input_in_one_line(
    data_env: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "--algo", "maml", *args, "--episodes", "1", "--no-progress", "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.data
def test_cli_trains_and_rescores_a_maml_checkpoint_identically(data_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    short = ["--episodes", "2", "--val-every", "2", "--val-episodes", "2", "--test-episodes", "4"]
    args = ["train", "--algo", "maml", "--hidden", "8", "--meta-batch", "2", *short, "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    scores = []
    for extra in ([], [], ["--query-one-at-a-time"]):
        res = CliRunner().invoke(app, ["evaluate", str(out), "--json", "--no-progress", *extra])
        assert res.exit_code == 0, res.stderr
        scores.append(json.loads(res.stdout)["accuracy"])
    assert scores[0] == scores[1]
    assert 0.0 <= scores[2] <= 1.0
