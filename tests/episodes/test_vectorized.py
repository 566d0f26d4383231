"""Vectorized MAML meta-batches (torch.func.vmap over tasks) against the per-task loop."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import Tensor, nn

import fewnorm.episodes.maml as maml_module
from fewnorm.config import DEFAULT_VECTORIZE_CHUNKS, RunConfig
from fewnorm.episodes.algorithms import get_algorithm
from fewnorm.episodes.maml import InnerLoop, maml_train_step, task_chunks
from fewnorm.episodes.plan import meta_batch_path
from fewnorm.episodes.sampler import Episode
from fewnorm.episodes.vectorized import vectorize_blocker
from fewnorm.errors import ConfigError
from fewnorm.norms import get_norm, list_norms

VMAP_NORMS = [spec.name for spec in list_norms() if spec.vmap]
LOOP_NORMS = [spec.name for spec in list_norms() if not spec.vmap]


def _path(config: RunConfig) -> tuple[bool, str]:
    """The plan's training decision for ``config``'s normalizer."""
    return meta_batch_path(config, get_norm(config.norm))


def _episodes(tasks: int, seed: int = 1) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(5)

    def images(n: int) -> Tensor:  # (n, 1, 28, 28)
        return torch.rand(n, 1, 28, 28, generator=g, dtype=torch.float64)

    return [
        Episode(images(5), labels, images(10), labels.repeat_interleave(2), 5, 1, 2) for _ in range(tasks)
    ]


def _meta_gradients(
    config: RunConfig, episodes: list[Episode], *, vectorize: bool, steps: int = 2
) -> tuple[list[Tensor], float, dict[str, Tensor], dict[str, Tensor]]:
    algorithm = get_algorithm(config)
    torch.manual_seed(0)
    model = algorithm.build(config, 1).double()
    before = copy.deepcopy(model.state_dict())
    loop = dataclasses.replace(algorithm.inner_loop(training=True), steps=steps, vectorize=vectorize)  # type: ignore[attr-defined]
    result = maml_train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), episodes, loop)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return grads, result.loss, before, model.state_dict()


@pytest.mark.parametrize("algo", ["maml", "fomaml", "anil"])
@pytest.mark.parametrize("norm", VMAP_NORMS)
def test_vectorized_meta_gradients_equal_the_per_task_loop(norm: str, algo: str) -> None:
    config = RunConfig(algo=algo, norm=norm, hidden=8, meta_batch=3)
    episodes = _episodes(3)
    loop_grads, loop_loss, before, after_loop = _meta_gradients(config, episodes, vectorize=False)
    vmap_grads, vmap_loss, _, after_vmap = _meta_gradients(config, episodes, vectorize=True)
    assert vmap_loss == pytest.approx(loop_loss, rel=1e-10)
    for a, b in zip(loop_grads, vmap_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-10)
    learned = get_norm(norm).learned_buffers
    for key, value in before.items():
        if key.rsplit(".", 1)[-1] in learned:  # by_role: learned state moves, alike on both paths
            assert not torch.equal(after_loop[key], value), key
            torch.testing.assert_close(after_vmap[key], after_loop[key], rtol=1e-7, atol=1e-12)
        else:  # statistics stay per task: the meta-model's are never written
            assert torch.equal(after_loop[key], value) and torch.equal(after_vmap[key], value), key


@pytest.mark.parametrize("mode", ["running", "support"])
def test_batchnorm_modes_vectorize_exactly(mode: str) -> None:
    config = RunConfig(algo="maml", hidden=8, meta_batch=3, norm_options={"mode": mode})
    episodes = _episodes(3)
    loop_grads, *_ = _meta_gradients(config, episodes, vectorize=False)
    vmap_grads, *_ = _meta_gradients(config, episodes, vectorize=True)
    for a, b in zip(loop_grads, vmap_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-10)


def test_vectorized_step_takes_the_vmap_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = maml_module.vectorized_task_losses

    def spy(model: nn.Module, episodes: list[Episode], **kwargs: object) -> tuple[Tensor, Tensor, object]:
        calls.append(len(episodes))
        return real(model, episodes, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(maml_module, "vectorized_task_losses", spy)
    config = RunConfig(algo="maml", hidden=8, meta_batch=4, vectorize=True)
    assert get_algorithm(config).inner_loop(training=True).vectorize  # type: ignore[attr-defined]
    _meta_gradients(config, _episodes(4), vectorize=True, steps=1)
    _meta_gradients(config, _episodes(4), vectorize=False, steps=1)
    assert calls == [1] * DEFAULT_VECTORIZE_CHUNKS  # 4 tasks in 4 chunks, each freed after its backward
    calls.clear()
    _meta_gradients(config.model_copy(update={"vectorize_chunks": 1}), _episodes(4), vectorize=True, steps=1)
    assert calls == [4]


@pytest.mark.parametrize("chunks", [1, 2, 3, 7])
def test_chunked_meta_gradients_equal_the_per_task_loop(chunks: int) -> None:
    """Splitting a vectorized meta-batch into chunks changes memory, not the meta-gradient."""
    config = RunConfig(algo="maml", hidden=8, meta_batch=5, vectorize_chunks=chunks)
    episodes = _episodes(5)
    loop_grads, loop_loss, *_ = _meta_gradients(config, episodes, vectorize=False)
    vmap_grads, vmap_loss, *_ = _meta_gradients(config, episodes, vectorize=True)
    assert vmap_loss == pytest.approx(loop_loss, rel=1e-10)
    for a, b in zip(loop_grads, vmap_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-10)


def test_task_chunks_are_even_consecutive_and_complete() -> None:
    episodes = _episodes(7)
    assert [len(c) for c in task_chunks(episodes, 3)] == [3, 2, 2]
    assert [len(c) for c in task_chunks(episodes, 10)] == [1] * 7  # never an empty chunk
    assert [e for c in task_chunks(episodes, 2) for e in c] == episodes
    with pytest.raises(ConfigError, match="positive integer"):
        task_chunks(episodes, 0)


@pytest.mark.parametrize("norm", LOOP_NORMS or ["examplenorm"])
def test_undeclared_normalizers_fall_back_and_say_why(norm: str) -> None:
    if norm not in {s.name for s in list_norms()}:
        pytest.skip("the example plugin is not installed")
    vectorized, why = _path(RunConfig(algo="maml", norm=norm, meta_batch=4, vectorize=True))
    assert not vectorized
    assert "per-task loop" in why and "vmap=True" in why
    assert (
        get_algorithm(RunConfig(algo="maml", norm=norm, meta_batch=4)).inner_loop(training=True).vectorize
        is False
    )  # type: ignore[attr-defined]
    assert not get_norm(norm).vmap_status()[0]


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"meta_batch": 1}, "meta-batch of one"),
        ({"meta_batch": 4, "buffer_policy": "global"}, "buffer policy global"),
        ({"meta_batch": 4, "backbone": "resnet12", "dropblock": 0.1}, "DropBlock"),
    ],
)
def test_settings_that_keep_the_per_task_loop(settings: dict[str, object], reason: str) -> None:
    vectorized, why = _path(RunConfig(algo="maml", **settings))  # type: ignore[arg-type]
    assert not vectorized and reason in why


def test_blocker_refuses_what_cannot_be_stacked() -> None:
    episodes = _episodes(2)
    assert vectorize_blocker(episodes, "per_task") is None
    assert vectorize_blocker(episodes[:1], "per_task") == "a meta-batch of one task"
    assert "global" in str(vectorize_blocker(episodes, "global"))
    odd = dataclasses.replace(
        episodes[1], query=episodes[1].query[:5], query_labels=torch.arange(5), queries=1
    )
    assert vectorize_blocker([episodes[0], odd], "per_task") == "episodes of different shapes"


def test_global_buffers_move_only_through_the_loop() -> None:
    config = RunConfig(
        algo="maml", hidden=8, meta_batch=2, buffer_policy="global", norm_options={"mode": "running"}
    )
    _, _, before, after = _meta_gradients(config, _episodes(2), vectorize=True, steps=1)
    assert not torch.equal(
        before["embedding.blocks.0.1.running_mean"], after["embedding.blocks.0.1.running_mean"]
    )


def test_vectorized_float32_step_matches_the_loop() -> None:
    config = RunConfig(algo="maml", hidden=16, meta_batch=4)
    episodes = [
        dataclasses.replace(e, support=e.support.float(), query=e.query.float()) for e in _episodes(4)
    ]
    algorithm = get_algorithm(config)
    results = []
    for vectorize in (False, True):
        torch.manual_seed(0)
        model = algorithm.build(config, 1)
        loop = InnerLoop(lr=0.4, steps=1, vectorize=vectorize)
        maml_train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), episodes, loop)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("one_at_a_time", [False, True])
@pytest.mark.parametrize("norm", ["batchnorm", "tasknorm-i", "swbn", "iternorm"])
def test_vectorized_evaluation_scores_each_episode_as_alone(norm: str, one_at_a_time: bool) -> None:
    config = RunConfig(
        algo="maml",
        norm=norm,
        hidden=8,
        inner_steps_test=3,
        query_one_at_a_time=one_at_a_time,
        vectorize=True,
    )
    algorithm = get_algorithm(config)
    torch.manual_seed(0)
    model = algorithm.build(config, 1).double()
    before = copy.deepcopy(model.state_dict())
    episodes = _episodes(5, seed=3)
    assert algorithm.inner_loop(training=False).vectorize  # type: ignore[attr-defined]
    alone = [algorithm.evaluate(model, e) for e in episodes]
    together = algorithm.evaluate_many(model, episodes)
    assert together == alone
    assert len(set(alone)) > 1  # the episodes differ, so a mix-up between them would show
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, False),
        ({"vectorize": True}, True),
        ({"device": "cuda"}, True),
        ({"device": "cuda", "vectorize": False}, False),
    ],
)
def test_vectorize_is_on_for_cuda_and_when_asked(settings: dict[str, object], expected: bool) -> None:
    vectorized, why = _path(RunConfig(algo="maml", meta_batch=4, **settings))  # type: ignore[arg-type]
    assert vectorized is expected
    assert ("per-task loop" in why) is not expected
