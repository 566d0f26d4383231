"""Baseline and Baseline++ (Chen, Liu, Kira, Wang and Huang, "A Closer Look at Few-shot
Classification", ICLR 2019): supervised pre-training, then a fresh head per task.

Pre-training is ordinary supervised learning on minibatches (not episodes) of every
training class: the backbone and a ``pretrain_classes``-output head, Adam on the
cross-entropy. Baseline's head is linear; Baseline++'s is a cosine head,
``s * cos(z, w_c)``, with a learned scale ``s``. Each minibatch runs as one task's
support pass (a ``task_scope`` under ``norm_phase("support")``), so every normalizer sees
what it sees in a support set. Validation and test score the same fixed episodes as
every other algorithm.

At test (and validation) each episode gets a fresh ``ways``-output head of the same
kind (drawn from a fixed seed; the cosine head starts from the trained scale), trained by
:func:`fewnorm.episodes.finetune.adapt` on the support set: ``inner_steps_test`` steps
of ``inner_optimizer`` (default Chen et al.'s SGD, lr 0.01, momentum 0.9, dampening 0.9,
weight decay 1e-3) on batches of ``inner_batch_test`` (4). With the backbone frozen (the
default) the support and query features are computed once, as in Chen et al.'s code.

Which statistics a frozen backbone's batch-statistics normalizers use is their ``mode``,
recorded in the run's ``norm_options`` (default ``running``: the pre-training running
averages, as Chen et al. embed in ``eval()``) and reported in the summary
(:func:`finetune_protocol`): ``transductive`` normalizes the support features with the
support set's batch statistics and the query features with the query set's (each image's
own under ``--query-one-at-a-time``); ``support`` normalizes both with the support set's.

``finetune_backbone`` trains the backbone with the head on the support batches (each
batch normalized as that step's support pass), then refreshes support statistics with
the adapted weights before the query pass, as MAML does. Dhillon et al.'s transductive
fine-tuning (ICLR 2020: an entropy penalty on the query set) is out of scope: no query
image is ever trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fewnorm.config import RunConfig
from fewnorm.data.store import ImageStore
from fewnorm.episode import Episode, StepResult
from fewnorm.episodes.algorithms import build_embedding
from fewnorm.episodes.finetune import Steps, adapt
from fewnorm.episodes.heads import FewShotClassifier, embedding_dim, image_size
from fewnorm.episodes.maml import task_buffers
from fewnorm.episodes.passes import query_pass
from fewnorm.episodes.plan import Decision, RunPlan
from fewnorm.episodes.sampler import FLOAT_CACHE_BYTES, float_bytes, float_images
from fewnorm.errors import ConfigError
from fewnorm.norms import norm_phase, task_scope

Tensors = dict[str, Tensor]
#: Initial scale of a pre-training cosine head (learned from there); Chen et al. fix 2 or 10.
COSINE_SCALE = 10.0
#: Seed of each episode's fresh head and of its minibatch shuffles: fixed episodes score repeatably.
EVAL_SEED = 0


class CosineHead(nn.Module):
    """``scale * cos(z, w_c)``: ``(N, D) -> (N, classes)``, invariant to the scale of ``z``."""

    def __init__(
        self, in_features: int, classes: int, scale: float = COSINE_SCALE, weight: Tensor | None = None
    ) -> None:
        super().__init__()
        if weight is None:  # as nn.Linear's weights: uniform in +-1/sqrt(D)
            bound = 1 / math.sqrt(in_features)
            weight = torch.empty(classes, in_features).uniform_(-bound, bound)
        self.weight = nn.Parameter(weight)  # (classes, D)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.in_features, self.out_features = in_features, classes

    def forward(self, z: Tensor) -> Tensor:  # (N, D) -> (N, classes)
        return self.scale * F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T


def fresh_head(trained: nn.Module, ways: int, generator: torch.Generator) -> nn.Module:
    """A ``ways``-output head of ``trained``'s kind, weights uniform in ``±1/sqrt(D)`` from ``generator``."""
    d = int(getattr(trained, "in_features"))  # noqa: B009 (Linear and CosineHead both have it)
    bound = 1 / math.sqrt(d)
    weight = (torch.rand(ways, d, generator=generator) * 2 - 1) * bound  # (ways, D)
    if isinstance(trained, CosineHead):
        head: nn.Module = CosineHead(d, ways, float(trained.scale.detach()), weight)
    else:  # skip_init: no draw from torch's generator, which the training run owns
        head = torch.nn.utils.skip_init(nn.Linear, d, ways)
        head.weight = nn.Parameter(weight)
        head.bias = nn.Parameter((torch.rand(ways, generator=generator) * 2 - 1) * bound)
    return head.to(next(trained.parameters()).device)


