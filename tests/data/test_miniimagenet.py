"""miniImageNet: the three layouts (tiny synthetic files in the exact formats) load to one store."""

from __future__ import annotations

import csv
import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fewnorm.data import load_split, minifiles
from fewnorm.data import miniimagenet as mini
from fewnorm.data.minifiles import LAYOUTS, locate_split, verify_split
from fewnorm.data.store import ImageStore
from fewnorm.errors import DataError

SPLITS = {"train": 3, "val": 2, "test": 2}  # classes per split (the real counts are 64/16/20)
PER_CLASS = 4
_LABEL_OFFSET = {"train": 0, "val": 64, "test": 80}  # MetaOptNet's global labels


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING), as the MetaOptNet files were written."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def synthetic_split(
    split: str, classes: int, per_class: int, seed: int
) -> tuple[list[str], np.ndarray, list[bytes]]:
    """Class names, decoded images ``(classes, per_class, 84, 84, 3)`` and their JPEG bytes.

    The arrays are the JPEGs decoded by PIL, so every layout holds the very same pixels.
    """
    gen = torch.Generator().manual_seed(seed)
    names = [f"n{1000 + 100 * list(SPLITS).index(split) + c:08d}" for c in range(classes)]
    low = torch.randint(0, 256, (classes * per_class, 3, 6, 6), generator=gen, dtype=torch.uint8)
    smooth = torch.nn.functional.interpolate(low.float(), size=(84, 84), mode="bilinear")
    jpegs, decoded = [], []
    for image in smooth.round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
        decoded.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return names, np.stack(decoded).reshape(classes, per_class, 84, 84, 3), jpegs


