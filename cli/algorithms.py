"""``fewnorm algorithms [show NAME]``: the algorithm registry, without torch."""

from __future__ import annotations

from fewnorm.algorithms import AlgorithmSpec, get_algorithm_spec, list_algorithms
from fewnorm.cli.listing import Listing, joined, registry_app


def spec_dict(spec: AlgorithmSpec) -> dict[str, object]:
    """The JSON form of ``spec`` (its factory left out: code, not data)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "family": spec.family,
        "summary": spec.summary,
        "paper": spec.paper,
        "defaults": dict(spec.defaults),
        "norm_mode": spec.norm_mode,
        "supports": list(spec.supports),
        "options": list(spec.options),
        "source": spec.source,
    }


def _defaults(spec: AlgorithmSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "the common ones"


LISTING = Listing(
    kind="algorithm",
    plural="algorithms",
    specs=list_algorithms,
    lookup=get_algorithm_spec,
    to_dict=spec_dict,
    columns=(("family", lambda s: s.family), ("supports", lambda s: joined(s.supports))),
    details=(
        ("family", lambda s: s.family),
        ("defaults", _defaults),
        ("options", lambda s: joined(s.options, "the common ones")),
        ("normalizer mode", lambda s: s.norm_mode or "each normalizer's own default"),
        ("supports", lambda s: joined(s.supports)),
    ),
)
app = registry_app(LISTING, "List registered few-shot algorithms, or show one.")
