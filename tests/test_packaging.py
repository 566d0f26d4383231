"""The distribution ships every subpackage: a regular (non-editable) install must import them all."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs: dict[str, str] = setup["package-dir"]
    found = set()
    for name, folder in package_dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert found == set(setup["packages"])


def _make_rule(target: str) -> tuple[list[str], str]:
    """The prerequisites and recipe of Makefile rule ``target`` (its line and the tab lines after)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{target}:"):
            recipe = []
            for follow in lines[i + 1 :]:
                if not follow.startswith("\t"):
                    break
                recipe.append(follow)
            return line.split(":", 1)[1].split(), "\n".join(recipe)
    raise AssertionError(f"no rule {target}")


def test_user_install_leaves_out_ray_and_the_test_plugin() -> None:
    """`make install` / `make demo`: the package and its plots; Ray and examplenorm only in `make dev`."""
    _, recipe = _make_rule("$(STAMP)")
    assert "[plot]" in recipe
    assert "ray" not in recipe
    assert "EXAMPLE_PLUGIN" not in recipe
    assert _make_rule("demo")[0] == ["install"]
    _, dev = _make_rule("$(DEV_STAMP)")
    assert "dev" in dev
    assert "ray" in dev
    assert "tensorboard" in dev
    assert "$(EXAMPLE_PLUGIN)" in dev
    assert "build_learn2learn" in dev
    for target in ("test", "test-all", "lint"):  # CI runs `make test` (.ci/run): all the tests need
        assert _make_rule(target)[0] == ["dev"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_license_is_an_spdx_expression_with_its_file() -> None:
    """PEP 639: no setuptools deprecation warning for a `project.license` table."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "MIT"
    for name in data["project"]["license-files"]:
        assert (ROOT / name).is_file()
    assert "setuptools>=77" in data["build-system"]["requires"]
