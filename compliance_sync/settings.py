"""Settings from the environment and ``.env`` / ``.env.local`` (SPEC §7), the BU map, thresholds.

Precedence: the process environment wins over ``.env.local``, which wins over ``.env`` (both read from the
working directory). Every bad setting is a :class:`SettingsError` that names the variable; secrets are kept
in :class:`Secret` so that no repr, log line or error message can show them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zoneinfo
from fractions import Fraction
from typing import Mapping

import yaml
from dotenv import dotenv_values

from compliance_sync.model import SettingsError

RESERVED_BU = "Unassigned"
DEFAULT_THRESHOLDS = "50,80,100"
EXAMPLE_BU_MAP = pathlib.Path(__file__).with_name("bu_map.example.yaml")


class Secret(str):
    """A string that never shows itself in repr / str formatting of containers or logs."""

    def __repr__(self) -> str:
        return "Secret('***')"

    @property
    def value(self) -> str:
        return str.__str__(self)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Status thresholds in percent: ``(at_risk_from, compliant_from, exceeded_from)``, strictly increasing."""

    at_risk_from: Fraction = Fraction(50)
    compliant_from: Fraction = Fraction(80)
    exceeded_from: Fraction = Fraction(100)

    @classmethod
    def parse(cls, text: str, name: str = "COMPLIANCE_SYNC_THRESHOLDS") -> "Thresholds":
        parts = [p.strip() for p in str(text).split(",")]
        try:
            values = [Fraction(p) for p in parts]
        except (ValueError, ZeroDivisionError):
            raise SettingsError(f"{name} must be three numbers 'at_risk,compliant,exceeded' in percent, got {text!r}")
        if len(values) != 3:
            raise SettingsError(f"{name} must be three numbers 'at_risk,compliant,exceeded' in percent, got {text!r}")
        if not (0 <= values[0] < values[1] < values[2]):
            raise SettingsError(f"{name} must be increasing and non-negative (e.g. 50,80,100), got {text!r}")
        return cls(*values)

    def status(self, completed: int, required: int) -> str:
        """SPEC §4.5: from the exact ratio, never from the rounded percentage (integers only:
        ``100*c >= t*r`` with ``t = n/d`` is ``100*c*d >= n*r``)."""
        done = 100 * completed
        for (num, den), status in self._cuts:
            if done * den >= num * required:
                return status
        return "critical"

    @property
    def _cuts(self) -> tuple[tuple[tuple[int, int], str], ...]:
        return (
            ((self.exceeded_from.numerator, self.exceeded_from.denominator), "exceeded"),
            ((self.compliant_from.numerator, self.compliant_from.denominator), "compliant"),
            ((self.at_risk_from.numerator, self.at_risk_from.denominator), "at_risk"),
        )

    def text(self) -> str:
        return ",".join(f"{float(v):g}" for v in (self.at_risk_from, self.compliant_from, self.exceeded_from))


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

    @classmethod
    def from_mapping(cls, data: object, source: str = "BU map") -> "BuMap":
        if not isinstance(data, dict) or not data:
            raise SettingsError(f"{source}: empty or not a mapping; expected 'cse:' and/or 'territory:' dictionaries")
        unknown = [k for k in data if k not in ("cse", "territory")]
        if unknown:
            raise SettingsError(f"{source}: unknown top-level key(s) {unknown!r}; expected 'cse:' and 'territory:'")
        parts: dict[str, dict[str, str]] = {}
        for section in ("cse", "territory"):
            entries = data.get(section) or {}
            if not isinstance(entries, dict):
                raise SettingsError(f"{source}: '{section}:' must be a dictionary of names to business units")
            for k, v in entries.items():
                if not isinstance(k, str):
                    raise SettingsError(f"{source}: '{section}:' key {k!r} is not a string (quote it)")
                if not isinstance(v, str) or not v.strip():
                    raise SettingsError(f"{source}: '{section}: {k}' must map to a business-unit name, got {v!r}")
                if v == RESERVED_BU:
                    raise SettingsError(f"{source}: '{section}: {k}' maps to '{RESERVED_BU}', a reserved name")
            parts[section] = dict(entries)
        if not parts["cse"] and not parts["territory"]:
            raise SettingsError(f"{source}: no entries under 'cse:' or 'territory:'")
        return cls(parts["cse"], parts["territory"], source)

    @classmethod
    def load(cls, path: str | os.PathLike, name: str = "COMPLIANCE_SYNC_BU_MAP") -> "BuMap":
        p = pathlib.Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"{name}: cannot read BU map {str(p)!r}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            raise SettingsError(f"{name}: cannot read BU map {str(p)!r}: not UTF-8 text")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingsError(f"{name}: BU map {str(p)!r} is not valid YAML: {exc}")
        return cls.from_mapping(data, f"{name} ({p})")


