"""The backbone registry: built-ins, names, a registered backbone built through the configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fewnorm.backbones import BackboneSpec, build_backbone, get_backbone_spec, register_backbone
from fewnorm.backbones import registry as registry_mod
from fewnorm.cli.main import app
from fewnorm.config import RunConfig, resolve_config
from fewnorm.errors import ConfigError, OptionError, UnknownNameError
from fewnorm.norms.spec import BoundNorm


class _Pool(nn.Module):
    """A one-block backbone: conv, the injected normalizer, global average pooling."""

    def __init__(self, in_channels: int, *, norm: BoundNorm, channels_last: bool, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.norm = norm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, hidden)
        return self.norm(self.conv(x)).mean(dim=(2, 3))


@pytest.fixture
def pool() -> Iterator[BackboneSpec]:
    spec = register_backbone(
        BackboneSpec(name="pool1", factory=_Pool, summary="one block", paper="none", options=("hidden",))
    )
    yield spec
    registry_mod.BACKBONE_REGISTRY.unregister(spec.name)


def test_builtins_and_their_options() -> None:
    assert [s.name for s in registry_mod.BUILTIN_BACKBONES] == ["conv4", "resnet12"]
    assert get_backbone_spec("ResNet-12").options == ("dropblock", "dropblock_size")
    assert registry_mod.backbones_taking("dropblock") == ["resnet12"]


def test_unknown_backbone_gets_the_closest_match_from_the_configuration() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown backbone 'resnet13'\. Did you mean 'resnet12'"):
        RunConfig(backbone="resnet13")
    with pytest.raises(ConfigError, match="dropblock applies to the resnet12 backbone only, not conv4"):
        resolve_config(overrides={"dropblock": 0.1})


def test_a_registered_backbone_gets_the_bound_normalizer_and_its_options_only(pool: BackboneSpec) -> None:
    model = build_backbone("POOL1", in_channels=3, norm="groupnorm", norm_options={"groups": 4}, hidden=8)
    assert isinstance(model, _Pool) and model(torch.rand(2, 3, 9, 9)).shape == (2, 8)
    assert "groups=4" in repr(model.norm)  # the options bound once, passed in with the constructor
    with pytest.raises(OptionError, match="dropblock applies to the resnet12 backbone only, not pool1"):
        build_backbone("pool1", in_channels=3, norm="batchnorm", dropblock=0.1)


def test_a_registered_backbone_trains_through_the_algorithm(pool: BackboneSpec) -> None:
    from fewnorm.episodes.algorithms import get_algorithm

    config = RunConfig(backbone="pool1", hidden=8)
    model = get_algorithm(config).build(config, 1)
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 8)


@pytest.mark.parametrize("name", ["conv4", "resnet12"])
def test_builtins_build_from_the_spec(name: str) -> None:
    options: dict[str, Any] = {"hidden": 8} if name == "conv4" else {}
    model = build_backbone(name, in_channels=3, norm="batchnorm", **options)
    assert type(model).__name__ == {"conv4": "Conv4", "resnet12": "ResNet12"}[name]


def test_backbones_command_lists_and_shows(pool: BackboneSpec) -> None:
    runner = CliRunner()
    listed = {b["name"]: b for b in json.loads(runner.invoke(app, ["backbones", "--json"]).stdout)}
    assert listed["conv4"]["options"] == ["hidden"] and "pool1" in listed
    shown = json.loads(runner.invoke(app, ["backbones", "show", "resnet-12", "--json"]).stdout)
    assert shown["name"] == "resnet12" and shown["source"] == "fewnorm"
    unknown = runner.invoke(app, ["backbones", "show", "conv5"])
    assert unknown.exit_code == 2 and "Did you mean 'conv4'?" in unknown.stderr
