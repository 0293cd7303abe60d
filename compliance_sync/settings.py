"""Settings (SPEC §7): the environment over ``.env.local`` over ``.env`` (python-dotenv reads the files
from the working directory), parsed and validated by pydantic. Every bad setting is a
:class:`~compliance_sync.errors.SettingsError` naming the variable (exit 2); secrets are pydantic
``SecretStr`` values, registered with :mod:`compliance_sync.redact` as soon as they are read.

Also the two small value types the settings carry: status :class:`Thresholds` and the :class:`BuMap`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import pathlib
import re
import zoneinfo
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import pydantic
import yaml
from dotenv import dotenv_values

from compliance_sync import redact
from compliance_sync.errors import SettingsError
from compliance_sync.fiscal import fiscal_year_of

RESERVED_BU = "Unassigned"
DEFAULT_THRESHOLDS = "50,80,100"
EXAMPLE_BU_MAP = pathlib.Path(__file__).with_name("bu_map.example.yaml")
BU_MAP_MAX_BYTES = 1_000_000  # a BU map is a few hundred names; anything larger is a mistake (or /dev/zero)


class Status(enum.StrEnum):
    """A requirement's status (SPEC §4.5), from the exact ratio of completed to required."""

    CRITICAL = "critical"
    AT_RISK = "at_risk"
    COMPLIANT = "compliant"
    EXCEEDED = "exceeded"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Status thresholds in percent: ``(at_risk_from, compliant_from, exceeded_from)``, strictly increasing."""

    at_risk_from: Fraction = Fraction(50)
    compliant_from: Fraction = Fraction(80)
    exceeded_from: Fraction = Fraction(100)

    @classmethod
    def parse(cls, text: str, name: str = "COMPLIANCE_SYNC_THRESHOLDS") -> Thresholds:
        usage = f"{name} must be three numbers 'at_risk,compliant,exceeded' in percent, got {text!r}"
        parts = [p.strip() for p in str(text).split(",")]
        try:
            values = [Fraction(p) for p in parts]
        except (ValueError, ZeroDivisionError):
            raise SettingsError(usage) from None
        if len(values) != 3:
            raise SettingsError(usage)
        if not (0 <= values[0] < values[1] < values[2]):
            raise SettingsError(f"{name} must be increasing and non-negative (e.g. 50,80,100), got {text!r}")
        return cls(*values)

    def status(self, completed: int, required: int) -> Status:
        """SPEC §4.5, from the exact ratio: ``100*c >= t*r`` with ``t = n/d`` is ``100*c*d >= n*r``."""
        done = 100 * completed
        for cut, status in ((self.exceeded_from, Status.EXCEEDED), (self.compliant_from, Status.COMPLIANT), (self.at_risk_from, Status.AT_RISK)):
            if done * cut.denominator >= cut.numerator * required:
                return status
        return Status.CRITICAL

    def text(self) -> str:
        return ",".join(f"{float(v):g}" for v in (self.at_risk_from, self.compliant_from, self.exceeded_from))


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a BU map never needs them, and nested aliases ("billion laughs") explode."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a BU map", mark)
        return super().compose_node(parent, index)


@dataclasses.dataclass(frozen=True)
class BuMap:
    """Exact CSE / territory names to business units (SPEC §4.8); the CSE entry wins. No default."""

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
    def from_mapping(cls, data: object, source: str = "BU map") -> BuMap:
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
    def load(cls, path: str | os.PathLike, name: str = "COMPLIANCE_SYNC_BU_MAP") -> BuMap:
        p = pathlib.Path(path)
        where = f"{name}: BU map {str(p)!r}"
        try:
            if not p.is_file():
                raise IsADirectoryError(21, "not a regular file") if p.exists() else FileNotFoundError(2, "no such file")
            with p.open("rb") as f:
                raw = f.read(BU_MAP_MAX_BYTES + 1)
        except OSError as exc:
            raise SettingsError(f"{name}: cannot read BU map {str(p)!r}: {exc.strerror or exc}") from None
        if len(raw) > BU_MAP_MAX_BYTES:
            raise SettingsError(f"{where} is larger than {BU_MAP_MAX_BYTES:,} bytes; a BU map lists names, not data")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SettingsError(f"{name}: cannot read BU map {str(p)!r}: not UTF-8 text") from None
        try:
            data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader without aliases
        except yaml.YAMLError as exc:
            raise SettingsError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
        except RecursionError:
            raise SettingsError(f"{where} is nested too deeply to be a BU map") from None
        return cls.from_mapping(data, f"{name} ({p})")


def validate_timezone(name: str, var: str = "COMPLIANCE_SYNC_TIMEZONE") -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # 'Australia' is a tzdata folder
        raise SettingsError(f"{var}: unknown timezone {name!r} (use an IANA name such as Australia/Sydney)") from None
    return name


# The plain five-field cron schedules (numbers, ``*``, ranges, steps, lists) that Dagster accepts, checked
# without importing Dagster; anything else is left to Dagster's own rule (the schedule's).
_CRON_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_ITEM = re.compile(r"(\*|(\d{1,2})(?:-(\d{1,2}))?)(?:/(\d{1,2}))?")


def _plain_cron(text: str) -> bool:
    fields = text.split()
    if len(fields) != 5:
        return False
    values: list[set[int]] = []
    for field, (lo, hi) in zip(fields, _CRON_FIELDS):
        seen: set[int] = set()
        for item in field.split(","):
            m = _CRON_ITEM.fullmatch(item)
            if not m or (m.group(4) and m.group(2) and not m.group(3)):  # "5/10": Dagster decides
                return False
            start, end = (lo, hi) if m.group(1) == "*" else (int(m.group(2)), int(m.group(3) or m.group(2)))
            step = int(m.group(4) or 1)
            if not (lo <= start <= end <= hi and 1 <= step <= hi - lo):
                return False
            seen.update(range(start, end + 1, step))
        values.append(seen)
    return values[3] != {2}  # February alone: Dagster refuses its 30th and 31st; let it decide


def validate_cron(text: str, var: str = "COMPLIANCE_SYNC_SCHEDULE_CRON") -> str:
    """A cron schedule the daily schedule can use (the rule of Dagster's ``ScheduleDefinition``), so that
    the command line refuses what would stop the code location from loading."""
    if _plain_cron(text):
        return text
    from dagster._utils.schedules import is_valid_cron_string  # the rule ScheduleDefinition applies

    try:
        valid = is_valid_cron_string(text)
    except Exception:
        valid = False
    if not valid:
        raise SettingsError(f"{var}: {text!r} is not a valid cron schedule (five fields, e.g. '0 6 * * *')")
    return text


class BackendKind(enum.StrEnum):
    POSTGRES = "postgres"
    REST = "rest"


NO_BACKEND = (
    "no backend configured: set SUPABASE_DB_URL (direct PostgreSQL, preferred) or "
    "NEXT_PUBLIC_SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY (REST API), in the environment or .env / .env.local; "
    "or try `compliance-sync demo` for an embedded demo database"
)


class Settings(pydantic.BaseModel):
    """Every setting of SPEC §7 and the ones this project added (README, "Configuration")."""

    model_config = pydantic.ConfigDict(frozen=True, populate_by_name=True, extra="ignore", arbitrary_types_allowed=True)

    db_url: pydantic.SecretStr | None = pydantic.Field(None, alias="SUPABASE_DB_URL")
    supabase_url: str | None = pydantic.Field(None, alias="NEXT_PUBLIC_SUPABASE_URL")
    service_role_key: pydantic.SecretStr | None = pydantic.Field(None, alias="SUPABASE_SERVICE_ROLE_KEY")
    bu_map_path: str | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_BU_MAP")
    fy_start_month: int = pydantic.Field(1, alias="COMPLIANCE_SYNC_FY_START_MONTH", ge=1, le=12, strict=False)
    first_fiscal_year: int = pydantic.Field(2024, alias="COMPLIANCE_SYNC_FIRST_FY", ge=1900, le=9998)
    timezone: str = pydantic.Field("Australia/Sydney", alias="COMPLIANCE_SYNC_TIMEZONE")
    thresholds: Thresholds = pydantic.Field(Thresholds(), alias="COMPLIANCE_SYNC_THRESHOLDS")
    schedule_cron: str = pydantic.Field("0 6 * * *", alias="COMPLIANCE_SYNC_SCHEDULE_CRON")
    grace_days: int = pydantic.Field(30, alias="COMPLIANCE_SYNC_GRACE_DAYS", ge=0, le=365)
    max_prune_fraction: float = pydantic.Field(0.5, alias="COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", ge=0, le=1, allow_inf_nan=False)
    lock_timeout_s: float = pydantic.Field(60.0, alias="COMPLIANCE_SYNC_LOCK_TIMEOUT", gt=0, le=86400, allow_inf_nan=False)
    rest_page_size: int = pydantic.Field(1000, alias="COMPLIANCE_SYNC_REST_PAGE_SIZE", ge=1, le=100_000)
    rest_timeout_s: float = pydantic.Field(30.0, alias="COMPLIANCE_SYNC_REST_TIMEOUT", gt=0, le=3600, allow_inf_nan=False)
    rest_retries: int = pydantic.Field(4, alias="COMPLIANCE_SYNC_REST_RETRIES", ge=0, le=20)
    freshness_hours: float = pydantic.Field(36.0, alias="COMPLIANCE_SYNC_FRESHNESS_HOURS", gt=0, le=24 * 366, allow_inf_nan=False)
    alert_webhook: pydantic.SecretStr | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_ALERT_WEBHOOK")
    dagster_url: str | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_DAGSTER_URL")
    change_sensor: bool = pydantic.Field(False, alias="COMPLIANCE_SYNC_CHANGE_SENSOR")
    change_sensor_interval_s: int = pydantic.Field(300, alias="COMPLIANCE_SYNC_CHANGE_SENSOR_INTERVAL", ge=30, le=86400)
    report_dir: str | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_REPORT_DIR")  # compliance_report's folder

    # --- parsing ---------------------------------------------------------------------------------------
    @pydantic.field_validator("fy_start_month", "first_fiscal_year", "grace_days", "rest_page_size", "rest_retries", "change_sensor_interval_s", mode="before")
    @classmethod
    def _integer_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
            raise ValueError("must be a whole number")
        return value

    @pydantic.field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @pydantic.field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return validate_cron(value)

    @pydantic.field_validator("thresholds", mode="before")
    @classmethod
    def _thresholds(cls, value: Any) -> Any:
        return Thresholds.parse(value) if isinstance(value, str) else value

    @pydantic.field_validator("supabase_url", "dagster_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://<project>.supabase.co")
        return value.rstrip("/") if value else value

    @pydantic.field_validator("db_url")
    @classmethod
    def _db_url(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is not None:
            redact.register_dsn(value.get_secret_value())
        return value

    @pydantic.field_validator("service_role_key", "alert_webhook")
    @classmethod
    def _secret(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is not None:
            redact.register(value.get_secret_value())
        return value

    @pydantic.model_validator(mode="after")
    def _some_partition(self) -> Settings:
        """SPEC §2: partitions run from the first FY to the FY containing today plus one."""
        last = fiscal_year_of(self.today(), self.fy_start_month).year + 1
        if self.first_fiscal_year > last:
            raise SettingsError(
                f"COMPLIANCE_SYNC_FIRST_FY={self.first_fiscal_year} is after the fiscal year containing today plus one "
                f"(FY{last} in {self.timezone}): there would be no fiscal-year partition"
            )
        return self

    # --- derived -------------------------------------------------------------------------------------------
    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def today(self) -> dt.date:
        return dt.datetime.now(self.tz).date()

    def bu_map(self) -> BuMap:
        if not self.bu_map_path:
            raise SettingsError(
                "COMPLIANCE_SYNC_BU_MAP is not set: point it at a BU mapping YAML "
                f"(the package ships an example: {EXAMPLE_BU_MAP})"
            )
        return BuMap.load(self.bu_map_path)

    def backend_kind(self) -> BackendKind:
        if self.db_url:
            return BackendKind.POSTGRES
        if self.supabase_url and self.service_role_key:
            return BackendKind.REST
        raise SettingsError(NO_BACKEND)


def read_environment(cwd: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``.env`` < ``.env.local`` < the process environment (or ``environ``), files read from ``cwd``."""
    base = pathlib.Path(cwd or os.getcwd())
    merged: dict[str, str] = {}
    for name in (".env", ".env.local"):
        path = base / name
        if path.is_file():
            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


_FIELD_BY_ALIAS = {f.alias: name for name, f in Settings.model_fields.items()}
_SECRET_VARS = {f.alias for f in Settings.model_fields.values() if f.annotation == (pydantic.SecretStr | None)}


def load_settings(cwd: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the environment and ``.env`` / ``.env.local``; blank values mean the default."""
    env = read_environment(cwd, environ)
    values = {k: v.strip() for k, v in env.items() if k in _FIELD_BY_ALIAS and v is not None and v.strip()}
    for var in _SECRET_VARS & values.keys():  # registered before validation can quote them
        if var == "SUPABASE_DB_URL":
            redact.register_dsn(values[var])  # its password; the host and database stay visible
        else:
            redact.register(values[var])
    try:
        return Settings.model_validate(values)
    except SettingsError:
        raise
    except pydantic.ValidationError as exc:
        raise SettingsError(_describe(exc, values)) from None


def _describe(exc: pydantic.ValidationError, values: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        var = str(error["loc"][0]) if error["loc"] else "settings"
        message = error["msg"]
        ctx = error.get("ctx") or {}
        if isinstance(ctx.get("error"), SettingsError):
            problems.append(str(ctx["error"]))
            continue
        message = message.removeprefix("Value error, ")
        shown = "(not shown: a secret)" if var in _SECRET_VARS else repr(values.get(var))
        problems.append(f"{var}: {message}, got {shown}")
    return "; ".join(problems)

