"""A normalizer is resolved once and its options checked once per model, not once per block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fewnorm.backbones import Conv4, ResNet12, build_backbone, norm_layer
from fewnorm.config import RunConfig
from fewnorm.errors import OptionError
from fewnorm.norms import REGISTRY, get_norm
from fewnorm.norms.spec import NormSpec


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    seen = {"lookups": 0, "option_checks": 0}
    real_get, real_check = REGISTRY.get, NormSpec.check_options

    def get(name: str) -> NormSpec:
        seen["lookups"] += 1
        return real_get(name)

    def check(self: NormSpec, options: dict) -> dict:
        seen["option_checks"] += 1
        return real_check(self, options)

    monkeypatch.setattr(REGISTRY, "get", get)
    monkeypatch.setattr(NormSpec, "check_options", check)
    return seen


@pytest.mark.parametrize(
    "build",
    [
        lambda: Conv4(1, 8, "groupnorm", {"groups": 2}),
        lambda: ResNet12(3, "groupnorm", {"groups": 2}, widths=(8, 8)),
        lambda: build_backbone(
            "conv4", in_channels=1, norm="groupnorm", norm_options={"groups": 2}, hidden=8
        ),
    ],
    ids=["conv4", "resnet12", "build_backbone"],
)
def test_a_backbone_looks_its_normalizer_up_once(build: object, counts: dict[str, int]) -> None:
    build()  # type: ignore[operator]
    assert counts == {"lookups": 1, "option_checks": 1}


def test_a_runs_embedding_checks_the_options_once(counts: dict[str, int]) -> None:
    from fewnorm.episodes.algorithms import build_embedding
    from fewnorm.episodes.plan import plan_run

    config = RunConfig(norm="swbn", hidden=8)
    counts.update(lookups=0, option_checks=0)  # validating the config (its mode) is the boundary
    build_embedding(plan_run(config), 1)
    assert counts == {"lookups": 1, "option_checks": 1}


@pytest.mark.data
@pytest.mark.parametrize("algo", ["protonet", "maml"])
def test_one_run_looks_its_normalizer_up_once(
    algo: str, counts: dict[str, int], data_env: object, tmp_path: Path
) -> None:
    """A whole run, from a validated config to its summary: one lookup, one option check.

    The plan resolves the name; the loop, the algorithm, the backbone's blocks, the inner
    loop, ``versions.json`` and the summary read the plan.
    """
    from fewnorm.episodes.loop import train

    config = RunConfig(
        algo=algo, norm="swbn", hidden=8, episodes=2, val_every=2, val_episodes=2, test_episodes=2,
        meta_batch=2, threads=1,
    )  # fmt: skip
    counts.update(lookups=0, option_checks=0)  # validating the config (its mode) is the boundary
    summary = train(config, tmp_path / "run")
    assert counts == {"lookups": 1, "option_checks": 1}
    assert summary.plan["layout"]["reason"]  # every decision recorded with its reason


def test_a_bound_normalizer_builds_what_the_name_builds() -> None:
    bound = get_norm("swbn").bind(group_size=4)
    torch.manual_seed(0)
    a = Conv4(1, 8, bound).state_dict()
    torch.manual_seed(0)
    b = Conv4(1, 8, "swbn", {"group_size": 4}).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_options_are_checked_when_bound_and_never_given_twice() -> None:
    with pytest.raises(OptionError, match="has no option 'groups'"):
        get_norm("swbn").bind(groups=2)
    with pytest.raises(OptionError, match="bound to its options already"):
        norm_layer(get_norm("swbn").bind(), {"group_size": 4})
