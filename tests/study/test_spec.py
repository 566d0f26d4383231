"""A study's grid from its spec and options: cells, names through the registries, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewnorm.algorithms import ALGORITHM_REGISTRY, AlgorithmSpec, register_algorithm
from fewnorm.errors import ConfigError, UnknownNameError
from fewnorm.study.spec import build_study, builtin_norms, parse_settings, read_spec_file

PRESET = Path(__file__).resolve().parents[2] / "configs" / "study" / "omniglot-minimal.yaml"


def test_the_published_grid() -> None:
    spec = build_study(read_spec_file(PRESET), {})
    protonet, maml, baseline_pp = spec.cells
    names = [c.name for c in spec.cells]
    assert names == ["protonet-5w1s", "maml-5w1s", "baseline-pp-5w1s"]
    assert [e.norm for e in protonet.sweep.norms] == builtin_norms() and len(protonet.sweep.seeds) == 3
    labels = [e.label for e in maml.sweep.norms]
    assert len(labels) >= 8 and len(maml.sweep.seeds) == 2
    assert {"batchnorm-transductive", "batchnorm-running", "batchnorm-support", "tasknorm-i", "none"} <= set(
        labels
    )
    assert maml.sweep.baseline == "batchnorm-transductive"  # "batchnorm" designates its first entry
    assert [e.label for e in baseline_pp.sweep.norms] == labels
    assert spec.runs() == 17 * 3 + 2 * 10 * 2 and spec.transductive_episodes == 40


def test_builtin_norms_leave_plugins_out() -> None:
    assert "batchnorm" in builtin_norms() and "examplenorm" not in builtin_norms()


@pytest.mark.parametrize(
    ("data", "pairs"),
    [
        ({}, [(5, 1)]),
        ({"settings": ["5w1s", "20w5s"]}, [(5, 1), (20, 5)]),
        ({"settings": "5way1shot"}, [(5, 1)]),
        ({"ways": [5, 20], "shots": 1}, [(5, 1), (20, 1)]),
    ],
)
def test_settings(data: dict[str, object], pairs: list[tuple[int, int]]) -> None:
    assert parse_settings(data) == pairs


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"settings": ["5w1s"], "ways": 5}, "not both"),
        ({"settings": ["5w0s"]}, "is not WAYSwSHOTSs"),
        ({"settings": ["5w1s", "5w1s"]}, "repeats"),
        ({"shots": [1, -1]}, "positive integer"),
    ],
)
def test_bad_settings(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(data)


def test_options_win_over_the_file_and_per_algorithm_blocks() -> None:
    data = {"algos": ["protonet", "maml"], "norms": ["batchnorm", "groupnorm"], "seeds": 2,
            "per_algo": {"maml": {"norms": ["groupnorm"], "seeds": 1, "set": {"episodes": 7}}},
            "set": {"episodes": 11}}  # fmt: skip
    spec = build_study(data, {})
    assert [len(c.sweep.norms) for c in spec.cells] == [2, 1]
    assert [c.sweep.base["episodes"] for c in spec.cells] == [11, 7]
    assert [len(c.sweep.seeds) for c in spec.cells] == [2, 1]
    spec = build_study(data, {"norms": ["none"], "seeds": 3, "settings": ["5w5s"], "set": {"episodes": 5}})
    assert [[e.label for e in c.sweep.norms] for c in spec.cells] == [["none"], ["none"]]
    assert [(c.shots, len(c.sweep.seeds), c.sweep.base["episodes"]) for c in spec.cells] == [(5, 3, 5)] * 2


def test_a_newly_registered_algorithm_joins_by_name() -> None:
    spec = register_algorithm(
        AlgorithmSpec(name="study-test-method", factory="fewnorm.episodes.algorithms:ProtoNet",
                      summary="test", paper="none", family="metric")
    )  # fmt: skip
    try:
        (cell,) = build_study({"algos": ["study-test-method"], "norms": ["batchnorm"]}, {}).cells
    finally:
        ALGORITHM_REGISTRY.unregister(spec.name)
    assert cell.name == "study-test-method-5w1s" and cell.sweep.base["algo"] == "study-test-method"


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ({"algos": ["protonett"]}, UnknownNameError, "Did you mean 'protonet'"),
        ({"norms": ["groupnrm"]}, UnknownNameError, "Did you mean 'groupnorm'"),
        ({"per_algo": {"mamel": {}}}, UnknownNameError, "Did you mean 'maml'"),
        ({"per_algo": {"maml": {"episodes": 3}}}, ConfigError, "unknown key 'episodes'"),
        ({"norms": 7}, ConfigError, "'all', or a list of normalizers"),
        ({"probe_seeds": 0}, ConfigError, "probe_seeds"),
        ({"transductive_episodes": "all"}, ConfigError, "transductive_episodes"),
        ({"seeds": [0, 0]}, ConfigError, "repeats a seed"),
        ({"set": {"episodez": 3}}, ConfigError, "episodez"),
    ],
)
def test_bad_specs_are_one_line(data: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        build_study(data, {})
    assert "\n" not in str(caught.value)


def test_unknown_file_key(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text("algoz: [maml]\n")
    with pytest.raises(ConfigError, match="unknown key 'algoz'"):
        read_spec_file(file)
