"""File modes: files fewnorm writes get the user's umask, as any other tool's do.

``tempfile.mkstemp`` creates owner-only (0600) files; an atomic write that renames
such a file into place would leave run files, caches and downloads unreadable to the
user's group, whatever their umask says. :func:`apply_umask` gives the temporary file
the mode an ordinary ``open(path, "w")`` would have.
"""

from __future__ import annotations

import os
import threading

_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (else set and restored)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _LOCK:  # os.umask can only be read by setting it: restore it at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def apply_umask(fd: int) -> None:
    """Give the file open as ``fd`` (a ``mkstemp`` file, 0600) the mode of an ordinary new file."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, default_file_mode())