class MinibatchSampler:
    """Minibatches of ``batch`` images drawn uniformly from every class of ``store``.

    A minibatch comes as an :class:`Episode` whose support set holds the images and their
    class indices (``0..num_classes-1``) and whose query set is empty, so the training
    loop, augmentation and the process group handle it as they handle an episode.
    """

    def __init__(self, store: ImageStore, batch: int) -> None:
        self.store, self.batch = store, batch
        self.labels = torch.cat(
            [torch.full((int(n),), c) for c, n in enumerate(store.class_sizes.tolist())]
        )  # (N,) in class order
        self.rows = torch.cat(
            [
                torch.arange(int(s), int(s) + int(n))
                for s, n in zip(store.class_starts, store.class_sizes, strict=True)
            ]
        )  # (N,) store rows in the same order
        self._floats = float_images(store) if float_bytes(store) <= FLOAT_CACHE_BYTES else None

    def sample(self, generator: torch.Generator) -> Episode:
        pick = torch.randint(len(self.rows), (self.batch,), generator=generator)  # (batch,)
        rows = self.rows[pick]
        images = self._floats[rows] if self._floats is not None else self.store.images[rows].float() / 255.0
        empty = images[:0]  # (0, C, H, W)
        classes = self.store.num_classes
        return Episode(images, self.labels[pick], empty, self.labels[:0], classes, 0, 0)

    def fixed(self, index: int, base_seed: int) -> Episode:
        return self.sample(torch.Generator().manual_seed(base_seed + index))


def pretrain_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence[Episode]
) -> StepResult:
    """One optimizer step on the cross-entropy over ``batches`` (their support sets, joined)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    images = torch.cat([b.support for b in batches])  # (B, C, H, W)
    labels = torch.cat([b.support_labels for b in batches])  # (B,)
    with task_scope(), norm_phase("support"):
        logits = model(images)  # (B, classes)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return StepResult(loss.item(), float((logits.argmax(1) == labels).float().mean()))


def _features(
    embedding: nn.Module, buffers: Tensors, episode: Episode, one_at_a_time: bool
) -> tuple[Tensor, Tensor]:
    """Support then query features of the frozen backbone, each under its phase, in one task scope."""
    params: Tensors = dict(embedding.named_parameters())
    with torch.no_grad(), task_scope():
        with norm_phase("support"):
            z_support = functional_call(embedding, (params, buffers), (episode.support,))  # (ways*shots, D)
        with norm_phase("query"):
            if one_at_a_time:
                z_query = torch.cat(
                    [functional_call(embedding, (params, buffers), (q[None],)) for q in episode.query]
                )
            else:
                z_query = functional_call(embedding, (params, buffers), (episode.query,))  # (ways*queries, D)
    return z_support.float(), z_query.float()


def finetune_logits(
    model: FewShotClassifier,
    episode: Episode,
    steps: Steps,
    *,
    backbone: bool = False,
    one_at_a_time: bool = False,
) -> Tensor:
    """Query logits ``(ways*queries, ways)`` of a fresh head trained on the support set.

    The model's weights and buffers are left unchanged (the head is new, the buffers cloned).
    """
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    head = fresh_head(model.head, episode.ways, generator)
    head_params = {k: p.detach() for k, p in head.named_parameters()}
    if not backbone:
        buffers = task_buffers(model.embedding, "per_task")
        z_support, z_query = _features(model.embedding, buffers, episode, one_at_a_time)
        fast, _ = adapt(
            head, head_params, {}, z_support, episode.support_labels, list(head_params), steps, generator
        )
        with torch.no_grad():
            return functional_call(head, fast, (z_query,))
    classifier = FewShotClassifier(model.embedding, head)
    params = {k: p.detach() for k, p in classifier.named_parameters()}
    buffers = task_buffers(classifier, "per_task")
    names = [k for k, p in classifier.named_parameters() if p.requires_grad]
    with task_scope():
        fast, _ = adapt(
            classifier, params, buffers, episode.support, episode.support_labels, names, steps, generator
        )
        with torch.no_grad():
            return query_pass(
                classifier, fast, buffers, episode.support, episode.query,
                no_support_yet=False, one_at_a_time=one_at_a_time,
            )  # fmt: skip


STATISTICS = {
    "running": "the pre-training running averages, on support and query alike",
    "transductive": "the support set's batch statistics on the support, the query set's on the query",
    "support": "the support set's statistics, on support and query alike",
}


def finetune_protocol(config: RunConfig, *, cosine: bool) -> str:
    """One line for the summary: the fresh head's training and the statistics the backbone normalizes with."""
    mode = config.norm_options.get("mode")
    stats = STATISTICS.get(mode, str(mode)) if mode else "none kept (the normalizer has no few-shot modes)"
    if mode == "transductive" and config.query_one_at_a_time:
        stats = "the support set's batch statistics on the support, each query image's own on it"
    body = "backbone fine-tuned too" if config.finetune_backbone else "backbone frozen"
    kind = "cosine" if cosine else "linear"
    return (
        f"fresh {kind} head, {config.inner_steps_test} steps of {config.inner_optimizer or 'sgd'} "
        f"lr {config.inner_lr:g} on batches of {config.inner_batch_test or 'all'}; {body}; "
        f"statistics: {stats}"
    )


