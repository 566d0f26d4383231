"""Conformance kit for algorithms: ``check_algorithm(name)``, re-exported by :mod:`fewnorm.testing`.

Algorithm authors run it in their own test suites::

    from fewnorm.testing import check_algorithm

    def test_my_method_conforms():
        check_algorithm("mymethod")

It reaches the algorithm only through its registered spec (the factory string, called with
the run plan) and the methods of the algorithm protocol (``build``, ``optimizer``,
``train_step``, ``evaluate``, ``evaluate_many``), on small random episodes of the dataset's
image shape. The core never imports the pipelines: it names their planner as a spec names
its factory, ``"module:attribute"``, loaded when a check runs. Each check enforces one rule and raises
:class:`AlgorithmConformanceError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fewnorm.algorithms import AlgorithmSpec, get_algorithm_spec
from fewnorm.config import RunConfig
from fewnorm.data.registry import get_dataset_spec
from fewnorm.episode import Algorithm, Episode, StepResult
from fewnorm.registry import load_object

#: What resolves a configuration into the run plan that algorithm factories take.
PLANNER = "fewnorm.episodes.plan:plan_run"
CHECKS = ("builds", "train_step", "evaluate", "determinism")
#: Small episodes: 3-way 1-shot, 2 queries per class, a meta-batch of two.
WAYS, SHOTS, QUERIES, META_BATCH, EVAL_EPISODES = 3, 1, 2, 2, 3


class AlgorithmConformanceError(AssertionError):
    """An algorithm broke a rule of the contract; the message names the rule."""


def _fail(rule: str, name: str, why: str) -> AlgorithmConformanceError:
    return AlgorithmConformanceError(f"[{rule}] algorithm '{name}': {why}")


def random_episode(shape: tuple[int, int, int], seed: int, ways: int = WAYS) -> Episode:
    """A ``ways``-way episode of images of ``shape`` (C, H, W) in [0, 1], each class its own mean."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(ways, *shape, generator=g)  # (ways, C, H, W): classes a net can tell apart

    def draw(per_class: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(ways).repeat_interleave(per_class)  # (ways*per_class,)
        noise = torch.rand(len(labels), *shape, generator=g) * 0.3
        return (means[labels] * 0.7 + noise).clamp(0, 1), labels  # (ways*per_class, C, H, W)

    support, support_labels = draw(SHOTS)
    query, query_labels = draw(QUERIES)
    return Episode(support, support_labels, query, query_labels, ways, SHOTS, QUERIES)


def _state(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer, cloned."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> list[str]:
    """Keys whose tensors differ (or are missing in one)."""
    return [k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k])]


