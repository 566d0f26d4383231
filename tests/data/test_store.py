"""ImageStore: layout, validation, and atomic save / load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fewnorm.data import ImageStore
from fewnorm.errors import DataError


def _store(sizes: tuple[int, ...] = (3, 1, 2)) -> ImageStore:
    gen = torch.Generator().manual_seed(0)
    per_class = [torch.randint(0, 256, (n, 1, 4, 5), generator=gen, dtype=torch.uint8) for n in sizes]
    return ImageStore.from_classes(per_class, [f"A/character{i:02d}" for i in range(len(sizes))])


def test_from_classes_layout() -> None:
    store = _store()
    assert store.images.shape == (6, 1, 4, 5)
    assert store.images.dtype == torch.uint8
    assert store.images.is_contiguous()
    assert store.class_starts.tolist() == [0, 3, 4]
    assert store.class_sizes.tolist() == [3, 1, 2]
    assert store.class_starts.dtype == store.class_sizes.dtype == torch.int64
    assert store.num_classes == 3
    assert store.image_shape == (1, 4, 5)
    assert torch.equal(store.class_images(2), store.images[4:6])


@pytest.mark.parametrize(
    ("images", "starts", "sizes", "names"),
    [
        (torch.zeros(2, 1, 3, 3), [0], [2], ["a"]),  # float images
        (torch.zeros(2, 3, 3, dtype=torch.uint8), [0], [2], ["a"]),  # not 4-D
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), [0, 1], [1, 1], ["a"]),  # names too short
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), [1], [2], ["a"]),  # runs past the end
    ],
)
def test_rejects_inconsistent_stores(
    images: torch.Tensor, starts: list[int], sizes: list[int], names: list[str]
) -> None:
    with pytest.raises(ValueError, match=r"images|class_"):
        ImageStore(images, torch.tensor(starts), torch.tensor(sizes), names)


def test_from_classes_rejects_mismatched_shapes() -> None:
    small, large = torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match="one shape"):
        ImageStore.from_classes([small, large.to(torch.uint8)], ["a", "b"])
    with pytest.raises(ValueError, match="class names"):
        ImageStore.from_classes([torch.zeros(1, 1, 2, 2, dtype=torch.uint8)], ["a", "b"])


def test_save_load_round_trip(tmp_path: Path) -> None:
    store = _store()
    path = tmp_path / "s.pt"
    store.save(path)
    loaded = ImageStore.load(path)
    assert torch.equal(loaded.images, store.images)
    assert torch.equal(loaded.class_starts, store.class_starts)
    assert torch.equal(loaded.class_sizes, store.class_sizes)
    assert loaded.class_names == store.class_names
    # The file is a plain weights-only payload: no pickled classes.
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {
        "format",
        "version",
        "images",
        "class_starts",
        "class_sizes",
        "class_names",
    }
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.pt"
    old = _store((2, 2))
    old.save(path)
    before = path.read_bytes()

    def crash_midway(obj: object, f: object) -> None:
        f.write(b"partial bytes")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        _store((5,)).save(path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was removed
    monkeypatch.undo()
    assert torch.equal(ImageStore.load(path).images, old.images)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04 truncated"])
def test_load_damaged_file_raises_data_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="delete it"):
        ImageStore.load(path)


def test_load_rejects_foreign_payload(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(DataError, match="not a fewnorm image store"):
        ImageStore.load(path)
