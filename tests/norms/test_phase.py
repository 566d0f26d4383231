"""The support/query phase signal and the per-task scope."""

from __future__ import annotations

import pytest
from torch import nn

from fewnorm.norms import Phase, current_phase, norm_phase, task_load, task_scope, task_store


def test_phase_nests_and_resets() -> None:
    assert current_phase() is None
    with norm_phase("support"):
        assert current_phase() is Phase.SUPPORT
        with norm_phase(Phase.QUERY):
            assert current_phase() is Phase.QUERY
        assert current_phase() is Phase.SUPPORT
    assert current_phase() is None


def test_task_state_is_dropped_between_tasks() -> None:
    owner = nn.Identity()
    with task_scope():
        task_store(owner, 1)
        assert task_load(owner) == 1
    with task_scope():
        assert task_load(owner) is None
    assert task_load(owner) is None


def test_task_store_outside_scope_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="task_scope"):
        task_store(nn.Identity(), 1)


def test_unknown_phase_rejected() -> None:
    with pytest.raises(ValueError, match="train"), norm_phase("train"):
        pass
