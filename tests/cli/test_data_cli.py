"""``fewnorm data download / verify / info`` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app

runner = CliRunner()
SMALL1 = "images_background_small1.zip"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.data
def test_verify_minimal_ok(omniglot_root: Path) -> None:
    args = ["data", "verify", "omniglot-minimal", "--data-root", str(omniglot_root)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["dataset"] == "omniglot-minimal"
    assert [f["name"] for f in report["files"]] == [SMALL1, "images_background_small2.zip"]
    assert all(f["ok"] and f["present"] and f["kind"] == "zip" for f in report["files"])
    human = runner.invoke(app, args)
    assert human.exit_code == 0
    assert "omniglot-minimal" in human.stdout


@pytest.mark.data
def test_verify_missing_or_corrupt_exits_1(omniglot_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "verify", "omniglot", "--data-root", str(omniglot_root), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["datasets"] == {"omniglot": False, "omniglot-minimal": True, "omniglot-vinyals": False}

    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / SMALL1).write_bytes(b"PK damaged")
    result = runner.invoke(app, ["data", "verify", "--data-root", str(tmp_path), "--json"])
    assert result.exit_code == 1
    (small1,) = [f for f in json.loads(result.stdout)["files"] if f["name"] == SMALL1]
    assert small1["present"]
    assert not small1["ok"]
    assert "e704a628b5459e08445c13499850abc4" in small1["problem"]


def test_verify_empty_root_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "verify", "--data-root", str(tmp_path)])
    assert result.exit_code == 1
    assert "fewnorm data download omniglot" in result.stderr


@pytest.mark.data
def test_info_json(omniglot_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEWNORM_CACHE", str(tmp_path))
    (tmp_path / "omniglot-minimal-val-28px-0123.pt").write_bytes(b"x" * 10)
    result = runner.invoke(app, ["data", "info", "--data-root", str(omniglot_root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["root"] == str(omniglot_root)
    assert info["root_source"] == "--data-root"
    assert info["cache_dir"] == str(tmp_path)
    assert info["stores"] == [{"file": "omniglot-minimal-val-28px-0123.pt", "size": 10}]
    present = {f["name"]: f["present"] for f in info["files"]}
    assert present[SMALL1] is True
    assert present["images_background.zip"] is False
    human = runner.invoke(app, ["data", "info", "--data-root", str(omniglot_root)])
    assert human.exit_code == 0
    assert "--data-root" in human.stdout


def test_info_reports_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEWNORM_DATA", str(tmp_path))
    result = runner.invoke(app, ["data", "info", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["root_source"] == "$FEWNORM_DATA"


@pytest.mark.data
def test_download_from_mirror(omniglot_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWNORM_MIRROR", (omniglot_root / "omniglot").as_uri())
    args = ["data", "download", "omniglot", "--subset", "minimal", "--data-root", str(tmp_path)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "downloaded" in first.stdout
    second = runner.invoke(app, args)
    assert second.exit_code == 0
    assert "already present" in second.stdout
    verify = runner.invoke(app, ["data", "verify", "omniglot-minimal", "--data-root", str(tmp_path)])
    assert verify.exit_code == 0


@pytest.mark.data
def test_download_failure_is_one_line(
    omniglot_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEWNORM_MIRROR", (omniglot_root / "omniglot").as_uri())
    result = runner.invoke(app, ["data", "download", "omniglot", "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    line = _one_error_line(result.stderr)
    assert "images_background.zip" in line
    assert "FEWNORM_MIRROR" in line
    assert f"in {tmp_path / 'omniglot'}/" in line  # where hand-downloaded zips go


def test_offline_download_names_folder_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWNORM_MIRROR", (tmp_path / "nowhere").as_uri())
    args = ["data", "download", "omniglot", "--subset", "minimal", "--data-root", str(tmp_path / "root")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    line = _one_error_line(result.stderr)
    assert "images_background_small1.zip, images_background_small2.zip" in line
    assert str(tmp_path / "root" / "omniglot") in line


def test_data_link_persists_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick start's order: `fewnorm data link DIR`, then commands without --data-root find it."""
    monkeypatch.delenv("FEWNORM_DATA", raising=False)
    root = tmp_path / "datasets"
    (root / "omniglot").mkdir(parents=True)
    linked = runner.invoke(app, ["data", "link", str(root)])
    assert linked.exit_code == 0, linked.output
    info = json.loads(runner.invoke(app, ["data", "info", "--json"]).stdout)
    assert info["root"] == str(root.resolve())
    assert info["root_source"].startswith("fewnorm data link (")
    human = runner.invoke(app, ["data", "info"])
    assert "from fewnorm data link" in human.stdout
    shown = runner.invoke(app, ["data", "link"])
    assert str(root.resolve()) in shown.stdout
    # --data-root and $FEWNORM_DATA still come first
    monkeypatch.setenv("FEWNORM_DATA", str(tmp_path / "env"))
    assert json.loads(runner.invoke(app, ["data", "info", "--json"]).stdout)["root_source"] == "$FEWNORM_DATA"
    monkeypatch.delenv("FEWNORM_DATA")
    assert runner.invoke(app, ["data", "link", "--unset"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["data", "info", "--json"]).stdout)["root_source"] == "default"


def test_data_link_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "link", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "is not a directory" in _one_error_line(result.stderr)


def test_malformed_user_config_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fewnorm.data import root as root_mod

    monkeypatch.delenv("FEWNORM_DATA", raising=False)
    root_mod.user_config_file().parent.mkdir(parents=True, exist_ok=True)
    root_mod.user_config_file().write_text("data_root = [unclosed\n")
    try:
        assert root_mod.describe_data_root()[1] == "default"
    finally:
        root_mod.user_config_file().unlink()


def test_unknown_dataset_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "verify", "omniglott", "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    line = _one_error_line(result.stderr)
    assert "unknown dataset 'omniglott'" in line
    assert "Did you mean 'omniglot'" in line


def test_bad_subset_is_rejected(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "download", "omniglot", "--subset", "tiny", "--data-root", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_missing_data_says_how_to_link_a_folder(tmp_path: Path) -> None:
    from fewnorm.data.files import require_sources
    from fewnorm.errors import DataError

    with pytest.raises(DataError, match=r"`fewnorm data link DIR`") as info:
        require_sources(tmp_path, [SMALL1], needed_by="dataset 'omniglot-minimal' (split 'train')")
    assert "fewnorm data download omniglot --subset minimal" in str(info.value)