@dataclasses.dataclass(frozen=True)
class Settings:
    db_url: Secret | None = None
    supabase_url: str | None = None
    service_role_key: Secret | None = None
    bu_map_path: str | None = None
    fy_start_month: int = 1
    first_fiscal_year: int = 2024
    timezone: str = "Australia/Sydney"
    thresholds: Thresholds = Thresholds()
    schedule_cron: str = "0 6 * * *"
    grace_days: int = 30
    max_prune_fraction: float = 0.5

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def bu_map(self) -> BuMap:
        if not self.bu_map_path:
            raise SettingsError(
                "COMPLIANCE_SYNC_BU_MAP is not set: point it at a BU mapping YAML "
                f"(the package ships an example: {EXAMPLE_BU_MAP})"
            )
        return BuMap.load(self.bu_map_path)

    def backend_kind(self) -> str:
        if self.db_url:
            return "postgres"
        if self.supabase_url and self.service_role_key:
            return "rest"
        raise SettingsError(
            "no backend configured: set SUPABASE_DB_URL (direct PostgreSQL, preferred) or "
            "NEXT_PUBLIC_SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY (REST API), in the environment or .env / .env.local; "
            "or try `compliance-sync demo` for an embedded demo database"
        )


def read_environment(cwd: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``.env`` < ``.env.local`` < the process environment."""
    base = pathlib.Path(cwd or os.getcwd())
    merged: dict[str, str] = {}
    for name in (".env", ".env.local"):
        path = base / name
        if path.is_file():
            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def _int(env: Mapping[str, str], name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def validate_timezone(name: str, var: str = "COMPLIANCE_SYNC_TIMEZONE") -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # 'Australia' is a tzdata folder
        raise SettingsError(f"{var}: unknown timezone {name!r} (use an IANA name such as Australia/Sydney)")
    return name


def load_settings(cwd: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    env = read_environment(cwd, environ)
    key = (env.get("SUPABASE_SERVICE_ROLE_KEY") or "").strip()
    return Settings(
        db_url=Secret(env["SUPABASE_DB_URL"].strip()) if (env.get("SUPABASE_DB_URL") or "").strip() else None,
        supabase_url=(env.get("NEXT_PUBLIC_SUPABASE_URL") or "").strip() or None,
        service_role_key=Secret(key) if key else None,
        bu_map_path=(env.get("COMPLIANCE_SYNC_BU_MAP") or "").strip() or None,
        fy_start_month=_int(env, "COMPLIANCE_SYNC_FY_START_MONTH", 1, 1, 12),
        first_fiscal_year=_int(env, "COMPLIANCE_SYNC_FIRST_FY", 2024, 1900, 9998),
        timezone=validate_timezone((env.get("COMPLIANCE_SYNC_TIMEZONE") or "").strip() or "Australia/Sydney"),
        thresholds=Thresholds.parse((env.get("COMPLIANCE_SYNC_THRESHOLDS") or "").strip() or DEFAULT_THRESHOLDS),
        schedule_cron=(env.get("COMPLIANCE_SYNC_SCHEDULE_CRON") or "").strip() or "0 6 * * *",
        grace_days=_int(env, "COMPLIANCE_SYNC_GRACE_DAYS", 30, 0, 365),
        max_prune_fraction=_fraction(env, "COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", 0.5),
    )


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number between 0 and 1, got {raw!r}")
    if not 0 <= value <= 1:
        raise SettingsError(f"{name} must be between 0 and 1, got {raw!r}")
    return value
