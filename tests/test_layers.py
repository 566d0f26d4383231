"""The layers hold: core (fewnorm/) < pipelines (episodes/) < command line (cli/), no import up.

Every import statement counts, at module level or inside a function, under
``TYPE_CHECKING`` or not: an import that points up is a dependency up, however lazy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder -> the import name of its package, lowest layer first.
LAYERS = {"fewnorm": "fewnorm", "episodes": "fewnorm.episodes", "cli": "fewnorm.cli"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in ``path`` (``from a import b`` gives ``a.b`` too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _layer(module: str) -> int:
    """0 core, 1 pipelines, 2 command line; -1 outside fewnorm."""
    if module == "fewnorm.cli" or module.startswith("fewnorm.cli."):
        return 2
    if module == "fewnorm.episodes" or module.startswith("fewnorm.episodes."):
        return 1
    return 0 if module == "fewnorm" or module.startswith("fewnorm.") else -1


def upward_imports() -> list[str]:
    """``file:line imports module`` for every import of a higher layer than the file's own."""
    found = []
    for layer, folder in enumerate(LAYERS):
        for path in _sources(folder):
            for line, module in _imports(path):
                if _layer(module) > layer:
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The walker itself: a lazy, function-level import of the pipelines from the core is caught."""
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from fewnorm.episodes.maml import InnerLoop\n")
    assert (2, "fewnorm.episodes.maml") in _imports(sample)
    assert _layer("fewnorm.episodes.maml") == 1 > _layer("fewnorm.norms") == 0


@pytest.mark.parametrize(("a", "b"), [("fewnorm.norms.registry", "fewnorm.norms.plugins")])
def test_the_registry_and_its_plugin_loaders_do_not_import_each_other(a: str, b: str) -> None:
    def imported(module: str) -> set[str]:
        path = ROOT / Path(*module.split(".")).with_suffix(".py")
        return {m for _, m in _imports(path)}

    assert b not in imported(a)  # the registry gets its discovery injected: no circle
