"""A run of a plugin normalizer that is not loaded now: the message names what to pass or install."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewnorm.errors import UnknownNameError
from fewnorm.norms.plugins import require_recorded_norm


def _run(tmp_path: Path, versions: dict[str, object]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "versions.json").write_text(json.dumps({"fewnorm": "0.1.0", **versions}))
    return run


def test_a_registered_normalizer_needs_nothing(tmp_path: Path) -> None:
    require_recorded_norm("batchnorm", _run(tmp_path, {"plugins": {"x.py": "file:/x.py"}}))


def test_a_module_plugin_is_named(tmp_path: Path) -> None:
    run = _run(tmp_path, {"norm_source": "module:my_norms.register"})
    with pytest.raises(
        UnknownNameError,
        match=r"plugin 'my_norms.register', which is not loaded; pass --plugin my_norms.register$",
    ):
        require_recorded_norm("mynorm", run)


def test_an_entry_point_plugin_is_to_be_installed(tmp_path: Path) -> None:
    run = _run(tmp_path, {"norm_source": "fewnorm-other-norm==1.2.0"})
    with pytest.raises(
        UnknownNameError, match=r"installed plugin fewnorm-other-norm==1.2.0, which is not installed now"
    ):
        require_recorded_norm("othernorm", run)


def test_an_entry_point_plugin_that_failed_to_load_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fewnorm.norms import plugins

    failure = plugins.PluginFailure(
        "fewnorm-other-norm==1.2.0 (entry point 'other')", "ImportError: no torch"
    )
    monkeypatch.setattr(plugins, "FAILURES", [failure])
    run = _run(tmp_path, {"norm_source": "fewnorm-other-norm==1.2.0"})
    with pytest.raises(UnknownNameError, match=r"1.2.0, which failed to load: ImportError: no torch$"):
        require_recorded_norm("othernorm", run)


def test_an_older_run_names_the_plugins_it_loaded(tmp_path: Path) -> None:
    run = _run(tmp_path, {"plugins": {"a.py": "file:/abs/a.py", "dist": "some-dist==1", "m": "module:m"}})
    with pytest.raises(UnknownNameError, match=r"pass --plugin /abs/a.py --plugin m$"):
        require_recorded_norm("oldnorm", run)


def test_nothing_recorded_leaves_the_unknown_name_to_the_registry(tmp_path: Path) -> None:
    require_recorded_norm("grupnorm", _run(tmp_path, {"plugins": {}}))
    require_recorded_norm("grupnorm", tmp_path / "no-run")
