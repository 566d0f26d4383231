"""Third-party normalizers: entry points (group ``fewnorm.norms``) and ``--plugin`` targets.

Like flake8 and pluggy: find the entry points, sort them, load each lazily (only
when the registry is first queried), and wrap any failure with the plugin's
distribution name so one broken plugin never breaks listing or other norms.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from fewnorm.errors import PluginError, UnknownNameError
from fewnorm.norms.registry import REGISTRY, NameTakenError, NormRegistry
from fewnorm.plugin_source import PLUGIN_SOURCE
from fewnorm.registry import Registry

ENTRY_POINT_GROUP = "fewnorm.norms"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to load: where it came from and why."""

    plugin: str  # "distribution==version (entry point name)" or the --plugin target
    error: str


#: Failures seen so far in this process (shown by ``fewnorm norms``).
FAILURES: list[PluginFailure] = []
#: Plugins loaded so far: name -> source string (recorded in run directories).
LOADED: dict[str, str] = {}


def _dist_label(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name}=={dist.version}" if dist is not None else ep.value


def entry_point_discoverer(group: str) -> Callable[[Registry[Any]], None]:
    """A registry's discoverer: the entry points of ``group``, loaded as :func:`load_entry_points` does."""
    return lambda registry: load_entry_points(registry, group)


def load_entry_points(registry: Registry[Any] = REGISTRY, group: str = ENTRY_POINT_GROUP) -> None:
    """Load every entry point of ``group`` (``fewnorm.norms`` by default), sorted by name; record failures.

    An entry point names a module that registers on import, or a ``register(registry)`` hook.
    """
    for ep in sorted(entry_points(group=group), key=lambda e: (e.name, e.value)):
        source = _dist_label(ep)
        token = PLUGIN_SOURCE.set(source)
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj(registry)  # a ``register(registry)`` hook; a module registers on import
            LOADED[ep.name] = source
        except Exception as exc:
            failure = PluginFailure(f"{source} (entry point '{ep.name}')", f"{type(exc).__name__}: {exc}")
            FAILURES.append(failure)
            warnings.warn(
                f"fewnorm plugin {failure.plugin} failed to load: {failure.error}",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            PLUGIN_SOURCE.reset(token)


def load_plugin(target: str, registry: NormRegistry = REGISTRY) -> None:
    """Run registration code from ``path/to/file.py`` or an importable ``package.module``.

    Installed (entry-point) plugins are discovered first, so a ``--plugin`` that registers a
    name an installed plugin (or a built-in) already has is refused in one line instead of
    silently taking its place. Loading the same target twice is a no-op. Raises
    :class:`PluginError` naming the target if it cannot be loaded.
    """
    path = Path(target)
    is_file = target.endswith(".py") or path.is_file()
    source = f"file:{path.resolve()}" if is_file else f"module:{target}"
    if source in LOADED.values():
        return
    registry.discover()
    token = PLUGIN_SOURCE.set(source)
    try:
        if is_file:
            if not path.is_file():
                raise PluginError(f"plugin file '{target}' does not exist")
            name = f"fewnorm_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise PluginError(f"plugin file '{target}' cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(target)
        LOADED[target] = PLUGIN_SOURCE.get() or target
    except PluginError:
        raise
    except NameTakenError as exc:
        raise PluginError(
            f"plugin '{target}' was not loaded: {exc}; rename its normalizer (names and aliases must be "
            "unique), or uninstall the other plugin"
        ) from None
    except ModuleNotFoundError as exc:
        raise PluginError(
            f"plugin '{target}' could not be imported ({exc}); pass a .py file or an importable module name"
        ) from None
    except Exception as exc:
        raise PluginError(f"plugin '{target}' failed: {type(exc).__name__}: {exc}") from None
    finally:
        PLUGIN_SOURCE.reset(token)
    log.debug("loaded plugin %s", target)


def load_plugins(targets: list[str] | None) -> None:
    """:func:`load_plugin` for each target (``--plugin`` repeated), in order."""
    for target in targets or []:
        load_plugin(target)


def require_recorded_norm(norm: str, run_dir: Path) -> None:
    """Refuse a run whose normalizer came from a plugin that is not loaded now, naming the plugin.

    ``versions.json`` records the plugins loaded when the run was trained and, since
    this release, the normalizer's source. Recorded plugin code is never run on its
    own: the message says which ``--plugin`` to pass (or which distribution to install).
    """
    from fewnorm.runs import VERSIONS, plugin_target, recorded_plugins, recorded_value

    if norm in REGISTRY:
        return
    source = recorded_value(run_dir, "norm_source")
    target = plugin_target(source) if isinstance(source, str) else None
    run = f"run '{run_dir}' was trained with normalizer '{norm}'"
    if target is not None:
        gone = source.startswith("file:") and not Path(target).is_file()
        where = " (that file is no longer there: pass its new location)" if gone else ""
        raise UnknownNameError(
            f"{run} from plugin '{target}', which is not loaded; pass --plugin {target}{where}"
        )
    if isinstance(source, str) and source != "fewnorm":
        failed = [f for f in FAILURES if f.plugin.startswith(f"{source} ")]
        if failed:
            raise UnknownNameError(
                f"{run} from the installed plugin {source}, which failed to load: {failed[0].error}"
            )
        raise UnknownNameError(
            f"{run} from the installed plugin {source}, which is not installed now; install it "
            f"(pip install '{source}')"
        )
    targets = [t for t in (plugin_target(s) for s in recorded_plugins(run_dir).values()) if t is not None]
    if targets:  # an older run: the plugins it loaded, not which one registered the normalizer
        flags = " ".join(f"--plugin {t}" for t in targets)
        raise UnknownNameError(
            f"{run}, registered by a plugin it loaded ({VERSIONS} records {', '.join(targets)}); pass {flags}"
        )
