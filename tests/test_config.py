"""Run configuration: presets validate, overrides win, bad keys and types are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fewnorm.algorithms import get_algorithm_spec
from fewnorm.config import RunConfig, resolve_config
from fewnorm.data.splitfile import read_split_files
from fewnorm.errors import ConfigError, DataError
from fewnorm.norms import get_norm
from tests.data.synthetic_release import write_split_files

SPLITS = {"train": ["Greek/character01"], "val": ["Latin/character01"], "test": ["Korean/character01"]}
PRESETS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
    if "sweeps" not in p.parts  # sweep files (fewnorm compare) are checked in tests/test_compare.py
    and "study" not in p.parts  # study specs (fewnorm study) in tests/study/test_spec.py
)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_validates(preset: Path) -> None:
    config = resolve_config(preset)
    spec = get_norm(config.norm)
    spec.check_options(config.norm_options)


def test_protonet_presets_carry_published_hyperparameters() -> None:
    config = resolve_config(Path(__file__).resolve().parents[1] / "configs/protonet/omniglot-5w1s.yaml")
    assert (config.train_ways, config.lr, config.lr_halve_every, config.test_episodes) == (
        60,
        1e-3,
        2000,
        600,
    )


def test_overrides_beat_file_and_none_means_unset(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("ways: 3\nshots: 2\n")
    config = resolve_config(file, {"ways": 7, "shots": None})
    assert (config.ways, config.shots) == (7, 2)


def test_defaults_and_effective_values() -> None:
    config = RunConfig()
    assert config.effective_train_ways == 20
    assert config.effective_train_shots == config.shots == 1


@pytest.mark.parametrize("algo", ["maml", "fomaml", "anil"])
def test_algorithm_defaults_fill_only_what_is_not_given(algo: str, tmp_path: Path) -> None:
    defaults = dict(get_algorithm_spec(algo).defaults)
    config = resolve_config(None, {"algo": algo})
    assert {key: getattr(config, key) for key in defaults} == defaults
    assert config.effective_train_ways == config.ways  # the head fixes the ways
    assert resolve_config(None, {"algo": algo, "episodes": 7}).episodes == 7
    file = tmp_path / "c.yaml"
    file.write_text(f"algo: {algo}\ninner_steps_test: 3\n")
    from_file = resolve_config(file, {"episodes": None})
    assert (from_file.inner_steps_test, from_file.episodes) == (3, defaults["episodes"])
    assert resolve_config(file, {"algo": "protonet"}).episodes == RunConfig().episodes == 1200


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nope": 1}, "unknown key 'nope'"),
        ({"lr": "fast"}, "key 'lr'"),
        ({"ways": 2.5}, "key 'ways'"),
        ({"test_episodes": -1}, "key 'test_episodes'"),
        ({"norm_options": [1]}, "key 'norm_options'"),
    ],
)
def test_bad_values_are_named(values: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(None, values)


def test_dropblock_reaches_resnet12_blocks() -> None:
    from fewnorm.backbones import DropBlock2d
    from fewnorm.episodes.algorithms import build_embedding
    from fewnorm.episodes.plan import plan_run

    config = resolve_config(None, {"backbone": "resnet12", "dropblock": 0.1, "norm": "groupnorm"})
    model = build_embedding(plan_run(config), in_channels=3)
    drops = [m.drop_prob for m in model.modules() if isinstance(m, DropBlock2d)]
    assert drops and set(drops) == {0.1}
    plain = resolve_config(None, {"backbone": "resnet12", "norm": "groupnorm"})
    assert {
        m.drop_prob for m in build_embedding(plan_run(plain), 3).modules() if isinstance(m, DropBlock2d)
    } <= {0.0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"dataset": "omniglot-vinyals"},
            "options: dataset omniglot-vinyals needs split_file (--split-file)",
        ),
        (
            {"split_file": "x"},
            "options: split_file applies to dataset omniglot-vinyals only, not omniglot-minimal",
        ),
        ({"dropblock": 0.1}, "options: dropblock applies to the resnet12 backbone only, not conv4"),
    ],
)
def test_rules_across_keys_read_as_one_sentence(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, overrides)
    assert str(info.value).startswith(message) and "got" not in str(info.value)


def test_split_file_is_saved_absolute_with_its_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_split_files(tmp_path / "splits" / "vinyals", **SPLITS)
    monkeypatch.chdir(tmp_path)
    config = resolve_config(None, {"dataset": "Omniglot_Vinyals", "split_file": "splits/vinyals"})
    assert config.split_file == str(tmp_path / "splits" / "vinyals")
    assert config.split_classes == read_split_files(tmp_path / "splits" / "vinyals").digest()
    assert config.data_options == {"split_file": config.split_file, "split_classes": config.split_classes}
    assert resolve_config(None, {}).data_options == {}
    with pytest.raises(DataError, match="split file 'nowhere' does not exist"):
        resolve_config(None, {"dataset": "omniglot-vinyals", "split_file": "nowhere"})


def test_config_file_may_leave_split_file_to_the_options(tmp_path: Path) -> None:
    splits = write_split_files(tmp_path / "vinyals", **SPLITS)
    file = tmp_path / "run.yaml"
    file.write_text("dataset: omniglot-vinyals\nways: 20\n")
    config = resolve_config(file, {"split_file": str(splits)})
    assert (config.dataset, config.ways, config.split_file) == ("omniglot-vinyals", 20, str(splits))
    file.write_text("dataset: omniglot-vinyals\nways: 0\n")  # a bad value is still the file's fault
    with pytest.raises(ConfigError, match=r"config '.*run.yaml': key 'ways'"):
        resolve_config(file, {"split_file": str(splits)})


def test_another_dataset_drops_inherited_split_files(tmp_path: Path) -> None:
    splits = write_split_files(tmp_path / "vinyals", **SPLITS)
    file = tmp_path / "config.yaml"  # e.g. a vinyals run's saved config
    saved = resolve_config(None, {"dataset": "omniglot-vinyals", "split_file": str(splits)})
    file.write_text(yaml.safe_dump(saved.model_dump()))
    other = resolve_config(file, {"dataset": "omniglot"})
    assert other.split_file is None and other.split_classes is None
    again = resolve_config(file, {})
    assert again == saved  # recorded classes kept, not re-read


def test_algorithm_names_ignore_case_and_separators_as_every_name_does() -> None:
    config = RunConfig.model_validate({"algo": "FO-MAML", "norm": "swbn"})
    assert config.algo == "fomaml"
    assert config.episodes == 8000  # the MAML family's defaults, found under the canonical name
    assert config.norm_options["mode"] == "transductive"
