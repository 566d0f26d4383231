"""Normalizer sweeps: planning, paired statistics and result files (the core of ``fewnorm compare``).

A sweep trains every normalizer under identical settings: the same seeds, hence
the same initial draws and training episodes, and the same fixed test episodes.
Test accuracies are therefore paired by ``(seed, episode)``, and the difference
to a baseline normalizer gets an interval from the per-episode differences,
much tighter than comparing two independent intervals.

Nothing here imports torch; the command (:mod:`fewnorm.cli.compare`) runs the sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewnorm.config import RunConfig, check_keys, load_config_file, validate_config
from fewnorm.errors import ConfigError
from fewnorm.metrics import Interval, mean_ci95
from fewnorm.names import normalize_name, unknown_name

if TYPE_CHECKING:
    from fewnorm.plots import Curves

#: Short settings ``fewnorm compare`` uses unless the sweep file or an option says otherwise:
#: about a quarter of ``fewnorm train``'s 1200 episodes, still 600 fixed test episodes.
COMPARE_DEFAULTS: dict[str, Any] = {"episodes": 300, "val_every": 100, "val_episodes": 50}
#: Keys a sweep file may hold besides the run configuration's.
SWEEP_KEYS = ("norms", "norm_options", "seeds", "baseline", "algos")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class NormEntry:
    """One normalizer of a sweep: ``label`` names it in tables, files and ``--norm-opt``."""

    label: str
    norm: str
    options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # run keys of its own: an algorithm's (--algos)


@dataclass(frozen=True)
class PlannedRun:
    label: str
    seed: int
    config: dict[str, Any]  # a resolved RunConfig, dumped

    @property
    def name(self) -> str:
        """The run's directory name inside the sweep directory."""
        return f"{self.label}-seed{self.seed}"


@dataclass(frozen=True)
class Sweep:
    """The settings shared by every run, the normalizers, the seeds and the baseline."""

    base: dict[str, Any]  # RunConfig values (its norm, norm_options and seed are set per run)
    norms: tuple[NormEntry, ...]
    seeds: tuple[int, ...]
    baseline: str

    def runs(self) -> list[PlannedRun]:
        """One run per (normalizer, seed), normalizer-major."""
        return [
            PlannedRun(
                e.label, s, self.base | e.settings | {"norm": e.norm, "norm_options": e.options, "seed": s}
            )
            for e in self.norms
            for s in self.seeds
        ]

    def settings(self) -> dict[str, Any]:
        """What decides the numbers (the data root and the baseline do not).

        Unset (``None``) keys are left out: they mean "the default", so a fewnorm version
        that adds an optional key keeps the keys, and the directories, of existing sweeps.
        """
        skip = ("data_root", "norm", "norm_options", "seed")
        base = {k: v for k, v in self.base.items() if k not in skip and v is not None}
        norms = [
            {"label": e.label, "norm": e.norm, "options": e.options}
            | ({"settings": e.settings} if e.settings else {})
            for e in self.norms
        ]
        return {"base": base, "norms": norms, "seeds": list(self.seeds)}

    def key(self) -> str:
        """A short hash of :meth:`settings`: the default sweep directory is ``runs/compare-<key>``."""
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def read_sweep_file(path: Path) -> dict[str, Any]:
    """A sweep YAML: run-configuration keys plus ``norms``, ``norm_options``, ``seeds``, ``baseline``."""
    data = load_config_file(path)
    for key, instead in (("norm", "norms"), ("seed", "seeds")):
        if key in data:
            raise ConfigError(f"sweep '{path}': use '{instead}:' instead of '{key}:'")
    known = [k for k in RunConfig.model_fields if k not in ("norm", "seed")] + list(SWEEP_KEYS)
    for key in data:
        if key not in known:
            raise ConfigError(f"sweep '{path}': unknown key '{key}'; known keys: {', '.join(known)}")
    base = {k: v for k, v in data.items() if k not in SWEEP_KEYS}
    check_keys(base, f"sweep '{path}'")  # options may complete it (e.g. --split-file)
    return data


