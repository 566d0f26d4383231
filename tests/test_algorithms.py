"""The algorithm registry and the generic registry every extension point shares."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from fewnorm.algorithms import ALGORITHM_REGISTRY, AlgorithmSpec, get_algorithm_spec, register_algorithm
from fewnorm.cli.main import app
from fewnorm.config import RunConfig
from fewnorm.errors import UnknownNameError
from fewnorm.plugin_source import PLUGIN_SOURCE
from fewnorm.registry import NameTakenError, Registry


@dataclasses.dataclass(frozen=True)
class _Thing:
    name: str
    aliases: tuple[str, ...] = ()
    source: str = "fewnorm"


def test_names_ignore_case_and_separators_and_aliases_resolve() -> None:
    registry: Registry[_Thing] = Registry("thing")
    registry.register(_Thing("group-norm", aliases=("gn",)))
    assert registry.get("Group_Norm").name == registry.get("GN").name == "group-norm"
    with pytest.raises(UnknownNameError, match=r"unknown thing 'grup'. Did you mean 'group-norm'\?"):
        registry.get("grup")
    with pytest.raises(NameTakenError, match="thing name 'gn'"):
        registry.register(_Thing("other", aliases=("g-n",)))


def test_discovery_is_injected_runs_once_and_stamps_the_plugin_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def discover(registry: Registry[_Thing]) -> None:
        calls.append(1)
        token = PLUGIN_SOURCE.set("thing-plugin==1.0")
        try:
            registry.register(_Thing("found"))
        finally:
            PLUGIN_SOURCE.reset(token)

    registry: Registry[_Thing] = Registry("thing", discover)
    assert registry.get("found").source == "thing-plugin==1.0"
    assert registry.names() == ["found"] and calls == [1]
    monkeypatch.setenv("FEWNORM_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert Registry("thing", discover).names() == [] and calls == [1]


def test_every_builtin_algorithm_resolves_and_its_object_is_its_factorys() -> None:
    from fewnorm.episodes.algorithms import get_algorithm

    for spec in ALGORITHM_REGISTRY:
        config = RunConfig(algo=spec.name)
        assert get_algorithm(config).name == spec.name
    assert get_algorithm_spec("Proto").name == "protonet"
    assert RunConfig(algo="Prototypical").algo == "protonet"


@pytest.fixture
def reptile_like() -> Iterator[AlgorithmSpec]:
    spec = register_algorithm(
        AlgorithmSpec(
            name="third-party",
            factory="fewnorm.episodes.algorithms:FOMAML",
            summary="a registered method",
            paper="Me et al. 2026",
            family="gradient",
            defaults={"episodes": 77},
            norm_mode="support",
        )
    )
    yield spec
    ALGORITHM_REGISTRY.unregister(spec.name)


def test_the_configuration_reads_a_registered_algorithm(reptile_like: AlgorithmSpec) -> None:
    config = RunConfig(algo="Third_Party", norm="swbn")
    assert config.algo == "third-party" and config.episodes == 77
    assert config.norm_options["mode"] == "support"  # its own normalizer mode
    assert config.effective_train_ways == config.ways  # a gradient method's head fixes the ways


def test_algorithms_command_lists_and_shows(reptile_like: AlgorithmSpec) -> None:
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["algorithms", "--json"]).stdout)
    names = [a["name"] for a in listed if a["source"] == "fewnorm"]  # installed plugins' besides
    builtins = ["protonet", "maml", "fomaml", "anil", "reptile", "baseline", "baseline-pp"]
    assert names == [*builtins, "third-party"]  # built-ins as defined
    shown = runner.invoke(app, ["algorithms", "show", "maml"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "normalizer mode: transductive" in shown.stdout
    unknown = runner.invoke(app, ["algorithms", "show", "mammal"])
    assert unknown.exit_code == 2 and "Did you mean 'maml'?" in unknown.stderr
