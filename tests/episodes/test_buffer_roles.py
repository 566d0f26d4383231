"""Buffer roles under MAML: statistics stay per task, learned state (SWBN's whitening) learns."""

from __future__ import annotations

import copy

import torch

from fewnorm.episodes.heads import FewShotClassifier
from fewnorm.episodes.maml import InnerLoop, maml_evaluate, maml_train_step
from fewnorm.norms import get_norm, list_norms
from tests.episodes.test_maml import _one_thread, tiny_episodes, tiny_model  # noqa: F401 (autouse)

LEARNED = get_norm("swbn").learned_buffers


def _loop(policy: str, **kwargs: object) -> InnerLoop:
    return InnerLoop(lr=0.4, steps=2, buffer_policy=policy, learned_buffers=LEARNED, **kwargs)  # type: ignore[arg-type]


def _step(model: FewShotClassifier, loop: InnerLoop, tasks: int = 2) -> list[torch.Tensor]:
    """One outer step with a zero learning rate; returns the meta-gradient."""
    maml_train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), tiny_episodes(tasks), loop)
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _split(model: FewShotClassifier) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    learned, stats = {}, {}
    for name, b in model.named_buffers():
        (learned if name.rsplit(".", 1)[-1] in LEARNED else stats)[name] = b.clone()
    return learned, stats


def test_swbn_declares_its_whitening_matrix_as_learned_state() -> None:
    assert LEARNED == ("whitening_matrix",)
    others = [s.name for s in list_norms() if s.learned_buffers and s.source == "fewnorm"]
    assert others == ["swbn"]  # IterNorm recomputes its whitening from every batch: no learned state


def test_by_role_learns_the_whitening_and_keeps_statistics_per_task() -> None:
    model = tiny_model("swbn", mode="transductive")
    learned0, stats0 = _split(model)
    for _ in range(3):
        _step(model, _loop("by_role"))
    learned1, stats1 = _split(model)
    for name, value in learned0.items():
        assert not torch.equal(learned1[name], value), f"{name} did not learn"
    for name, value in stats0.items():
        assert torch.equal(stats1[name], value), f"statistic {name} leaked into the meta-model"


def test_per_task_ablation_never_moves_the_meta_models_buffers() -> None:
    model = tiny_model("swbn", mode="transductive")
    before = {k: b.clone() for k, b in model.named_buffers()}
    _step(model, _loop("per_task"))
    for name, b in model.named_buffers():
        assert torch.equal(b, before[name]), name


def test_learned_state_leaves_the_meta_gradient_unchanged() -> None:
    """Every task starts from the same whitening, a constant in backward: by_role = per_task's gradient."""
    by_role, per_task = tiny_model("swbn", mode="transductive"), tiny_model("swbn", mode="transductive")
    for a, b in zip(_step(by_role, _loop("by_role"), 3), _step(per_task, _loop("per_task"), 3), strict=True):
        assert torch.equal(a, b)


def test_one_task_writes_back_exactly_what_global_buffers_would() -> None:
    by_role, global_ = tiny_model("swbn", mode="transductive"), tiny_model("swbn", mode="transductive")
    _step(by_role, _loop("by_role"), tasks=1)
    _step(global_, _loop("global"), tasks=1)
    learned_a, stats_a = _split(by_role)
    learned_b, stats_b = _split(global_)
    for name in learned_a:
        assert torch.equal(learned_a[name], learned_b[name]), name
    assert any(not torch.equal(stats_a[n], stats_b[n]) for n in stats_a)  # global leaks statistics


def test_the_written_state_is_the_mean_of_the_tasks_final_states() -> None:
    model = tiny_model("swbn", mode="transductive")
    finals = []
    for episode in tiny_episodes(3):  # each task alone, from the same start
        alone = copy.deepcopy(model)
        _step_one = InnerLoop(lr=0.4, steps=2, buffer_policy="global")
        maml_train_step(alone, torch.optim.SGD(alone.parameters(), lr=0.0), [episode], _step_one)
        finals.append(_split(alone)[0])
    _step(model, _loop("by_role"), tasks=3)
    for name, value in _split(model)[0].items():
        torch.testing.assert_close(value, torch.stack([f[name] for f in finals]).mean(0))


def test_evaluation_never_changes_learned_state() -> None:
    model = tiny_model("swbn", mode="transductive")
    _step(model, _loop("by_role"))
    state = copy.deepcopy(model.state_dict())
    loop = InnerLoop(lr=0.4, steps=3, learned_buffers=LEARNED)
    first = [maml_evaluate(model, e, loop) for e in tiny_episodes(3)]
    assert first == [maml_evaluate(model, e, loop) for e in tiny_episodes(3)]
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_learned_state_is_written_before_the_optimizer_step() -> None:
    """A process group's pre-step hook syncs buffers from rank 0: the write must precede it."""
    model = tiny_model("swbn", mode="transductive")
    start = _split(model)[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    seen: list[bool] = []

    def before_step(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        seen.append(any(not torch.equal(v, start[k]) for k, v in _split(model)[0].items()))

    optimizer.register_step_pre_hook(before_step)
    maml_train_step(model, optimizer, tiny_episodes(2), _loop("by_role"))
    assert seen == [True]
