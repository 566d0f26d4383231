"""The algorithm registry: every few-shot method by name, with what it needs and supports.

An :class:`AlgorithmSpec` says everything the configuration, the command line and the
evaluation protocols need to know of a method without importing it: its family
(``metric``: an embedding scored by distances, no head; ``gradient``: adapted by an inner
loop on a head; ``finetune``: pre-trained by ordinary supervised minibatches over every
training class, then a fresh head fine-tuned on each task's support set), its default
settings, the few-shot mode it runs batch-statistics normalizers in, and what it supports.
Its factory (``"module:attribute"``, loaded on first use) takes the validated run
configuration and returns the algorithm object that the pipelines
(:mod:`fewnorm.episodes.algorithms`) drive. Third-party methods arrive through
the entry-point group ``fewnorm.algorithms`` or :func:`register_algorithm`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fewnorm.errors import ConfigError
from fewnorm.norms.fewshot import MAML_MODE
from fewnorm.norms.plugins import entry_point_discoverer
from fewnorm.registry import Registry

FAMILIES = ("metric", "gradient", "finetune")
#: What an algorithm may support: Lake's one-shot runs, fresh heads at other ways, vmap
#: over a meta-batch's tasks, several processes per step.
CAPABILITIES = ("lake20", "reinit", "vmap", "distributed")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One registered few-shot method."""

    name: str
    factory: Callable[..., Any] | str = field(repr=False, compare=False)
    summary: str
    paper: str
    family: str = "metric"
    defaults: Mapping[str, Any] = field(default_factory=dict)  # RunConfig keys it changes
    norm_mode: str | None = None  # the few-shot mode of batch-statistics normalizers, where offered
    supports: tuple[str, ...] = ()
    #: RunConfig keys only methods like this one read (MAML's inner loop): a run of another
    #: method that sets them is refused, since it would record them and never use them.
    options: tuple[str, ...] = ()
    #: Why a method without ``options`` has none of a kind, for the refusal (ProtoNet: no head).
    lacks: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    source: str = "fewnorm"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}, got '{self.family}'")
        unknown = set(self.supports) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"{self.name}: unknown capabilities {sorted(unknown)}; use {CAPABILITIES}")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "lacks", MappingProxyType(dict(self.lacks)))

    @property
    def reads(self) -> tuple[str, ...]:
        """The method-specific settings it reads: its ``options``, and training episodes' shape
        unless it trains on minibatches (the ``finetune`` family)."""
        return self.options if self.family == "finetune" else (*EPISODE_OPTIONS, *self.options)

    def load(self) -> Callable[..., Any]:
        """The factory, imported on first use if it was given as ``"module:attribute"``."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
        return factory


#: The method a run uses when it names none.
DEFAULT_ALGORITHM = "protonet"
#: What every episodic method reads (metric and gradient families); the fine-tuning baselines
#: train on minibatches instead.
EPISODE_OPTIONS = ("train_ways", "train_shots", "train_queries")
#: What the MAML family's inner loop and head read from a run's configuration.
INNER_LOOP_OPTIONS = (
    "inner_lr",
    "inner_steps",
    "inner_steps_test",
    "buffer_policy",
    "vectorize",
    "vectorize_chunks",
    "head",
)
#: Reptile's inner loop: MAML's without vmap, with an optimizer and minibatches of its own.
REPTILE_OPTIONS = (
    "inner_lr",
    "inner_steps",
    "inner_steps_test",
    "buffer_policy",
    "head",
    "inner_optimizer",
    "inner_batch",
    "inner_batch_test",
)
#: The fine-tuning baselines: pre-training minibatches, and the test-time head's steps.
FINETUNE_OPTIONS = (
    "inner_lr",
    "inner_steps_test",
    "inner_optimizer",
    "inner_batch_test",
    "batch_size",
    "finetune_backbone",
)

_E = "fewnorm.episodes.algorithms:"
_FINN = "Finn, Abbeel and Levine, Model-Agnostic Meta-Learning, ICML 2017"
#: MAML learns more per task than a ProtoNet step does, but needs many more tasks: on
#: omniglot-minimal 5-way 1-shot, 1200 tasks give 80.0% test accuracy, 8000 with these
#: settings 90.4% (docs/maml.md). Validation every 1000 rather than 500 picks the same
#: checkpoint 50 s sooner; 10 test-time inner steps rather than Finn's 3 (adaptation keeps
#: improving: 85.0 / 88.7 / 89.7 / 90.4% with 1 / 3 / 5 / 10, same checkpoint).
GRADIENT_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"episodes": 8000, "lr_halve_every": 3000, "val_every": 1000, "inner_steps_test": 10}
)


def _gradient(name: str, factory: str, summary: str, paper: str) -> AlgorithmSpec:
    """A member of the MAML family: one inner loop, the same defaults and normalizer mode."""
    return AlgorithmSpec(
        name=name,
        factory=_E + factory,
        summary=summary,
        paper=paper,
        family="gradient",
        defaults=GRADIENT_DEFAULTS,
        norm_mode=MAML_MODE,
        supports=("lake20", "reinit", "vmap", "distributed"),
        options=INNER_LOOP_OPTIONS,
    )


BUILTIN_ALGORITHMS: tuple[AlgorithmSpec, ...] = (
    AlgorithmSpec(
        name=DEFAULT_ALGORITHM,
        factory=_E + "ProtoNet",
        summary="Prototypical Networks: nearest class mean of the support embeddings.",
        paper="Snell, Swersky and Zemel, Prototypical Networks, NeurIPS 2017",
        supports=("lake20", "distributed"),
        lacks={"head": "it classifies by the distance to class prototypes"},
        aliases=("prototypical", "proto"),
    ),
    _gradient("maml", "MAML", "MAML: second-order meta-gradients through the inner SGD steps.", _FINN),
    _gradient(
        "fomaml",
        "FOMAML",
        "First-order MAML: inner-loop gradients taken as constants.",
        _FINN + "; Nichol, Achiam and Schulman, On First-Order Meta-Learning Algorithms, 2018",
    ),
    _gradient(
        "anil",
        "ANIL",
        "ANIL: the inner loop adapts only the head; second order.",
        "Raghu, Raghu, Bengio and Vinyals, Rapid Learning or Feature Reuse?, ICLR 2020",
    ),
)
_NICHOL = "Nichol, Achiam and Schulman, On First-Order Meta-Learning Algorithms, arXiv 1803.02999, 2018"
_CHEN = "Chen, Liu, Kira, Wang and Huang, A Closer Look at Few-shot Classification, ICLR 2019"
#: Reptile's Omniglot settings (Nichol et al., Table 3 and their run commands): Adam inner steps of
#: 0.001 (beta1 0) on batches of 10, 5 of them per task, meta step 1.0 decaying linearly to 0 over
#: the run, 5 tasks per meta-batch, 50 test-time steps on batches of 5. The inner loop trains on a
#: training task's support set of 10 images per class (their --train-shots 10); its query set
#: only reports the adapted accuracy.
REPTILE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "episodes": 3000,
        "lr": 1.0,
        "meta_batch": 5,
        "inner_optimizer": "adam",
        "inner_lr": 1e-3,
        "inner_steps": 5,
        "inner_batch": 10,
        "inner_steps_test": 50,
        "inner_batch_test": 5,
        "train_shots": 10,
        "val_every": 500,
    }
)
#: Chen et al.'s code: Adam 1e-3 on minibatches of 16 images of every training class; at test a
#: fresh head trained with SGD (lr 0.01, momentum 0.9, dampening 0.9, weight decay 1e-3) on
#: batches of 4 support features (the backbone frozen). They run 100 passes over the support set
#: (200 steps at 5-way 1-shot); the issue's default is 100 steps.
FINETUNE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "episodes": 3000,
        "batch_size": 16,
        "val_every": 500,
        "inner_optimizer": "sgd-momentum",
        "inner_lr": 0.01,
        "inner_steps_test": 100,
        "inner_batch_test": 4,
    }
)


def _finetune(name: str, factory: str, summary: str) -> AlgorithmSpec:
    """A fine-tuning baseline: pre-trained on minibatches, a fresh head per task at test time."""
    return AlgorithmSpec(
        name=name,
        factory=factory,
        summary=summary,
        paper=_CHEN,
        family="finetune",
        defaults=FINETUNE_DEFAULTS,
        norm_mode="running",  # Chen et al. embed in eval(): the pre-training running averages
        supports=("lake20", "distributed"),
        options=FINETUNE_OPTIONS,
    )


BUILTIN_ALGORITHMS += (
    AlgorithmSpec(
        name="reptile",
        factory="fewnorm.episodes.reptile:Reptile",
        summary="Reptile: first-order meta-learning, the weights moved towards each task's adapted ones.",
        paper=_NICHOL,
        family="gradient",
        defaults=REPTILE_DEFAULTS,
        norm_mode=MAML_MODE,
        supports=("lake20", "reinit", "distributed"),
        options=REPTILE_OPTIONS,
    ),
    _finetune(
        "baseline",
        "fewnorm.episodes.baseline:Baseline",
        "Baseline: supervised pre-training with a linear head; a fresh linear head per task.",
    ),
    _finetune(
        "baseline-pp",
        "fewnorm.episodes.baseline:BaselinePlusPlus",
        "Baseline++: as Baseline with a cosine head of learned scale.",
    ),
)
#: Third-party algorithms: the entry points of this group, loaded before the first lookup.
ENTRY_POINT_GROUP = "fewnorm.algorithms"

ALGORITHM_REGISTRY: Registry[AlgorithmSpec] = Registry(
    "algorithm", entry_point_discoverer(ENTRY_POINT_GROUP), BUILTIN_ALGORITHMS
)


def get_algorithm_spec(name: str) -> AlgorithmSpec:
    """The :class:`AlgorithmSpec` registered under ``name`` or an alias (closest match if unknown)."""
    return ALGORITHM_REGISTRY.get(name)


def list_algorithms() -> list[AlgorithmSpec]:
    """Every registered algorithm: built-ins in the order they are defined, then plugins by name."""
    order = {spec.name: i for i, spec in enumerate(BUILTIN_ALGORITHMS)}
    return sorted(ALGORITHM_REGISTRY, key=lambda s: (order.get(s.name, len(order)), s.name))


def check_algorithm_options(algo: str, given: Mapping[str, Any]) -> None:
    """Refuse, in one line, settings in ``given`` (key -> value) that only other methods read.

    ``--head linear`` for ProtoNet would be recorded in the run and never used: refused, naming
    the methods that do read it.
    """
    spec = get_algorithm_spec(algo)
    known = list_algorithms()
    others = {key for s in known for key in s.reads}
    unused = [key for key in given if key in others and key not in spec.reads]
    if not unused:
        return
    users = [s.name for s in known if set(unused) <= set(s.reads)] or ["other methods"]
    where = " and ".join(filter(None, (", ".join(users[:-1]), users[-1])))
    flags = ", ".join("--" + key.replace("_", "-") for key in unused)
    if len(unused) == 1:
        key, value = unused[0], given[unused[0]]
        shown = flags if value is None or isinstance(value, bool) else f"{flags} {value}"
        why = f"{spec.name} does not use it"
        if key in spec.lacks:
            why = f"{spec.name} has no {key} ({spec.lacks[key]})"
        raise ConfigError(f"{shown} applies to {where}; {why}: drop {flags}")
    raise ConfigError(f"{flags} apply to {where}; {spec.name} does not use them: drop {flags}")


def register_algorithm(spec: AlgorithmSpec, *, replace: bool = False) -> AlgorithmSpec:
    """Register a third-party algorithm (from a plugin module or an entry point's code)."""
    return ALGORITHM_REGISTRY.register(spec, replace=replace)
