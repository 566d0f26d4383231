"""The registry: names, aliases, duplicates, unknown names, option checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch import nn

from fewnorm.errors import OptionError, UnknownNameError
from fewnorm.names import normalize_name
from fewnorm.norms import NormRegistry, NormSpec, create_norm, get_norm, list_norms, register_norm


def _spec(name: str, **kw: object) -> NormSpec:
    return NormSpec(name=name, factory=lambda c, /: nn.Identity(), summary="s", paper="p", **kw)  # type: ignore[arg-type]


def test_name_normalization() -> None:
    assert normalize_name("Group_Norm") == normalize_name("group-norm") == "groupnorm"
    assert normalize_name("Task Norm-I") == "tasknormi"


def test_lookup_by_alias_and_spelling() -> None:
    assert get_norm("BN") is get_norm("batch_norm") is get_norm("batchnorm")
    assert get_norm("Group-Norm").name == "groupnorm"


def test_unknown_name_lists_known_and_closest() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_norm("grupnorm")
    message = str(info.value)
    assert "Did you mean 'groupnorm'?" in message
    for spec in list_norms():
        assert spec.name in message


def test_duplicate_names_and_aliases_rejected() -> None:
    registry = NormRegistry()
    registry.register(_spec("alpha", aliases=("a",)))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_spec("Alpha"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_spec("beta", aliases=("A",)))
    registry.register(_spec("alpha"), replace=True)


def test_register_decorator_and_unregister() -> None:
    registry = NormRegistry()

    @register_norm("scaled", summary="x", paper="y", statistics=("none",), registry=registry)
    def scaled(num_channels: int, /, factor: float = 2.0) -> nn.Module:
        return nn.Identity()

    spec = registry.get("scaled")
    assert spec.factory is scaled
    assert list(spec.options()) == ["factor"]
    registry.unregister("scaled")
    with pytest.raises(UnknownNameError):
        registry.get("scaled")


def test_options_checked_against_signature() -> None:
    spec = get_norm("groupnorm")
    with pytest.raises(OptionError, match=r"no option 'grups'.*groups"):
        spec.check_options({"grups": 4})
    assert spec.check_options({"groups": "8", "eps": "1e-4", "affine": "false"}) == {
        "groups": 8,
        "eps": 1e-4,
        "affine": False,
    }
    with pytest.raises(OptionError, match="expects int"):
        spec.check_options({"groups": "eight"})


def test_create_norm_validates_values() -> None:
    with pytest.raises(OptionError, match="divisor"):
        create_norm("groupnorm", 64, groups=7)
    with pytest.raises(OptionError, match="mode must be one of"):
        create_norm("batchnorm", 8, mode="global")


def test_listing_does_not_import_torch() -> None:
    code = (
        "import sys; from fewnorm.norms import list_norms; names=[s.name for s in list_norms()]; "
        "assert 'batchnorm' in names; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"FEWNORM_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": ""},
    )


def test_every_spec_is_complete() -> None:
    for spec in list_norms():
        assert spec.summary and spec.paper, spec.name
        spec.load()  # the lazy factory string resolves
