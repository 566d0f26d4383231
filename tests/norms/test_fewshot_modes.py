"""The few-shot modes of every normalizer with batch statistics: each mode's defining identity."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from fewnorm.config import RunConfig
from fewnorm.errors import OptionError
from fewnorm.norms import create_norm, get_norm, list_norms, norm_phase, task_load, task_scope
from fewnorm.norms.fewshot import MAML_MODE, MODES
from fewnorm.norms.iternorm import newton_schulz_whitening
from fewnorm.norms.whitening import to_groups
from fewnorm.testing import ConformanceError, check_normalizer

MODAL = [s.name for s in list_norms() if s.modes]
#: Which running buffers hold each normalizer's support statistics (task_load's tuple, in order).
RUNNING = {
    "batchnorm": ("running_mean", "running_var"),
    "swbn": ("running_mean", "running_var"),
    "iternorm": ("running_mean", "running_whitening"),
    "variancenorm": ("running_var",),
    "evonorm-b0": ("running_var",),
}


def test_every_batch_statistics_normalizer_declares_modes() -> None:
    batch = {s.name for s in list_norms() if "batch" in s.statistics and s.source == "fewnorm"}
    assert batch == set(RUNNING) == {n for n in MODAL if get_norm(n).source == "fewnorm"}
    for name in batch:
        spec = get_norm(name)
        assert set(spec.modes) == set(MODES)
        assert spec.options()["mode"].default == spec.modes[0]  # the factory's default is listed first


def _images(n: int, seed: int) -> Tensor:  # (n, 16, 6, 6)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, 6, 6, generator=g, dtype=torch.float64) * 2 + 0.5


def _build(name: str, mode: str) -> nn.Module:
    torch.manual_seed(0)
    module = create_norm(name, 16, mode=mode).double()
    with torch.no_grad():  # learned affine maps and a moved whitening matrix: nothing cancels
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if hasattr(module, "whitening_matrix"):
            module.whitening_matrix.add_(0.01 * torch.randn_like(module.whitening_matrix))
    return module


def _support_then_query(module: nn.Module, support: Tensor, query: Tensor) -> tuple[Tensor, object]:
    with task_scope():
        with norm_phase("support"):
            module(support)
        stored = task_load(module)
        with norm_phase("query"):
            return module(query), stored


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_support_mode_normalizes_the_query_with_the_supports_statistics(name: str) -> None:
    """Support mode on the query = running mode with the running buffers set to the support's moments."""
    support, query = _images(5, 1), _images(9, 2)
    module = _build(name, "support").eval()
    y, stored = _support_then_query(module, support, query)
    stats = stored if isinstance(stored, tuple) else (stored,)
    # The stored statistics are the support set's own moments ...
    mean, var = support.mean(dim=(0, 2, 3)), support.var(dim=(0, 2, 3), unbiased=False)
    expected = {"running_mean": mean, "running_var": var}
    if name == "iternorm":
        centred = to_groups(support - mean[None, :, None, None], module.group_size)
        expected["running_whitening"] = newton_schulz_whitening(centred, module.iterations, module.eps)
    for buffer, value in zip(RUNNING[name], stats, strict=True):
        torch.testing.assert_close(value, expected[buffer], rtol=1e-10, atol=1e-12)
    # ... and the query is normalized with them, as running mode normalizes with its buffers.
    reference = copy.deepcopy(module)
    reference.mode = "running"
    with torch.no_grad():
        for buffer, value in zip(RUNNING[name], stats, strict=True):
            getattr(reference, buffer).copy_(value)
    torch.testing.assert_close(y, reference(query), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_transductive_mode_ignores_the_running_buffers(name: str) -> None:
    x = _images(8, 3)
    module = _build(name, "transductive").eval()
    before = module(x)
    with torch.no_grad():
        for key in RUNNING[name]:
            getattr(module, key).mul_(5.0).add_(1.0)
    torch.testing.assert_close(module(x), before, rtol=0, atol=0)
    with task_scope(), norm_phase("support"):  # a support pass is a transductive pass
        torch.testing.assert_close(_build(name, "support").eval()(x), before, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_running_mode_uses_the_running_buffers(name: str) -> None:
    x = _images(8, 4)
    module = _build(name, "running").eval()
    before = module(x)
    torch.testing.assert_close(module(x[:2]), before[:2], rtol=1e-12, atol=1e-12)  # no batch at test
    with torch.no_grad():
        getattr(module, RUNNING[name][-1]).mul_(2.0)
    assert not torch.allclose(module(x), before)


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_support_mode_moves_running_buffers_on_support_passes_only(name: str) -> None:
    module = _build(name, "support").train()
    start = {k: getattr(module, k).clone() for k in RUNNING[name]}
    with task_scope():
        with norm_phase("support"):
            module(_images(5, 5))
        after_support = {k: getattr(module, k).clone() for k in RUNNING[name]}
        with norm_phase("query"):
            module(_images(7, 6))
    for key in RUNNING[name]:
        assert not torch.equal(after_support[key], start[key]), key
        assert torch.equal(getattr(module, key), after_support[key]), key


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_an_unknown_mode_is_one_line_naming_the_modes(name: str) -> None:
    with pytest.raises(OptionError, match="mode must be one of transductive, running, support"):
        create_norm(name, 16, mode="episodic")


@pytest.mark.parametrize("algo", ["maml", "fomaml", "anil"])
@pytest.mark.parametrize("name", sorted(RUNNING))
def test_the_maml_family_runs_every_batch_normalizer_transductive(name: str, algo: str) -> None:
    assert RunConfig(algo=algo, norm=name).norm_options["mode"] == MAML_MODE
    protonet = RunConfig(norm=name).norm_options["mode"]
    assert protonet == get_norm(name).modes[0]  # the factory's (the paper's) default
    chosen = RunConfig(algo=algo, norm=name, norm_options={"mode": "support"})
    assert chosen.norm_options["mode"] == "support"  # a named mode always wins


def test_normalizers_without_batch_statistics_record_no_mode() -> None:
    assert "mode" not in RunConfig(algo="maml", norm="groupnorm").norm_options


def test_the_kit_rejects_batch_statistics_without_modes() -> None:
    from fewnorm.norms import NormSpec

    spec = NormSpec(name="plainbn", factory=lambda c: nn.BatchNorm2d(c), summary="", paper="")
    with pytest.raises(ConformanceError, match=r"\[modes\].*declares no few-shot modes"):
        check_normalizer(spec, checks=("modes",))


class _LeakyTransductive(nn.BatchNorm2d):
    """Claims a transductive mode but normalizes with running statistics in evaluation."""

    def __init__(self, channels: int, mode: str = "transductive") -> None:
        super().__init__(channels)
        self.mode = mode


def test_the_kit_catches_a_mode_that_does_not_do_what_it_says() -> None:
    from fewnorm.norms import NormSpec

    spec = NormSpec(name="leaky", factory=_LeakyTransductive, summary="", paper="", modes=("transductive",))
    with pytest.raises(ConformanceError, match="mode=transductive reads its running statistics"):
        check_normalizer(spec, checks=("modes",))


def test_the_kit_judges_what_a_layer_computes_not_the_default_label() -> None:
    """register_norm labels statistics ("batch",) by default: a per-sample layer still passes."""
    from fewnorm.norms import NormSpec

    spec = NormSpec(name="gn", factory=lambda c: nn.GroupNorm(4, c), summary="", paper="")
    assert spec.statistics == ("batch",) and not spec.modes
    check_normalizer(spec, checks=("modes",))


def test_norm_options_that_are_not_a_mapping_are_refused_not_filled() -> None:
    from fewnorm.config import validate_config
    from fewnorm.errors import ConfigError

    with pytest.raises(ConfigError, match="norm_options"):
        validate_config({"algo": "maml", "norm": "swbn", "norm_options": None}, "options")
