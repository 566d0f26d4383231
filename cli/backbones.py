"""``fewnorm backbones [show NAME]``: the backbone registry, without torch."""

from __future__ import annotations

from fewnorm.backbones.registry import BackboneSpec, get_backbone_spec, list_backbones
from fewnorm.cli.listing import Listing, joined, registry_app


def spec_dict(spec: BackboneSpec) -> dict[str, object]:
    """The JSON form of ``spec`` (its factory left out: code, not data)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "summary": spec.summary,
        "paper": spec.paper,
        "options": list(spec.options),
        "source": spec.source,
    }


LISTING = Listing(
    kind="backbone",
    plural="backbones",
    specs=list_backbones,
    lookup=get_backbone_spec,
    to_dict=spec_dict,
    columns=(("options", lambda s: joined(s.options)),),
    details=(("options", lambda s: joined(s.options, "none")),),
)
app = registry_app(LISTING, "List registered backbones, or show one.")
