"""Running a study (``fewnorm study``): every cell's sweep, then the measurements, all resumable.

For each cell of the grid (:class:`fewnorm.study.spec.Cell`, one compare sweep in
``<out>/<algo>-<W>w<S>s/``) the engine trains the runs that are not finished yet; then,
each stored under ``<out>`` once and read back on the next invocation:

- ``transductive/<cell>/<run>.json`` -- the run's test accuracies with each query scored alone;
- ``memory/<cell>/<label>.json`` -- bytes autograd keeps for one training step;
- ``probe/<backbone>/<label>-<options hash>.json`` -- the properties at initialization.

Every file is written atomically when its measurement ends, so a killed study loses at
most the runs and the measurement in flight, and a second invocation retrains and
re-measures nothing. ``study.json`` gathers everything for the reports; ``spec.yaml`` is the grid, merged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from fewnorm.compare import NormEntry, Sweep, read_run
from fewnorm.config import RunConfig
from fewnorm.errors import ConfigError
from fewnorm.runs import SUMMARY, RunDir, atomic_write_text, versions
from fewnorm.study.spec import Cell, StudySpec

#: Trains the runs of a sweep that are not finished in its folder (locked meanwhile; its manifest
#: checked, as ``fewnorm compare`` does); returns ``run name -> failure message``.
Engine = Callable[[Sweep, Path], dict[str, str]]
#: Told each step of the study as it starts: ``(what, done, total)``.
Progress = Callable[[str, int, int], None]
RAW = "study.json"
SPEC = "spec.yaml"


def _cached(path: Path, key: str, measure: Callable[[], Any]) -> Any:
    """The value stored at ``path`` for ``key``, else ``measure()``, stored atomically and returned.

    ``key`` names what the value was measured on (a run's summary, a configuration): a run
    trained again, or other settings under the same name, are measured again.
    """
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored["key"] == key:
                return stored["value"]
        except (ValueError, KeyError, TypeError):
            pass  # torn or from elsewhere: measure again
    value = measure()
    atomic_write_text(path, json.dumps({"key": key, "value": value}) + "\n")
    return value


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _settings(config: RunConfig) -> dict[str, Any]:
    """What decides a measurement: the configuration without where the data lives."""
    return {k: v for k, v in config.model_dump().items() if k != "data_root"}


def _options_key(entry: NormEntry) -> str:
    text = json.dumps({"norm": entry.norm, "options": entry.options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_study(
    spec: StudySpec, out: Path, engine: Engine, *, invoked: str = "", progress: Progress | None = None
) -> dict[str, Any]:
    """Train and measure what is missing, then write and return the raw results (``study.json``).

    ``spec.yaml`` (the merged spec: file and options) is written first, and the reproducing
    command names it; ``invoked`` is the command line as typed, kept beside it. The study
    directory and each cell's sweep directory belong to this process meanwhile.
    """
    import yaml

    from fewnorm.episodes.study_measure import one_at_a_time, probe_at_init, step_memory

    tell = progress or (lambda what, done, total: None)
    cells = []
    with RunDir(out).lock("study directory"):
        _check_spec(out / SPEC, spec.source)
        atomic_write_text(out / SPEC, yaml.safe_dump(spec.source, sort_keys=False))
        for i, cell in enumerate(spec.cells):
            folder = out / cell.name
            tell(f"train {cell.name}", i, len(spec.cells))
            failures = engine(cell.sweep, folder)
            runs = []
            planned = cell.sweep.runs()
            for j, run in enumerate(planned):
                result = read_run(folder / run.name, run, failures.get(run.name, ""))
                alone = None
                if result.status == "ok":
                    tell(f"one query at a time {cell.name}", j, len(planned))
                    file = out / "transductive" / cell.name / f"{run.name}.json"
                    measure = partial(one_at_a_time, folder / run.name, spec.transductive_episodes)
                    summary = (folder / run.name / SUMMARY).read_text()
                    alone = _cached(file, _digest(summary, spec.transductive_episodes), measure)
                runs.append(dataclasses.asdict(result) | {"one_at_a_time": alone})
            memory: dict[str, int] = {}
            for entry in cell.sweep.norms:
                tell(f"memory {cell.name}", len(memory), len(cell.sweep.norms))
                config = _entry_config(cell.sweep, entry)
                file = out / "memory" / cell.name / f"{entry.label}.json"
                key = _digest(_settings(config))
                memory[entry.label] = _cached(file, key, partial(step_memory, config))
            cells.append(_cell_record(cell, runs, memory))
        probes = _probes(spec, out, tell, probe_at_init)
        raw = {
            "command": f"fewnorm study {out / SPEC} --out {out}",
            "spec_file": str(out / SPEC),
            "out": str(out),
            "invoked": invoked,
            "versions": versions(),
            "spec": spec.source,
            "probe_seeds": spec.probe_seeds,
            "cells": cells,
            "probes": probes,
        }
        atomic_write_text(out / RAW, json.dumps(raw, indent=1, default=str) + "\n")
    return raw


def _comparable(source: Any) -> Any:
    """A spec without where the data lives (the same study, read from elsewhere)."""
    if not isinstance(source, dict):
        return source
    shared = {k: v for k, v in (source.get("set") or {}).items() if k != "data_root"}
    return source | {"set": shared}


def _check_spec(file: Path, source: dict[str, Any]) -> None:
    """Refuse a study directory that holds another study: its report would lose cells or mix grids."""
    import yaml

    if not file.is_file():
        return
    try:
        stored = yaml.safe_load(file.read_text())
    except yaml.YAMLError:
        stored = None
    if _comparable(json.loads(json.dumps(stored, default=str))) != _comparable(
        json.loads(json.dumps(source, default=str))
    ):
        raise ConfigError(
            f"'{file.parent}' holds a study with another grid ({file}); choose another --out, "
            f"or run {file} itself to resume it"
        )


def _entry_config(sweep: Sweep, entry: NormEntry) -> RunConfig:
    """The run configuration of ``entry`` in ``sweep`` (its first seed)."""
    run = next(r for r in sweep.runs() if r.label == entry.label)
    return RunConfig.model_validate(run.config)


def _cell_record(cell: Cell, runs: list[dict[str, Any]], memory: dict[str, int]) -> dict[str, Any]:
    base = cell.sweep.base
    return {
        "name": cell.name,
        "algo": cell.algo,
        "ways": cell.ways,
        "shots": cell.shots,
        "backbone": base["backbone"],
        "baseline": cell.sweep.baseline,
        "settings": cell.sweep.settings(),
        "norms": [{"label": e.label, "norm": e.norm, "options": e.options} for e in cell.sweep.norms],
        "runs": runs,
        "memory_bytes": memory,
    }


def _probe_records(probe: Callable[[RunConfig, range], Any], config: RunConfig, seeds: range) -> list[Any]:
    return [dataclasses.asdict(layer) for layer in probe(config, seeds)]


def _probes(
    spec: StudySpec, out: Path, tell: Progress, probe: Callable[[RunConfig, range], Any]
) -> list[dict[str, Any]]:
    """One probe per (backbone, normalizer with its options) of the grid, at the first cell's setting."""
    wanted: dict[tuple[str, str], tuple[NormEntry, RunConfig]] = {}
    for cell in spec.cells:
        for entry in cell.sweep.norms:
            config = _entry_config(cell.sweep, entry)
            wanted.setdefault((config.backbone, _options_key(entry)), (entry, config))
    records = []
    for i, ((backbone, key), (entry, config)) in enumerate(wanted.items()):
        tell("probe at initialization", i, len(wanted))
        seeds = range(config.seed, config.seed + spec.probe_seeds)
        file = out / "probe" / backbone / f"{entry.label}-{key}-{spec.probe_seeds}seeds.json"
        key = _digest(_settings(config), list(seeds))
        layers = _cached(file, key, partial(_probe_records, probe, config, seeds))
        records.append(
            {
                "backbone": backbone,
                "label": entry.label,
                "norm": entry.norm,
                "options": entry.options,
                "layers": layers,
            }
        )
    return records
