"""Example fewnorm plugin, loaded through the ``fewnorm.norms`` entry point.

It registers metadata only; the factory is a ``"module:attribute"`` string that
fewnorm imports on first use, so ``fewnorm norms`` stays free of torch imports.
"""

from __future__ import annotations

from fewnorm.norms import REGISTRY, NormSpec

REGISTRY.register(
    NormSpec(
        name="examplenorm",
        factory="fewnorm_example_norm.layer:examplenorm",
        summary="Example plugin: per-sample channel centring and RMS scaling.",
        paper="fewnorm example plugin (no paper)",
        statistics=("instance",),
        aliases=("example-norm",),
    )
)
