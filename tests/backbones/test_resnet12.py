"""ResNet-12: structure by normalizer kind, every registered normalizer, DropBlock, the builder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewnorm.backbones import BACKBONES, DropBlock2d, ResNet12, build_backbone
from fewnorm.errors import OptionError, UnknownNameError
from fewnorm.norms import NormKind, list_norms, norm_phase, task_scope

# One normalizer of each kind runs by default; the rest are marked slow (a 12.4M-parameter
# network per normalizer adds up on two cores): `pytest -m slow tests/backbones`.
_FAST = {"batchnorm", "patchnorm", "frn"}
NORMS = [
    pytest.param(s.name, marks=() if s.name in _FAST else pytest.mark.slow, id=s.name) for s in list_norms()
]


def _kinds(module: nn.Module) -> list[type]:
    return [type(m) for m in module.modules()]


def test_batchnorm_structure_and_size() -> None:
    model = ResNet12(3, "batchnorm")
    assert sum(p.numel() for p in model.parameters()) == 12_424_320  # MetaOptNet's 12.4M
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs].count((3, 3)) == 12
    assert [c.kernel_size for c in convs].count((1, 1)) == 4
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [64, 160, 320, 640]
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 12 and {a.negative_slope for a in acts} == {0.1}  # 2 per branch + 1 after the sum
    block = model.blocks[0]
    assert nn.LeakyReLU not in _kinds(block.conv3) and nn.LeakyReLU not in _kinds(block.shortcut)
    assert not any(isinstance(m, DropBlock2d) for m in model.modules())  # off by default


def test_conv_kind_owns_every_conv_shortcut_included() -> None:
    model = ResNet12(3, "patchnorm")
    assert not any(isinstance(m, nn.Conv2d) and type(m) is nn.Conv2d for m in model.modules())
    shortcut = model.blocks[1].shortcut[0]
    weight = next(p for p in shortcut.parameters() if p.dim() == 4)
    assert weight.shape[-2:] == (1, 1) and weight.shape[:2] == (160, 64)


def test_norm_act_kind_replaces_every_activation() -> None:
    model = ResNet12(3, "frn")
    assert not any(isinstance(m, nn.LeakyReLU) for m in model.modules())
    block = model.blocks[0]
    for layer in (block.conv1, block.conv2, block.conv3, block.shortcut):  # conv -> FRN+TLU each
        assert [t.__name__ for t in _kinds(layer)[1:]] == ["Conv2d", "FilterResponseNorm2d"]
    assert isinstance(block.act, nn.Identity)


@pytest.mark.parametrize("norm", NORMS)
def test_every_normalizer_runs_forward_and_backward(norm: str) -> None:
    torch.manual_seed(0)
    model = build_backbone("resnet12", in_channels=3, norm=norm)
    x = torch.rand(2, 3, 32, 32)
    with task_scope(), norm_phase("support"):
        z = model(x)  # (2, 640 * 2 * 2)
    assert z.shape == (2, 2560)
    z.pow(2).mean().backward()
    assert torch.isfinite(z).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_kinds_are_all_covered() -> None:
    assert {s.kind for s in list_norms() if s.name in _FAST} == set(NormKind)


def test_single_channel_28px() -> None:
    model = build_backbone("resnet12", in_channels=1, norm="groupnorm").eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 28, 28)).shape == (3, 640)


def test_dropblock_in_the_last_two_blocks() -> None:
    model = build_backbone("resnet12", in_channels=3, norm="groupnorm", dropblock=0.1, dropblock_size=3)
    drops = [isinstance(b.drop, DropBlock2d) for b in model.blocks]
    assert drops == [False, False, True, True]
    assert model.blocks[2].drop.block_size == 3
    with pytest.raises(OptionError, match="resnet12 backbone only"):
        build_backbone("conv4", in_channels=1, norm="batchnorm", dropblock=0.1)
    with pytest.raises(UnknownNameError, match="conv4, resnet12"):
        build_backbone("resnet18", in_channels=3, norm="batchnorm")
    assert BACKBONES == ("conv4", "resnet12")


def test_dropblock_drops_squares_at_the_right_rate() -> None:
    torch.manual_seed(0)
    drop = DropBlock2d(0.2, block_size=3)
    x = torch.ones(64, 8, 12, 12, requires_grad=True)
    out = drop(x)
    dropped = out == 0
    rate = dropped.float().mean().item()
    assert 0.13 < rate < 0.27
    kept = out[~dropped]
    torch.testing.assert_close(kept, kept[:1].expand_as(kept))  # one rescale factor
    assert out.sum().item() == pytest.approx(x.numel(), rel=1e-4)  # expectation preserved
    # Every dropped unit lies in a fully dropped 3x3 square (the mask equals its opening).
    mask = dropped.float()
    eroded = 1.0 - nn.functional.max_pool2d(1.0 - mask, 3, stride=1)  # (.., 10, 10)
    opened = nn.functional.max_pool2d(nn.functional.pad(eroded, (2, 2, 2, 2)), 3, stride=1)
    assert torch.equal(opened, mask)
    out.sum().backward()
    assert torch.equal(x.grad == 0, dropped)  # type: ignore[operator]
    drop.eval()
    assert drop(x) is x


def test_dropblock_rejects_bad_options() -> None:
    with pytest.raises(OptionError, match=r"\[0, 1\)"):
        DropBlock2d(1.0)
    with pytest.raises(OptionError, match="block size"):
        DropBlock2d(0.1, block_size=0)
