"""omniglot-minimal from the real small zips: counts, preprocessing, splits, cache, errors."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

from fewnorm.data import ImageStore, load_split
from fewnorm.data import omniglot as omniglot_mod
from fewnorm.data.files import locate
from fewnorm.errors import DataError, OptionError, UnknownNameError

pytestmark = pytest.mark.data

SMALL1 = "images_background_small1.zip"


@pytest.fixture(scope="session")
def minimal(omniglot_root: Path) -> dict[str, ImageStore]:
    """The three omniglot-minimal splits, built once per session (into the test cache)."""
    return {s: load_split("omniglot-minimal", s, omniglot_root) for s in ("train", "val", "test")}


def _characters(store: ImageStore) -> set[str]:
    return {"/".join(n.split("/")[:2]) for n in store.class_names}


def _alphabets(store: ImageStore) -> set[str]:
    return {n.split("/")[0] for n in store.class_names}


def test_shapes_dtypes_layout(minimal: dict[str, ImageStore]) -> None:
    for store in minimal.values():
        assert store.images.dtype == torch.uint8
        assert store.images.is_contiguous()
        assert store.image_shape == (1, 28, 28)
        assert store.class_sizes.tolist() == [20] * store.num_classes
        sizes = store.class_sizes
        assert torch.equal(store.class_starts, torch.cumsum(sizes, 0) - sizes)
        assert store.images.shape[0] == int(sizes.sum())


def test_counts(minimal: dict[str, ImageStore]) -> None:
    train, val, test = minimal["train"], minimal["val"], minimal["test"]
    # small1: 136 characters x 20 drawers; 20% (27) held out for validation.
    assert len(_characters(train)) + len(_characters(val)) == 136
    assert len(_characters(val)) == 27
    assert train.num_classes == 4 * 109  # every character in 4 rotations
    assert val.num_classes == 27
    assert test.num_classes == 106
    assert test.images.shape == (106 * 20, 1, 28, 28)


def test_splits_are_disjoint(minimal: dict[str, ImageStore]) -> None:
    train, val, test = minimal["train"], minimal["val"], minimal["test"]
    assert not _characters(train) & _characters(val)
    assert _alphabets(test) == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert not _alphabets(test) & (_alphabets(train) | _alphabets(val))
    assert not any("/rot" in n for n in val.class_names + test.class_names)


def test_classes_sorted(minimal: dict[str, ImageStore]) -> None:
    for store in minimal.values():
        originals = [n for n in store.class_names if "/rot" not in n]
        assert originals == sorted(originals)


def test_rotations_are_exact_rot90(minimal: dict[str, ImageStore]) -> None:
    train = minimal["train"]
    names = train.class_names
    for c in range(0, train.num_classes, 4):
        assert names[c + 1 : c + 4] == [f"{names[c]}/rot{d}" for d in (90, 180, 270)]
        original = train.class_images(c)
        for k in (1, 2, 3):
            assert torch.equal(train.class_images(c + k), torch.rot90(original, k, dims=(2, 3)))


def test_inverted_strokes_on_dark_background(minimal: dict[str, ImageStore]) -> None:
    images = minimal["test"].images.float()
    assert images.mean() < 40  # strokes cover a small part of each image
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 0], images[..., -1]])
    assert border.mean() < 5  # background ~0
    assert images.amax(dim=(1, 2, 3)).min() > 200  # every image has a bright stroke


def test_resize_is_antialiased_bilinear(omniglot_root: Path) -> None:
    source = locate(omniglot_root / "omniglot", SMALL1)
    assert source is not None
    paths = source.list_images()[:8]
    raw = omniglot_mod.decode_pngs(source.read(paths), paths)  # (8, 105, 105)
    expected = torch.nn.functional.interpolate(
        (255 - raw).unsqueeze(1).float(), size=(28, 28), mode="bilinear", antialias=True
    )
    assert torch.equal(omniglot_mod.preprocess(raw, 28), expected.round().to(torch.uint8))


def test_val_split_is_deterministic(
    minimal: dict[str, ImageStore],
    omniglot_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEWNORM_CACHE", str(tmp_path))  # force a rebuild
    again = load_split("omniglot-minimal", "val", omniglot_root)
    assert again.class_names == minimal["val"].class_names
    assert torch.equal(again.images, minimal["val"].images)


def test_cache_hit_skips_decoding(
    minimal: dict[str, ImageStore], omniglot_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Path(os.environ["FEWNORM_CACHE"])  # the session's, set in conftest
    stores = sorted(p.name for p in cache.glob("omniglot-minimal-*.pt"))
    assert any(n.startswith("omniglot-minimal-train-28px-rot4-") for n in stores)

    def no_decoding(*args: object) -> torch.Tensor:
        raise AssertionError("decoded although a cached store exists")

    monkeypatch.setattr(omniglot_mod, "decode_pngs", no_decoding)
    cached = load_split("omniglot-minimal", "train", omniglot_root)
    assert torch.equal(cached.images, minimal["train"].images)
    assert cached.class_names == minimal["train"].class_names
    # Other parameters are other cache entries: this one must decode.
    with pytest.raises(AssertionError, match="decoded"):
        load_split("omniglot-minimal", "val", omniglot_root, image_size=14)


def test_cache_names_of_the_shared_zips_are_stable(
    minimal: dict[str, ImageStore], omniglot_root: Path
) -> None:
    """A change that does not change the images must not make every user rebuild their stores.

    Update these names only together with ``PREPROCESS_VERSION`` or ``STORE_VERSION``.
    """
    cache = Path(os.environ["FEWNORM_CACHE"])
    names = {p.name for p in cache.glob("omniglot-minimal-*-28px*.pt")}
    assert {
        "omniglot-minimal-train-28px-rot4-6217b2f212b2d4f7.pt",
        "omniglot-minimal-val-28px-6201c93b87f8e42d.pt",
        "omniglot-minimal-test-28px-4ee4230ca4e6990c.pt",
    } <= names


def test_other_image_size(omniglot_root: Path) -> None:
    store = load_split("omniglot-minimal", "val", omniglot_root, image_size=14)
    assert store.image_shape == (1, 14, 14)


def test_extracted_folder_equals_zip(
    minimal: dict[str, ImageStore], omniglot_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "omniglot").mkdir()
    with zipfile.ZipFile(omniglot_root / "omniglot" / SMALL1) as zf:
        zf.extractall(tmp_path / "omniglot")
    store = load_split("omniglot-minimal", "val", tmp_path)
    assert store.class_names == minimal["val"].class_names
    assert torch.equal(store.images, minimal["val"].images)


def test_corrupt_zip_names_checksums(omniglot_root: Path, tmp_path: Path) -> None:
    data = (omniglot_root / "omniglot" / SMALL1).read_bytes()
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / SMALL1).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_split("omniglot-minimal", "train", tmp_path)
    message = str(info.value)
    assert SMALL1 in message
    assert "e704a628b5459e08445c13499850abc4" in message  # expected MD5
    assert "corrupt or truncated" in message
    assert "fewnorm data download omniglot" in message


def test_missing_files_say_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_split("omniglot-minimal", "test", tmp_path)
    message = str(info.value)
    for needed in (
        "images_background_small2.zip",
        str(tmp_path / "omniglot"),
        "fewnorm data download omniglot --subset minimal",
        "--data-root",
        "FEWNORM_DATA",
    ):
        assert needed in message
    with pytest.raises(DataError, match=r"images_background\.zip"):
        load_split("omniglot", "train", tmp_path)


def test_bad_arguments(omniglot_root: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'omniglot'"):
        load_split("omniglott", "train", omniglot_root)
    with pytest.raises(DataError, match="unknown split 'validation'"):
        load_split("omniglot-minimal", "validation", omniglot_root)
    with pytest.raises(OptionError, match="train split only"):
        load_split("omniglot-minimal", "test", omniglot_root, rotations=True)
    with pytest.raises(OptionError, match="image_size"):
        load_split("omniglot-minimal", "test", omniglot_root, image_size=0)


def test_unreadable_cache_is_rebuilt(
    omniglot_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEWNORM_CACHE", str(tmp_path))
    first = load_split("omniglot-minimal", "val", omniglot_root)
    (cached,) = tmp_path.glob("*.pt")
    cached.write_bytes(b"garbage")
    again = load_split("omniglot-minimal", "val", omniglot_root)
    assert torch.equal(again.images, first.images)
    assert ImageStore.load(cached).class_names == first.class_names  # rewritten
