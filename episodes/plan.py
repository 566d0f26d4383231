"""The run plan: every name of a run resolved once, and every decision with its reason.

timm resolves a normalizer's name once (``norm_layer = get_norm_layer(name)``) and passes
the constructor down; a :class:`RunPlan` does that for a whole run. :func:`plan_run`
takes a validated :class:`~fewnorm.config.RunConfig` and

- checks the normalizer (canonical name, typed options, one dry-run block), as the
  command line always has, so ``train(config)`` from Python refuses what ``fewnorm
  train`` refuses;
- binds it (:class:`~fewnorm.norms.spec.BoundNorm`, passed into backbones and blocks);
- looks up the algorithm's spec and builds its object (``factory(plan)``);
- loads each split once, on first use;
- decides the activation layout, whether and how a meta-batch's tasks are vectorized,
  the buffer roles, threads and precision, each with its reason.

The loop, ``fewnorm evaluate``, ``compare``, ``probe``, the torchrun path and the summary
read the plan; nothing below it looks a name up again. ``summary.json`` records the
decisions (:meth:`RunPlan.record`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from fewnorm import data
from fewnorm.algorithms import AlgorithmSpec, get_algorithm_spec
from fewnorm.config import RunConfig
from fewnorm.norms import get_norm
from fewnorm.norms.check import check_bound_norm
from fewnorm.norms.spec import BoundNorm, NormSpec

if TYPE_CHECKING:
    from torch import nn

    from fewnorm.data.store import ImageStore
    from fewnorm.episode import Algorithm, EpisodeSource


@dataclass(frozen=True)
class Decision:
    """One choice the run made, and why (shown in the summary, recorded in ``summary.json``)."""

    value: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class RunPlan:
    """A run with its names resolved: config, bound normalizer, algorithm, splits, decisions."""

    config: RunConfig  # validated; normalizer canonical, options typed, layout resolved
    norm: BoundNorm
    algorithm_spec: AlgorithmSpec
    decisions: Mapping[str, Decision]  # the plan's, then the method's own (``algorithm.decisions()``)
    _stores: dict[str, ImageStore] = field(default_factory=dict, repr=False, compare=False)

    @property
    def norm_spec(self) -> NormSpec:
        return self.norm.spec

    @cached_property
    def algorithm(self) -> Algorithm:
        """The algorithm object, made once from its registered factory (``factory(plan)``)."""
        algorithm: Algorithm = self.algorithm_spec.load()(self)
        return algorithm

    def split(self, name: str) -> ImageStore:
        """The images of split ``name``, read once per plan."""
        if name not in self._stores:
            c = self.config
            self._stores[name] = data.load_split(c.dataset, name, c.data_root, **c.data_options)
        return self._stores[name]

    def splits(self, names: Iterable[str]) -> dict[str, ImageStore]:
        return {name: self.split(name) for name in names}

    def build_model(self, in_channels: int) -> nn.Module:
        """The algorithm's model with the bound normalizer in every block."""
        return self.algorithm.build(self.config, in_channels)

    def training(self, store: ImageStore, episodes: EpisodeSource) -> tuple[RunConfig, EpisodeSource]:
        """The config a model is built from and what its training steps draw: ``episodes``, or for a
        method that pre-trains on minibatches (Baseline) its minibatches, the config recording
        the training split's classes (one head output each)."""
        pretraining = getattr(self.algorithm, "pretraining", None)
        if pretraining is None:
            return self.config, episodes
        config, minibatches = pretraining(store)
        return config, minibatches

    def decided(self, name: str) -> Any:
        return self.decisions[name].value

    def record(self) -> dict[str, dict[str, Any]]:
        """The decisions as ``summary.json`` keeps them: ``{name: {value, reason}}``."""
        return {name: d.to_dict() for name, d in self.decisions.items()}


def plan_run(config: RunConfig, norm_options: Mapping[str, Any] | None = None) -> RunPlan:
    """Resolve ``config``'s names once and decide how the run runs (see the module docstring).

    ``norm_options`` (from the command line) win over the config's. The normalizer is
    looked up here, once: canonical name, typed options, a dry-run block
    (:func:`~fewnorm.norms.check.check_bound_norm`), as every entry point needs.
    """
    spec = get_norm(config.norm)
    norm = check_bound_norm(spec.bind(**{**config.norm_options, **(norm_options or {})}), config.hidden)
    config = config.model_copy(update={"norm": spec.name, "norm_options": norm.options})
    layout = memory_format(config, spec)
    if config.channels_last is None:  # recorded resolved: a later release may declare otherwise
        config = config.model_copy(update={"channels_last": layout[0]})
    algorithm = get_algorithm_spec(config.algo)
    decisions = {
        "layout": Decision(layout[0], layout[1]),
        "precision": _precision(config),
        "threads": Decision(config.threads, _threads_reason(config.threads)),
    }
    if algorithm.family == "gradient":
        decisions |= _meta_batch_decisions(config, spec, algorithm)
    plan = RunPlan(config, norm, algorithm, decisions)
    method_decisions = getattr(plan.algorithm, "decisions", None)  # what only the method decides
    if method_decisions is not None:
        decisions.update(method_decisions())
    return plan


