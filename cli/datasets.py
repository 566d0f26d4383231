"""``fewnorm datasets [show NAME]``: the dataset registry, without torch."""

from __future__ import annotations

from fewnorm.cli.listing import Listing, joined, registry_app
from fewnorm.data.registry import get_dataset_spec, list_datasets
from fewnorm.data.spec import DatasetSpec


def spec_dict(spec: DatasetSpec) -> dict[str, object]:
    """The JSON form of ``spec`` (its loader left out: code, not data)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "summary": spec.summary,
        "paper": spec.paper,
        "image_shape": list(spec.image_shape),
        "storage": spec.storage,
        "folder": spec.folder,
        "split_files": {split: list(names) for split, names in spec.split_files.items()},
        "download_subset": spec.download_subset,
        "download_hint": spec.download_hint,
        "supports": list(spec.supports),
        "source": spec.source,
    }


def _images(spec: DatasetSpec) -> str:
    return "x".join(map(str, spec.image_shape))


def _files(spec: DatasetSpec) -> str:
    return "; ".join(f"{split}: {', '.join(names)}" for split, names in spec.split_files.items()) or "-"


def _download(spec: DatasetSpec) -> str:
    return f"`fewnorm data download {spec.name}`" if spec.download_subset else spec.download_hint or "-"


def _storage(spec: DatasetSpec) -> str:
    return spec.storage + (f" in <data root>/{spec.folder}/" if spec.folder else "")


LISTING = Listing(
    kind="dataset",
    plural="datasets",
    specs=list_datasets,
    lookup=get_dataset_spec,
    to_dict=spec_dict,
    columns=(
        ("images", _images),
        ("storage", lambda s: s.storage),
        ("supports", lambda s: joined(s.supports)),
    ),
    details=(
        ("images", lambda s: _images(s) + " (channels x height x width)"),
        ("storage", _storage),
        ("files", _files),
        ("download", _download),
        ("supports", lambda s: joined(s.supports)),
    ),
)
app = registry_app(LISTING, "List registered datasets, or show one.")