def parse_entries(items: Sequence[Any], where: str) -> list[NormEntry]:
    """``["bn", {"norm": "gn", "label": "gn1", "options": {"groups": 1}}]`` -> entries (canonical names)."""
    from fewnorm.norms import get_norm

    entries = []
    for item in items:
        if isinstance(item, str):
            item = {"norm": item}
        if not isinstance(item, Mapping) or "norm" not in item or set(item) - {"norm", "label", "options"}:
            raise ConfigError(f"{where}: each normalizer is a name or a mapping of norm, label, options")
        spec = get_norm(str(item["norm"]))
        label = str(item.get("label", spec.name))
        if not _LABEL.match(label):
            raise ConfigError(f"{where}: label '{label}' must be letters, digits, '.', '_' or '-'")
        entries.append(NormEntry(label, spec.name, spec.check_options(dict(item.get("options") or {}))))
    labels = [normalize_name(e.label) for e in entries]
    duplicates = sorted({e.label for e, k in zip(entries, labels, strict=True) if labels.count(k) > 1})
    if duplicates:
        raise ConfigError(f"{where}: '{duplicates[0]}' appears twice; give variants distinct labels")
    if not entries:
        raise ConfigError(f"{where}: no normalizers; pass --norms a,b,c or norms: in the sweep file")
    return entries


def _find(entries: Sequence[NormEntry], name: str) -> NormEntry | None:
    """The entry ``name`` designates: its label, its normalizer's name or an alias of it."""
    key = normalize_name(name)
    for e in entries:
        if key == normalize_name(e.label):
            return e
    try:
        from fewnorm.norms import get_norm

        canonical = get_norm(name).name
    except LookupError:
        return None
    return next((e for e in entries if e.norm == canonical), None)


def with_options(entries: list[NormEntry], options: Mapping[str, Mapping[str, Any]]) -> list[NormEntry]:
    """Merge per-normalizer options (keyed by label, normalizer name or alias) into ``entries``."""
    from fewnorm.norms import get_norm

    out = list(entries)
    for key, opts in options.items():
        found = _find(out, key)
        if found is None:
            raise unknown_name("normalizer in this sweep", key, [e.label for e in entries])
        merged = get_norm(found.norm).check_options({**found.options, **opts})
        out[out.index(found)] = NormEntry(found.label, found.norm, merged)
    return out


def build_sweep(
    file_data: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    *,
    norms: Sequence[str] | None = None,
    norm_options: Mapping[str, Mapping[str, Any]] | None = None,
    seeds: int | None = None,
    baseline: str | None = None,
    algos: Sequence[str] | None = None,
) -> Sweep:
    """Compare's defaults, then the sweep file, then options (``None`` values are ignored).

    ``algos`` (or the file's ``algos:``) makes a grid: every normalizer under every
    algorithm, each labelled ``<algo>-<label>``, with the algorithm's own defaults.
    """
    data = dict(file_data or {})
    values = COMPARE_DEFAULTS | {k: v for k, v in data.items() if k not in SWEEP_KEYS}
    values |= {k: v for k, v in overrides.items() if v is not None}
    config = validate_config(values, "options")
    entries = parse_entries(list(norms) if norms else list(data.get("norms") or []), "norms")
    file_options = data.get("norm_options") or {}
    if not isinstance(file_options, Mapping):
        raise ConfigError("norm_options: a mapping of normalizer name (or label) to its options")
    entries = with_options(with_options(entries, file_options), norm_options or {})
    seed_spec = seeds if seeds is not None else data.get("seeds", 1)
    if isinstance(seed_spec, int) and not isinstance(seed_spec, bool) and seed_spec > 0:
        seed_list = tuple(config.seed + i for i in range(seed_spec))
    elif isinstance(seed_spec, list) and seed_spec and all(type(s) is int for s in seed_spec):
        seed_list = tuple(seed_spec)
    else:
        raise ConfigError(f"--seeds/seeds: a positive count or a list of integer seeds, got {seed_spec!r}")
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds: {list(seed_list)} repeats a seed")
    base = config.model_dump()
    entries = algorithm_grid(entries, base, values, list(algos or data.get("algos") or []))
    return Sweep(base, tuple(entries), seed_list, _baseline(entries, baseline or data.get("baseline")))


