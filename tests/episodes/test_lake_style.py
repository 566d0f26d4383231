"""Lake-style runs on a constructed fold: drawers apart, answers right, seeded, no credit for memory."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fewnorm.config import RunConfig
from fewnorm.data.lakestyle import Fold, drawer_of
from fewnorm.data.store import ImageStore
from fewnorm.episodes.lake_style import LakeStyleRun, LakeStyleValidator, draw_run, draw_runs, errors_of
from fewnorm.errors import DataError

CHARACTERS, DRAWERS = 26, 6


def synthetic_fold(characters: int = CHARACTERS, drawers: tuple[int, ...] = (3, 1, 4, 6, 5, 2)) -> Fold:
    """A fold whose image ``(c, d)`` encodes class ``c`` and drawer ``d`` in two pixels.

    Drawers are listed out of order, so a run that took row index for drawer would be caught.
    """
    images = torch.zeros(characters * len(drawers), 1, 28, 28, dtype=torch.uint8)
    for c in range(characters):
        for i, d in enumerate(drawers):
            images[c * len(drawers) + i, 0, 0, 0] = c + 1
            images[c * len(drawers) + i, 0, 0, 1] = d
    names = [f"Alpha/character{c + 1:02d}" for c in range(characters)]
    store = ImageStore.from_classes(list(images.split(len(drawers))), names)
    return Fold("omniglot-minimal", 0, "Alpha", store, (drawers,) * characters)


def _class_and_drawer(image: Tensor) -> tuple[int, int]:
    return int(image[0, 0, 0]) - 1, int(image[0, 0, 1])


def test_training_and_test_images_come_from_different_drawers_in_every_run() -> None:
    fold = synthetic_fold()
    for run in draw_runs(fold, 200, seed=7):
        support = [_class_and_drawer(img) for img in run.training]  # read from the pixels
        query = [_class_and_drawer(img) for img in run.test]
        assert {d for _, d in support}.isdisjoint({d for _, d in query})
        assert len({d for _, d in support}) == 1 and len({d for _, d in query}) == 1  # one drawer each
        assert len({c for c, _ in support}) == 20  # 20 different characters of the alphabet
        assert sorted(c for c, _ in query) == sorted(c for c, _ in support)  # each character tested once
        for j, answer in enumerate(run.answers):  # the answer is the training image of the same character
            assert query[j][0] == support[answer][0]


def test_runs_are_fixed_by_the_seed() -> None:
    fold = synthetic_fold()
    first, again, other = (draw_runs(fold, 30, seed) for seed in (11, 11, 12))
    assert all(_same(a, b) for a, b in zip(first, again, strict=True))
    assert sum(_same(a, b) for a, b in zip(first, other, strict=True)) == 0
    assert _same(draw_run(fold, 5, 11), first[5])  # run i depends on seed + i alone
    assert _same(draw_run(fold, 0, 16), first[5])


def _same(a: LakeStyleRun, b: LakeStyleRun) -> bool:
    return (
        torch.equal(a.training, b.training)
        and torch.equal(a.test, b.test)
        and a.answers == b.answers
        and a.classes == b.classes
    )


def test_the_answers_are_not_the_file_order() -> None:
    runs = draw_runs(synthetic_fold(), 20, seed=0)
    assert sum(run.answers == list(range(20)) for run in runs) == 0


class Memorizer(nn.Module):
    """Embeds an image it has seen as its class's one-hot vector, any other image as zeros."""

    def __init__(self, store: ImageStore) -> None:
        super().__init__()
        labels = torch.repeat_interleave(torch.arange(store.num_classes), store.class_sizes).tolist()
        self.memory = {img.numpy().tobytes(): c for img, c in zip(store.images, labels, strict=True)}
        self.classes = store.num_classes

    def forward(self, x: Tensor) -> Tensor:
        pixels = x.mul(255).round().to(torch.uint8)  # (B, 1, H, W): the stored bytes again
        codes = torch.zeros(x.shape[0], self.classes + 1)  # (B, K + 1): the last column means unseen
        for i, img in enumerate(pixels):
            codes[i, self.memory.get(img.numpy().tobytes(), self.classes)] = 1.0
        return codes[:, :-1]  # (B, K): zeros for an image never seen


def test_a_model_that_memorizes_other_characters_gets_no_credit() -> None:
    fold, config = synthetic_fold(), RunConfig(norm="groupnorm")
    runs = draw_runs(fold, 50, seed=3)
    others = ImageStore.from_classes([fold.store.images[:DRAWERS].flip(-1)], ["Other/character01"])
    # Memorizing the fold itself would pay; memorizing other characters must not.
    leaked = LakeStyleValidator(config, runs, None).evaluate(Memorizer(fold.store), torch.device("cpu"))
    honest = LakeStyleValidator(config, runs, None).evaluate(Memorizer(others), torch.device("cpu"))
    assert errors_of(leaked) == [0.0] * 50
    assert errors_of(honest) == [95.0] * 50  # every item tied, so the first training image: 1 in 20


def test_a_fold_needs_twenty_characters_and_two_common_drawers() -> None:
    with pytest.raises(DataError, match="has 19 characters"):
        draw_run(synthetic_fold(characters=19), 0, 0)
    with pytest.raises(DataError, match="no two drawers"):
        draw_run(synthetic_fold(drawers=(4,)), 0, 0)


@pytest.mark.parametrize(("path", "drawer"), [("Korean/character01/0577_07.png", 7), ("1001_20.png", 20)])
def test_drawer_is_read_from_the_file_name(path: str, drawer: int) -> None:
    assert drawer_of(path) == drawer


def test_a_file_without_a_drawer_is_refused() -> None:
    with pytest.raises(DataError, match=r"not named XXXX_DD\.png"):
        drawer_of("Korean/character01/scan.png")