class _Kit:
    def __init__(self, spec: AlgorithmSpec, config: RunConfig, seed: int) -> None:
        if spec.family == "finetune" and config.pretrain_classes is None:
            # pre-trained on minibatches with a head over every training class: the kit's
            # episodes stand in for minibatches of WAYS classes
            config = config.model_copy(update={"pretrain_classes": WAYS})
        self.spec, self.config, self.seed = spec, config, seed
        self.shape = get_dataset_spec(config.dataset).image_shape
        self.train_episodes = [random_episode(self.shape, seed + i) for i in range(config.meta_batch)]
        self.eval_episodes = [random_episode(self.shape, seed + 100 + i) for i in range(EVAL_EPISODES)]

    def fresh(self) -> tuple[Algorithm, nn.Module, torch.optim.Optimizer]:
        """The algorithm object, its model (built under the seed) and its optimizer."""
        plan = load_object(PLANNER)(self.config)  # the normalizer bound, the run's decisions made
        algorithm: Algorithm = self.spec.load()(plan)
        torch.manual_seed(self.seed)
        model = algorithm.build(self.config, self.shape[0])
        return algorithm, model, algorithm.optimizer(model, self.config)

    def builds(self) -> None:
        _, model, optimizer = self.fresh()
        if not isinstance(model, nn.Module):
            raise _fail("builds", self.spec.name, f"build returned {type(model).__name__}, not an nn.Module")
        if not any(p.requires_grad for p in model.parameters()):
            raise _fail("builds", self.spec.name, "the model has no trainable parameters")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise _fail("builds", self.spec.name, f"optimizer returned {type(optimizer).__name__}")

    def train_step(self) -> None:
        algorithm, model, optimizer = self.fresh()
        before = _state(model)
        result = algorithm.train_step(model, optimizer, self.train_episodes)
        if not isinstance(result, StepResult):
            raise _fail("train_step", self.spec.name, f"returned {type(result).__name__}, not a StepResult")
        if not math.isfinite(result.loss):
            raise _fail("train_step", self.spec.name, f"loss {result.loss} is not finite")
        if not 0.0 <= result.accuracy <= 1.0:
            raise _fail(
                "train_step", self.spec.name, f"training accuracy {result.accuracy} is outside [0, 1]"
            )
        changed = {k for k in _same(before, _state(model))}
        if not changed & {k for k, _ in model.named_parameters()}:
            raise _fail("train_step", self.spec.name, "one step changed no parameter")

    def evaluate(self) -> None:
        algorithm, model, optimizer = self.fresh()
        algorithm.train_step(model, optimizer, self.train_episodes)  # away from the initialisation
        before = _state(model)
        one = [algorithm.evaluate(model, e) for e in self.eval_episodes]
        if changed := _same(before, _state(model)):
            raise _fail("evaluate", self.spec.name, f"evaluate changed {', '.join(sorted(changed)[:3])}")
        many = algorithm.evaluate_many(model, self.eval_episodes)
        if changed := _same(before, _state(model)):
            raise _fail("evaluate", self.spec.name, f"evaluate_many changed {', '.join(sorted(changed)[:3])}")
        if len(many) != len(one) or any(abs(a - b) > 1e-9 for a, b in zip(one, many, strict=False)):
            raise _fail("evaluate", self.spec.name, f"evaluate gave {one}, evaluate_many {many}")
        if not all(0.0 <= a <= 1.0 for a in one):
            raise _fail("evaluate", self.spec.name, f"accuracies {one} are not all in [0, 1]")
        again = [algorithm.evaluate(model, e) for e in self.eval_episodes]
        if again != one:
            raise _fail(
                "evaluate", self.spec.name, f"scoring the same episodes again gave {again}, not {one}"
            )

    def determinism(self) -> None:
        runs = []
        for _ in range(2):
            algorithm, model, optimizer = self.fresh()
            torch.manual_seed(self.seed + 1)  # what the step draws (dropout, DropBlock) is seeded too
            result = algorithm.train_step(model, optimizer, self.train_episodes)
            runs.append((result, _state(model)))
        (first, state), (second, state2) = runs
        if first != second or (changed := _same(state, state2)):
            why = f"losses {first.loss} and {second.loss}" if first != second else f"{sorted(changed)[:3]}"
            raise _fail("determinism", self.spec.name, f"two seeded builds and steps differ: {why}")


def check_algorithm(
    name: str,
    *,
    dataset: str = "omniglot-minimal",
    norm: str = "batchnorm",
    overrides: Mapping[str, Any] | None = None,
    checks: tuple[str, ...] = CHECKS,
    seed: int = 0,
) -> None:
    """Run the contract checks on the registered algorithm ``name`` (no dataset files are read).

    The run configuration is small (3-way 1-shot, Conv-4 of 8 filters, a meta-batch of two,
    one inner step) on random images of ``dataset``'s image shape; ``overrides`` changes any
    key of it. Raises :class:`AlgorithmConformanceError` on the first broken rule.
    """
    spec = get_algorithm_spec(name)
    settings: dict[str, Any] = {
        "algo": spec.name,
        "dataset": dataset,
        "norm": norm,
        "hidden": 8,
        "ways": WAYS,
        "train_ways": WAYS,
        "shots": SHOTS,
        "queries": QUERIES,
        "train_queries": QUERIES,
        "meta_batch": META_BATCH,
        "inner_steps_test": 1,
        "seed": seed,
    }
    config = RunConfig.model_validate(settings | dict(overrides or {}))
    kit = _Kit(spec, config, seed)
    for check in checks:
        if check not in CHECKS:
            raise ValueError(f"unknown check '{check}'; known: {', '.join(CHECKS)}")
        getattr(kit, check)()
