"""The known Omniglot files: checksums, locating a zip or its extracted folder, verifying.

No torch import: the CLI's ``verify`` and ``info`` use this module alone.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fewnorm.data.registry import BACKGROUND, EVALUATION, SMALL1, SMALL2
from fewnorm.errors import DataError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownFile:
    """One file of the official release with what we know about it."""

    name: str
    md5: str
    sha256: str | None  # only where a trusted copy was at hand to compute it
    size: int | None
    num_images: int  # PNGs inside: characters x 20 drawers

    @property
    def stem(self) -> str:
        """The zip's base name, which is also its top folder inside the archive."""
        return self.name.removesuffix(".zip")


KNOWN_FILES: dict[str, KnownFile] = {
    f.name: f
    for f in (
        KnownFile(BACKGROUND, "68d2efa1b9178cc56df9314c21c6e718", None, None, 964 * 20),
        KnownFile(EVALUATION, "6b91aef0f799c5bb55b94e3f2daec811", None, None, 659 * 20),
        KnownFile(
            SMALL1,
            "e704a628b5459e08445c13499850abc4",
            "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
            1319022,
            136 * 20,
        ),
        KnownFile(
            SMALL2,
            "b75a71a51d3b13f821f212756fe481fd",
            "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
            1580917,
            156 * 20,
        ),
    )
}

# Digests by (path, size, mtime_ns, inode): a run loads train, val and test of one zip and
# should hash it once.
_digest_memo: dict[tuple[str, int, int, int], tuple[str, str]] = {}


