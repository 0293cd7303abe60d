"""What can stop a run, and the process exit code each stop maps to (SPEC §7).

Every message is masked when the error is created, so no error can carry a secret, whoever formats it later.
The masker is installed by :mod:`compliance_sync.config.secrets` when it is imported (which registering a secret
needs), so this module, imported by every layer, depends on none.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

_maskers: list[Callable[[str], str]] = []


def install_masker(mask: Callable[[str], str]) -> None:
    """Mask every error message created from now on with ``mask`` (installed once)."""
    if mask not in _maskers:
        _maskers.append(mask)


def redact(text: str) -> str:
    for mask in _maskers:
        text = mask(text)
    return text


class ExitCode(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2  # flags, environment variables, the BU map, a refused key, no backend
    DATA = 3  # the data or the database's state stopped the run; nothing written
    CONNECTION = 4  # cannot reach or authenticate
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


class SyncError(Exception):
    """A stop with a clear one-line message naming the table, column or setting."""

    exit_code: ExitCode = ExitCode.DATA
    why_unknown: str | None = None  # a write that may have been applied before this stop (REST), and why

    def __init__(self, message: str) -> None:
        super().__init__(redact(str(message)))

    @property
    def message(self) -> str:
        return str(self)


class SettingsError(SyncError):
    exit_code = ExitCode.USAGE


class DataError(SyncError):
    exit_code = ExitCode.DATA


class ConcurrentChange(DataError):
    """A serialization failure or deadlock: retried a bounded number of times, then exit 3."""


class ConnectionFailure(SyncError):
    exit_code = ExitCode.CONNECTION


class TransientFailure(ConnectionFailure):
    """A failure worth retrying (5xx, 429, timeout, dropped connection); exit 4 when retries run out."""
