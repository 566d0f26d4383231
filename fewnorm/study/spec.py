"""A study's grid: normalizers x algorithms x (ways, shots) x seeds, from a YAML spec and options.

A spec file (every key optional; options given on the command line win)::

    norms: all                     # or a list: names, or {norm, label, options} as in compare
    algos: [protonet, maml]        # any registered algorithm, by name
    settings: [5w1s, 5w5s]         # or ways: 5 and shots: [1, 5]
    seeds: 3                       # a count (seed, seed+1, ...) or a list
    baseline: batchnorm            # the normalizer paired differences are taken to
    probe_seeds: 3                 # initializations averaged by the probe
    transductive_episodes: 300     # test episodes re-scored one query at a time (default: all)
    set: {episodes: 300}           # run-configuration keys shared by every run
    per_algo:                      # per algorithm: norms, seeds, set (merged over the above)
      maml: {seeds: 2, set: {episodes: 200}}

``norms: all`` means every built-in normalizer. Each (algorithm, setting) cell is one
:class:`fewnorm.compare.Sweep`, so a study is a set of compare sweeps, resumable as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewnorm.compare import Sweep, build_sweep
from fewnorm.config import load_config_file
from fewnorm.errors import ConfigError

SPEC_KEYS = (
    "norms",
    "algos",
    "settings",
    "ways",
    "shots",
    "seeds",
    "baseline",
    "probe_seeds",
    "transductive_episodes",
    "set",
    "per_algo",
)
PER_ALGO_KEYS = ("norms", "seeds", "set")
_SETTING = re.compile(r"^\s*(\d+)\s*w(?:ay)?\s*(\d+)\s*s(?:hot)?\s*$", re.IGNORECASE)
#: The normalizers' package for ``norms: all`` (plugins are swept only when named).
BUILTIN_SOURCE = "fewnorm"


@dataclass(frozen=True)
class Cell:
    """One algorithm at one (ways, shots): a compare sweep, trained in ``directory``."""

    algo: str
    ways: int
    shots: int
    sweep: Sweep

    @property
    def name(self) -> str:
        """The cell's directory name inside the study directory, e.g. ``protonet-5w1s``."""
        return f"{self.algo}-{self.ways}w{self.shots}s"


@dataclass(frozen=True)
class StudySpec:
    """The validated grid and the study's own settings."""

    cells: tuple[Cell, ...]
    probe_seeds: int
    transductive_episodes: int | None
    source: dict[str, Any]  # the merged spec, as the report prints it

    def runs(self) -> int:
        """Training runs of the whole grid."""
        return sum(len(c.sweep.runs()) for c in self.cells)


def read_spec_file(path: Path) -> dict[str, Any]:
    """A study spec YAML, its keys checked."""
    data = load_config_file(path)
    _check_keys(data, SPEC_KEYS, f"study spec '{path}'")
    return data


def _check_keys(data: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}'; known keys: {', '.join(known)}")


def builtin_norms() -> list[str]:
    """Every normalizer fewnorm itself registers (``norms: all``)."""
    from fewnorm.norms import list_norms

    return [s.name for s in list_norms() if s.source == BUILTIN_SOURCE]


