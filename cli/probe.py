"""``fewnorm probe``: the "Beyond BatchNorm" diagnostics per layer, at initialization or trained.

Each normalizer is built into the backbone at initialization (seeds ``seed ..
seed + seeds - 1``, one training episode each) and probed with
:func:`fewnorm.probe.probe_model`; the metrics are averaged over the seeds.
``--checkpoint RUN_DIR`` adds the trained model of a ProtoNet run, probed on the
same episodes. Results: a table, ``probe.json`` and ``probe.png`` under ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fewnorm.cli.compare import parse_scoped_options
from fewnorm.cli.train import PLUGIN_HELP, SPLIT_FILE_HELP, dataset_options, load_plugins
from fewnorm.errors import ConfigError

DEFAULT_NORMS = "batchnorm,layernorm,instancenorm,groupnorm,none"


def probe(
    norms: str | None = typer.Option(None, help=f"Comma-separated normalizers (default {DEFAULT_NORMS})."),
    checkpoint: Path | None = typer.Option(
        None,
        help="Also probe this trained run's backbone (directory or best.pt; MAML: the meta-learned "
        "init); its settings by default.",
    ),
    backbone: str | None = typer.Option(None, help="Backbone: conv4 | resnet12 (default conv4)."),
    dataset: str | None = typer.Option(None, help="Dataset (default omniglot-minimal)."),
    split_file: Path | None = typer.Option(None, help=SPLIT_FILE_HELP, metavar="PATH"),
    hidden: int | None = typer.Option(None, help="Filters per Conv-4 block (default 64)."),
    ways: int | None = typer.Option(None, help="Ways of the probe episode (default 5)."),
    shots: int | None = typer.Option(None, help="Support images per class (default 1)."),
    queries: int | None = typer.Option(None, help="Query images per class (default 15)."),
    seeds: int = typer.Option(3, help="Initializations (and episodes) averaged per normalizer."),
    seed: int = typer.Option(0, help="First seed."),
    norm_opt: list[str] | None = typer.Option(
        None, "--norm-opt", help="Option of one normalizer, name:key=value (repeatable)."
    ),
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP),
    data_root: Path | None = typer.Option(
        None, help="Data root (else $FEWNORM_DATA, else `fewnorm data link`'s, else the user cache)."
    ),
    out: Path | None = typer.Option(
        None, help="Folder for probe.json and probe.png (default runs/probe-<time>)."
    ),
    plots: bool = typer.Option(True, help="Write probe.png (needs matplotlib)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Activation variance, cross-sample similarity, stable rank and gradient norm, layer by layer."""
    import dataclasses
    import json

    from fewnorm.compare import parse_entries, with_options
    from fewnorm.config import resolve_config
    from fewnorm.runs import atomic_write_text, default_run_dir, load_checkpoint

    load_plugins(plugin)
    if seeds < 1:
        raise ConfigError(f"--seeds must be positive, got {seeds}")
    trained = load_checkpoint(checkpoint) if checkpoint else None
    values: dict[str, Any] = trained["config"] if trained else {}
    given = {"backbone": backbone, **dataset_options(dataset, split_file), "hidden": hidden, "ways": ways,
             "shots": shots, "queries": queries,
             "data_root": str(data_root) if data_root else None}  # fmt: skip
    base = resolve_config(None, values | {k: v for k, v in given.items() if v is not None})
    default = base.norm if trained and norms is None else DEFAULT_NORMS
    names = [n.strip() for n in (norms or default).split(",") if n.strip()]
    entries = with_options(parse_entries(names, "--norms"), parse_scoped_options(norm_opt))
    if trained and norms is None:
        entries = [dataclasses.replace(entries[0], options=dict(base.norm_options))]

    series = _run(base, entries, trained, range(seed, seed + seeds))
    title = (
        f"{base.backbone} on {base.dataset}, {base.ways}-way {base.shots}-shot episodes "
        f"({base.queries} queries), mean of {seeds} seed{'s' if seeds > 1 else ''}"
    )
    folder = out or default_run_dir("probe")
    records = {label: [dataclasses.asdict(s) for s in layers] for label, layers in series.items()}
    atomic_write_text(folder / "probe.json", json.dumps({"title": title, "series": records}, indent=2))
    if plots:
        from fewnorm.plots import plot_probe

        plot_probe(series, folder / "probe.png", title=f"Probe at initialization: {title}")
    from fewnorm.cli.render import print_json, stdout

    if json_output:
        print_json({"out": str(folder), "series": records})
        return
    stdout.print(_table(series, title))
    stdout.print(f"[dim]{folder}: probe.json" + (", probe.png" if plots else "") + "[/]")


def _run(base: Any, entries: list[Any], trained: dict[str, Any] | None, seeds: range) -> dict[str, Any]:
    """Label -> per-layer stats averaged over ``seeds``; the trained checkpoint last."""
    from fewnorm.episodes.study_measure import probe_at_init

    def measure(config: Any, state: dict[str, Any] | None) -> list[Any]:
        return probe_at_init(config, seeds, state)

    series = {}
    for e in entries:
        series[e.label] = measure(base.model_copy(update={"norm": e.norm, "norm_options": e.options}), None)
    if trained is not None:
        config = type(base).model_validate(trained["config"])
        same_episodes = {k: getattr(base, k) for k in ("ways", "shots", "queries", "data_root")}
        config = config.model_copy(update=same_episodes)  # probed on the episodes of the rest
        series[f"{config.norm} (trained)"] = measure(config, embedding_state(trained["model"], config.algo))
    return series


def embedding_state(model_state: dict[str, Any], algo: str) -> dict[str, Any]:
    """The backbone's part of a checkpoint: a ProtoNet is all backbone; MAML-family models
    (``FewShotClassifier``) keep it under ``embedding.``, beside the head (the meta-learned init)."""
    if algo == "protonet":
        return model_state
    prefix = "embedding."
    return {k.removeprefix(prefix): v for k, v in model_state.items() if k.startswith(prefix)}


def _table(series: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=f"probe: {title}", title_justify="left")
    for name in ("normalizer", "layer", "variance", "cosine sim.", "stable rank", "grad norm"):
        table.add_column(name, justify="left" if name == "normalizer" else "right")
    for label, layers in series.items():
        for i, s in enumerate(layers):
            table.add_row(
                label if i == 0 else "",
                str(s.layer + 1),
                f"{s.variance:.3g}",
                f"{s.cosine:.3f}",
                f"{s.stable_rank:.2f}",
                f"{s.grad_norm:.3g}",
                end_section=i == len(layers) - 1,
            )
    return table