def algorithm_grid(
    entries: Sequence[NormEntry], base: Mapping[str, Any], values: Mapping[str, Any], algos: Sequence[str]
) -> list[NormEntry]:
    """Every entry under every algorithm of ``algos`` (none: ``entries`` as they are).

    Each algorithm's configuration is ``values`` (compare's defaults, the file, the options)
    with its ``algo``, validated, so that its own defaults apply (Reptile's meta step, the
    baselines' fine-tuning); what differs from ``base`` becomes the entries' settings.
    """
    if not algos:
        return list(entries)
    grid = []
    for algo in algos:
        dumped = validate_config({**values, "algo": algo}, "options").model_dump()
        own = {k: v for k, v in dumped.items() if k not in ("norm", "norm_options", "seed") and base[k] != v}
        own["algo"] = dumped["algo"]
        grid += [NormEntry(f"{dumped['algo']}-{e.label}", e.norm, e.options, own) for e in entries]
    return grid


def _baseline(entries: Sequence[NormEntry], asked: str | None) -> str:
    """The label of the baseline: ``asked``, else batchnorm when swept, else the first normalizer."""
    if asked is None:
        names = [e.label for e in entries if e.label == "batchnorm"]
        return names[0] if names else entries[0].label
    found = _find(entries, asked)
    if found is None:
        raise unknown_name("baseline (not in this sweep)", asked, [e.label for e in entries])
    return found.label


# --- results of the runs, read back from their directories -------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One run of a sweep as its directory tells it."""

    label: str
    seed: int
    status: str  # ok | diverged | failed | missing
    message: str = ""
    test_accuracies: tuple[float, ...] = ()
    parameters: int = 0
    seconds_per_episode: float = math.nan
    curve: tuple[tuple[int, float], ...] = ()  # (episode, validation accuracy)
    curve_ci95: tuple[float, ...] = ()  # the validation accuracy's 95% half-width at each point
    losses: tuple[tuple[int, float], ...] = ()  # (episode, training loss since the last record)
    collapse: str = ""  # why its test accuracy is no result (fewnorm.collapse), if it is not


def read_run(path: Path, run: PlannedRun, failure: str = "") -> RunResult:
    """The result in ``path``; ``failure`` is the error message of a run that crashed this time."""
    from fewnorm.runs import DIVERGED, METRICS, SUMMARY, run_status

    records = _json_lines(path / METRICS)
    vals = [r for r in records if r.get("kind") == "val"]
    curve = tuple((r["episode"], r["accuracy"]) for r in vals)
    extra: dict[str, Any] = {
        "curve_ci95": tuple(float(r.get("ci95") or 0.0) for r in vals),
        "losses": tuple((r["episode"], r["loss"]) for r in records if r.get("kind") == "train"),
    }
    status = run_status(path)
    if status == "finished":
        s = json.loads((path / SUMMARY).read_text())
        return RunResult(
            run.label,
            run.seed,
            "ok",
            test_accuracies=tuple(s["test_accuracies"]),
            parameters=s["parameters"],
            seconds_per_episode=s["train_seconds_per_episode"],
            curve=curve,
            collapse=_collapse_line(s, records),
            **extra,
        )
    if status == "diverged":
        message = json.loads((path / DIVERGED).read_text()).get("message", "diverged")
        return RunResult(run.label, run.seed, "diverged", message, curve=curve, **extra)
    return RunResult(run.label, run.seed, "failed" if failure else "missing", failure, curve=curve, **extra)