def file_digests(path: Path) -> tuple[str, str]:
    """``(md5, sha256)`` hex digests of ``path``, read once in 1 MiB chunks."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _digest_memo:
        md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                md5.update(chunk)
                sha.update(chunk)
        _digest_memo[key] = (md5.hexdigest(), sha.hexdigest())
    return _digest_memo[key]


def download_hint(names: list[str] | tuple[str, ...]) -> str:
    """The ``fewnorm data download`` command line that fetches ``names``."""
    if set(names) <= {SMALL1, SMALL2}:
        return "`fewnorm data download omniglot --subset minimal`"
    if set(names) <= {BACKGROUND, EVALUATION}:
        return "`fewnorm data download omniglot`"
    return "`fewnorm data download omniglot --subset all`"


def corrupt_message(known: KnownFile, path: Path, md5: str, sha256: str) -> str | None:
    """Why the zip at ``path`` with these digests is not ``known``; ``None`` if it is."""
    if md5 == known.md5 and (known.sha256 is None or sha256 == known.sha256):
        return None
    size = path.stat().st_size
    expected_size = f", expected {known.size}" if known.size is not None else ""
    bad = f"MD5 expected {known.md5}, got {md5}"
    if md5 == known.md5:  # an MD5 collision: the SHA256 still tells them apart
        bad = f"SHA256 expected {known.sha256}, got {sha256}"
    return (
        f"{known.name} at {path} is corrupt or truncated: {bad} "
        f"(size {size} bytes{expected_size}). Delete it and re-download it with "
        f"{download_hint([known.name])}."
    )


@dataclass(frozen=True)
class Source:
    """One located archive: the zip itself or the folder it was extracted to."""

    known: KnownFile
    path: Path
    kind: Literal["zip", "folder"]

    def list_images(self) -> list[str]:
        """Sorted ``Alphabet/characterNN/file.png`` paths of every image, relative to the top."""
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
            top = self.known.stem + "/"
            rel = [n[len(top) :] for n in names if n.startswith(top)]
        else:
            rel = [p.relative_to(self.path).as_posix() for p in self.path.glob("*/*/*.png")]
        return sorted(r for r in rel if _is_image(r))

    def read(self, rel_paths: list[str]) -> list[bytes]:
        """The raw bytes of each image in ``rel_paths`` (as returned by :meth:`list_images`)."""
        if self.kind == "folder":
            return [(self.path / r).read_bytes() for r in rel_paths]
        top = self.known.stem + "/"
        with zipfile.ZipFile(self.path) as zf:
            return [zf.read(top + r) for r in rel_paths]

    def identity(self) -> dict[str, Any]:
        """What the cache key records of this source (checked: call after :func:`verify`).

        A zip is identified by size and MD5. Hashing every PNG of a folder would cost more
        than loading the cached store, so a folder is identified by its file names, sizes
        and modification times instead.
        """
        if self.kind == "zip":
            return {
                "name": self.known.name,
                "size": self.path.stat().st_size,
                "md5": file_digests(self.path)[0],
            }
        h = hashlib.sha256()
        for rel in self.list_images():
            st = (self.path / rel).stat()
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return {"name": self.known.stem + "/", "files": h.hexdigest()}


def _is_image(rel: str) -> bool:
    parts = rel.split("/")
    return (
        len(parts) == 3
        and parts[2].endswith(".png")
        and not any(p.startswith((".", "__MACOSX")) for p in parts)
    )


def locate(directory: Path, name: str) -> Source | None:
    """The zip ``name`` in ``directory``, else its extracted folder, else ``None``."""
    known = KNOWN_FILES[name]
    if (directory / name).is_file():
        return Source(known, directory / name, "zip")
    if (directory / known.stem).is_dir():
        return Source(known, directory / known.stem, "folder")
    return None


def verify(source: Source) -> None:
    """Raise :class:`DataError` unless ``source`` is intact (zip checksums, folder image count)."""
    if source.kind == "zip":
        md5, sha256 = file_digests(source.path)
        problem = corrupt_message(source.known, source.path, md5, sha256)
    else:
        count = len(source.list_images())
        problem = None
        if count != source.known.num_images:
            problem = (
                f"extracted folder {source.path} is incomplete: {count} of "
                f"{source.known.num_images} images. Delete it and re-download "
                f"{source.known.name} with {download_hint([source.known.name])}."
            )
    if problem is not None:
        raise DataError(problem)


@dataclass(frozen=True)
class FileStatus:
    """What ``fewnorm data verify`` and ``info`` report about one known file."""

    name: str
    present: bool
    kind: str | None  # "zip", "folder" or None when absent
    path: str | None
    size: int | None  # bytes of the zip, or of all images of a folder
    md5: str | None  # zips only
    ok: bool
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def check_file(directory: Path, name: str) -> FileStatus:
    """Locate and verify one known file in ``directory`` without raising."""
    source = locate(directory, name)
    if source is None:
        return FileStatus(name, False, None, None, None, None, False, f"not found in {directory}")
    md5 = None
    if source.kind == "zip":
        size = source.path.stat().st_size
        md5 = file_digests(source.path)[0]
    else:
        size = sum((source.path / r).stat().st_size for r in source.list_images())
    try:
        verify(source)
        problem = None
    except DataError as exc:
        problem = str(exc)
    return FileStatus(name, True, source.kind, str(source.path), size, md5, problem is None, problem)


def require_sources(directory: Path, names: list[str], *, needed_by: str) -> list[Source]:
    """Locate and verify every file of ``names``; a :class:`DataError` says what to do if not.

    ``needed_by`` names what needs them (``"dataset 'omniglot' (split 'train')"``).
    """
    found = {name: locate(directory, name) for name in names}
    missing = [name for name, src in found.items() if src is None]
    if missing:
        raise DataError(
            f"{needed_by} needs {', '.join(names)}; missing: {', '.join(missing)} "
            f"(looked for each as a .zip or an extracted folder in {directory}). Get them with "
            f"{download_hint(missing)}, or save a folder that holds omniglot/<file> with "
            f"`fewnorm data link DIR` (or pass --data-root / set $FEWNORM_DATA)."
        )
    sources = [src for src in found.values() if src is not None]
    for src in sources:
        verify(src)
    return sources
