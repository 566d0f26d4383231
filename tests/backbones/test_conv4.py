"""Conv-4 pools before its ReLU: the textbook block's function (bit for bit) and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fewnorm.backbones import build_backbone
from fewnorm.backbones.conv4 import textbook_order
from fewnorm.norms import list_norms, norm_phase, task_scope


def run(model: nn.Module, x: Tensor) -> Tensor:
    with task_scope(), norm_phase("support"):
        out: Tensor = model(x)
        return out


@pytest.mark.parametrize("norm", [spec.name for spec in list_norms()])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pool_before_relu_is_the_textbook_block(norm: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    model = build_backbone("conv4", in_channels=1, hidden=8, norm=norm, channels_last=channels_last)
    model = model.double()
    reference = textbook_order(model)
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(10, 1, 28, 28, dtype=torch.float64)  # (N, C, H, W)
    for training in (True, False):
        model.train(training), reference.train(training)
        out, expected = run(model, x), run(reference, x)
        assert torch.equal(out, expected)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        expected_grads = torch.autograd.grad(expected.square().sum(), list(reference.parameters()))
        # The same values reach the normalizer's backward; its reductions may run in another order.
        for a, b in zip(grads, expected_grads, strict=True):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_blocks_pool_before_relu_and_keep_the_textbook_state_dict_keys() -> None:
    model = build_backbone("conv4", in_channels=1, norm="batchnorm")
    for block in model.blocks:
        assert [type(m) for m in block][2:] == [nn.MaxPool2d, nn.ReLU]
    for block in textbook_order(model).blocks:
        assert [type(m) for m in block][2:] == [nn.ReLU, nn.MaxPool2d]
    assert sorted({k.split(".")[2] for k in model.state_dict()}) == ["0", "1"]  # conv, norm


def test_second_order_gradients_match_the_textbook_block() -> None:
    """MAML differentiates through the inner-loop gradient: ReLU's double backward moves too."""
    torch.manual_seed(0)
    model = build_backbone("conv4", in_channels=1, hidden=8, norm="batchnorm").double()
    reference = textbook_order(model)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    results = []
    for m in (model, reference):
        params = list(m.parameters())
        inner = torch.autograd.grad(run(m, x).square().sum(), params, create_graph=True)
        outer = sum((g * g).sum() for g in inner)
        results.append(torch.autograd.grad(outer, params))
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
