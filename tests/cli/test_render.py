"""The run summary's rows that describe how a run computed: meta-batch path and precision."""

from __future__ import annotations

from fewnorm.cli.render import _meta_batch_rows, _precision
from fewnorm.config import RunConfig


def test_meta_batch_row_names_the_vmap_calls_per_step() -> None:
    vectorized = RunConfig(algo="maml", meta_batch=8, vectorize=True)
    assert _meta_batch_rows(vectorized)[0] == (
        "meta-batch",
        "8 tasks per step; vectorized meta-batches (torch.func.vmap over tasks), 4 vmap calls per step",
    )
    one_call = vectorized.model_copy(update={"vectorize_chunks": 1})
    assert _meta_batch_rows(one_call)[0][1].endswith(", 1 vmap call per step")
    small = RunConfig(algo="maml", meta_batch=2, vectorize=True)  # never more calls than tasks
    assert _meta_batch_rows(small)[0][1].endswith(", 2 vmap calls per step")
    loop = RunConfig(algo="maml", meta_batch=8, vectorize=False)
    assert "vmap call" not in _meta_batch_rows(loop)[0][1]
    assert _meta_batch_rows(RunConfig()) == []  # ProtoNet has no meta-batch path


def test_precision_row() -> None:
    assert _precision(None) == "float32" == _precision("none")
    assert _precision("bf16").startswith("bf16 autocast")


def test_buffers_row_names_the_policy_and_the_learned_state() -> None:
    assert _meta_batch_rows(RunConfig(algo="maml"))[1] == (
        "buffers",
        "by_role: statistics per task (no learned buffers)",
    )
    swbn = _meta_batch_rows(RunConfig(algo="maml", norm="swbn"))[1][1]
    assert swbn == "by_role: statistics per task; whitening_matrix learned across tasks"
    ablation = _meta_batch_rows(RunConfig(algo="maml", norm="swbn", buffer_policy="per_task"))[1][1]
    assert ablation.startswith("per_task:")
