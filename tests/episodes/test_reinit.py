"""Fresh heads for MAML-family models: prototype and zero init, the protocol, scoring."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fewnorm.config import RunConfig
from fewnorm.episodes.algorithms import MAML, get_algorithm
from fewnorm.episodes.heads import FewShotClassifier
from fewnorm.episodes.maml import InnerLoop, adapted_query_logits, inner_loop, task_buffers
from fewnorm.episodes.protonet import embed_episode, protonet_logits
from fewnorm.episodes.reinit import (
    FreshHead,
    head_protocol,
    reinit_classifier,
    resolve_head_init,
)
from fewnorm.episodes.sampler import Episode, EpisodeSampler
from fewnorm.errors import ConfigError, UnknownNameError
from fewnorm.norms import task_scope
from fewnorm.norms.affine_divergence import AffineDivergenceLinear
from tests.episodes.test_maml import tiny_model
from tests.episodes.test_sampler import make_store

NORMS = [("none", {}), ("batchnorm", {}), ("batchnorm", {"mode": "support"}), ("tasknorm-i", {})]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread avoids oversubscription on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def episode(ways: int = 3, shots: int = 2, queries: int = 4, seed: int = 0) -> Episode:
    """A float64 ``ways``-way episode of noisy 8x8 images (the tiny model is 5-way)."""
    store = make_store(classes=10, per_class=20, size=8)
    noise = torch.randint(0, 60, store.images.shape, generator=torch.Generator().manual_seed(1))
    store.images = (store.images.int() + noise).clamp(0, 255).to(torch.uint8)
    e = EpisodeSampler(store, ways, shots, queries).fixed(0, seed)
    return Episode(
        e.support.double(), e.support_labels, e.query.double(), e.query_labels, ways, shots, queries
    )


def unadapted_logits(model: nn.Module, ep: Episode) -> Tensor:
    """The fresh head's query logits before any inner step (support statistics refreshed)."""
    params = {k: p.detach().requires_grad_() for k, p in model.named_parameters()}
    loop = InnerLoop(lr=0.4, steps=0)
    buffers = task_buffers(model, "per_task")
    return adapted_query_logits(model, params, buffers, ep, loop, create_graph=False, differentiable=False)


# -- the head initialisations ---------------------------------------------------------------------


@pytest.mark.parametrize(("norm", "options"), NORMS, ids=[f"{n}{o}" for n, o in NORMS])
@pytest.mark.parametrize("head", ["linear", "linear-zero"])
def test_prototype_head_is_exactly_a_protonet_before_any_step(norm: str, options: dict, head: str) -> None:
    """``W = 2 p``, ``b = -||p||^2``: ProtoNet's ``-||z - p||^2`` plus ``||z||^2`` per query."""
    model, ep = tiny_model(norm, head=head, dtype=torch.float64, **options), episode()
    fresh = reinit_classifier(model, ep.support, ep.support_labels, ep.ways, "proto")
    logits = unadapted_logits(fresh, ep)  # (ways*queries, ways)
    with torch.no_grad():
        reference = protonet_logits(model.embedding, ep)  # (ways*queries, ways)
        _, z_query = embed_episode(model.embedding, ep)  # (ways*queries, D)
    assert logits.shape == (12, 3)
    torch.testing.assert_close(
        logits, reference + z_query.square().sum(1, keepdim=True), rtol=1e-12, atol=1e-9
    )
    torch.testing.assert_close(F.log_softmax(logits, 1), F.log_softmax(reference, 1), rtol=1e-12, atol=1e-9)


def test_prototype_affine_divergence_head_predicts_as_a_protonet() -> None:
    """Affine-divergence: ``(ProtoNet + ||z||^2) / sqrt(||z||^2 + 1)``, a per-query positive map."""
    model, ep = tiny_model("none", head="affine-divergence", dtype=torch.float64), episode()
    fresh = reinit_classifier(model, ep.support, ep.support_labels, ep.ways, "proto")
    assert isinstance(fresh, FewShotClassifier) and isinstance(fresh.head, AffineDivergenceLinear)
    logits = unadapted_logits(fresh, ep)
    with torch.no_grad():
        reference = protonet_logits(model.embedding, ep)
        squared = embed_episode(model.embedding, ep)[1].square().sum(1, keepdim=True)  # (Q, 1)
    torch.testing.assert_close(logits, (reference + squared) / (squared + 1).sqrt(), rtol=1e-12, atol=1e-9)
    assert torch.equal(logits.argmax(1), reference.argmax(1))


