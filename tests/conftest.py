"""Session fixtures shared by the test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_SMALL_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """A data root whose ``omniglot/`` holds the two small official zips.

    Looked for in ``$FEWNORM_TEST_DATA``, then ``../shared/datasets`` beside the
    repository, then ``$FEWNORM_DATA``; the test is skipped when none has them.
    """
    candidates = [
        os.environ.get("FEWNORM_TEST_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "datasets",
        os.environ.get("FEWNORM_DATA"),
    ]
    for candidate in candidates:
        if candidate and all((Path(candidate) / "omniglot" / z).is_file() for z in _SMALL_ZIPS):
            return Path(candidate)
    pytest.skip(
        "Omniglot small zips not found: put images_background_small1.zip and "
        "images_background_small2.zip in <root>/omniglot/ and set FEWNORM_TEST_DATA=<root>"
    )


@pytest.fixture(scope="session", autouse=True)
def _isolated_store_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point ``$FEWNORM_CACHE`` at a per-session folder: tests never write the user's cache."""
    cache = tmp_path_factory.mktemp("fewnorm-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWNORM_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point ``$FEWNORM_CONFIG_DIR`` at a per-session folder: a root saved by ``fewnorm data link``
    on this machine never leaks into the tests, and the tests never write the user's config."""
    config = tmp_path_factory.mktemp("fewnorm-config")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWNORM_CONFIG_DIR", str(config))
        yield config


@pytest.fixture
def data_env(omniglot_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$FEWNORM_DATA`` pointing at the Omniglot test data (for CLI and training tests)."""
    monkeypatch.setenv("FEWNORM_DATA", str(omniglot_root))
    return omniglot_root


@pytest.fixture
def synthetic_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with a tiny synthetic extracted ``images_background`` and ``images_evaluation``."""
    from tests.data.synthetic_release import use_synthetic_release

    return use_synthetic_release(tmp_path, monkeypatch)
