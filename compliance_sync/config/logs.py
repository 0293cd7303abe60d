"""One logging system (stdlib ``logging``) for the command line, the backends and Dagster.

Every line is timestamped with a level; secrets are masked by a filter on the handler; progress of long
reads and writes is throttled so that a cron mail stays short.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO

from compliance_sync.config.secrets import redact

LOGGER = "compliance_sync"
DRY_RUN = logging.INFO + 1  # the old script's "DRY-RUN" lines
logging.addLevelName(DRY_RUN, "DRY-RUN")
logging.addLevelName(logging.WARNING, "WARN")

log = logging.getLogger(LOGGER)


class RedactFilter(logging.Filter):
    """Formats the record's message once and masks secrets in it (and in any exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


DATE_FORMAT = "%Y-%m-%d %H:%M:%S%z"


class LineFormatter(logging.Formatter):
    """``[time] [LEVEL] message``; a multi-line message gets the stamp and level on every line."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"[{self.formatTime(record, self.datefmt)}] [{record.levelname}] "
        text = record.getMessage() + (("\n" + record.exc_text) if record.exc_text else "")
        return "\n".join(prefix + line for line in (text.splitlines() or [""]))


def configure(stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send the ``compliance_sync`` loggers to ``stream`` (default stderr), timestamped, secrets masked."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LineFormatter(datefmt=DATE_FORMAT))
    handler.addFilter(RedactFilter())
    root = logging.getLogger(LOGGER)
    for old in list(root.handlers):
        if getattr(old, "_compliance_sync", False):
            root.removeHandler(old)
    handler._compliance_sync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler


def route_warnings() -> None:
    """Python warnings (Dagster's PreviewWarning and the like) go through logging, timestamped."""
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    if not py_warnings.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LineFormatter(datefmt=DATE_FORMAT))
        handler.addFilter(RedactFilter())
        py_warnings.addHandler(handler)
        py_warnings.propagate = False


class Progress:
    """Rows done and rate of a long read or write, at most one line every ``every`` seconds."""

    def __init__(self, what: str, every: float = 5.0, logger: logging.Logger | None = None) -> None:
        self.what = what
        self.every = every
        self.log = logger or log
        self.done = 0
        self.started = time.monotonic()
        self._last = self.started

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.log.info(
                "%s: %s rows so far (%s rows/s)",
                self.what,
                f"{self.done:,}",
                f"{self.done / (now - self.started):,.0f}",
            )

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed >= self.every:
            self.log.info("%s: %s rows in %.1f s", self.what, f"{self.done:,}", elapsed)
