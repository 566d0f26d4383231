"""The run plan: names resolved once, and each decision of how a run computes, with its reason."""

from __future__ import annotations

import pytest

from fewnorm.config import RunConfig
from fewnorm.episodes.plan import plan_run
from fewnorm.errors import OptionError, UnknownNameError


def reason(config: RunConfig, name: str) -> str:
    return plan_run(config).decisions[name].reason


def test_vectorized_decision_names_the_vmap_calls_per_step() -> None:
    vectorized = RunConfig(algo="maml", meta_batch=8, vectorize=True)
    assert reason(vectorized, "vectorized") == (
        "vectorized meta-batches (torch.func.vmap over tasks), 4 vmap calls per step"
    )
    assert plan_run(vectorized).decided("vmap_calls") == 4
    one_call = vectorized.model_copy(update={"vectorize_chunks": 1})
    assert reason(one_call, "vectorized").endswith(", 1 vmap call per step")
    small = RunConfig(algo="maml", meta_batch=2, vectorize=True)  # never more calls than tasks
    assert reason(small, "vectorized").endswith(", 2 vmap calls per step")
    loop = plan_run(RunConfig(algo="maml", meta_batch=8, vectorize=False))
    assert loop.decided("vectorized") is False and loop.decided("vmap_calls") == 0
    assert "vectorized" not in plan_run(RunConfig()).decisions  # ProtoNet has no meta-batch path


def test_precision_decision() -> None:
    assert plan_run(RunConfig()).decided("precision") == "float32"
    assert reason(RunConfig(amp="bf16"), "precision").startswith("bf16 autocast")


def test_buffers_decision_names_the_policy_and_the_learned_state() -> None:
    assert reason(RunConfig(algo="maml"), "buffers") == "by_role: statistics per task (no learned buffers)"
    swbn = reason(RunConfig(algo="maml", norm="swbn"), "buffers")
    assert swbn == "by_role: statistics per task; whitening_matrix learned across tasks"
    assert reason(RunConfig(algo="maml", norm="swbn", buffer_policy="per_task"), "buffers").startswith(
        "per_task:"
    )


def test_the_plan_resolves_names_and_layout_once() -> None:
    plan = plan_run(RunConfig(norm="GN", norm_options={"groups": "8"}))
    assert plan.config.norm == "groupnorm" and plan.config.norm_options == {"groups": 8}
    assert plan.norm.spec.name == "groupnorm" and plan.norm.options == {"groups": 8}
    assert plan.config.channels_last is plan.decided("layout")  # recorded resolved
    assert plan.algorithm is plan.algorithm  # made once
    assert plan.algorithm.config is plan.config


def test_the_python_api_checks_the_normalizer_as_the_cli_does() -> None:
    """``plan_run`` (and so ``train(config)``) refuses what ``fewnorm train`` refuses, in one line."""
    with pytest.raises(UnknownNameError, match="groupnorm"):
        plan_run(RunConfig(norm="grupnorm"))
    with pytest.raises(OptionError, match="has no option 'group'"):
        plan_run(RunConfig(norm="groupnorm", norm_options={"group": 8}))
    with pytest.raises(OptionError, match="positive divisor of the 64 channels"):  # before any data
        plan_run(RunConfig(norm="groupnorm", norm_options={"groups": 7}))
