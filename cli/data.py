"""``fewnorm data``: download, verify and inspect the dataset files and cached stores.

None of these commands imports torch.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from fewnorm.data.files import KNOWN_FILES, FileStatus, check_file, download_hint
from fewnorm.data.registry import (
    ALL_DATASETS,
    MINI_IMAGENET,
    dataset_files,
    get_dataset_spec,
    list_datasets,
)
from fewnorm.data.root import (
    describe_data_root,
    link_data_root,
    linked_data_root,
    omniglot_dir,
    store_cache_dir,
    user_config_file,
)

#: What a dataset needs besides its files, said where ``verify`` reports it ready.
_READY_NOTE = {"split-file": " (with your --split-file)"}

app = typer.Typer(
    help="Download, verify and inspect datasets (Omniglot, miniImageNet and cached image stores).",
    no_args_is_help=True,
)

DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Data root holding omniglot/ and mini-imagenet/ (default: $FEWNORM_DATA, else the root saved "
        "by `fewnorm data link`, else the user cache).",
    ),
]
# Consoles resolve sys.stdout / sys.stderr when printing, so test runners capture them.
stdout = Console()
stderr = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")]


class Subset(StrEnum):
    """Download subsets: the two small zips, background + evaluation, or all four."""

    all = "all"
    full = "full"
    minimal = "minimal"


def print_json(data: Any) -> None:
    """Machine-readable output: JSON alone on stdout."""
    stdout.file.write(json.dumps(data, indent=2) + "\n")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _files_table(title: str, statuses: list[FileStatus]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("file", "present", "size", "md5", "status"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        state = "[green]ok[/]" if s.ok else f"[red]{'corrupt' if s.present else 'missing'}[/]"
        table.add_row(s.name, s.kind or "no", _size(s.size), s.md5 or "-", state)
    return table


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help=f"Dataset: {', '.join(ALL_DATASETS)}.")],
    subset: Annotated[
        Subset | None,
        typer.Option(help="Files to fetch (default: what DATASET needs; omniglot: full, with all_runs.zip)."),
    ] = None,
    data_root: DataRoot = None,
) -> None:
    """Download the official zips (or from $FEWNORM_MIRROR), verify them, skip intact ones.

    mini-imagenet has no stable public download: without $FEWNORM_MIRROR this explains where
    to get it and which layouts are read (exit code 1); with it, fetches its pickles.
    """
    import os

    from fewnorm.data.download import ENV_MIRROR
    from fewnorm.data.download import download as fetch

    if get_dataset_spec(dataset).storage == "layouts" and not os.environ.get(ENV_MIRROR, "").strip():
        from fewnorm.data.minifiles import howto, mini_imagenet_dir

        stdout.print(escape(howto(mini_imagenet_dir(describe_data_root(data_root)[0]))), soft_wrap=True)
        raise typer.Exit(1)
    tasks: dict[str, TaskID] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    # No live display when stderr is not a terminal: it would only leave blank lines.
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:

        def on_bytes(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        results = fetch(dataset, subset.value if subset else None, data_root, progress=on_bytes)
    table = Table(title=f"files in {results[0].path.parent}", title_justify="left")
    for column in ("file", "status", "size"):
        table.add_column(column)
    for r in results:
        status = "[green]downloaded[/]" if r.status == "downloaded" else "already present"
        table.add_row(
            r.name, status + ("" if r.verified else " (no checksum known: size only)"), _size(r.size)
        )
    stdout.print(table)


@app.command()
def verify(
    dataset: Annotated[
        str | None,
        typer.Argument(help=f"Dataset whose files must be intact ({', '.join(ALL_DATASETS)})."),
    ] = None,
    data_root: DataRoot = None,
    json_output: JsonFlag = False,
) -> None:
    """Check each file: present, size, checksum; exit code 1 on a missing or corrupt one.

    With DATASET, its files must all be intact; without, every present file must be intact
    and at least one dataset complete.
    """
    root, _ = describe_data_root(data_root)
    spec = get_dataset_spec(dataset) if dataset else None
    if spec is not None and spec.storage == "layouts":
        _verify_mini_imagenet(root, json_output)
        return
    directory = omniglot_dir(root)
    names = dataset_files(dataset) if dataset else list(KNOWN_FILES)
    by_name = {name: check_file(directory, name) for name in KNOWN_FILES}
    statuses = [by_name[name] for name in names]
    zips = [s for s in list_datasets() if s.storage == "zips"]
    complete = {s.name: all(by_name[n].ok for n in s.files()) for s in zips}
    notes = {s.name: "".join(_READY_NOTE.get(c, "") for c in s.supports) for s in zips}
    if dataset:
        ok = all(s.ok for s in statuses)
    else:
        ok = not any(s.present and not s.ok for s in statuses) and any(complete.values())
    if json_output:
        print_json(
            {
                "root": str(root),
                "directory": str(directory),
                "dataset": spec.name if spec else None,
                "ok": ok,
                "datasets": complete,
                "files": [s.to_json() for s in statuses],
            }
        )
    else:
        stdout.print(_files_table(f"Omniglot files in {directory}", statuses))
        for s in statuses:
            if s.problem and s.present:
                stderr.print(f"[red]{escape(s.problem)}[/]", soft_wrap=True)
        ready = ", ".join(d + notes[d] for d, c in complete.items() if c) or "none"
        stdout.print(f"datasets ready: {ready}", soft_wrap=True)
        if not ok:
            bad = [s.name for s in statuses if not s.ok] or list(KNOWN_FILES)
            stderr.print(
                f"[red]verification failed[/]: get the missing or corrupt files with "
                f"{download_hint(bad)} (add --data-root {escape(str(root))} if needed).",
                soft_wrap=True,
            )
    if not ok:
        raise typer.Exit(1)


def _verify_mini_imagenet(root: Path, json_output: bool) -> None:
    """Images, classes and shapes of each split against 64/16/20 x 600 at 84x84x3; exit 1 if off."""
    from fewnorm.data.minifiles import mini_imagenet_dir, verify_split

    directory = mini_imagenet_dir(root)
    reports = [verify_split(directory, split) for split in ("train", "val", "test")]
    ok = all(r.ok for r in reports)
    if json_output:
        print_json(
            {
                "root": str(root),
                "directory": str(directory),
                "dataset": MINI_IMAGENET,
                "ok": ok,
                "splits": [r.to_json() for r in reports],
            }
        )
    else:
        table = Table(title=f"miniImageNet in {directory}", title_justify="left")
        for column in ("split", "layout", "images", "classes", "per class", "shape", "status"):
            table.add_column(column, overflow="fold")
        for r in reports:
            per_class = (
                f"{r.min_per_class}"
                if r.min_per_class == r.max_per_class
                else f"{r.min_per_class}-{r.max_per_class}"
            )
            table.add_row(
                r.split,
                r.layout or "[red]missing[/]",
                f"{r.images} / {r.expected_classes * r.expected_per_class}",
                f"{r.classes} / {r.expected_classes}",
                f"{per_class} / {r.expected_per_class}",
                "x".join(map(str, r.image_shape)) if r.image_shape else "-",
                "[green]ok[/]" if r.ok else "[red]problem[/]",
            )
        stdout.print(table)
        for r in reports:
            if r.problem:
                stderr.print(f"[red]{r.split}[/]: {escape(r.problem)}", soft_wrap=True)
    if not ok:
        raise typer.Exit(1)


def _mini_imagenet_files(root: Path) -> list[dict[str, Any]]:
    """Per split, the miniImageNet file that would be read (first layout found), without reading it."""
    from fewnorm.data.minifiles import locate_split, mini_imagenet_dir

    found = []
    for split in ("train", "val", "test"):
        source = locate_split(mini_imagenet_dir(root), split)
        found.append(
            {"split": split, "layout": None, "file": None, "size": None}
            if source is None
            else {
                "split": split,
                "layout": source.layout,
                "file": source.path.name,
                "size": source.path.stat().st_size,
            }
        )
    return found


def _cached_stores(directory: Path) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    return [{"file": p.name, "size": p.stat().st_size} for p in sorted(directory.glob("*.pt"))]


@app.command()
def info(data_root: DataRoot = None, json_output: JsonFlag = False) -> None:
    """The data root in use and why, every known file, and the cached image stores."""
    root, how = describe_data_root(data_root)
    directory = omniglot_dir(root)
    cache = store_cache_dir(root)
    statuses = [check_file(directory, name) for name in KNOWN_FILES]
    stores = _cached_stores(cache)
    mini = _mini_imagenet_files(root)
    if json_output:
        print_json(
            {
                "root": str(root),
                "root_source": how,
                "directory": str(directory),
                "cache_dir": str(cache),
                "files": [s.to_json() for s in statuses],
                "stores": stores,
                MINI_IMAGENET: mini,
            }
        )
        return
    stdout.print(f"data root: [bold]{escape(str(root))}[/] (from {how})", soft_wrap=True)
    stdout.print(f"store cache: {escape(str(cache))}", soft_wrap=True)
    stdout.print(_files_table(f"Omniglot files in {directory}", statuses))
    mini_table = Table(
        title=f"miniImageNet in {root / MINI_IMAGENET} (`fewnorm data verify {MINI_IMAGENET}` checks images)",
        title_justify="left",
    )
    for column in ("split", "layout", "file", "size"):
        mini_table.add_column(column, overflow="fold")
    for entry in mini:
        mini_table.add_row(
            entry["split"], entry["layout"] or "[red]missing[/]", entry["file"] or "-", _size(entry["size"])
        )
    stdout.print(mini_table)
    if not stores:
        stdout.print("no cached stores yet (the first load of a split builds one)")
        return
    table = Table(title=f"{len(stores)} cached stores", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("size")
    for store in stores:
        table.add_row(store["file"], _size(store["size"]))
    stdout.print(table)


@app.command()
def link(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Data root to remember (the folder holding omniglot/ or mini-imagenet/)."),
    ] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Forget the saved data root.")] = False,
) -> None:
    """Remember DIRECTORY as your data root for every later command (after --data-root and $FEWNORM_DATA).

    Saved in the user config file (`fewnorm data info` names it). Without DIRECTORY, prints the
    saved root.
    """
    from fewnorm.errors import DataError

    if unset:
        if directory is not None:
            raise DataError("pass either DIRECTORY or --unset, not both")
        file = link_data_root(None)
        stdout.print(f"data root forgotten (in {escape(str(file))})", soft_wrap=True)
        return
    if directory is None:
        saved = linked_data_root()
        where = escape(str(user_config_file()))
        if saved is None:
            stdout.print(f"no saved data root ({where}); save one: `fewnorm data link DIR`", soft_wrap=True)
        else:
            stdout.print(f"saved data root: {escape(str(saved))} (in {where})", soft_wrap=True)
        return
    if not directory.expanduser().is_dir():
        raise DataError(f"'{directory}' is not a directory; pass the folder that holds omniglot/")
    try:
        file = link_data_root(directory)
    except OSError as exc:
        raise DataError(f"cannot write the user config file {user_config_file()} ({exc.strerror})") from None
    root = linked_data_root()
    stdout.print(f"data root: [bold]{escape(str(root))}[/] (saved in {escape(str(file))})", soft_wrap=True)
    if root is not None and not (omniglot_dir(root).is_dir() or (root / MINI_IMAGENET).is_dir()):
        stdout.print(
            "it holds no omniglot/ or mini-imagenet/ yet: `fewnorm data download omniglot` fetches into it",
            soft_wrap=True,
        )
    root_now, how = describe_data_root(None)
    if root_now != root:
        stderr.print(f"[yellow]note[/]: {how} takes precedence now ({escape(str(root_now))})", soft_wrap=True)
