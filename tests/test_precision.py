"""Mixed precision: autocast on the backbone's forward passes only, float32 outputs, every normalizer."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fewnorm import precision
from fewnorm.backbones import build_backbone
from fewnorm.config import AMP_MODES, RunConfig
from fewnorm.data.store import ImageStore
from fewnorm.episodes import loop
from fewnorm.episodes.algorithms import get_algorithm
from fewnorm.episodes.evaluation import evaluate_checkpoint
from fewnorm.episodes.maml import InnerLoop, maml_train_step
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.errors import ConfigError
from fewnorm.norms import list_norms
from fewnorm.precision import ForwardAutocast, amp_dtype, autocast_forward, slow_amp_reason
from tests.episodes.test_sampler import make_store

NORMS = [spec.name for spec in list_norms()]


def conv4(norm: str, amp: str) -> nn.Module:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, norm=norm, norm_options={}, hidden=16)
    return autocast_forward(backbone, amp)


class OutputDtypes(TorchDispatchMode):
    """Records the dtype of every tensor an aten op returns (after autocast has cast its inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.seen.update(t.dtype for t in tree_flatten(out)[0] if isinstance(t, Tensor))
        return out


def op_dtypes(model: nn.Module, x: Tensor) -> set[torch.dtype]:
    """The dtypes the ops of one forward pass of ``model`` computed in."""
    with OutputDtypes() as recorder:
        model(x)
    return recorder.seen


def test_amp_names_match_the_config() -> None:
    assert tuple(precision.AMP_DTYPES) == AMP_MODES
    assert amp_dtype("none") is None and amp_dtype("bf16") is torch.bfloat16
    with pytest.raises(ConfigError, match="--amp must be one of none, bf16, got 'fp8'"):
        amp_dtype("fp8")
    with pytest.raises(ValueError, match="amp must be one of none, bf16"):
        RunConfig(amp="fp8")
    assert RunConfig(amp="none").amp is None and RunConfig().amp is None  # one spelling of float32
    assert RunConfig(amp="bf16").amp == "bf16"


@pytest.mark.parametrize("norm", NORMS)
def test_bf16_forward_close_to_float32_with_float32_output(norm: str) -> None:
    """Inside, layers compute in bfloat16; outside, the output is float32 and near the float32 model's."""
    plain, mixed = conv4(norm, "none"), conv4(norm, "bf16")
    mixed.load_state_dict(plain.state_dict())
    x = torch.rand(10, 1, 28, 28)  # (N, C, H, W)
    assert torch.bfloat16 in op_dtypes(mixed, x)
    assert torch.bfloat16 not in op_dtypes(plain, x)
    with torch.no_grad():
        reference = plain(x)  # (N, D)
    out = mixed(x)  # (N, D)
    assert out.dtype == torch.float32
    assert float((out.detach() - reference).norm() / reference.norm()) < 0.05  # bfloat16: 8 bits of mantissa
    assert not torch.is_autocast_enabled("cpu")  # left on exit
    grads = torch.autograd.grad(out.square().sum(), [p for p in mixed.parameters() if p.requires_grad])
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_backward_runs_outside_autocast() -> None:
    """A backward called inside an autocast block elsewhere still sees the forward's own dtypes."""
    model = conv4("batchnorm", "bf16")
    x = torch.rand(6, 1, 28, 28)
    first = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    loss = model(x).sum()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        second = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_float64_models_are_left_alone() -> None:
    """Autocast casts float32 only: a float64 model (gradient checks) computes as without it."""
    plain, mixed = conv4("batchnorm", "none").double(), conv4("batchnorm", "bf16").double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    assert op_dtypes(mixed, x) <= {torch.float64, torch.int64, torch.uint8, torch.bool}
    assert torch.equal(mixed(x), plain(x))


def test_a_failed_forward_leaves_autocast_off() -> None:
    class Broken(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise RuntimeError("broken forward")

    model = autocast_forward(Broken(), "bf16")
    with pytest.raises(RuntimeError, match="broken forward"):
        model(torch.zeros(1))
    assert not torch.is_autocast_enabled("cpu")


def test_state_dict_keys_copies_and_pickles_unchanged() -> None:
    plain, mixed = conv4("groupnorm", "none"), conv4("groupnorm", "bf16")
    assert list(plain.state_dict()) == list(mixed.state_dict())
    assert autocast_forward(plain, "none") is plain and not plain._forward_pre_hooks
    x = torch.rand(4, 1, 28, 28)
    for clone in (copy.deepcopy(mixed), pickle.loads(pickle.dumps(mixed))):
        assert torch.bfloat16 in op_dtypes(clone, x)
        assert torch.equal(clone(x), mixed(x))


def test_slow_amp_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: False)
    reason = slow_amp_reason("bf16", cpu)
    assert reason is not None and "emulated" in reason
    assert slow_amp_reason("none", cpu) is None and slow_amp_reason("bf16", cuda) is None
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    assert slow_amp_reason("bf16", cpu) is None


@pytest.mark.parametrize("vectorize", [False, True], ids=["loop", "vmap"])
def test_maml_meta_gradient_under_bf16_near_float32(vectorize: bool) -> None:
    """Second order through autocast: finite meta-gradients within bfloat16's error of float32's."""
    noise = torch.Generator().manual_seed(0)  # images of random pixels: far from bfloat16's edge cases
    classes = [torch.randint(0, 256, (4, 1, 28, 28), generator=noise, dtype=torch.uint8) for _ in range(6)]
    sampler = EpisodeSampler(ImageStore.from_classes(classes, [f"c{i}" for i in range(6)]), 5, 1, 2)
    episodes = [sampler.sample(torch.Generator().manual_seed(i)) for i in range(2)]
    grads = {}
    for amp in AMP_MODES:
        config = RunConfig(algo="maml", norm="batchnorm", hidden=32, amp=amp, queries=2)
        torch.manual_seed(0)
        model = get_algorithm(config).build(config, 1)
        loop_ = InnerLoop(lr=0.4, steps=1, vectorize=vectorize)
        maml_train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), episodes, loop_)
        grads[amp] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(grads["bf16"]).all()
    similarity = float(F.cosine_similarity(grads["bf16"], grads["none"], dim=0))
    assert similarity > 0.85, similarity  # measured 0.93 (loop), 0.95 (vmap); 0.93-0.99 on Omniglot


def test_run_records_amp_and_evaluation_autocasts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fewnorm.data.load_split", lambda *a, **k: make_store(size=28))
    monkeypatch.setattr("fewnorm.data.load_split", lambda *a, **k: make_store(size=28))
    config = RunConfig(
        norm="groupnorm", hidden=8, episodes=4, val_every=2, val_episodes=2, test_episodes=3,
        train_ways=5, train_queries=2, queries=3, amp="bf16",
    )  # fmt: skip
    summary = loop.train(config, tmp_path / "run")
    assert "amp: bf16" in (tmp_path / "run" / "config.yaml").read_text()
    entered: list[nn.Module] = []
    real_before = ForwardAutocast.before

    def spy(self: ForwardAutocast, module: nn.Module, args: tuple[Any, ...]) -> None:
        entered.append(module)
        real_before(self, module, args)

    monkeypatch.setattr(ForwardAutocast, "before", spy)
    result = evaluate_checkpoint(tmp_path / "run" / "best.pt")
    assert entered, "evaluation built the model without the run's autocast"
    assert result.accuracies == summary.test_accuracies
