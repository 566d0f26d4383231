"""Errors a user can cause and fix; the CLI prints them as one line, no traceback."""

from __future__ import annotations


class FewnormError(Exception):
    """Base class of every user-facing error: the message says what is wrong and what to do."""


class UnknownNameError(FewnormError, LookupError):
    """A name (normalizer, dataset, algorithm ...) that nothing is registered under."""

    def __str__(self) -> str:  # LookupError would repr() the message with quotes
        return str(self.args[0]) if self.args else ""


class OptionError(FewnormError, ValueError):
    """An option that the component does not take, or a value it cannot accept."""


class ConfigError(FewnormError, ValueError):
    """A run configuration (file or command line) that fails validation."""


class DataError(FewnormError):
    """Missing, corrupt or unreadable dataset files."""


class TrainingDivergedError(FewnormError):
    """The loss became NaN or infinite; the message names the step and the normalizer."""


class PluginError(FewnormError):
    """A plugin that could not be loaded; carries the plugin's name."""


class RunDirError(FewnormError):
    """A run directory that cannot be used: a file, not writable, or holding files a run would clobber."""


class RunLockedError(RunDirError):
    """Another process owns the run directory (trains or resumes the run in it)."""


class RunWriteError(FewnormError):
    """A run file that could not be written (disk full, no permission); the previous one is intact."""

    def __init__(self, path: object, error: OSError, hint: str = "") -> None:
        reason = error.strerror or str(error)
        super().__init__(f"cannot write '{path}': {reason}" + (f"; {hint}" if hint else ""))
        self.path, self.error = path, error
