"""Example fewnorm extension: one algorithm and one dataset, registered through entry points.

Each entry point names a ``register(registry)`` hook. The specs carry metadata only; the
factory and the loader are ``"module:attribute"`` strings that fewnorm imports on first
use, so ``fewnorm algorithms`` and ``fewnorm datasets`` stay free of torch imports. Nothing
in fewnorm names this package: the extension points are the whole interface.
"""

from __future__ import annotations

from fewnorm.algorithms import AlgorithmSpec
from fewnorm.data.spec import DatasetSpec
from fewnorm.registry import Registry

ALGORITHM = AlgorithmSpec(
    name="cosineproto",
    factory="fewnorm_example_extension.method:CosinePrototypes",
    summary="Example plugin: prototypes scored by scaled cosine similarity, the scale learned.",
    paper="Gidaris and Komodakis, Dynamic Few-Shot Visual Learning without Forgetting, CVPR 2018",
    family="metric",
    aliases=("cosine-proto",),
)

DATASET = DatasetSpec(
    name="glyphs",
    loader="fewnorm_example_extension.glyphs:load_split",
    summary="Example plugin: procedurally drawn coloured glyphs, 3x32x32, generated on the fly (no files).",
    paper="fewnorm example plugin (no paper)",
    image_shape=(3, 32, 32),
    storage="generated",
    download_hint="generated on the fly: nothing to download",
    aliases=("example-glyphs",),
)


def register_algorithms(registry: Registry[AlgorithmSpec]) -> None:
    """The ``fewnorm.algorithms`` entry point."""
    registry.register(ALGORITHM)


def register_datasets(registry: Registry[DatasetSpec]) -> None:
    """The ``fewnorm.datasets`` entry point."""
    registry.register(DATASET)