def write_mini_imagenet(
    root: Path, layout: str, *, splits: dict[str, int] | None = None, per_class: int = PER_CLASS,
    names_in_category: bool = True,
) -> dict[str, tuple[list[str], np.ndarray]]:  # fmt: skip
    """Write ``<root>/mini-imagenet/`` in ``layout``; returns each split's names and images.

    Rows are interleaved across classes (never grouped) and class names listed out of
    order, so the loader must regroup by the file's own class information.
    """
    directory = root / "mini-imagenet"
    directory.mkdir(parents=True, exist_ok=True)
    expected = {}
    for s, (split, classes) in enumerate((splits or SPLITS).items()):
        names, images, jpegs = synthetic_split(split, classes, per_class, seed=s)
        expected[split] = (names, images)
        pairs = [(c, j) for j in range(per_class) for c in reversed(range(classes))]  # row -> (c, j)
        if layout == "pickle":
            class_dict = {
                names[c]: [r for r, (cc, _) in enumerate(pairs) if cc == c] for c in reversed(range(classes))
            }
            data = {"image_data": np.stack([images[c, j] for c, j in pairs]), "class_dict": class_dict}
            name = {"train": "train", "val": "validation", "test": "test"}[split]
            (directory / f"mini-imagenet-cache-{name}.pkl").write_bytes(pickle.dumps(data, protocol=4))
        elif layout == "category":
            order = [(c, j) for j in range(per_class) for c in range(classes)]  # another interleaving
            labels = [_LABEL_OFFSET[split] + c for c, _ in order]
            data = {b"data": np.stack([images[c, j] for c, j in order]), b"labels": labels}
            if names_in_category:
                data[b"catname2label"] = {n.encode(): _LABEL_OFFSET[split] + c for c, n in enumerate(names)}
            part = "train_phase_train" if split == "train" else split
            (directory / f"miniImageNet_category_split_{part}.pickle").write_bytes(_py2_pickle(data))
        else:
            (directory / "images").mkdir(exist_ok=True)
            with (directory / f"{split}.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["filename", "label"])
                for c, j in pairs:
                    file = f"{names[c]}{j:08d}.jpg"
                    (directory / "images" / file).write_bytes(jpegs[c * per_class + j])
                    writer.writerow([file, names[c]])
    return expected


def _assert_store(store: ImageStore, names: list[str], images: np.ndarray) -> None:
    assert store.class_names == names
    assert store.class_sizes.tolist() == [images.shape[1]] * len(names)
    want = torch.from_numpy(images.reshape(-1, 84, 84, 3)).permute(0, 3, 1, 2)
    assert store.images.dtype == torch.uint8 and store.images.is_contiguous()
    assert torch.equal(store.images, want)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_loads_every_split(layout: str, tmp_path: Path) -> None:
    expected = write_mini_imagenet(tmp_path, layout)
    for split, (names, images) in expected.items():
        assert locate_split(tmp_path / "mini-imagenet", split).layout == layout  # type: ignore[union-attr]
        _assert_store(load_split("Mini_ImageNet", split, tmp_path), names, images)


def test_three_layouts_give_the_same_store(tmp_path: Path) -> None:
    stores = []
    for layout in LAYOUTS:
        write_mini_imagenet(tmp_path / layout, layout)
        stores.append(mini.build_store(mini.require_split(tmp_path / layout / "mini-imagenet", "train")))
    for other in stores[1:]:
        assert other.class_names == stores[0].class_names
        assert torch.equal(other.class_starts, stores[0].class_starts)
        assert torch.equal(other.images, stores[0].images)


def test_category_pickle_without_names_uses_labels(tmp_path: Path) -> None:
    expected = write_mini_imagenet(tmp_path, "category", names_in_category=False)
    store = load_split("mini-imagenet", "val", tmp_path)
    _, images = expected["val"]
    assert store.class_names == ["64", "65"]
    assert torch.equal(store.images, torch.from_numpy(images.reshape(-1, 84, 84, 3)).permute(0, 3, 1, 2))


def test_pickle_store_reuses_the_pickle_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mini_imagenet(tmp_path, "pickle", splits={"train": 3})
    seen: dict[str, int] = {}
    real = mini.read_pickle

    def spy(source: Any) -> Any:
        array, classes = real(source)
        seen["ptr"] = array.ctypes.data
        return array, classes

    monkeypatch.setattr(mini, "read_pickle", spy)
    store = mini.build_store(mini.require_split(tmp_path / "mini-imagenet", "train"))
    assert store.images.data_ptr() == seen["ptr"]  # converted in place: no second copy


def test_permute_rows_in_place_matches_a_gather() -> None:
    rows = torch.arange(50 * 6, dtype=torch.uint8).view(50, 1, 2, 3)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
    want = rows[order].clone()
    mini._permute_rows_in_place(rows, order)
    assert torch.equal(rows, want)


def test_second_load_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWNORM_CACHE", str(tmp_path / "cache"))
    write_mini_imagenet(tmp_path, "csv", splits={"test": 2})
    first = load_split("mini-imagenet", "test", tmp_path)
    assert [p.name.startswith("mini-imagenet-test-84px-") for p in (tmp_path / "cache").iterdir()] == [True]
    monkeypatch.setattr(mini, "build_store", lambda source: pytest.fail("rebuilt despite the cache"))
    assert torch.equal(load_split("mini-imagenet", "test", tmp_path).images, first.images)


def test_csv_resizes_other_sizes_and_reports_missing_images(tmp_path: Path) -> None:
    write_mini_imagenet(tmp_path, "csv", splits={"train": 2}, per_class=2)
    images = tmp_path / "mini-imagenet" / "images"
    first = sorted(images.iterdir())[0]
    Image.new("RGB", (100, 90), (10, 200, 30)).save(first)
    store = mini.build_store(mini.require_split(tmp_path / "mini-imagenet", "train"))
    assert store.images.shape == (4, 3, 84, 84)
    assert store.images[0, :, 40, 40].tolist() == [10, 200, 30]
    first.unlink()
    with pytest.raises(DataError, match=rf"1 images listed in train.csv are missing .*{first.name}"):
        mini.build_store(mini.require_split(tmp_path / "mini-imagenet", "train"))


def test_missing_files_say_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_split("mini-imagenet", "val", tmp_path)
    message = str(info.value)
    for name in ("mini-imagenet-cache-validation.pkl", "miniImageNet_category_split_val.pickle", "val.csv"):
        assert name in message
    assert "fewnorm data download mini-imagenet" in message
    (tmp_path / "mini-imagenet" / "val.csv").parent.mkdir()
    (tmp_path / "mini-imagenet" / "val.csv").write_text("filename,label\n")
    with pytest.raises(DataError, match="no images/ folder"):
        load_split("mini-imagenet", "val", tmp_path)


def test_damaged_pickle_is_one_clear_error(tmp_path: Path) -> None:
    write_mini_imagenet(tmp_path, "pickle", splits={"test": 2})
    path = tmp_path / "mini-imagenet" / "mini-imagenet-cache-test.pkl"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="not a readable miniImageNet pickle"):
        load_split("mini-imagenet", "test", tmp_path)
    path.write_bytes(
        pickle.dumps({"image_data": np.zeros((3, 84, 84, 3), np.uint8), "class_dict": {"a": [0, 1]}})
    )
    with pytest.raises(DataError, match="exactly one class"):
        load_split("mini-imagenet", "test", tmp_path)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_verify_reports_counts_against_64_16_20(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mini_imagenet(tmp_path, layout)
    report = verify_split(tmp_path / "mini-imagenet", "train")
    assert (report.layout, report.images, report.classes) == (layout, 12, 3)
    assert (report.min_per_class, report.max_per_class, report.image_shape) == (4, 4, [84, 84, 3])
    assert (report.expected_classes, report.expected_per_class) == (64, 600)
    assert not report.ok
    assert "3 classes, expected 64" in report.problem  # type: ignore[operator]
    monkeypatch.setitem(minifiles.EXPECTED_CLASSES, "train", 3)
    monkeypatch.setattr(minifiles, "IMAGES_PER_CLASS", 4)
    assert verify_split(tmp_path / "mini-imagenet", "train").ok


@pytest.mark.slow  # importing learn2learn (and gym) alone takes about 4 s
def test_learn2learn_reads_the_same_images_and_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("learn2learn.vision.datasets", reason="learn2learn is not installed")
    write_mini_imagenet(tmp_path, "pickle")
    folder = tmp_path / "mini-imagenet"
    for split, mode in (("train", "train"), ("val", "validation")):
        ours = load_split("mini-imagenet", split, tmp_path)
        theirs = datasets.MiniImagenet(root=str(folder), mode=mode)
        labels = torch.as_tensor(theirs.y, dtype=torch.int64)
        assert len(theirs) == ours.images.shape[0]
        for name, index in theirs.class_idx.items():
            rows = (labels == index).nonzero().flatten()  # their rows of this class, in order
            mine = ours.class_images(ours.class_names.index(name))
            assert torch.equal(theirs.x[rows], mine.float())
            assert {theirs[int(r)][1] for r in rows} == {index}
