"""Name normalization and closest-match suggestions shared by every registry."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from fewnorm.errors import UnknownNameError

_DROPPED = str.maketrans("", "", "_- ")


def normalize_name(name: str) -> str:
    """Lower-case ``name`` and drop ``_``, ``-`` and spaces: ``"Group_Norm"`` -> ``"groupnorm"``."""
    return name.lower().translate(_DROPPED)


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``name``: every known name and the closest match."""
    known = sorted(known)
    by_key = {normalize_name(k): k for k in known}
    close = difflib.get_close_matches(normalize_name(name), list(by_key), n=1, cutoff=0.5)
    hint = f" Did you mean '{by_key[close[0]]}'?" if close else ""
    listing = ", ".join(known) if known else "(none)"
    return UnknownNameError(f"unknown {kind} '{name}'.{hint} Known: {listing}.")
