"""Download the official Omniglot zips and Lake's runs, verified and atomic (no torch import).

Each file streams into a temporary file in the target folder, its MD5 (and SHA256 where
known) is checked, and only then is it renamed into place: a failed or corrupt download
leaves nothing behind, and a file already present and intact is not fetched again.
``all_runs.zip`` has no published checksum: it is only checked to be a zip, its size is
recorded. miniImageNet has no stable public download; with ``$FEWNORM_MIRROR`` set, its
learn2learn pickles are fetched from there the same way (checked to be pickles).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fewnorm.data.files import KNOWN_FILES, corrupt_message, file_digests
from fewnorm.data.minifiles import LAYOUT_FILES, mini_imagenet_dir
from fewnorm.data.registry import MINI_IMAGENET, get_dataset_spec, subset_files
from fewnorm.data.root import omniglot_dir, resolve_data_root
from fewnorm.errors import DataError
from fewnorm.filemode import apply_umask

#: Where the official release lives.
BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
#: Environment variable with a base URL (file://, http:// or https://) that replaces BASE_URL.
ENV_MIRROR = "FEWNORM_MIRROR"
_SCHEMES = ("file", "http", "https")
_CHUNK = 1 << 16

#: The miniImageNet files a mirror serves: learn2learn's pickles.
MINI_IMAGENET_FILES: tuple[str, ...] = tuple(LAYOUT_FILES["pickle"][s][0] for s in ("train", "val", "test"))

#: ``progress(file_name, bytes_done, bytes_total_or_None)``, called as bytes arrive.
ProgressFn = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class DownloadResult:
    """What happened to one file."""

    name: str
    path: Path
    status: Literal["downloaded", "present"]
    size: int
    url: str | None  # None when the file was already present
    verified: bool = True  # False: no checksum is known for this file (only its format was checked)


def base_url() -> str:
    """``$FEWNORM_MIRROR`` (checked, with a trailing ``/``) if set, else :data:`BASE_URL`."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror:
        return BASE_URL
    if urllib.parse.urlsplit(mirror).scheme not in _SCHEMES:
        raise DataError(
            f"${ENV_MIRROR} must be a base URL starting with file://, http:// or https://, got '{mirror}'."
        )
    return mirror if mirror.endswith("/") else mirror + "/"


def _format_problem(path: Path, name: str) -> str | None:
    """Why the file at ``path`` (without a known checksum) cannot be ``name``; ``None`` if it can."""
    if name.endswith(".zip") and not zipfile.is_zipfile(path):
        return "not a zip archive"
    if name.endswith((".pkl", ".pickle")):
        with path.open("rb") as f:
            if f.read(1) != b"\x80":  # every pickle of protocol 2 or later starts so
                return "not a pickle"
    return None


def _is_intact(path: Path, name: str) -> bool:
    if not path.is_file():
        return False
    if name not in KNOWN_FILES:
        return _format_problem(path, name) is None
    md5, sha256 = file_digests(path)
    return corrupt_message(KNOWN_FILES[name], path, md5, sha256) is None


def download(
    dataset: str = "omniglot",
    subset: str | None = None,
    root: Path | str | None = None,
    *,
    progress: ProgressFn | None = None,
    timeout: float = 60.0,
) -> list[DownloadResult]:
    """Fetch the zips of ``subset`` (``minimal``, ``full`` or ``all``) into ``<root>/omniglot``.

    ``subset`` defaults to what ``dataset`` needs (``omniglot``: full, ``omniglot-minimal``:
    minimal); ``full`` and ``all`` include Lake's ``all_runs.zip``. Files already present
    and intact are skipped. Raises :class:`DataError` on a network failure or a checksum
    mismatch, leaving no partial file. ``mini-imagenet`` goes to :func:`download_mini_imagenet`.
    """
    spec = get_dataset_spec(dataset)
    if spec.download_subset is None:
        if subset is not None:
            raise DataError(f"{spec.name} has no download subsets; drop --subset.")
        if spec.storage != "layouts":
            raise DataError(f"{spec.name} has nothing to download: {spec.download_hint or 'its loader'}.")
        return download_mini_imagenet(root, progress=progress, timeout=timeout)
    names = subset_files(subset or spec.download_subset)
    return _download_all(names, omniglot_dir(resolve_data_root(root)), base_url(), progress, timeout)


