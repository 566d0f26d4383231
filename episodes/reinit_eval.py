"""Re-scoring MAML-family checkpoints at other ways: the fixed episodes, a fresh head each.

:func:`evaluate_with_protocol` is :func:`~fewnorm.episodes.evaluation.evaluate_checkpoint`
for ProtoNet runs and for MAML-family runs at their trained ways (the same code path, the
same numbers); at other ways, or when ``head_init`` asks for it, every fixed test episode
(episode ``i`` from seed ``test_seed + i``, as always) is scored with a fresh head
(:mod:`fewnorm.episodes.reinit`). The head protocol comes back with the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fewnorm.algorithms import get_algorithm_spec
from fewnorm.config import RunConfig, validate_config
from fewnorm.episodes.evaluation import EvalResult, check_counts, evaluate_checkpoint
from fewnorm.episodes.reinit import MAML_FAMILY, HeadProtocol, head_protocol, scoring_algorithm
from fewnorm.errors import ConfigError
from fewnorm.runs import load_checkpoint


def evaluate_with_protocol(
    path: Path,
    *,
    head_init: str | None = None,
    ways: int | None = None,
    shots: int | None = None,
    queries: int | None = None,
    episodes: int | None = None,
    split: str = "test",
    data_root: Path | None = None,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
) -> tuple[EvalResult, HeadProtocol | None]:
    """:func:`evaluate_checkpoint` (ProtoNet runs; MAML-family runs with their trained head),
    or the same fixed episodes scored with a fresh head per episode, and the head protocol."""
    settings: dict[str, Any] = {"ways": ways, "shots": shots, "queries": queries, "episodes": episodes}
    settings |= {"split": split, "data_root": data_root, "device": device, "overrides": overrides}
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, got '{split}'")
    check_counts(ways=ways, shots=shots, queries=queries, episodes=episodes)
    state = load_checkpoint(path)
    config = RunConfig.model_validate(state["config"])
    if overrides:  # as evaluate_checkpoint: evaluation-time settings only
        config = validate_config(config.model_dump() | overrides, "options")
    protocol = head_protocol(config, head_init, config.ways if ways is None else ways, fresh=False)
    fine_tunes = get_algorithm_spec(config.algo).family == "finetune"  # its fresh head's steps
    if protocol is None and not fine_tunes and (overrides or {}).get("inner_steps_test") is not None:
        raise ConfigError(f"--inner-steps-test applies to {MAML_FAMILY}; this run is '{config.algo}'")
    if protocol is None or protocol.head_init == "trained":  # today's path, bit-identical numbers
        return evaluate_checkpoint(path, **settings, on_stage=on_stage), protocol
    # The same fixed episodes (episode i from seed + i), each scored with a fresh head.
    init = protocol.head_init
    settings["ways"] = protocol.ways
    result = evaluate_checkpoint(
        path, **settings, on_stage=on_stage, scorer=lambda run: scoring_algorithm(run, init)
    )
    return result, protocol
