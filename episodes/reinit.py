"""Fresh N-way heads for MAML, FOMAML and ANIL models: other ways and Lake's 20-way runs.

A MAML-family model (:class:`~fewnorm.episodes.heads.FewShotClassifier`) ends in a head
with the trained number of outputs, so it scores only trained-way episodes. To score
``N``-way tasks (``fewnorm evaluate RUN --ways N``, ``--benchmark lake20``), each task gets
an ``N``-output copy of the model (the same embedding, a fresh head), which the run's
test-time inner loop then adapts on the support set and scores, exactly as trained-way
episodes are scored (:func:`~fewnorm.episodes.maml.maml_evaluate`: ``--inner-steps-test``
SGD steps of ``--inner-lr``; the body and the head for MAML and FOMAML, the head alone for
ANIL; second order or not makes no difference at test, where no meta-gradient is taken).

Head initialisations (``--head-init``), per task because they depend on its support set:

- ``proto``: Proto-MAML (Triantafillou et al., "Meta-Dataset", ICLR 2020): ``W_c = 2 p_c``,
  ``b_c = -||p_c||^2`` from the prototypes ``p_c`` (class means of the support embeddings,
  embedded under ``norm_phase("support")`` in a task scope, in evaluation mode). Then
  ``W_c z + b_c = -||z - p_c||^2 + ||z||^2``: a ProtoNet's logits plus a per-query constant,
  so softmax, loss and predictions are a ProtoNet's before the first inner step. On the
  affine-divergence head the logits become ``(ProtoNet logits + ||z||^2) / sqrt(||z||^2 + 1)``:
  the same predictions, each query with its own softmax temperature.
- ``zero``: ``W = 0``, ``b = 0``, as a ``linear-zero`` head starts: uniform predictions, and
  the first inner step writes the centred class means into ``W`` (Kao et al., ICLR 2022).
- ``trained``: the run's own head, at its trained ways only.

Defaults: ``trained`` at the run's own ways for ``fewnorm evaluate`` (today's numbers), else
:data:`DEFAULT_HEAD_INIT`, ``zero`` for every head kind. Measured (``docs/maml.md``) on 1-shot
tasks: a prototype head classifies each support image (its own prototype) with margins of
squared distances, so the support loss is near zero and the inner loop changed no prediction
(the accuracy of a ProtoNet on the meta-learned embedding, to the episode); a zero head
adapts. At 20 ways zero beat proto on both linear heads (+3.6 and +1.0 points); the
affine-divergence head follows unmeasured, as its proto logits are ProtoNet's, rescaled.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from fewnorm.config import RunConfig
from fewnorm.episode import Episode
from fewnorm.episodes.algorithms import MAML, get_algorithm
from fewnorm.episodes.heads import FewShotClassifier, canonical_head
from fewnorm.episodes.protonet import prototypes
from fewnorm.errors import ConfigError
from fewnorm.names import normalize_name, unknown_name
from fewnorm.norms import norm_phase, task_scope
from fewnorm.norms.affine_divergence import AffineDivergenceLinear

HEAD_INITS = ("proto", "zero", "trained")
#: The head init for a fresh head, per head kind (module docstring: why).
DEFAULT_HEAD_INIT = {"linear": "zero", "linear-zero": "zero", "affine-divergence": "zero"}
MAML_FAMILY = "MAML, FOMAML and ANIL runs"


@dataclass(frozen=True)
class HeadProtocol:
    """How a MAML-family model scores a task: recorded with every result."""

    algo: str
    head: str  # the run's head kind
    head_init: str  # proto | zero | trained
    ways: int
    trained_ways: int
    inner_steps: int
    inner_lr: float
    adapts: str  # "body and head" (MAML, FOMAML) | "head" (ANIL)

    def to_dict(self) -> dict[str, Any]:
        # Test-time steps are plain SGD for the whole family: no meta-gradient, no order.
        return {
            "algo": self.algo,
            "head": self.head,
            "head_init": self.head_init,
            "ways": self.ways,
            "trained_ways": self.trained_ways,
            "inner_steps": self.inner_steps,
            "inner_lr": self.inner_lr,
            "inner_order": "first",
            "adapts": self.adapts,
        }

    def label(self) -> str:
        """One line for tables: ``"proto-init 20-way head, 10 steps of lr 0.4 (body and head)"``."""
        return (
            f"{self.head_init}-init {self.ways}-way {self.head} head, "
            f"{self.inner_steps} steps of lr {self.inner_lr:g} ({self.adapts})"
        )


def maml_family(config: RunConfig) -> MAML | None:
    """The run's algorithm if it adapts a head (MAML, FOMAML, ANIL), else ``None`` (ProtoNet)."""
    algorithm = get_algorithm(config)
    return algorithm if isinstance(algorithm, MAML) else None


