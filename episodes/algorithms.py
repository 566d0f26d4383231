"""Few-shot algorithms behind one interface, so the training loop only orchestrates.

An :class:`Algorithm` builds its model (backbone plus whatever head it needs),
makes its outer optimizer, takes one meta-training step on a meta-batch of
episodes, and scores one episode without changing the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fewnorm.backbones import build_backbone
from fewnorm.config import RunConfig
from fewnorm.episode import Algorithm, Episode, StepResult
from fewnorm.episodes.heads import build_classifier, canonical_head, image_size
from fewnorm.episodes.maml import InnerLoop, maml_evaluate, maml_evaluate_many, maml_train_step
from fewnorm.episodes.plan import RunPlan, plan_run
from fewnorm.episodes.protonet import protonet_evaluate, protonet_loss, protonet_train_step
from fewnorm.errors import ConfigError
from fewnorm.precision import autocast_forward


def build_embedding(plan: RunPlan, in_channels: int) -> nn.Module:
    """The planned backbone with the bound normalizer, autocast as ``config.amp`` says.

    Autocast sits on the backbone, which fresh heads share (:mod:`fewnorm.episodes.reinit`);
    a MAML head is one small linear layer and stays float32.
    """
    config = plan.config
    backbone = build_backbone(
        config.backbone,
        in_channels=in_channels,
        norm=plan.norm,  # bound once, in the plan: no block looks the name up again
        hidden=config.hidden,
        dropblock=config.dropblock,
        channels_last=plan.decided("layout"),
    )
    return autocast_forward(backbone, config.amp)


class ProtoNet:
    """Prototypical Networks: one episode per step, Adam on the embedding."""

    name = "protonet"

    def __init__(self, plan: RunPlan) -> None:
        self.plan, self.config = plan, plan.config

    def build(self, config: RunConfig, in_channels: int) -> nn.Module:
        return build_embedding(self.plan, in_channels)

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=config.lr)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        if len(episodes) == 1:
            return protonet_train_step(model, optimizer, episodes[0])
        model.train()  # a meta-batch: gradients averaged over its episodes, one optimizer step
        optimizer.zero_grad(set_to_none=True)
        losses, accuracies = [], []
        for episode in episodes:
            loss, accuracy = protonet_loss(model, episode)
            (loss / len(episodes)).backward()
            losses.append(loss.item())
            accuracies.append(accuracy.item())
        optimizer.step()
        return StepResult(sum(losses) / len(losses), sum(accuracies) / len(accuracies))

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        return protonet_evaluate(model, episode, one_at_a_time=self.config.query_one_at_a_time)

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        return [self.evaluate(model, e) for e in episodes]  # one cheap forward each: nothing to batch

    def eval_chunk(self) -> int:
        return 1


#: Fixed evaluation episodes adapted together by one vmap when evaluation is vectorized.
VECTORIZED_EVAL_CHUNK = 20

#: Largest meta-batch MAML accepts: Finn et al. used 32 (Omniglot 5-way) down to 2 (miniImageNet 5-shot).
MAX_META_BATCH = 256


def check_maml_config(config: RunConfig) -> None:
    """Reject settings MAML cannot run with, each in one line."""
    if config.effective_train_ways != config.ways:
        raise ConfigError(
            f"{config.algo} trains its {config.ways}-output head on {config.effective_train_ways}-way "
            f"episodes: --train-ways must equal --ways ({config.ways}) or be left unset"
        )
    if config.meta_batch > MAX_META_BATCH:
        raise ConfigError(
            f"--meta-batch {config.meta_batch} exceeds {config.algo}'s limit of {MAX_META_BATCH} "
            "episodes per outer step (Finn et al. used 2 to 32)"
        )
    canonical_head(config.head)  # an unknown head fails here, listing the known ones


class MAML:
    """MAML (Finn, Abbeel and Levine, ICML 2017): second-order meta-gradients, Adam outside."""

    name = "maml"
    first_order = False
    head_only = False

    def __init__(self, plan: RunPlan) -> None:
        self.plan, self.config = plan, plan.config
        self._loops: dict[bool, InnerLoop] = {}

    def build(self, config: RunConfig, in_channels: int) -> nn.Module:
        check_maml_config(config)
        return build_classifier(
            build_embedding(self.plan, in_channels),
            in_channels=in_channels,
            size=image_size(config.dataset),
            ways=config.ways,
            head=config.head,
        )

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=config.lr)

    def inner_loop(self, *, training: bool) -> InnerLoop:
        """The inner loop of training or evaluation (made once: every step asks for it)."""
        if training not in self._loops:
            self._loops[training] = self._make_inner_loop(training)
        return self._loops[training]

    def _make_inner_loop(self, training: bool) -> InnerLoop:
        c = self.config
        return InnerLoop(
            lr=c.inner_lr,
            steps=c.inner_steps if training else c.inner_steps_test,
            first_order=self.first_order,
            head_only=self.head_only,
            buffer_policy=c.effective_buffer_policy,
            learned_buffers=self.plan.norm_spec.learned_buffers,
            vectorize=self.plan.decided("vectorized" if training else "vectorized_eval"),
            chunks=c.effective_vectorize_chunks,
        )

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        return maml_train_step(model, optimizer, episodes, self.inner_loop(training=True))

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        loop = self.inner_loop(training=False)
        return maml_evaluate(model, episode, loop, one_at_a_time=self.config.query_one_at_a_time)

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        loop = self.inner_loop(training=False)
        return maml_evaluate_many(model, episodes, loop, one_at_a_time=self.config.query_one_at_a_time)

    def eval_chunk(self) -> int:
        """Fixed episodes scored together: 20 when vectorized, else one (progress per episode)."""
        return VECTORIZED_EVAL_CHUNK if self.inner_loop(training=False).vectorize else 1


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017; Nichol et al. 2018): inner gradients as constants."""

    name = "fomaml"
    first_order = True


class ANIL(MAML):
    """ANIL (Raghu et al., ICLR 2020): the inner loop adapts only the head; second order."""

    name = "anil"
    head_only = True


def get_algorithm(config: RunConfig) -> Algorithm:
    """The algorithm object of ``config`` through its run plan (:func:`~fewnorm.episodes.plan.plan_run`)."""
    return plan_run(config).algorithm
