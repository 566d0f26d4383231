"""Where the raw data lives and where preprocessed stores are cached (no torch import)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs

#: Environment variable naming the data root (the folder that holds ``omniglot/``).
ENV_DATA = "FEWNORM_DATA"
#: Environment variable naming the folder for cached stores (overrides every other choice).
ENV_CACHE = "FEWNORM_CACHE"
#: Folder, inside ``<root>/omniglot``, of stores cached beside the data.
CACHE_SUBDIR = ".fewnorm-cache"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def describe_data_root(explicit: Path | str | None = None) -> tuple[Path, str]:
    """The data root and how it was chosen.

    The second item is ``"--data-root"``, ``"$FEWNORM_DATA"`` or ``"default"``.
    """
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser(), "--data-root"
    env = _env_path(ENV_DATA)
    if env is not None:
        return env, f"${ENV_DATA}"
    return Path(platformdirs.user_cache_dir("fewnorm")) / "data", "default"


def resolve_data_root(explicit: Path | str | None = None) -> Path:
    """The data root: ``explicit``, else ``$FEWNORM_DATA``, else ``<user cache>/fewnorm/data``.

    The root holds one folder per dataset family, e.g. ``<root>/omniglot/images_background.zip``.
    """
    return describe_data_root(explicit)[0]


def omniglot_dir(root: Path) -> Path:
    """The folder of the Omniglot zips (or their extracted folders) under data root ``root``."""
    return root / "omniglot"


def is_writable_dir(path: Path) -> bool:
    """Whether ``path`` is a directory we may write to.

    Permission bits that deny writing count even for root (who could write anyway), so a
    shared, read-only data folder is never written into by an administrator's run.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if not stat.S_ISDIR(mode) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(path, os.W_OK | os.X_OK)


def user_store_dir() -> Path:
    """The per-user fallback folder for cached stores."""
    return Path(platformdirs.user_cache_dir("fewnorm")) / "stores"


def store_cache_dir(root: Path) -> Path:
    """The folder for cached stores of data root ``root``.

    ``$FEWNORM_CACHE`` if set; else ``<root>/omniglot/.fewnorm-cache`` when that folder (or,
    before it exists, ``<root>/omniglot``) is writable; else :func:`user_store_dir`.
    """
    env = _env_path(ENV_CACHE)
    if env is not None:
        return env
    beside = omniglot_dir(root) / CACHE_SUBDIR
    if is_writable_dir(beside) or (not beside.exists() and is_writable_dir(beside.parent)):
        return beside
    return user_store_dir()
