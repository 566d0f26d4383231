"""fewnorm: few-shot learning with the normalization layer as a swappable component.

Importing :mod:`fewnorm` is cheap (no torch import): the registry and the CLI
resolve implementations lazily.
"""

from importlib.metadata import PackageNotFoundError, version

from fewnorm.errors import FewnormError

try:
    __version__ = version("fewnorm")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = ["FewnormError", "__version__"]