def download_mini_imagenet(
    root: Path | str | None = None, *, progress: ProgressFn | None = None, timeout: float = 60.0
) -> list[DownloadResult]:
    """Fetch learn2learn's miniImageNet pickles from ``$FEWNORM_MIRROR`` into ``<root>/mini-imagenet``.

    There is no stable public download, so without a mirror this raises :class:`DataError`
    (``fewnorm data download mini-imagenet`` explains where to get the files instead).
    """
    if not os.environ.get(ENV_MIRROR, "").strip():
        raise DataError(
            f"{MINI_IMAGENET} has no stable public download: put its files in "
            f"{mini_imagenet_dir(resolve_data_root(root))} (see `fewnorm data download {MINI_IMAGENET}` "
            f"for the layouts), or set ${ENV_MIRROR} to a base URL serving {', '.join(MINI_IMAGENET_FILES)}."
        )
    directory = mini_imagenet_dir(resolve_data_root(root))
    return _download_all(list(MINI_IMAGENET_FILES), directory, base_url(), progress, timeout)


def _download_all(
    names: list[str], directory: Path, base: str, progress: ProgressFn | None, timeout: float
) -> list[DownloadResult]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {directory} ({exc.strerror}); choose another --data-root.") from None
    results: list[DownloadResult] = []
    failed: list[tuple[str, DataError]] = []
    for name in names:  # try every file: one unreachable zip should not block the others
        path = directory / name
        if _is_intact(path, name):
            size = path.stat().st_size
            results.append(DownloadResult(name, path, "present", size, None, name in KNOWN_FILES))
            continue
        try:
            results.append(_fetch(name, base + name, path, progress, timeout))
        except DataError as exc:
            failed.append((name, exc))
    if failed:
        message = str(failed[0][1])
        if len(failed) > 1:
            message += f" Also failed: {', '.join(name for name, _ in failed[1:])}."
        if results:
            message += f" In place: {', '.join(r.name for r in results)}."
        missing = [name for name, _ in failed]
        message += (
            f" Offline? Put {', '.join(missing)} (downloaded by hand) in {directory}/ and check them "
            f"with `fewnorm data verify`."
        )
        raise DataError(message)
    return results


def _fetch(name: str, url: str, path: Path, progress: ProgressFn | None, timeout: float) -> DownloadResult:
    known = KNOWN_FILES.get(name)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise DataError(
            f"cannot write into {path.parent} ({exc.strerror}); choose another --data-root."
        ) from None
    tmp = Path(tmp_name)
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            apply_umask(out.fileno())  # mkstemp makes it owner-only; the user's umask decides
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else (known.size if known else None)
                    if progress is not None:
                        progress(name, 0, total)
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        md5.update(chunk)
                        sha.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(name, done, total)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DataError(
                    f"could not download {url}: {reason}. Check the network, or set "
                    f"${ENV_MIRROR} to a base URL (file://, http:// or https://) that "
                    f"serves {name}."
                ) from None
            out.flush()
            os.fsync(out.fileno())
        if known is None:  # no checksum is known: check the format, record the size
            problem = _format_problem(tmp, name)
            if problem is not None:
                raise DataError(
                    f"downloaded {name} from {url} is {problem} ({done} bytes). Nothing was kept; "
                    f"try again or set ${ENV_MIRROR} to another source."
                )
        elif md5.hexdigest() != known.md5 or (known.sha256 is not None and sha.hexdigest() != known.sha256):
            raise DataError(
                f"downloaded {name} from {url} is corrupt: MD5 expected {known.md5}, got "
                f"{md5.hexdigest()} ({done} bytes). Nothing was kept; try again or set "
                f"${ENV_MIRROR} to another source."
            )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return DownloadResult(name, path, "downloaded", done, url, known is not None)
