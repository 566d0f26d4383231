"""Dataset names, file lists, data root and cache folder resolution (no data needed)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fewnorm.data import DATASETS, dataset_files, resolve_data_root
from fewnorm.data import root as root_mod
from fewnorm.data.registry import canonical_dataset, split_files
from fewnorm.errors import UnknownNameError


def test_dataset_names_and_files() -> None:
    assert DATASETS == ("omniglot", "omniglot-minimal", "omniglot-vinyals")
    assert dataset_files("omniglot") == ["images_background.zip", "images_evaluation.zip"]
    assert dataset_files("Omniglot_Minimal") == [
        "images_background_small1.zip",
        "images_background_small2.zip",
    ]
    assert split_files("omniglot-minimal", "val") == ["images_background_small1.zip"]
    assert canonical_dataset("OMNIGLOT minimal") == "omniglot-minimal"


def test_unknown_dataset_suggests_closest() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'omniglot-minimal'") as info:
        dataset_files("omniglot-minimum")
    assert "mini-imagenet, omniglot, omniglot-minimal, omniglot-vinyals" in str(info.value)  # + plugins


def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEWNORM_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root() == tmp_path / "env"
    assert root_mod.describe_data_root()[1] == "$FEWNORM_DATA"
    monkeypatch.delenv("FEWNORM_DATA")
    default, how = root_mod.describe_data_root()
    assert how == "default"
    assert default.parts[-2:] == ("fewnorm", "data")


def test_cache_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEWNORM_CACHE", str(tmp_path / "c"))
    assert root_mod.store_cache_dir(tmp_path) == tmp_path / "c"


def test_cache_dir_beside_writable_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEWNORM_CACHE")
    (tmp_path / "omniglot").mkdir()
    assert root_mod.store_cache_dir(tmp_path) == tmp_path / "omniglot" / ".fewnorm-cache"


def test_cache_dir_falls_back_for_read_only_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEWNORM_CACHE")
    monkeypatch.setattr(root_mod, "user_store_dir", lambda: tmp_path / "user")
    data = tmp_path / "omniglot"
    data.mkdir()
    data.chmod(stat.S_IRUSR | stat.S_IXUSR)  # read-only, as the shared dataset folder
    try:
        # Permission bits decide even for root, who could write regardless.
        assert not root_mod.is_writable_dir(data)
        assert root_mod.store_cache_dir(tmp_path) == tmp_path / "user"
    finally:
        data.chmod(stat.S_IRWXU)
