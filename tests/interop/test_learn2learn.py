"""fewnorm with learn2learn: meta-gradient parity, BatchNorm swapping, training, buffer isolation."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.backbones import Conv4
from fewnorm.episodes.heads import FewShotClassifier
from fewnorm.episodes.maml import InnerLoop, maml_task_loss
from fewnorm.episodes.sampler import Episode
from fewnorm.errors import OptionError
from fewnorm.interop.learn2learn import adapt, clone_per_task, preserved_buffers, swap_batchnorm
from fewnorm.norms import norm_phase, task_scope
from fewnorm.norms.batch import FewShotBatchNorm2d
from fewnorm.norms.tasknorm import TaskNorm2d

l2l = pytest.importorskip(
    "learn2learn",
    reason="learn2learn is not importable: `make install` builds it from source (tools/build_learn2learn.sh)",
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread avoids oversubscription on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def l2l_cnn4(hidden: int = 8) -> nn.Module:
    """learn2learn's CNN4 sized for 16x16 single-channel images (16 -> 8 -> 4 -> 2 -> 1)."""
    torch.manual_seed(0)
    return l2l.vision.models.CNN4(5, hidden_size=hidden, layers=4, channels=1, embedding_size=hidden)


def episodes16(n: int = 1, dtype: torch.dtype = torch.float32, queries: int = 3) -> list[Episode]:
    """5-way 1-shot tasks on 16x16 images: each of 10 classes is a fixed random pattern plus noise.

    The class lives in the spatial pattern, not in the image's mean, so per-sample
    normalizers (group, layer, instance norm) can learn it too.
    """
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(10, 1, 16, 16, generator=g, dtype=dtype)  # (classes, 1, 16, 16)
    labels = torch.arange(5)
    out = []
    for _ in range(n):
        classes = torch.randperm(10, generator=g)[:5]  # (5,)
        support = patterns[classes] + 0.3 * torch.randn(5, 1, 16, 16, generator=g, dtype=dtype)
        query = patterns[classes].repeat_interleave(queries, 0)  # (5*queries, 1, 16, 16)
        query = query + 0.3 * torch.randn(query.shape, generator=g, dtype=dtype)
        out.append(Episode(support, labels, query, labels.repeat_interleave(queries), 5, 1, queries))
    return out


def l2l_meta_grads(model: nn.Module, episode: Episode, lr: float, steps: int, first_order: bool) -> dict:
    maml = l2l.algorithms.MAML(model, lr=lr, first_order=first_order)
    maml.train()
    learner = maml.clone()
    for _ in range(steps):
        learner.adapt(F.cross_entropy(learner(episode.support), episode.support_labels))
    F.cross_entropy(learner(episode.query), episode.query_labels).backward()
    return {k: p.grad for k, p in model.named_parameters()}


def fewnorm_meta_grads(model: nn.Module, episode: Episode, lr: float, steps: int, first_order: bool) -> dict:
    model.train()
    loss, _ = maml_task_loss(model, episode, InnerLoop(lr=lr, steps=steps, first_order=first_order))
    loss.backward()
    return {k: p.grad for k, p in model.named_parameters()}


def _fewnorm_conv4() -> nn.Module:
    torch.manual_seed(0)
    return FewShotClassifier(Conv4(1, 8, "batchnorm"), nn.Linear(8, 5))


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("make", [l2l_cnn4, _fewnorm_conv4], ids=["l2l-cnn4", "fewnorm-conv4"])
def test_meta_gradients_match_learn2learn_maml(first_order: bool, make: object) -> None:
    model = make().double()  # type: ignore[operator]
    twin = copy.deepcopy(model)
    episode = episodes16(dtype=torch.float64)[0]
    ours = fewnorm_meta_grads(model, episode, 0.4, 2, first_order)
    theirs = l2l_meta_grads(twin, episode, 0.4, 2, first_order)
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-9, msg=k)


def test_swap_batchnorm_in_learn2learn_models() -> None:
    cnn = l2l_cnn4()
    gammas = [m.weight.detach().clone() for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    swap_batchnorm(cnn, "batchnorm", mode="support")
    swapped = [m for m in cnn.modules() if isinstance(m, FewShotBatchNorm2d)]
    assert len(swapped) == 4 and not any(isinstance(m, nn.BatchNorm2d) for m in cnn.modules())
    assert all(m.mode == "support" for m in swapped)
    for m, gamma in zip(swapped, gammas, strict=True):  # learn2learn draws gamma ~ U(0, 1): carried over
        assert torch.equal(m.weight, gamma)
    with task_scope(), norm_phase("support"):
        assert cnn(torch.rand(5, 1, 16, 16)).shape == (5, 5)
    resnet = l2l.vision.models.ResNet12(5, wider=False)
    count = sum(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    swap_batchnorm(resnet, "tasknorm-i")
    assert sum(isinstance(m, TaskNorm2d) for m in resnet.modules()) == count > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())


@pytest.mark.parametrize(("norm", "kind"), [("patchnorm", "conv"), ("frn", "norm-act")])
def test_swap_rejects_normalizers_that_do_not_sit_after_a_conv(norm: str, kind: str) -> None:
    with pytest.raises(OptionError, match=f"kind '{kind}'.*only swaps activation-kind"):
        swap_batchnorm(l2l_cnn4(), norm)


def test_swap_rejects_unknown_options() -> None:
    with pytest.raises(OptionError, match="has no option 'groupz'"):
        swap_batchnorm(l2l_cnn4(), "groupnorm", groupz=2)


def _task_loss(maml: object, episode: Episode, steps: int = 1) -> Tensor:
    with task_scope():
        learner = clone_per_task(maml)
        adapt(learner, episode.support, episode.support_labels, steps=steps)
        with norm_phase("query"):
            return F.cross_entropy(learner(episode.query), episode.query_labels)


@pytest.mark.parametrize(
    ("norm", "options"),
    [("batchnorm", {"mode": "support"}), ("tasknorm-i", {}), ("groupnorm", {"groups": 4})],
)
def test_swapped_model_trains_inside_learn2learn_maml(norm: str, options: dict) -> None:
    maml = l2l.algorithms.MAML(swap_batchnorm(l2l_cnn4(), norm, **options), lr=0.4)
    opt = torch.optim.Adam(maml.parameters(), lr=3e-3)
    tasks = episodes16(3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.stack([_task_loss(maml, t) for t in tasks]).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3]), losses


def _buffers(model: nn.Module) -> dict[str, Tensor]:
    return {k: b.clone() for k, b in model.named_buffers()}


def _changed(model: nn.Module, before: dict[str, Tensor]) -> list[str]:
    return [k for k, b in model.named_buffers() if not torch.equal(b, before[k])]


def test_learn2learn_clone_leaks_running_statistics_and_clone_per_task_does_not() -> None:
    maml = l2l.algorithms.MAML(swap_batchnorm(l2l_cnn4(), "batchnorm", mode="running"), lr=0.4)
    maml.train()
    episode = episodes16()[0]
    before = _buffers(maml)

    _task_loss(maml, episode).backward()  # clone_per_task: the task's statistics stay in the clone
    assert _changed(maml, before) == []

    with preserved_buffers(maml):  # plain clone, restored when the task is done
        learner = maml.clone()
        learner.adapt(F.cross_entropy(learner(episode.support), episode.support_labels))
        F.cross_entropy(learner(episode.query), episode.query_labels).backward()
        assert _changed(maml, before), "learn2learn's clone shares buffers with the base model"
    assert _changed(maml, before) == []