def _collapse_line(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    """The run's collapse diagnosis: as its summary recorded it, else made now (older runs)."""
    from fewnorm.collapse import Collapse, diagnose, last_train_accuracy

    if "collapse" in summary:
        found = summary["collapse"]
        return Collapse(**found).line() if found else ""
    config = summary.get("config", {})
    made = diagnose(summary["test_accuracies"], config.get("ways", 0), last_train_accuracy(records), config)
    return made.line() if made else ""


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a torn last line of a killed run
    return out


# --- statistics ----------------------------------------------------------------------------------

#: Two-sided 95% Student t quantiles for 1..30 degrees of freedom (1.96 beyond).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t_ci95(values: Sequence[float]) -> Interval:
    """Mean and Student-t 95% half-width: for few values, such as one mean per seed."""
    n = len(values)
    if n < 2:
        return mean_ci95(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    return Interval(mean, t * std / math.sqrt(n), n)


def paired(results: Sequence[RunResult]) -> dict[tuple[int, int], float]:
    """``(seed, episode) -> accuracy`` over the finished runs."""
    return {(r.seed, i): a for r in results if r.status == "ok" for i, a in enumerate(r.test_accuracies)}


def paired_difference(
    a: Mapping[tuple[int, int], float], b: Mapping[tuple[int, int], float]
) -> Interval | None:
    """Mean of ``a - b`` over the shared ``(seed, episode)`` keys with its 95% interval."""
    keys = sorted(a.keys() & b.keys())
    return mean_ci95([a[k] - b[k] for k in keys]) if keys else None


@dataclass(frozen=True)
class Row:
    """One normalizer in the results table."""

    label: str
    norm: str
    options: dict[str, Any]
    status: str  # ok, or e.g. "diverged (1/3 seeds)"
    seeds: int  # finished seeds
    accuracy: Interval | None  # over every (seed, episode)
    seed_spread: Interval | None  # Student-t over the per-seed means (several seeds)
    difference: Interval | None  # paired, to the baseline
    seconds_per_episode: float
    parameters: int
    message: str = ""

    @property
    def significant(self) -> bool:
        """Whether the paired difference's 95% interval excludes zero."""
        d = self.difference
        return d is not None and d.n > 1 and abs(d.mean) > d.ci95


def summarize(sweep: Sweep, results: Sequence[RunResult]) -> list[Row]:
    """One row per normalizer, finished ones sorted by accuracy, then the rest."""
    baseline = paired([r for r in results if r.label == sweep.baseline])
    rows = []
    for entry in sweep.norms:
        runs = [r for r in results if r.label == entry.label]
        ok = [r for r in runs if r.status == "ok"]
        accs = [a for r in ok for a in r.test_accuracies]
        bad = [r for r in runs if r.status != "ok"]
        collapsed = [r for r in ok if r.collapse]
        status = "ok"
        if bad:
            kind = bad[0].status
            status = kind if len(bad) == len(runs) else f"{kind} ({len(bad)}/{len(runs)} seeds)"
        elif collapsed:  # measured, but no result: never ranked among the normalizers that work
            part = "" if len(collapsed) == len(runs) else f" ({len(collapsed)}/{len(runs)} seeds)"
            status = f"collapsed{part}"
        rows.append(
            Row(
                entry.label,
                entry.norm,
                entry.options,
                status,
                len(ok),
                mean_ci95(accs) if accs else None,
                t_ci95([math.fsum(r.test_accuracies) / len(r.test_accuracies) for r in ok])
                if len(ok) > 1
                else None,
                None if entry.label == sweep.baseline else paired_difference(paired(ok), baseline),
                math.fsum(r.seconds_per_episode for r in ok) / len(ok) if ok else math.nan,
                ok[0].parameters if ok else 0,
                bad[0].message if bad else (collapsed[0].collapse if collapsed else ""),
            )
        )
    return sorted(rows, key=lambda r: (r.status != "ok", -(r.accuracy.mean if r.accuracy else -1.0)))


def mean_curves(results: Sequence[RunResult]) -> dict[str, list[tuple[int, float]]]:
    """Validation accuracy per episode, averaged over each normalizer's seeds."""
    sums: dict[str, dict[int, list[float]]] = {}
    for r in results:
        for episode, acc in r.curve:
            sums.setdefault(r.label, {}).setdefault(episode, []).append(acc)
    return {k: [(e, math.fsum(v) / len(v)) for e, v in sorted(c.items())] for k, c in sums.items()}


def sweep_curves(results: Sequence[RunResult]) -> dict[str, Curves]:
    """Per normalizer, validation accuracy and training loss against episodes, with 95% intervals.

    Over several seeds: the mean over the seeds at each episode and its Student-t interval;
    with one seed, the validation accuracy's own interval over the validation episodes (the
    loss then has none).
    """
    from fewnorm.plots import CurveBand, Curves

    accs: dict[str, dict[int, list[tuple[float, float]]]] = {}
    losses: dict[str, dict[int, list[float]]] = {}
    for r in results:
        cis = r.curve_ci95 or (0.0,) * len(r.curve)
        for (episode, acc), ci in zip(r.curve, cis, strict=True):
            accs.setdefault(r.label, {}).setdefault(episode, []).append((acc, ci))
        for episode, loss in r.losses:
            losses.setdefault(r.label, {}).setdefault(episode, []).append(loss)

    def band(values: list[float], own: float = 0.0) -> tuple[float, float]:
        if len(values) > 1:
            interval = t_ci95(values)
            return interval.mean, interval.ci95
        return values[0], own

    out: dict[str, Curves] = {}
    for label in dict.fromkeys([*accs, *losses]):
        acc_points = tuple(
            (e, *band([a for a, _ in v], v[0][1])) for e, v in sorted(accs.get(label, {}).items())
        )
        loss_points = tuple((e, *band(v)) for e, v in sorted(losses.get(label, {}).items()))
        out[label] = Curves(CurveBand(acc_points), CurveBand(loss_points))
    return out


# --- files ---------------------------------------------------------------------------------------

MANIFEST = "sweep.json"


def _unset_dropped(settings: Any) -> Any:
    if not isinstance(settings, dict) or not isinstance(settings.get("base"), dict):
        return None
    return settings | {"base": {k: v for k, v in settings["base"].items() if v is not None}}


def check_manifest(out: Path, sweep: Sweep) -> None:
    """Refuse a sweep directory that holds another sweep; write the manifest otherwise."""
    from fewnorm.runs import atomic_write_text

    file = out / MANIFEST
    if file.is_file():
        try:
            stored = json.loads(file.read_text())
        except ValueError:
            stored = {}
        same = stored.get("key") == sweep.key() or _unset_dropped(stored.get("settings")) == sweep.settings()
        if not same:  # the settings test accepts manifests written before unset keys were dropped
            raise ConfigError(f"'{out}' holds a sweep with other settings; choose another --out")
    data = {"key": sweep.key(), "settings": sweep.settings(), "runs": [r.name for r in sweep.runs()]}
    atomic_write_text(file, json.dumps(data, indent=2) + "\n")


def row_record(row: Row) -> dict[str, Any]:
    """A flat mapping of ``row`` (a CSV line, a JSON object); accuracies as fractions."""
    acc, diff, spread = row.accuracy, row.difference, row.seed_spread
    return {
        "label": row.label,
        "norm": row.norm,
        "options": json.dumps(row.options, sort_keys=True),
        "status": row.status,
        "seeds": row.seeds,
        "accuracy": acc.mean if acc else None,
        "ci95": acc.ci95 if acc else None,
        "episodes": acc.n if acc else 0,
        "seed_ci95": spread.ci95 if spread else None,
        "difference": diff.mean if diff else None,
        "difference_ci95": diff.ci95 if diff else None,
        "significant": row.significant,
        "ms_per_episode": 1e3 * row.seconds_per_episode if math.isfinite(row.seconds_per_episode) else None,
        "parameters": row.parameters,
        "message": row.message,
    }


def write_results(out: Path, sweep: Sweep, rows: Sequence[Row], results: Sequence[RunResult]) -> None:
    """``results.json`` (settings, rows, runs) and ``results.csv`` (rows), written atomically."""
    import csv
    import io

    from fewnorm.runs import atomic_write_text

    records = [row_record(r) for r in rows]
    runs = [
        {"label": r.label, "seed": r.seed, "status": r.status, "message": r.message, "collapse": r.collapse,
         "accuracy": mean_ci95(r.test_accuracies).mean if r.test_accuracies else None}
        for r in results
    ]  # fmt: skip
    data = {"key": sweep.key(), "baseline": sweep.baseline, "settings": sweep.settings()}
    atomic_write_text(out / "results.json", json.dumps(data | {"rows": records, "runs": runs}, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else ["label"])
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(out / "results.csv", buffer.getvalue())
