"""Backends behind one port (:mod:`.port`): the direct PostgreSQL connection and Supabase's REST API.

:func:`choose_backend` is the one place that turns settings into a backend. Drivers are imported lazily,
so importing this package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compliance_sync.backends.port import Backend, BackendKind

if TYPE_CHECKING:  # settings import the port's BackendKind: no import at run time
    from compliance_sync.config.settings import Settings


def choose_backend(settings: Settings) -> Backend:
    """``SUPABASE_DB_URL`` → direct; else ``NEXT_PUBLIC_SUPABASE_URL`` + ``SUPABASE_SERVICE_ROLE_KEY`` → REST
    (the key's type is checked before any request); neither → a settings error naming both options."""
    kind = BackendKind(settings.backend_kind())
    if kind == BackendKind.POSTGRES:
        from compliance_sync.backends.postgres import PostgresBackend

        return PostgresBackend(settings.db_url.get_secret_value(), lock_timeout_s=settings.lock_timeout_s)
    from compliance_sync.backends.rest import RestBackend

    return RestBackend.from_settings(settings)


__all__ = ["Backend", "choose_backend"]