def _int_list(value: Any, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(type(v) is int and v > 0 for v in items):
        raise ConfigError(f"{where}: a positive integer or a list of them, got {value!r}")
    return items


def parse_settings(data: Mapping[str, Any]) -> list[tuple[int, int]]:
    """``settings: [5w1s]`` or ``ways:``/``shots:`` (each a number or a list) -> (ways, shots) pairs."""
    if "settings" in data and data["settings"] is not None:
        if "ways" in data or "shots" in data:
            raise ConfigError("give either settings: (e.g. [5w1s, 5w5s]) or ways:/shots:, not both")
        items = data["settings"] if isinstance(data["settings"], list) else [data["settings"]]
        out = []
        for item in items:
            match = _SETTING.match(str(item))
            if not match or int(match[1]) < 1 or int(match[2]) < 1:
                raise ConfigError(f"settings: '{item}' is not WAYSwSHOTSs, e.g. 5w1s")
            out.append((int(match[1]), int(match[2])))
    else:
        ways = _int_list(data.get("ways", 5), "ways")
        shots = _int_list(data.get("shots", 1), "shots")
        out = [(w, s) for w in ways for s in shots]
    if len(set(out)) != len(out):
        raise ConfigError(f"settings: {out} repeats a setting")
    return out


def _norm_items(value: Any, where: str) -> list[Any]:
    if value == "all":
        return list(builtin_norms())
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: 'all', or a list of normalizers (names or norm/label/options mappings)")
    return value


def build_study(data: Mapping[str, Any], options: Mapping[str, Any]) -> StudySpec:
    """The grid from a spec's ``data`` and command-line ``options`` (same keys; None: not given).

    Every name is resolved through its registry here (algorithms, normalizers, their
    options, the baseline), so a typo fails in one line before anything trains.
    """
    from fewnorm.algorithms import get_algorithm_spec

    given = {k: v for k, v in options.items() if v is not None}
    _check_keys(given, SPEC_KEYS, "options")
    merged = dict(data)
    if "settings" in given or "ways" in given or "shots" in given:  # options replace the file's grid
        merged = {k: v for k, v in merged.items() if k not in ("settings", "ways", "shots")}
    merged |= {k: v for k, v in given.items() if k != "set"}
    shared = dict(data.get("set") or {}) | dict(given.get("set") or {})
    if not isinstance(data.get("set") or {}, Mapping):
        raise ConfigError("set: a mapping of run-configuration keys to values")
    per_algo = data.get("per_algo") or {}
    if not isinstance(per_algo, Mapping):
        raise ConfigError("per_algo: a mapping of algorithm name to norms/seeds/set")
    algos = [get_algorithm_spec(str(a)).name for a in _norm_items(merged.get("algos", ["protonet"]), "algos")]
    overrides_by_algo: dict[str, dict[str, Any]] = {}
    for name, extra in per_algo.items():
        if not isinstance(extra, Mapping):
            raise ConfigError(f"per_algo: {name}: a mapping of norms, seeds, set")
        _check_keys(extra, PER_ALGO_KEYS, f"per_algo: {name}")
        overrides_by_algo[get_algorithm_spec(str(name)).name] = dict(extra)
    settings = parse_settings(merged)
    cells = []
    for algo in algos:
        own = overrides_by_algo.get(algo, {})
        norms = given.get("norms", own.get("norms", merged.get("norms", "all")))  # options win
        seeds = given.get("seeds", own.get("seeds", merged.get("seeds", 1)))
        base = shared | dict(own.get("set") or {}) | dict(given.get("set") or {})
        for ways, shots in settings:
            sweep = build_sweep(
                {"seeds": seeds},  # a count or a list, read as compare reads a sweep file's
                base | {"algo": algo, "ways": ways, "shots": shots},
                norms=_norm_items(norms, f"norms of {algo}"),
                baseline=merged.get("baseline"),
            )
            cells.append(Cell(algo, ways, shots, sweep))
    probe_seeds = merged.get("probe_seeds", 3)
    if type(probe_seeds) is not int or probe_seeds < 1:
        raise ConfigError(f"probe_seeds: a positive integer, got {probe_seeds!r}")
    episodes = merged.get("transductive_episodes")
    if episodes is not None and (type(episodes) is not int or episodes < 1):
        raise ConfigError(f"transductive_episodes: a positive integer, got {episodes!r}")
    source = {k: v for k, v in merged.items() if k not in ("set", "per_algo")}
    source |= {"set": shared, "per_algo": {k: v for k, v in overrides_by_algo.items()}}
    return StudySpec(tuple(cells), probe_seeds, episodes, source)
