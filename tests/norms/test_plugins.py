"""Plugin discovery: entry points (a real installed distribution), --plugin files and modules."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from fewnorm.errors import PluginError
from fewnorm.norms import NormRegistry, load_plugin
from fewnorm.norms import plugins as plugin_mod

EXAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "fewnorm-example-norm"


@pytest.fixture(scope="session")
def example_plugin_installed() -> None:
    """The example distribution, installed into this environment (the test setup installs it)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("fewnorm-example-norm")
    except PackageNotFoundError:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                str(EXAMPLE),
            ],
            check=True,
        )


def _run(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if k != "FEWNORM_DISABLE_PLUGIN_AUTOLOAD"} | env
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=full_env
    ).stdout


def test_entry_point_plugin_is_discovered(example_plugin_installed: None) -> None:
    out = _run("from fewnorm.norms import get_norm; s = get_norm('example-norm'); print(s.name, s.source)")
    assert out.split() == ["examplenorm", "fewnorm-example-norm==0.1.0"]


def test_autoload_can_be_disabled(example_plugin_installed: None) -> None:
    out = _run(
        "from fewnorm.norms import list_norms; print('examplenorm' in [s.name for s in list_norms()])",
        FEWNORM_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert out.strip() == "False"


def test_broken_plugin_is_reported_and_does_not_break_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = EntryPoint("broken", "fewnorm_no_such_module_xyz", plugin_mod.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugin_mod, "entry_points", lambda group: [broken])
    monkeypatch.setattr(plugin_mod, "FAILURES", [])
    registry = NormRegistry()
    with pytest.warns(RuntimeWarning, match="broken"):
        plugin_mod.load_entry_points(registry)
    assert len(plugin_mod.FAILURES) == 1
    assert "ModuleNotFoundError" in plugin_mod.FAILURES[0].error
    assert "entry point 'broken'" in plugin_mod.FAILURES[0].plugin


def test_plugin_file_registers_with_file_source(tmp_path: Path) -> None:
    plugin = tmp_path / "mynorm.py"
    plugin.write_text(
        "from torch import nn\n"
        "from fewnorm.norms import register_norm\n"
        "@register_norm('filenorm-test', summary='s', paper='p', statistics=('none',))\n"
        "def filenorm(num_channels, /, scale: float = 1.0):\n"
        "    return nn.Identity()\n"
    )
    from fewnorm.norms import REGISTRY

    load_plugin(str(plugin))
    try:
        spec = REGISTRY.get("filenorm-test")
        assert spec.source == f"file:{plugin.resolve()}"
    finally:
        REGISTRY.unregister("filenorm-test")


def test_plugin_errors_name_the_target(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="does not exist"):
        load_plugin(str(tmp_path / "missing.py"))
    with pytest.raises(PluginError, match="could not be imported"):
        load_plugin("fewnorm_no_such_module_xyz")
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match=r"bad\.py' failed: RuntimeError: boom"):
        load_plugin(str(bad))