class Baseline:
    """Baseline (Chen et al. 2019): a linear pre-training head; a fresh linear head per task."""

    name = "baseline"
    cosine = False

    def __init__(self, plan: RunPlan) -> None:
        self.plan, self.config = plan, plan.config

    def decisions(self) -> dict[str, Decision]:
        """Minibatches of every training class in pre-training; a fresh head per task at test."""
        c, head = self.config, "cosine" if self.cosine else "linear"
        return {
            "pretraining": Decision(c.batch_size, f"{c.batch_size} images per step, {head} head"),
            "finetuning": Decision(c.inner_steps_test, finetune_protocol(c, cosine=self.cosine)),
        }

    def pretraining(self, store: ImageStore) -> tuple[RunConfig, MinibatchSampler]:
        """The run's config with the training split's classes recorded, and its minibatch sampler."""
        classes = store.num_classes
        if self.config.pretrain_classes not in (None, classes):
            raise ConfigError(
                f"the run's head was pre-trained on {self.config.pretrain_classes} classes but the training "
                f"split now has {classes}: the data changed since the run started"
            )
        self.config = self.config.model_copy(update={"pretrain_classes": classes})
        return self.config, MinibatchSampler(store, self.config.batch_size or 16)

    def build(self, config: RunConfig, in_channels: int) -> nn.Module:
        if config.pretrain_classes is None:
            raise ConfigError(
                f"{config.algo}: pretrain_classes is recorded by `fewnorm train`; train the run first"
            )
        embedding = build_embedding(self.plan, in_channels)
        d = embedding_dim(embedding, in_channels, image_size(config.dataset))
        classes = config.pretrain_classes
        head = CosineHead(d, classes) if self.cosine else nn.Linear(d, classes)
        return FewShotClassifier(embedding, head)

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=config.lr)

    def steps(self) -> Steps:
        c = self.config
        return Steps(c.inner_optimizer or "sgd", c.inner_lr, c.inner_steps_test, c.inner_batch_test)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        return pretrain_step(model, optimizer, episodes)

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        if not isinstance(model, FewShotClassifier):
            raise ConfigError(f"{self.name} scores a backbone with a head; got {type(model).__name__}")
        c = self.config
        logits = finetune_logits(
            model,
            episode,
            self.steps(),
            backbone=bool(c.finetune_backbone),
            one_at_a_time=c.query_one_at_a_time,
        )
        return float((logits.argmax(1) == episode.query_labels).float().mean())

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        return [self.evaluate(model, e) for e in episodes]

    def eval_chunk(self) -> int:
        return 1


class BaselinePlusPlus(Baseline):
    """Baseline++ (Chen et al. 2019): cosine heads with a learned scale, in pre-training and per task."""

    name = "baseline-pp"
    cosine = True
