"""The Dagster resource that says where the data lives and how the job is configured.

Settings are read when a run (or a sensor tick) starts, from the environment and ``.env`` / ``.env.local``
(SPEC §7), parsed and validated by pydantic (:mod:`compliance_sync.config.settings`): so secrets never enter run
config or the UI, and the daemon, ``dagster dev`` and the command line read the same variables. The asset and
the sensors take it as a typed parameter (:data:`SyncResource`), so a test or the command line can hand them
any object with the same two methods (:class:`FixedSync`), e.g. to give them a backend directly.
"""

from typing import Protocol

import dagster as dg

from compliance_sync.backends import Backend, choose_backend
from compliance_sync.config.settings import Settings, load_settings

RESOURCE_KEY = "compliance_sync"


class SyncSource(Protocol):
    """What the asset and the sensors need: the settings, and the backend they name."""

    def settings(self) -> Settings: ...

    def backend(self, settings: Settings) -> Backend: ...


# the parameter type of the asset and the sensors: Dagster hands over the resource object itself
SyncResource = dg.ResourceParam[SyncSource]


class ComplianceSyncResource(dg.ConfigurableResource):
    """Settings and backend of the sync (resource key ``compliance_sync``)."""

    env_dir: str | None = None  # where .env / .env.local are read from (default: the working directory)

    def settings(self) -> Settings:
        return load_settings(self.env_dir)

    def backend(self, settings: Settings) -> Backend:
        return choose_backend(settings)


class FixedSync:
    """Given settings and an optional backend: what tests, the command line and the demo hand the asset."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self._settings, self._backend = settings, backend

    def settings(self) -> Settings:
        return self._settings

    def backend(self, settings: Settings) -> Backend:
        return self._backend or choose_backend(settings)
