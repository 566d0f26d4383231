"""The dataset registry: every dataset by name, its files, image shape and capabilities (no torch import).

The built-in datasets are registered here; third-party ones arrive through the entry-point
group ``fewnorm.datasets`` or :func:`register_dataset`. Everything that asks about a dataset
(``load_split``, the configuration, the heads, Lake's protocols, ``fewnorm data``) asks
its :class:`~fewnorm.data.spec.DatasetSpec`.
"""

from __future__ import annotations

from fewnorm.data.spec import DatasetSpec
from fewnorm.errors import DataError
from fewnorm.norms.plugins import entry_point_discoverer
from fewnorm.registry import Registry

BACKGROUND = "images_background.zip"
EVALUATION = "images_evaluation.zip"
SMALL1 = "images_background_small1.zip"
SMALL2 = "images_background_small2.zip"
#: Lake's 20 one-shot classification runs (no published checksum: size only).
RUNS = "all_runs.zip"
#: miniImageNet; its files depend on the layout users arrive with (see :mod:`fewnorm.data.minifiles`).
MINI_IMAGENET = "mini-imagenet"
#: Omniglot classes from user-provided split files (:mod:`fewnorm.data.splitfile`).
VINYALS = "omniglot-vinyals"

#: Split names, in the order runs use them.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Degrees of the rotated copies of a character that count as classes of their own.
ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)

#: The download subsets of ``fewnorm data download`` (``full`` and ``all`` add Lake's runs).
SUBSETS: dict[str, tuple[str, ...]] = {
    "minimal": (SMALL1, SMALL2),
    "full": (BACKGROUND, EVALUATION, RUNS),
    "all": (BACKGROUND, EVALUATION, SMALL1, SMALL2, RUNS),
}

_LAKE = "Lake, Salakhutdinov and Tenenbaum, Human-level concept learning, Science 2015"
_OMNIGLOT = "fewnorm.data.omniglot:load_split"


def _omniglot(name: str, summary: str, train: str, test: str, subset: str, **more: object) -> DatasetSpec:
    """An Omniglot dataset read from the official zips (train and val share their archive)."""
    return DatasetSpec(
        name=name,
        loader=_OMNIGLOT,
        summary=summary,
        paper=_LAKE,
        image_shape=(1, 28, 28),
        storage="zips",
        folder="omniglot",
        split_files={"train": (train,), "val": (train,), "test": (test,)},
        download_subset=subset,
        supports=("lake20", "lake-style"),
        **more,  # type: ignore[arg-type]
    )


BUILTIN_DATASETS: tuple[DatasetSpec, ...] = (
    _omniglot(
        "omniglot",
        "Omniglot, Lake's split: background alphabets train (and validate), evaluation alphabets test.",
        BACKGROUND,
        EVALUATION,
        "full",
    ),
    _omniglot(
        "omniglot-minimal",
        "The two small background zips: small1 trains and validates, small2's own alphabets test.",
        SMALL1,
        SMALL2,
        "minimal",
    ),
    DatasetSpec(
        name=VINYALS,
        loader=_OMNIGLOT,
        summary="Omniglot classes (with their rotations) from your split files (--split-file).",
        paper="Vinyals et al., Matching Networks for One Shot Learning, NeurIPS 2016",
        image_shape=(1, 28, 28),
        storage="zips",
        folder="omniglot",
        # Split files pick classes from both archives (the Vinyals split mixes them).
        split_files={split: (BACKGROUND, EVALUATION) for split in SPLITS},
        download_subset="full",
        supports=("lake20", "split-file"),
    ),
    DatasetSpec(
        name=MINI_IMAGENET,
        loader="fewnorm.data.miniimagenet:load_dataset_split",
        summary="miniImageNet: 100 ImageNet classes at 84x84 (64 train, 16 val, 20 test), three layouts.",
        paper="Vinyals et al. 2016; the Ravi and Larochelle split, ICLR 2017",
        image_shape=(3, 84, 84),
        storage="layouts",
        folder=MINI_IMAGENET,
        download_hint=f"no public download: `fewnorm data download {MINI_IMAGENET}` says where to get it",
    ),
)

#: Third-party datasets: the entry points of this group, loaded before the first lookup.
ENTRY_POINT_GROUP = "fewnorm.datasets"

DATASET_REGISTRY: Registry[DatasetSpec] = Registry(
    "dataset", entry_point_discoverer(ENTRY_POINT_GROUP), BUILTIN_DATASETS
)

#: The built-in Omniglot datasets, served from the official zips, by canonical name.
DATASETS: tuple[str, ...] = tuple(s.name for s in BUILTIN_DATASETS if s.storage == "zips")
#: The built-in datasets, by canonical name (``list_datasets`` adds the plugins').
ALL_DATASETS: tuple[str, ...] = tuple(s.name for s in BUILTIN_DATASETS)
#: The subset that ``fewnorm data download DATASET`` fetches when none is named.
DEFAULT_SUBSET: dict[str, str] = {s.name: s.download_subset for s in BUILTIN_DATASETS if s.download_subset}


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered under ``name`` or an alias (closest match if unknown)."""
    return DATASET_REGISTRY.get(name)


def list_datasets() -> list[DatasetSpec]:
    """Every registered dataset, built-ins first."""
    return list(DATASET_REGISTRY)


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Register a third-party dataset (from a plugin module or an entry point's code)."""
    return DATASET_REGISTRY.register(spec, replace=replace)


def canonical_dataset(name: str) -> str:
    """The canonical name of dataset ``name`` (case, ``_``, ``-`` and spaces ignored).

    Raises :class:`~fewnorm.errors.UnknownNameError` with the closest match otherwise.
    """
    return get_dataset_spec(name).name


def zip_dataset(name: str) -> DatasetSpec:
    """The spec of ``name`` if its files are a fixed list of zips, else a :class:`DataError` why not."""
    spec = get_dataset_spec(name)
    if spec.storage == "layouts":
        raise DataError(
            f"{spec.name} has no fixed file list (it reads one of three layouts); "
            f"check its files with `fewnorm data verify {spec.name}`."
        )
    if spec.storage != "zips":
        raise DataError(f"{spec.name} is generated by its loader ({spec.source}); it has no files.")
    return spec


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise :class:`DataError`."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of: {', '.join(SPLITS)}.")
    return split


def dataset_files(dataset: str) -> list[str]:
    """The zip names that Omniglot ``dataset`` needs for all its splits, in a stable order."""
    spec = zip_dataset(dataset)
    return list(dict.fromkeys(name for split in SPLITS for name in spec.split_files[split]))


def split_files(dataset: str, split: str) -> list[str]:
    """The zip names that one split of Omniglot ``dataset`` reads."""
    return list(zip_dataset(dataset).split_files[check_split(split)])


def subset_files(subset: str) -> list[str]:
    """The zip names of a download subset (``minimal``, ``full`` or ``all``)."""
    if subset not in SUBSETS:
        raise DataError(f"unknown subset '{subset}'; use one of: {', '.join(SUBSETS)}.")
    return list(SUBSETS[subset])


def datasets_supporting(capability: str, *, without: str | None = None) -> list[str]:
    """The names of the registered datasets that support ``capability`` (and not ``without``)."""
    return [s.name for s in DATASET_REGISTRY if capability in s.supports and without not in s.supports]


def supports(dataset: str, capability: str) -> bool:
    """Whether ``dataset`` is registered and supports ``capability`` (unknown names: ``False``)."""
    return dataset in DATASET_REGISTRY and capability in get_dataset_spec(dataset).supports
