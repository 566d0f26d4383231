"""The guide's learn2learn example (docs/guide.md) runs as printed and trains the swapped model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("learn2learn")

README = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


def _example() -> str:
    section = README.read_text(encoding="utf-8").split("## fewnorm inside learn2learn code", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    if match is None:
        raise AssertionError("the guide's learn2learn section has no python example")
    return match.group(1)


def test_readme_learn2learn_example_runs_and_updates_the_meta_model() -> None:
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    exec(compile(_example(), str(README), "exec"), namespace)  # the guide is ours: run it as printed
    loss, maml = namespace["loss"], namespace["maml"]
    assert isinstance(loss, torch.Tensor) and torch.isfinite(loss)
    grads = [p.grad for p in maml.parameters()]  # type: ignore[attr-defined]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # type: ignore[union-attr]
