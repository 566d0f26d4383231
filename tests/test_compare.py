"""The functional core of ``fewnorm compare``: sweep planning, paired statistics, result files."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest

from fewnorm.compare import (
    COMPARE_DEFAULTS,
    PlannedRun,
    RunResult,
    build_sweep,
    check_manifest,
    mean_curves,
    paired,
    paired_difference,
    read_run,
    read_sweep_file,
    summarize,
    t_ci95,
    write_results,
)
from fewnorm.errors import ConfigError, FewnormError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_file_then_options() -> None:
    sweep = build_sweep({"episodes": 50, "ways": 3, "norms": ["bn", "gn"]}, {"ways": 4}, seeds=2)
    assert sweep.base["episodes"] == 50  # the file beats compare's default
    assert sweep.base["ways"] == 4  # the option beats the file
    assert sweep.base["val_episodes"] == COMPARE_DEFAULTS["val_episodes"]
    assert [e.norm for e in sweep.norms] == ["batchnorm", "groupnorm"]
    assert sweep.seeds == (0, 1)
    runs = sweep.runs()
    assert [r.name for r in runs] == [
        "batchnorm-seed0",
        "batchnorm-seed1",
        "groupnorm-seed0",
        "groupnorm-seed1",
    ]
    assert runs[3].config["norm"] == "groupnorm" and runs[3].config["seed"] == 1
    # identical settings apart from normalizer and seed: the episodes are the same for everyone
    strip = ("norm", "norm_options", "seed")
    assert len({json.dumps({k: v for k, v in r.config.items() if k not in strip}) for r in runs}) == 1


def test_norms_option_replaces_the_file_and_options_are_typed() -> None:
    sweep = build_sweep(
        {"norms": ["bn"], "norm_options": {"groupnorm": {"groups": 4}}, "seeds": [3, 7]},
        {},
        norms=["groupnorm", "swbn"],
        norm_options={"gn": {"eps": "1e-3"}},
    )
    gn = sweep.norms[0]
    assert gn.options == {"groups": 4, "eps": 1e-3}
    assert sweep.seeds == (3, 7)
    assert sweep.baseline == "groupnorm"  # no batchnorm in the sweep: the first normalizer


def test_labelled_variants_of_one_normalizer() -> None:
    sweep = build_sweep(
        {"norms": [{"norm": "gn", "label": "gn1", "options": {"groups": 1}}, "groupnorm"]},
        {"hidden": 8},
        norm_options={"gn1": {"eps": "0.01"}},
        baseline="gn1",
    )
    assert [(e.label, e.options) for e in sweep.norms] == [
        ("gn1", {"groups": 1, "eps": 0.01}),
        ("groupnorm", {}),
    ]
    assert sweep.baseline == "gn1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"norms": ["bn", "batchnorm"]}, "appears twice"),
        ({"norms": ["bn"], "baseline": "swbn"}, "unknown baseline (not in this sweep) 'swbn'"),
        ({"norms": ["bn"], "norm_options": {"gn": {"groups": "2"}}}, "unknown normalizer in this sweep 'gn'"),
        ({"norms": ["bn"], "norm_options": {"bn": {"moda": "x"}}}, "has no option 'moda'"),
        ({"norms": ["batchnrm"]}, "Did you mean 'batchnorm'?"),
        ({"norms": []}, "no normalizers"),
        ({"norms": ["bn"], "seeds": 0}, "a positive count or a list of integer seeds, got 0"),
        ({"norms": ["bn"], "seeds": [1, 1]}, "repeats a seed"),
    ],
)
def test_bad_sweeps_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(FewnormError, match=None) as info:
        build_sweep(None, {}, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("norms: [bn]\nwayz: 3\n", "unknown key 'wayz'"),
        ("norm: bn\n", "use 'norms:' instead of 'norm:'"),
        ("seed: 1\n", "use 'seeds:' instead of 'seed:'"),
        ("ways: three\n", "key 'ways': Input should be a valid integer"),
    ],
)
def test_bad_sweep_files(content: str, message: str, tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(content)
    with pytest.raises(ConfigError) as info:
        read_sweep_file(file)
    assert message in str(info.value) and str(file) in str(info.value)


def test_key_follows_the_settings_only() -> None:
    a = build_sweep(None, {}, norms=["bn", "gn"])
    assert a.key() == build_sweep(None, {"data_root": "/elsewhere"}, norms=["bn", "gn"], baseline="gn").key()
    assert a.key() != build_sweep(None, {"episodes": 301}, norms=["bn", "gn"]).key()
    assert a.key() != build_sweep(None, {}, norms=["bn", "gn"], seeds=2).key()
    assert a.key() != build_sweep(None, {}, norms=["bn", "gn"], norm_options={"gn": {"groups": "2"}}).key()


def test_key_survives_a_new_optional_setting() -> None:
    """A key added to RunConfig later with a None default must not orphan existing sweeps."""
    a = build_sweep(None, {}, norms=["bn", "gn"])
    newer = dataclasses.replace(a, base=a.base | {"a_key_from_a_later_version": None})
    assert newer.key() == a.key()
    assert "split_file" not in a.settings()["base"]  # an unset optional key is not hashed
    # Pinned: a change here re-runs every user's sweeps; make it only when results would change.
    # 51c6556e41 until MAML's buffer policy default became by_role (unset, so unhashed).
    assert a.key() == "83f183350d"


def test_example_sweep_file_matches_the_command_line() -> None:
    file = ROOT / "configs" / "sweeps" / "omniglot-minimal-5w1s.yaml"
    sweep = build_sweep(read_sweep_file(file), {})
    norms = ["batchnorm", "groupnorm", "swbn", "patchnorm", "iternorm", "tasknorm-i"]
    options = build_sweep(None, {"dataset": "omniglot-minimal", "ways": 5, "shots": 1}, norms=norms)
    assert sweep.key() == options.key()  # both write to the same runs/compare-<key>


@pytest.mark.parametrize("file", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_sweep_file_validates(file: Path) -> None:
    sweep = build_sweep(read_sweep_file(file), {})
    assert sweep.norms and sweep.seeds and sweep.baseline in [e.label for e in sweep.norms]


def test_paired_difference_by_hand() -> None:
    a = {(0, 0): 1.0, (0, 1): 0.5, (1, 0): 0.75, (9, 9): 0.0}
    b = {(0, 0): 0.5, (0, 1): 0.5, (1, 0): 0.5}
    d = paired_difference(a, b)
    assert d is not None and d.n == 3  # (9, 9) has no partner
    assert d.mean == pytest.approx(0.25)  # differences 0.5, 0, 0.25
    assert d.ci95 == pytest.approx(1.96 * 0.25 / math.sqrt(3))  # sample std of (0.5, 0, 0.25) is 0.25
    assert paired_difference(a, {}) is None


def test_t_interval_for_few_seeds() -> None:
    iv = t_ci95([0.5, 0.7])
    assert iv.mean == pytest.approx(0.6)
    assert iv.ci95 == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))
    assert t_ci95([0.4]).ci95 == 0.0


def _result(label: str, seed: int, accs: list[float], status: str = "ok") -> RunResult:
    return RunResult(label, seed, status, "boom" if status != "ok" else "", tuple(accs), 10, 0.01,
                     ((1, accs[0] if accs else 0.0), (2, 0.5)))  # fmt: skip


def test_summarize_sorts_pairs_and_marks_divergence() -> None:
    sweep = build_sweep(None, {}, norms=["bn", "gn", "swbn"], seeds=2)
    results = [
        _result("batchnorm", 0, [0.5, 0.6, 0.7]),
        _result("batchnorm", 1, [0.5, 0.5, 0.5]),
        _result("groupnorm", 0, [0.8, 0.9, 1.0]),
        _result("groupnorm", 1, [0.7, 0.8, 0.9]),
        _result("swbn", 0, [0.9, 0.9, 0.9]),
        _result("swbn", 1, [], status="diverged"),
    ]
    rows = summarize(sweep, results)
    assert [r.label for r in rows] == ["groupnorm", "batchnorm", "swbn"]  # diverged last despite 0.9
    gn, bn, sw = rows
    assert gn.accuracy is not None and gn.accuracy.n == 6
    assert gn.accuracy.mean == pytest.approx(0.85)
    assert gn.difference is not None and gn.difference.mean == pytest.approx(0.85 - 0.55)
    assert gn.significant
    assert gn.seed_spread is not None and gn.seed_spread.n == 2
    assert bn.difference is None  # the baseline itself
    assert sw.status == "diverged (1/2 seeds)" and sw.message == "boom" and sw.seeds == 1
    assert sw.difference is not None and sw.difference.n == 3  # paired on seed 0 only
    assert mean_curves(results)["batchnorm"] == [(1, 0.5), (2, 0.5)]
    assert paired(results[:1]) == {(0, 0): 0.5, (0, 1): 0.6, (0, 2): 0.7}


def test_read_run_statuses(tmp_path: Path) -> None:
    planned = PlannedRun("batchnorm", 0, {})
    run = tmp_path / "r"
    assert read_run(run, planned).status == "missing"
    assert read_run(run, planned, failure="RuntimeError: x").status == "failed"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "val", "episode": 2, "accuracy": 0.4}\n{"kind": "va')
    (run / "diverged.json").write_text(json.dumps({"message": "diverged at 3", "episode": 3}))
    r = read_run(run, planned)
    assert (r.status, r.message, r.curve) == ("diverged", "diverged at 3", ((2, 0.4),))
    summary = {"test_accuracies": [0.5, 1.0], "parameters": 7, "train_seconds_per_episode": 0.1}
    (run / "summary.json").write_text(json.dumps(summary))
    r = read_run(run, planned)
    assert (r.status, r.test_accuracies, r.parameters) == ("ok", (0.5, 1.0), 7)


def test_result_files_and_manifest(tmp_path: Path) -> None:
    sweep = build_sweep(None, {}, norms=["bn", "gn"])
    results = [_result("batchnorm", 0, [0.5, 0.7]), _result("groupnorm", 0, [], status="diverged")]
    rows = summarize(sweep, results)
    write_results(tmp_path, sweep, rows, results)
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["batchnorm", "groupnorm"]
    assert data["rows"][0]["accuracy"] == pytest.approx(0.6)
    assert data["rows"][1]["status"] == "diverged"
    lines = list(csv.DictReader((tmp_path / "results.csv").read_text().splitlines()))
    assert lines[1]["label"] == "groupnorm" and lines[1]["accuracy"] == ""
    check_manifest(tmp_path, sweep)
    check_manifest(tmp_path, sweep)  # the same sweep again: fine
    with pytest.raises(ConfigError, match="holds a sweep with other settings"):
        check_manifest(tmp_path, build_sweep(None, {"episodes": 5}, norms=["bn", "gn"]))


def test_manifest_of_an_older_version_with_unset_keys_is_the_same_sweep(tmp_path: Path) -> None:
    sweep = build_sweep(None, {}, norms=["bn", "gn"])
    old = sweep.settings()
    old["base"] = old["base"] | {"split_file": None, "train_ways": None}  # hashed by older versions
    (tmp_path / "sweep.json").write_text(json.dumps({"key": "0123456789", "settings": old}))
    check_manifest(tmp_path, sweep)
    assert json.loads((tmp_path / "sweep.json").read_text())["key"] == sweep.key()  # rewritten
    old["base"]["episodes"] = 5
    (tmp_path / "sweep.json").write_text(json.dumps({"key": "0123456789", "settings": old}))
    with pytest.raises(ConfigError, match="holds a sweep with other settings"):
        check_manifest(tmp_path, sweep)
