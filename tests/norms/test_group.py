"""GroupNorm, LayerNorm, InstanceNorm against torch's reference layers."""

from __future__ import annotations

import pytest
import torch

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm


def test_groupnorm_matches_torch() -> None:
    x = torch.randn(3, 8, 4, 4)
    ours = create_norm("groupnorm", 8, groups=2)
    torch.testing.assert_close(ours(x), torch.nn.GroupNorm(2, 8)(x))
    assert create_norm("groupnorm", 8, group_size=2).groups == 4
    assert create_norm("groupnorm", 64).groups == 32


def test_layernorm_moments_over_chw() -> None:
    x = torch.randn(3, 8, 4, 4) * 5 + 2
    y = create_norm("layernorm", 8)(x)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def test_instancenorm_matches_torch_and_is_per_sample() -> None:
    x = torch.randn(3, 8, 4, 4) * 5 + 2
    ours = create_norm("instancenorm", 8)
    torch.testing.assert_close(ours(x), torch.nn.InstanceNorm2d(8)(x))
    torch.testing.assert_close(ours(x[:1]), ours(x)[:1])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"groups": 3}, "divisor"),
        ({"group_size": 5}, "divisor"),
        ({"groups": 2, "group_size": 4}, "not both"),
        ({"eps": 0.0}, "eps must be positive"),
    ],
)
def test_bad_options(options: dict[str, float], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        create_norm("groupnorm", 8, **options)
