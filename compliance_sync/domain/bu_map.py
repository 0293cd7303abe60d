"""The BU map as a value (SPEC §4.8): exact CSE and territory names to business units.

Pure: no configuration, no I/O. :mod:`compliance_sync.config.settings` loads and checks the YAML file
``COMPLIANCE_SYNC_BU_MAP`` names into a :class:`BuMap`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

RESERVED_BU = "Unassigned"  # the business unit of clients no entry maps; never a name in the map


@dataclasses.dataclass(frozen=True)
class BuMap:
    """Exact CSE / territory names to business units; the CSE entry wins. No default."""

    cse: Mapping[str, str]
    territory: Mapping[str, str]
    source: str = ""

    def bu_for(self, cse_name: str | None, territory: str | None) -> str | None:
        if cse_name is not None and cse_name in self.cse:
            return self.cse[cse_name]
        if territory is not None and territory in self.territory:
            return self.territory[territory]
        return None