def memory_format(config: RunConfig, spec: NormSpec) -> tuple[bool, str]:
    """Whether the backbone runs on NHWC activations, and why: the flag, else the normalizer's say.

    A run records its resolved layout, so a value equal to the normalizer's declaration
    is reported as the declaration's (the summary of a default run must not name a flag
    nobody passed); one against it came from the flag, or from a run recorded when the
    normalizer declared otherwise.
    """
    declared, why = spec.memory_format_status()
    if config.channels_last is None or config.channels_last == declared:
        return declared, why
    if config.channels_last:
        return True, "NHWC (--channels-last, or as recorded in the run)"
    return False, "NCHW (--no-channels-last, or as recorded in the run)"


def meta_batch_path(config: RunConfig, spec: NormSpec, *, training: bool = True) -> tuple[bool, str]:
    """Whether the run's tasks are adapted together (``torch.func.vmap``), and why (not).

    Training batches the tasks of a meta-batch; evaluation batches the fixed
    episodes (always on cloned buffers, without DropBlock, so only the normalizer decides).
    """
    if training:
        if config.meta_batch == 1:
            return False, "per-task loop: meta-batch of one task"
        if config.effective_buffer_policy == "global":
            return False, "per-task loop: buffer policy global (tasks would share buffers)"
        if config.dropblock:
            return False, "per-task loop: DropBlock draws random masks, which vmap would draw differently"
    vectorized, why = spec.vmap_status()
    if not vectorized:
        return False, f"{config.norm}: {why}"
    if config.vectorize is False:
        return False, "per-task loop: vectorize turned off"
    if config.vectorize is None and not config.device.startswith("cuda"):
        # Measured (docs/performance.md): vmap's grouped convolutions are 2-3x slower than
        # the per-task loop on a 2-core CPU; on a GPU the batched kernels are what pays.
        return False, "per-task loop: on CPU the loop is faster (--vectorize to force vmap)"
    return True, why


def _meta_batch_decisions(config: RunConfig, spec: NormSpec, algorithm: AlgorithmSpec) -> dict[str, Decision]:
    """How a gradient-based method runs its tasks (vmap or the loop) and treats the buffers."""
    if "vmap" in algorithm.supports:
        train, train_why = meta_batch_path(config, spec, training=True)
        evaluate, eval_why = meta_batch_path(config, spec, training=False)
    else:
        train, evaluate = False, False
        train_why = eval_why = f"per-task loop: {algorithm.name} adapts its tasks one at a time"
    calls = min(config.effective_vectorize_chunks, config.meta_batch) if train else 0
    if train:  # as vectorized.task_chunks splits a meta-batch
        train_why += f", {calls} vmap call{'s' * (calls > 1)} per step"
    return {
        "vectorized": Decision(train, train_why),
        "vectorized_eval": Decision(evaluate, eval_why),
        "vmap_calls": Decision(calls, "vmap calls per meta-batch" if train else "not vectorized"),
        "buffers": Decision(config.effective_buffer_policy, _buffer_roles(config, spec)),
    }


def _buffer_roles(config: RunConfig, spec: NormSpec) -> str:
    """What the MAML buffer policy does to this normalizer's buffers."""
    policy = config.effective_buffer_policy
    if policy == "global":
        return "global: every buffer written back to the meta-model (ablation)"
    if policy == "per_task":
        return "per_task: every buffer cloned per task and dropped (ablation)"
    if spec.learned_buffers:
        return f"by_role: statistics per task; {', '.join(spec.learned_buffers)} learned across tasks"
    return "by_role: statistics per task (no learned buffers)"


def _precision(config: RunConfig) -> Decision:
    """float32, or the autocast dtype of the backbone's forward passes."""
    if config.amp in (None, "none"):
        return Decision("float32", "float32")
    return Decision(config.amp, f"{config.amp} autocast (backbone forward passes), float32 weights")


def _threads_reason(threads: int | None) -> str:
    if threads is None:
        return "torch default (not recorded: CPU results then depend on the machine)"
    return f"{threads} torch threads, recorded: CPU results are bit-identical only at equal thread counts"