@pytest.mark.parametrize("head", ["linear", "linear-zero", "affine-divergence"])
def test_zero_head_is_uniform_and_its_first_step_writes_centred_class_means(head: str) -> None:
    """At ``W = 0`` the body gets no gradient; one step writes ``W_c = lr / ways (p_c - mean z)``."""
    model, ep = tiny_model("none", head=head, dtype=torch.float64), episode(ways=4)
    fresh = reinit_classifier(model, ep.support, ep.support_labels, ep.ways, "zero")
    logits = unadapted_logits(fresh, ep)
    assert logits.shape == (16, 4) and not logits.any()  # uniform softmax
    params = {k: p.detach().requires_grad_() for k, p in fresh.named_parameters()}
    with task_scope():
        fast = inner_loop(
            fresh, params, {}, ep.support, ep.support_labels, InnerLoop(0.4, 1), create_graph=False
        )
    with torch.no_grad():
        z = model.embedding(ep.support)  # (ways*shots, D)
    if head == "affine-divergence":
        z = z / (z.square().sum(1, keepdim=True) + 1).sqrt()  # the unit input the layer sees
    protos = torch.stack([z[ep.support_labels == c].mean(0) for c in range(4)])  # (ways, D)
    torch.testing.assert_close(fast["head.weight"], 0.4 / 4 * (protos - z.mean(0)), rtol=1e-10, atol=1e-12)
    if head != "affine-divergence":  # its bias is scaled per sample, so it moves
        torch.testing.assert_close(fast["head.bias"], torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    for k, p in params.items():
        if not k.startswith("head."):
            assert fast[k] is p or torch.equal(fast[k], p), k


def test_reinit_leaves_the_model_and_the_random_stream_alone() -> None:
    model, ep = tiny_model("batchnorm", mode="running"), episode(ways=5)
    model.train()  # a training-mode forward would move the running statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    for init in ("proto", "zero"):
        fresh = reinit_classifier(model, ep.support.float(), ep.support_labels, 5, init)
        assert fresh is not model and fresh.embedding is model.embedding and fresh.head is not model.head
    assert torch.equal(torch.get_rng_state(), rng)  # nothing random was drawn
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert reinit_classifier(model, ep.support, ep.support_labels, 5, "trained") is model


def test_heads_that_cannot_take_a_fresh_init_are_refused_in_one_line() -> None:
    support, labels = torch.zeros(3, 1, 8, 8), torch.arange(3)
    odd = FewShotClassifier(nn.Flatten(), nn.Sequential(nn.Linear(64, 5)))
    with pytest.raises(ConfigError, match="cannot re-initialise a Sequential head"):
        reinit_classifier(odd, support, labels, 3, "proto")
    norm_variant = FewShotClassifier(nn.Flatten(), AffineDivergenceLinear(64, 5, variant="norm"))
    with pytest.raises(ConfigError, match="use --head-init zero"):
        reinit_classifier(norm_variant, support, labels, 3, "proto")
    assert reinit_classifier(norm_variant, support, labels, 3, "zero")(support).shape == (3, 3)


# -- choosing the protocol ------------------------------------------------------------------------


def test_head_init_defaults_and_refusals() -> None:
    linear, zero = RunConfig(algo="maml", ways=5), RunConfig(algo="anil", ways=5, head="linear-zero")
    assert resolve_head_init(linear, None, 5, fresh=False) == "trained"  # today's behaviour
    assert resolve_head_init(linear, None, 5, fresh=True) == "zero"  # lake20: a fresh head
    assert resolve_head_init(linear, None, 20, fresh=False) == "zero"
    assert resolve_head_init(zero, None, 3, fresh=False) == "zero"
    assert resolve_head_init(zero, "Proto", 5, fresh=False) == "proto"  # explicit re-init
    assert resolve_head_init(linear, "trained", 5, fresh=True) == "trained"
    with pytest.raises(ConfigError, match="keeps the run's 5-way head, which cannot score 20-way"):
        resolve_head_init(linear, "trained", 20, fresh=False)
    with pytest.raises(UnknownNameError, match=r"unknown head init 'protos'\. Did you mean 'proto'"):
        resolve_head_init(linear, "protos", 20, fresh=False)
    with pytest.raises(ConfigError, match="--head-init applies to MAML, FOMAML and ANIL runs"):
        head_protocol(RunConfig(), "proto", 20, fresh=True)
    assert head_protocol(RunConfig(), None, 20, fresh=True) is None  # ProtoNet: nearest prototype


def test_the_protocol_follows_the_run() -> None:
    anil = RunConfig(algo="anil", ways=5, inner_lr=0.2, inner_steps=1, inner_steps_test=7)
    protocol = head_protocol(anil, "proto", 20, fresh=False)
    assert protocol is not None
    assert protocol.to_dict() == {
        "algo": "anil",
        "head": "linear",
        "head_init": "proto",
        "ways": 20,
        "trained_ways": 5,
        "inner_steps": 7,
        "inner_lr": 0.2,
        "inner_order": "first",
        "adapts": "head",
    }
    maml = head_protocol(RunConfig(algo="fomaml", head="ad"), "zero", 3, fresh=False)
    assert maml is not None and (maml.adapts, maml.head, maml.head_init) == (
        "body and head",
        "affine-divergence",
        "zero",
    )
    assert maml.label() == "zero-init 3-way affine-divergence head, 10 steps of lr 0.4 (body and head)"


# -- scoring with a fresh head --------------------------------------------------------------------


@pytest.mark.parametrize(("algo", "head_only"), [("maml", False), ("anil", True)])
def test_fresh_head_evaluation_is_proto_maml_by_hand(algo: str, head_only: bool) -> None:
    """Prototype init, then the run's test steps (head only for ANIL), then the query argmax."""
    config = RunConfig(algo=algo, inner_lr=0.3, inner_steps_test=3)
    base = get_algorithm(config)
    assert isinstance(base, MAML)
    model, ep = tiny_model("none", dtype=torch.float64), episode(ways=3, shots=2, queries=10)
    # by hand: W = 2p, b = -||p||^2, three SGD steps of 0.3 on the support loss
    with torch.no_grad():
        z_support = model.embedding(ep.support)
    protos = torch.stack([z_support[ep.support_labels == c].mean(0) for c in range(3)])  # (3, D)
    fast = {k: p.detach().clone() for k, p in model.named_parameters()}
    fast["head.weight"], fast["head.bias"] = 2 * protos, -protos.square().sum(1)
    adapted = [k for k in fast if k.startswith("head.") or not head_only]
    for _ in range(3):
        for k in adapted:
            fast[k].requires_grad_(True)
        loss = F.cross_entropy(functional_call(model, fast, (ep.support,)), ep.support_labels)
        grads = torch.autograd.grad(loss, [fast[k] for k in adapted])
        fast |= {k: (fast[k] - 0.3 * g).detach() for k, g in zip(adapted, grads, strict=True)}
    with torch.no_grad():
        expected = functional_call(model, fast, (ep.query,))  # (30, 3)
        before = -torch.cdist(model.embedding(ep.query), protos).square()
    fresh = reinit_classifier(model, ep.support, ep.support_labels, 3, "proto")
    params = {k: p.detach().requires_grad_() for k, p in fresh.named_parameters()}
    got = adapted_query_logits(
        fresh, params, {}, ep, base.inner_loop(training=False), create_graph=False, differentiable=False
    )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(F.log_softmax(got, 1), F.log_softmax(before, 1), atol=1e-3)  # the steps acted
    accuracy = float((expected.argmax(1) == ep.query_labels).float().mean())
    assert FreshHead(base, "proto").evaluate(model, ep) == accuracy


@pytest.mark.parametrize(
    ("norm", "options"), [("batchnorm", {"mode": "running"}), ("tasknorm-i", {}), ("swbn", {})]
)
def test_fresh_head_evaluation_is_idempotent_and_leaves_the_model_unchanged(norm: str, options: dict) -> None:
    model = tiny_model(norm, **options)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    scorer = FreshHead(get_algorithm(RunConfig(algo="maml", inner_steps_test=2)), "proto")  # type: ignore[arg-type]
    episodes = [episode(ways=w, seed=s) for w, s in ((3, 0), (7, 1))]
    episodes = [
        Episode(e.support.float(), e.support_labels, e.query.float(), e.query_labels, e.ways, 2, 4)
        for e in episodes
    ]
    first = [scorer.evaluate(model, e) for e in episodes]
    assert first == [scorer.evaluate(model, e) for e in episodes]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())