def resolve_head_init(config: RunConfig, requested: str | None, ways: int, *, fresh: bool) -> str:
    """The head init for ``ways``-way tasks: ``requested``, else ``trained`` at the run's ways
    (unless ``fresh``), else the head kind's default; ``trained`` at other ways is refused."""
    if requested is None:
        if ways == config.ways and not fresh:
            return "trained"
        return DEFAULT_HEAD_INIT[canonical_head(config.head)]
    init = next((i for i in HEAD_INITS if normalize_name(i) == normalize_name(requested)), None)
    if init is None:
        raise unknown_name("head init", requested, HEAD_INITS)
    if init == "trained" and ways != config.ways:
        raise ConfigError(
            f"--head-init trained keeps the run's {config.ways}-way head, which cannot score "
            f"{ways}-way tasks; use --head-init proto or zero"
        )
    return init


def head_protocol(config: RunConfig, head_init: str | None, ways: int, *, fresh: bool) -> HeadProtocol | None:
    """How ``config``'s model scores ``ways``-way tasks (:func:`resolve_head_init` picks the
    init); ``None`` for a ProtoNet run, which refuses a ``head_init``."""
    base = maml_family(config)
    if base is None:
        if head_init is not None:
            raise ConfigError(f"--head-init applies to {MAML_FAMILY}; this run is '{config.algo}'")
        return None
    loop = base.inner_loop(training=False)
    return HeadProtocol(
        base.name,
        canonical_head(config.head),
        resolve_head_init(config, head_init, ways, fresh=fresh),
        ways,
        config.ways,
        loop.steps,
        loop.lr,
        "head" if loop.head_only else "body and head",
    )


@torch.no_grad()
def support_prototypes(embedding: nn.Module, support: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means of the support embeddings under the support phase: ``(ways, D)``."""
    with task_scope(), norm_phase("support"):
        z_support = embedding(support)  # (ways*shots, D)
    return prototypes(z_support, labels, ways)


def reinit_classifier(model: nn.Module, support: Tensor, labels: Tensor, ways: int, init: str) -> nn.Module:
    """A ``ways``-output copy of ``model`` for one task: its embedding, a head set by ``init``.

    ``support`` is ``(ways*shots, C, H, W)`` with ``labels`` in ``0..ways-1``. The embedding is
    shared, not copied; the model's own head and state are left unchanged (``trained``
    returns ``model`` itself). The model is put in evaluation mode, as evaluation
    does: the prototype pass must not move running statistics.
    """
    if init == "trained":
        return model
    head = model.head if isinstance(model, FewShotClassifier) else model
    if not isinstance(model, FewShotClassifier) or not isinstance(head, nn.Linear | AffineDivergenceLinear):
        raise ConfigError(
            f"cannot re-initialise a {type(head).__name__} head: fresh heads are built for linear, "
            "linear-zero and affine-divergence heads; score this run at its own --ways"
        )
    if init == "proto" and isinstance(head, AffineDivergenceLinear) and head.variant != "affine":
        raise ConfigError(
            f"--head-init proto needs the affine variant of the affine-divergence head (its bias is "
            f"not scaled like W z in variant '{head.variant}'); use --head-init zero"
        )
    model.eval()
    weight = head.weight.new_zeros(ways, head.in_features)  # (ways, D)
    bias = head.weight.new_zeros(ways)  # (ways,)
    if init == "proto":
        protos = support_prototypes(model.embedding, support, labels, ways).to(weight.dtype)  # (ways, D)
        weight, bias = 2 * protos, -protos.square().sum(1)
    elif init != "zero":
        raise unknown_name("head init", init, HEAD_INITS)
    fresh = copy.deepcopy(head)  # same class and settings, and no random numbers drawn
    fresh.weight, fresh.bias, fresh.out_features = nn.Parameter(weight), nn.Parameter(bias), ways
    return FewShotClassifier(model.embedding, fresh)


class TaskScorer(Protocol):
    """Scores one task without changing the model (a MAML-family algorithm, or :class:`FreshHead`)."""

    def evaluate(self, model: nn.Module, episode: Episode) -> float: ...

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]: ...

    def eval_chunk(self) -> int: ...


class FreshHead:
    """Scores each task of a MAML-family run with a fresh head: ``head_init``, then the run's
    test-time adaptation (the algorithm's ``evaluate``); the model is left unchanged."""

    def __init__(self, base: MAML, head_init: str) -> None:
        self.base = base  # its evaluate adapts as the run does (MAML's SGD steps, Reptile's optimizer)
        self.head_init = head_init

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        fresh = reinit_classifier(
            model, episode.support, episode.support_labels, episode.ways, self.head_init
        )
        return self.base.evaluate(fresh, episode)

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        return [self.evaluate(model, e) for e in episodes]

    def eval_chunk(self) -> int:
        return 1  # one fresh head per episode: its prototypes are its own


def scoring_algorithm(config: RunConfig, head_init: str) -> TaskScorer:
    """What scores a MAML-family run's tasks: its own algorithm (``trained``) or a fresh head."""
    base = maml_family(config)
    if base is None:
        raise ConfigError(f"--head-init applies to {MAML_FAMILY}; this run is '{config.algo}'")
    return base if head_init == "trained" else FreshHead(base, head_init)
