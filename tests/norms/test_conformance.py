"""Every registered normalizer, and the kit itself, against the normalizer contract."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fewnorm.norms import NormSpec, list_norms
from fewnorm.testing import CHECKS, ConformanceError, check_normalizer

NORMS = [spec.name for spec in list_norms()]


@pytest.mark.parametrize("name", NORMS)
def test_registered_normalizer_conforms(name: str) -> None:
    check_normalizer(name)


@pytest.mark.parametrize("mode", ["running", "support"])
def test_batchnorm_modes_conform(mode: str) -> None:
    check_normalizer("batchnorm", options={"mode": mode})


class _CachedScale(nn.Module):
    """Breaks rule 2: derives state from a parameter in __init__."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.cached = self.weight.detach() * 2

    def forward(self, x: Tensor) -> Tensor:
        return x * self.cached[None, :, None, None]


class _EvalUpdates(nn.Module):
    """Breaks rule 3: moves its buffer in evaluation mode."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            self.seen.add_(x.mean(dim=(0, 2, 3)))
        return x - self.seen[None, :, None, None]


class _Unstable(nn.Module):
    """Breaks rule 5: divides by the batch std without eps (NaN for one constant image)."""

    def forward(self, x: Tensor) -> Tensor:
        return (x - x.mean(0)) / x.std(0)


class _ParamStats(nn.Module):
    """Keeps a statistic in a plain tensor attribute instead of a buffer."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.mean = torch.zeros(c)

    def forward(self, x: Tensor) -> Tensor:
        return x - self.mean[None, :, None, None]


class _ReadsNCHWMemory(nn.Module):
    """Reads its input's memory as if it were NCHW: right for NCHW input, wrong for NHWC."""

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        flat = torch.as_strided(x, (n, c, h * w), (c * h * w, h * w, 1))  # (N, C, H*W), by raw memory
        return (flat - flat.mean(-1, keepdim=True)).reshape(n, c, h, w)


class _ViewsItsInput(nn.Module):
    """``view`` where ``reshape`` is meant: fails on NHWC input."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.view(x.shape[0], -1)  # (N, C*H*W)
        return (flat - flat.mean(0)).view_as(x)


@pytest.mark.filterwarnings("ignore:std.*degrees of freedom:UserWarning")
@pytest.mark.parametrize(
    ("factory", "rule"),
    [
        (_CachedScale, "parameters_swappable"),
        (_EvalUpdates, "buffers_only_in_training"),
        (lambda c: _Unstable(), "small_batch"),
        (_ParamStats, "parameters_swappable"),
        (lambda c: _ReadsNCHWMemory(), "channels_last"),
        (lambda c: _ViewsItsInput(), "channels_last"),
    ],
)
def test_kit_catches_broken_normalizers(factory: object, rule: str) -> None:
    spec = NormSpec(name="broken", factory=factory, summary="", paper="")  # type: ignore[arg-type]
    with pytest.raises(ConformanceError, match=rf"\[{rule}\]"):
        check_normalizer(spec, checks=(rule,))


def test_kit_rejects_unknown_check() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        check_normalizer("none", checks=("nonsense",))
    assert "second_order" in CHECKS


class _FusedBatchNorm(nn.Module):
    """Declares vmap=True but calls F.batch_norm in training: its batched double backward is wrong."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True)


def test_kit_catches_a_normalizer_wrongly_declared_vmap_safe() -> None:
    spec = NormSpec(name="fused", factory=_FusedBatchNorm, summary="", paper="", vmap=True)
    with pytest.raises(ConformanceError, match=r"\[vmap\]"):
        check_normalizer(spec, checks=("vmap",))
    check_normalizer("batchnorm", checks=("vmap",))  # the same moments, written vmap-safe
