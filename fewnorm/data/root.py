"""Where the raw data lives and where preprocessed stores are cached (no torch import)."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import platformdirs

#: Environment variable naming the data root (the folder that holds ``omniglot/``).
ENV_DATA = "FEWNORM_DATA"
#: Environment variable naming the folder for cached stores (overrides every other choice).
ENV_CACHE = "FEWNORM_CACHE"
#: Folder, inside ``<root>/omniglot``, of stores cached beside the data.
CACHE_SUBDIR = ".fewnorm-cache"
#: Environment variable naming the folder of the user config file (default: the user config dir).
ENV_CONFIG_DIR = "FEWNORM_CONFIG_DIR"
#: Where ``describe_data_root`` says a root saved by ``fewnorm data link`` came from.
LINKED = "fewnorm data link"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def user_config_file() -> Path:
    """The user config file: ``$FEWNORM_CONFIG_DIR/config.toml``, else ``<user config dir>/fewnorm/``."""
    directory = _env_path(ENV_CONFIG_DIR) or Path(platformdirs.user_config_dir("fewnorm"))
    return directory / "config.toml"


def linked_data_root() -> Path | None:
    """The data root saved by :func:`link_data_root` (``data_root`` in the user config file), if any.

    An unreadable or malformed file counts as no saved root: the data root never fails to resolve.
    """
    try:
        with user_config_file().open("rb") as f:
            value = tomllib.load(f).get("data_root")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return Path(value).expanduser() if isinstance(value, str) and value.strip() else None


def link_data_root(root: Path | None) -> Path:
    """Save ``root`` (made absolute) as the user's data root, or forget it with ``None``.

    Returns the config file written. Other keys of the file are kept.
    """
    file = user_config_file()
    try:
        with file.open("rb") as f:
            settings = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        settings = {}
    settings.pop("data_root", None)
    if root is not None:
        settings["data_root"] = str(root.expanduser().resolve())
    lines = ["# fewnorm user settings (written by `fewnorm data link`)"]
    # JSON string escapes are valid TOML basic strings; only strings are stored here.
    lines += [f"{key} = {json.dumps(str(value))}" for key, value in settings.items()]
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, file)
    return file


def describe_data_root(explicit: Path | str | None = None) -> tuple[Path, str]:
    """The data root and how it was chosen.

    The second item is ``"--data-root"``, ``"$FEWNORM_DATA"``, ``"fewnorm data link (FILE)"``
    or ``"default"``.
    """
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser(), "--data-root"
    env = _env_path(ENV_DATA)
    if env is not None:
        return env, f"${ENV_DATA}"
    linked = linked_data_root()
    if linked is not None:
        return linked, f"{LINKED} ({user_config_file()})"
    return Path(platformdirs.user_cache_dir("fewnorm")) / "data", "default"


def resolve_data_root(explicit: Path | str | None = None) -> Path:
    """The data root: ``explicit``, else ``$FEWNORM_DATA``, else the root saved by ``fewnorm data
    link``, else ``<user cache>/fewnorm/data``.

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
