"""Settings (SPEC §7) through pydantic-settings: the environment over ``.env.local`` over ``.env`` (read from
the working directory). Every bad setting is a :class:`~compliance_sync.errors.SettingsError` naming the
variable (exit 2); secrets are ``SecretStr`` values, registered with :mod:`compliance_sync.config.secrets` before
anything can quote them.

This module only parses: the values it builds (:class:`~compliance_sync.domain.thresholds.Thresholds`,
:class:`~compliance_sync.domain.bu_map.BuMap`) live with
the code that uses them. Loading the BU map's YAML file is configuration, so it is here.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import logging
import os
import pathlib
import re
import warnings
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
import pydantic_core
import yaml
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from compliance_sync.config import secrets as redact
from compliance_sync.domain.bu_map import RESERVED_BU, BuMap
from compliance_sync.domain.fiscal import fiscal_year_of
from compliance_sync.domain.thresholds import Thresholds
from compliance_sync.errors import SettingsError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = "50,80,100"
DEFAULT_CRON = "0 6 * * *"
EXAMPLE_BU_MAP = pathlib.Path(__file__).parents[1] / "bu_map.example.yaml"
BU_MAP_MAX_BYTES = 1_000_000  # a BU map is a few hundred names; anything larger is a mistake (or /dev/zero)
ENV_FILES = (".env", ".env.local")  # the later file wins; the environment wins over both
REST_SUFFIX = re.compile(r"/rest/v1/*$", re.IGNORECASE)  # the API's path, pasted from Supabase's dashboard


# --- the BU map file --------------------------------------------------------------------------------------------
class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a BU map never needs them, and nested aliases ("billion laughs") explode."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a BU map", mark)
        return super().compose_node(parent, index)


def bu_map_from_mapping(data: object, source: str = "BU map") -> BuMap:
    """A :class:`BuMap` from parsed YAML (``cse:`` and/or ``territory:`` dictionaries), checked."""
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
    return BuMap(parts["cse"], parts["territory"], source)


def load_bu_map(path: str | os.PathLike, name: str = "COMPLIANCE_SYNC_BU_MAP") -> BuMap:
    """The BU map YAML at ``path``; every problem a :class:`SettingsError` naming ``name`` and the file."""
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
    return bu_map_from_mapping(data, f"{name} ({p})")


# --- single values -------------------------------------------------------------------------------------------------
def validate_timezone(name: str, var: str = "COMPLIANCE_SYNC_TIMEZONE") -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # 'Australia' is a tzdata folder
        raise SettingsError(f"{var}: unknown timezone {name!r} (use an IANA name such as Australia/Sydney)") from None
    return name


@functools.lru_cache(maxsize=64)
def _dagster_accepts(text: str) -> bool:
    import dagster as dg  # only for a schedule other than the default: importing Dagster is not free

    try:
        with warnings.catch_warnings():  # the schedule itself warns about odd intervals when it is built
            warnings.simplefilter("ignore")
            dg.ScheduleDefinition(name="cron_check", cron_schedule=text, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def validate_cron(text: str, var: str = "COMPLIANCE_SYNC_SCHEDULE_CRON") -> str:
    """A cron schedule the daily schedule can use: Dagster's ``ScheduleDefinition`` decides, so the command
    line refuses what would stop the code location from loading."""
    if text != DEFAULT_CRON and not _dagster_accepts(text):
        raise SettingsError(f"{var}: {text!r} is not a valid cron schedule (five fields, e.g. '0 6 * * *')")
    return text


def validate_dagster_home(path: str, var: str = "DAGSTER_HOME") -> str:
    """An existing, writable folder given by an absolute path (``~`` expanded), as Dagster requires."""
    home = os.path.expanduser(path)
    problem = (
        "must be an absolute path"
        if not os.path.isabs(home)
        else "does not exist"
        if not os.path.exists(home)
        else "is not a folder"
        if not os.path.isdir(home)
        else "is not writable"
        if not os.access(home, os.W_OK | os.X_OK)
        else None
    )
    if problem:
        raise SettingsError(
            f"{var}: {path!r} {problem}; Dagster keeps its runs there: create the folder, or unset {var} "
            "to run without recording the run in Dagster"
        )
    return home


@functools.cache
def _said_rest_suffix(url: str) -> None:
    log.info("NEXT_PUBLIC_SUPABASE_URL ends with the REST API's path /rest/v1: using the project URL %s", url)


def supabase_project_url(value: str) -> str:
    """The project URL: ``https://<project>.supabase.co``, also when pasted with ``/rest/v1`` at the end."""
    url = value.rstrip("/")
    if REST_SUFFIX.search(url):
        url = REST_SUFFIX.sub("", url).rstrip("/")
        _said_rest_suffix(url)
    return url


