"""Baseline and Baseline++: minibatch pre-training, the cosine head, fine-tuning that leaves the model be."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch

from fewnorm.backbones import Conv4
from fewnorm.config import RunConfig
from fewnorm.episodes.algorithms import get_algorithm
from fewnorm.episodes.baseline import (
    CosineHead,
    MinibatchSampler,
    finetune_logits,
    finetune_protocol,
    fresh_head,
    pretrain_step,
)
from fewnorm.episodes.finetune import Steps
from fewnorm.episodes.heads import FewShotClassifier
from fewnorm.episodes.plan import plan_run
from fewnorm.errors import ConfigError
from fewnorm.norms import list_norms
from tests.episodes.test_maml import tiny_episodes
from tests.episodes.test_sampler import make_store


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_classifier(
    norm: str = "batchnorm", *, cosine: bool = False, classes: int = 10, **options: object
) -> FewShotClassifier:
    """Conv-4 with two blocks of 8 filters on 8x8 images (D = 32), a ``classes``-output head."""
    torch.manual_seed(0)
    head = CosineHead(32, classes) if cosine else torch.nn.Linear(32, classes)
    return FewShotClassifier(Conv4(1, 8, norm, options, depth=2), head)


def test_cosine_head_is_invariant_to_the_scale_of_the_features() -> None:
    torch.manual_seed(0)
    head = CosineHead(16, 5)
    z = torch.randn(7, 16)
    for c in (1e-3, 0.5, 3.0, 1e4):
        torch.testing.assert_close(head(c * z), head(z))
    assert not torch.allclose(head(-z), head(z))  # a sign flip is not a scale: the test can fail
    torch.testing.assert_close(head(z).abs().max() <= head.scale, torch.tensor(True))


def test_minibatches_label_each_image_with_its_class() -> None:
    store = make_store(classes=6, per_class=20, size=4)
    batch = MinibatchSampler(store, 32).sample(torch.Generator().manual_seed(0))
    codes = (batch.support[:, 0, 0, 0] * 255).round().long()  # image j of class c holds j + 20 c
    assert torch.equal(codes // 20, batch.support_labels)
    assert batch.ways == 6 and batch.query.shape[0] == 0


@pytest.mark.parametrize("backbone", [False, True])
@pytest.mark.parametrize("norm", [s.name for s in list_norms()])
def test_fine_tuning_never_changes_the_backbone(norm: str, backbone: bool) -> None:
    model = tiny_classifier(norm)
    pretrain_step(model, torch.optim.Adam(model.parameters(), 1e-3), [_minibatch()])  # buffers moved once
    before = copy.deepcopy(model.state_dict())
    episode = tiny_episodes(1)[0]
    logits = [
        finetune_logits(model, episode, Steps("sgd-momentum", 0.01, 5, 4), backbone=backbone)
        for _ in range(2)
    ]
    assert logits[0].shape == (episode.query.shape[0], 5)
    torch.testing.assert_close(logits[0], logits[1])  # the fresh head is drawn from a fixed seed
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"{norm}: fine-tuning changed {k}"


def test_fresh_head_is_new_of_the_same_kind() -> None:
    gen = torch.Generator().manual_seed(0)
    trained = CosineHead(32, 10, scale=7.0)
    head = fresh_head(trained, 5, gen)
    assert isinstance(head, CosineHead) and head.weight.shape == (5, 32) and float(head.scale.detach()) == 7.0
    trained_linear = torch.nn.Linear(32, 10)
    state = torch.get_rng_state()
    linear = fresh_head(trained_linear, 20, gen)
    assert torch.equal(state, torch.get_rng_state())  # torch's generator belongs to the training run
    assert isinstance(linear, torch.nn.Linear) and linear.weight.shape == (20, 32)


@pytest.mark.parametrize("cosine", [False, True])
def test_frozen_fine_tuning_fits_the_support_set(cosine: bool) -> None:
    # A fresh head fitted to the support features classifies the support set itself.
    model = tiny_classifier("batchnorm", cosine=cosine)
    e = tiny_episodes(1)[0]
    support_as_query = type(e)(e.support, e.support_labels, e.support, e.support_labels, 5, 1, 1)
    logits = finetune_logits(model, support_as_query, Steps("sgd-momentum", 0.05, 300, 4))
    assert (logits.argmax(1) == e.support_labels).float().mean() == 1.0


def _minibatch() -> object:
    store = make_store(classes=10, per_class=20, size=8)
    return MinibatchSampler(store, 16).sample(torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("norm", [s.name for s in list_norms()])
def test_every_normalizer_pretrains_and_fine_tunes(norm: str, cosine: bool) -> None:
    model = tiny_classifier(norm, cosine=cosine)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):
        result = pretrain_step(model, optimizer, [_minibatch()])  # type: ignore[list-item]
        assert math.isfinite(result.loss), norm
    config = RunConfig(
        algo="baseline-pp" if cosine else "baseline", inner_steps_test=3, norm=norm, pretrain_classes=10
    )
    accuracy = get_algorithm(config).evaluate(model, tiny_episodes(1)[0])
    assert 0.0 <= accuracy <= 1.0


def test_pretraining_reduces_the_loss() -> None:
    model = tiny_classifier("batchnorm")
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    store = make_store(classes=10, per_class=20, size=8)
    sampler, gen = MinibatchSampler(store, 32), torch.Generator().manual_seed(0)
    losses = [pretrain_step(model, optimizer, [sampler.sample(gen)]).loss for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5]), losses


def test_pretraining_records_the_classes_and_refuses_changed_data() -> None:
    store = make_store(classes=7, per_class=20, size=8)
    config, _ = plan_run(RunConfig(algo="baseline")).algorithm.pretraining(store)  # type: ignore[attr-defined]
    assert config.pretrain_classes == 7 and config.batch_size == 16
    with pytest.raises(ConfigError, match="data changed"):
        plan_run(config.model_copy(update={"pretrain_classes": 9})).algorithm.pretraining(store)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="pretrain_classes"):
        plan_run(RunConfig(algo="baseline")).build_model(1)


@pytest.mark.parametrize(
    ("options", "one_at_a_time", "says"),
    [
        ({}, False, "pre-training running averages"),
        ({"mode": "transductive"}, False, "the query set's on the query"),
        ({"mode": "transductive"}, True, "each query image's own"),
        ({"mode": "support"}, False, "the support set's statistics, on support and query alike"),
    ],
)
def test_summary_names_the_statistics_of_fine_tuning(options: dict, one_at_a_time: bool, says: str) -> None:
    config = RunConfig(algo="baseline", norm_options=options, query_one_at_a_time=one_at_a_time)
    assert config.norm_options["mode"] == options.get("mode", "running")  # recorded in the run
    assert says in finetune_protocol(config, cosine=False)
    assert "no few-shot modes" in finetune_protocol(
        RunConfig(algo="baseline", norm="groupnorm"), cosine=False
    )
