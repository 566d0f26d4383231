"""One registry shape for every extension point: normalizers, algorithms, and those to come.

Names ignore case, ``_``, ``-`` and spaces; aliases resolve to the canonical name; an
unknown name lists every known one and the closest match. Entry-point discovery is
injected (``discoverer``), never imported, and runs once, before the first lookup or
listing; ``FEWNORM_DISABLE_PLUGIN_AUTOLOAD=1`` turns it off. A spec registered while a
plugin loads (:data:`fewnorm.plugin_source.PLUGIN_SOURCE`) records that plugin as its source.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from fewnorm.names import normalize_name, unknown_name
from fewnorm.plugin_source import PLUGIN_SOURCE


class Spec(Protocol):
    """What a registry holds: a frozen dataclass with a name, aliases and a source."""

    @property
    def name(self) -> str: ...

    @property
    def aliases(self) -> tuple[str, ...]: ...

    @property
    def source(self) -> str: ...


S = TypeVar("S", bound=Spec)


class NameTakenError(ValueError):
    """A name or alias that another spec of the same registry already has."""


class Registry(Generic[S]):
    """Specs of one ``kind`` ("normalizer", "algorithm") by normalized name and alias."""

    def __init__(
        self, kind: str, discoverer: Callable[[Any], None] | None = None, builtins: Iterable[S] = ()
    ) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}
        self._keys: dict[str, str] = {}  # normalized name or alias -> canonical name
        self._discovered = False
        self.discoverer = discoverer
        for spec in builtins:
            self.register(spec)

    def register(self, spec: S, *, replace: bool = False) -> S:
        """Add ``spec``; a name or alias that is taken is rejected unless ``replace``."""
        source = PLUGIN_SOURCE.get()
        if source is not None and spec.source == "fewnorm":
            spec = dataclasses.replace(spec, source=source)  # type: ignore[type-var]
        keys = [normalize_name(n) for n in (spec.name, *spec.aliases)]
        for key in keys:
            owner = self._keys.get(key)
            if owner is not None and not (replace and owner == spec.name):
                raise NameTakenError(
                    f"{self.kind} name '{key}' of '{spec.name}' ({spec.source}) is already "
                    f"registered by '{owner}' ({self._specs[owner].source})"
                )
        self._specs[spec.name] = spec
        self._keys.update(dict.fromkeys(keys, spec.name))
        return spec

    def unregister(self, name: str) -> None:
        """Remove a spec and its aliases (mostly for tests)."""
        spec = self.get(name)
        del self._specs[spec.name]
        self._keys = {k: v for k, v in self._keys.items() if v != spec.name}

    def get(self, name: str) -> S:
        """The spec registered under ``name`` or an alias; unknown names list the known ones."""
        key = normalize_name(name)
        if key not in self._keys:
            self.discover()
        if key not in self._keys:
            raise unknown_name(self.kind, name, self._specs)
        return self._specs[self._keys[key]]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self.discover()
        return normalize_name(name) in self._keys

    def __iter__(self) -> Iterator[S]:
        self.discover()
        return iter(sorted(self._specs.values(), key=lambda s: (s.source != "fewnorm", s.name)))

    def names(self) -> list[str]:
        return [s.name for s in self]

    def discover(self) -> None:
        """Run the injected discovery once, unless ``FEWNORM_DISABLE_PLUGIN_AUTOLOAD`` is set."""
        if self._discovered:
            return
        self._discovered = True
        if os.environ.get("FEWNORM_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0"):
            return
        if self.discoverer is not None:
            self.discoverer(self)


def load_object(target: Callable[..., Any] | str) -> Callable[..., Any]:
    """``target`` itself if callable, else the attribute that ``"module:attribute"`` names, imported now."""
    if callable(target):
        return target
    import importlib

    module_name, _, attr = target.partition(":")
    loaded: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    return loaded