# --- the settings -------------------------------------------------------------------------------------------------
NO_BACKEND = (
    "no backend configured: set SUPABASE_DB_URL (direct PostgreSQL, preferred) or "
    "NEXT_PUBLIC_SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY (REST API), in the environment or .env / .env.local; "
    "or try `compliance-sync demo` for an embedded demo database"
)
_WHOLE_NUMBERS = (
    "fy_start_month",
    "first_fiscal_year",
    "grace_days",
    "rest_page_size",
    "rest_retries",
    "change_sensor_interval_s",
)
# load_settings(environ=...): the variables to read instead of the process environment
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "compliance_sync_environ", default=None
)


class _MappingEnvSource(EnvSettingsSource):
    """Environment variables from a mapping given to :func:`load_settings` instead of the process's."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env_vars = dict(environ)


class Settings(BaseSettings):
    """Every setting of SPEC §7 and the ones this project added (README, "Configuration")."""

    model_config = SettingsConfigDict(
        frozen=True,
        populate_by_name=True,
        extra="ignore",
        case_sensitive=True,
        validate_default=False,  # the defaults are valid; a blank value means the default (see _text)
        env_file=ENV_FILES,
        env_file_encoding="utf-8",
    )

    db_url: pydantic.SecretStr | None = pydantic.Field(None, alias="SUPABASE_DB_URL")
    supabase_url: str | None = pydantic.Field(None, alias="NEXT_PUBLIC_SUPABASE_URL")
    service_role_key: pydantic.SecretStr | None = pydantic.Field(None, alias="SUPABASE_SERVICE_ROLE_KEY")
    bu_map_path: str | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_BU_MAP")
    fy_start_month: int = pydantic.Field(1, alias="COMPLIANCE_SYNC_FY_START_MONTH", ge=1, le=12)
    first_fiscal_year: int = pydantic.Field(2024, alias="COMPLIANCE_SYNC_FIRST_FY", ge=1900, le=9998)
    timezone: str = pydantic.Field("Australia/Sydney", alias="COMPLIANCE_SYNC_TIMEZONE")
    thresholds: Annotated[Thresholds, NoDecode] = pydantic.Field(Thresholds(), alias="COMPLIANCE_SYNC_THRESHOLDS")
    schedule_cron: str = pydantic.Field(DEFAULT_CRON, alias="COMPLIANCE_SYNC_SCHEDULE_CRON")
    grace_days: int = pydantic.Field(30, alias="COMPLIANCE_SYNC_GRACE_DAYS", ge=0, le=365)
    max_prune_fraction: float = pydantic.Field(
        0.5, alias="COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", ge=0, le=1, allow_inf_nan=False
    )
    lock_timeout_s: float = pydantic.Field(
        60.0, alias="COMPLIANCE_SYNC_LOCK_TIMEOUT", gt=0, le=86400, allow_inf_nan=False
    )
    rest_page_size: int = pydantic.Field(1000, alias="COMPLIANCE_SYNC_REST_PAGE_SIZE", ge=1, le=100_000)
    rest_timeout_s: float = pydantic.Field(
        30.0, alias="COMPLIANCE_SYNC_REST_TIMEOUT", gt=0, le=3600, allow_inf_nan=False
    )
    rest_retries: int = pydantic.Field(4, alias="COMPLIANCE_SYNC_REST_RETRIES", ge=0, le=20)
    freshness_hours: float = pydantic.Field(
        36.0, alias="COMPLIANCE_SYNC_FRESHNESS_HOURS", gt=0, le=24 * 366, allow_inf_nan=False
    )
    alert_webhook: pydantic.SecretStr | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_ALERT_WEBHOOK")
    dagster_url: str | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_DAGSTER_URL")
    change_sensor: bool = pydantic.Field(False, alias="COMPLIANCE_SYNC_CHANGE_SENSOR")
    change_sensor_interval_s: int = pydantic.Field(300, alias="COMPLIANCE_SYNC_CHANGE_SENSOR_INTERVAL", ge=30, le=86400)
    report_dir: str | None = pydantic.Field(None, alias="COMPLIANCE_SYNC_REPORT_DIR")  # compliance_report's folder
    dagster_home: str | None = pydantic.Field(None, alias="DAGSTER_HOME")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment (or the mapping given to :func:`load_settings`), then the files."""
        environ = _ENVIRON.get()
        env = env_settings if environ is None else _MappingEnvSource(settings_cls, environ)
        return init_settings, env, dotenv_settings

    # --- parsing ---------------------------------------------------------------------------------------
    @pydantic.model_validator(mode="before")
    @classmethod
    def _register_secrets(cls, data: Any) -> Any:
        """Secrets are registered before any validation can quote them."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if field.annotation != (pydantic.SecretStr | None):
                    continue
                value = data.get(field.alias, data.get(name))
                value = value.get_secret_value() if isinstance(value, pydantic.SecretStr) else value
                if isinstance(value, str) and value.strip():
                    register = {"db_url": redact.register_dsn, "service_role_key": redact.register_api_key}
                    register.get(name, redact.register)(value.strip())  # an sb_ key's public prefix stays readable
        return data

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _text(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        """Values are stripped; a blank value (or a ``NAME`` line without ``=`` in a file) means the default.
        Whole numbers are digits (no ``7.0``); thresholds are parsed from their text."""
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            raise pydantic_core.PydanticUseDefault()
        if not isinstance(value, str):
            return value
        if info.field_name in _WHOLE_NUMBERS and not value.lstrip("+-").isdigit():
            raise ValueError("must be a whole number")
        if info.field_name == "thresholds":
            try:
                return Thresholds.parse(value)
            except ValueError as exc:
                raise SettingsError(f"COMPLIANCE_SYNC_THRESHOLDS {exc}") from None
        return value

    @pydantic.field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @pydantic.field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return validate_cron(value)

    @pydantic.field_validator("dagster_home")
    @classmethod
    def _dagster_home(cls, value: str | None) -> str | None:
        return None if value is None else validate_dagster_home(value)

    @pydantic.field_validator("supabase_url", "dagster_url")
    @classmethod
    def _http_url(cls, value: str | None, info: pydantic.ValidationInfo) -> str | None:
        if value is None:
            return value
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://<project>.supabase.co")
        return supabase_project_url(value) if info.field_name == "supabase_url" else value.rstrip("/")

    @pydantic.model_validator(mode="after")
    def _some_partition(self) -> Settings:
        """SPEC §2: partitions run from the first FY to the FY containing today plus one."""
        last = fiscal_year_of(self.today(), self.fy_start_month).year + 1
        if self.first_fiscal_year > last:
            raise SettingsError(
                f"COMPLIANCE_SYNC_FIRST_FY={self.first_fiscal_year} is after the fiscal year containing today plus "
                f"one (FY{last} in {self.timezone}): there would be no fiscal-year partition"
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
        return load_bu_map(self.bu_map_path)

    def backend_kind(self) -> Literal["postgres", "rest"]:
        """Which backend the settings name (the port's ``BackendKind`` values; configuration imports no backend)."""
        if self.db_url:
            return "postgres"
        if self.supabase_url and self.service_role_key:
            return "rest"
        raise SettingsError(NO_BACKEND)


_SECRET_VARS = {f.alias for f in Settings.model_fields.values() if f.annotation == (pydantic.SecretStr | None)}


def load_settings(cwd: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the environment (or ``environ``) over ``.env.local`` over ``.env`` in ``cwd`` (default:
    the working directory); blank values mean the default."""
    base = pathlib.Path(cwd or os.getcwd())
    token = _ENVIRON.set(environ)
    try:
        return Settings(_env_file=tuple(base / name for name in ENV_FILES))
    except SettingsError:
        raise
    except pydantic.ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    finally:
        _ENVIRON.reset(token)


def read_environment(cwd: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every variable of ``.env`` and ``.env.local`` in ``cwd`` under the process environment (or ``environ``),
    with the settings' precedence: for the processes ``compliance-sync ui`` starts (``dagster dev`` reads
    ``DAGSTER_PG_URL`` from its environment)."""
    base = pathlib.Path(cwd or os.getcwd())
    files = DotEnvSettingsSource(Settings, env_file=tuple(base / name for name in ENV_FILES)).env_vars
    return {k: v for k, v in files.items() if v is not None} | dict(os.environ if environ is None else environ)


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        var = str(error["loc"][0]) if error["loc"] else "settings"
        message = error["msg"].removeprefix("Value error, ")
        shown = "(not shown: a secret)" if var in _SECRET_VARS else repr(error.get("input"))
        problems.append(f"{var}: {message}, got {shown}")
    return "; ".join(problems)
