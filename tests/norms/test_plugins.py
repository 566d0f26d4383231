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


SHADOW = (
    "from torch import nn\n"
    "from fewnorm.norms import register_norm\n"
    "@register_norm('{name}', summary='s', paper='p', statistics=('none',))\n"
    "def shadow(num_channels, /):\n"
    "    return nn.Identity()\n"
)


def test_plugin_file_cannot_override_an_installed_plugin(
    example_plugin_installed: None, tmp_path: Path
) -> None:
    """The file is refused in one line naming the installed distribution, not silently preferred."""
    plugin = tmp_path / "shadow.py"
    plugin.write_text(SHADOW.format(name="examplenorm"))
    env = {k: v for k, v in os.environ.items() if k != "FEWNORM_DISABLE_PLUGIN_AUTOLOAD"}
    done = subprocess.run(
        [sys.executable, "-m", "fewnorm.cli", "norms", "show", "examplenorm", "--plugin", str(plugin)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "shadow.py' was not loaded" in lines[0]
    assert "already registered by 'examplenorm' (fewnorm-example-norm==0.1.0)" in lines[0]


def test_plugin_file_cannot_override_a_builtin(tmp_path: Path) -> None:
    plugin = tmp_path / "shadow_bn.py"
    plugin.write_text(SHADOW.format(name="bn"))
    with pytest.raises(
        PluginError, match=r"was not loaded: normalizer name 'bn' .* already registered by 'batchnorm'"
    ):
        load_plugin(str(plugin))


def test_loading_a_plugin_twice_is_a_no_op(tmp_path: Path) -> None:
    from fewnorm.norms import REGISTRY

    plugin = tmp_path / "twice.py"
    plugin.write_text(SHADOW.format(name="twicenorm-test"))
    load_plugin(str(plugin))
    try:
        load_plugin(str(plugin))
        assert REGISTRY.get("twicenorm-test").source == f"file:{plugin.resolve()}"
    finally:
        REGISTRY.unregister("twicenorm-test")


def test_kit_loads_a_file_plugin_first(tmp_path: Path) -> None:
    """The README's conformance snippet for a --plugin file: no import by hand needed."""
    from fewnorm.errors import UnknownNameError
    from fewnorm.norms import REGISTRY
    from fewnorm.testing import check_normalizer

    plugin = tmp_path / "kitnorm.py"
    plugin.write_text(
        "from torch import nn\n"
        "from fewnorm.norms import register_norm\n"
        "@register_norm('kitnorm-test', summary='s', paper='p', statistics=('instance',))\n"
        "def kitnorm(num_channels, /, eps: float = 1e-5):\n"
        "    return nn.GroupNorm(num_channels, num_channels, eps=eps)\n"
    )
    with pytest.raises(UnknownNameError, match=r"plugin='path/to/yourplugin.py'"):
        check_normalizer("kitnorm-test")
    try:
        check_normalizer("kitnorm-test", plugin=plugin, checks=("shape", "state_dict_roundtrip"))
    finally:
        REGISTRY.unregister("kitnorm-test")
