"""SPEC §7 configuration and §6 setting errors: environment / .env precedence, validation, thresholds,
the BU map, the backend choice, secrets.

Every ``load_settings`` call passes an explicit ``environ`` dict and a temporary ``cwd`` so the real
environment and any real ``.env`` never leak into the tests.
"""

from __future__ import annotations

import textwrap
from fractions import Fraction

import pytest
from pydantic import SecretStr

from compliance_sync.config.settings import (
    Settings,
    bu_map_from_mapping,
    load_bu_map,
    load_settings,
    read_environment,
    validate_timezone,
)
from compliance_sync.domain.bu_map import RESERVED_BU
from compliance_sync.domain.thresholds import Thresholds
from compliance_sync.errors import SettingsError

DB_PASSWORD = "hunter2-Sup3rSecret"
DB_URL = f"postgresql://postgres.abcd:{DB_PASSWORD}@aws-0-ap-southeast-2.pooler.supabase.com:5432/postgres"
SERVICE_KEY = "sb_secret_9f8e7d6c5b4a39281706abcdef"


def write(path, text: str) -> None:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def load(tmp_path, **env: str) -> Settings:
    return load_settings(cwd=tmp_path, environ=dict(env))


# --- defaults and precedence ------------------------------------------------------------------------------
def test_defaults(tmp_path):
    s = load(tmp_path)
    assert s.db_url is None
    assert s.supabase_url is None
    assert s.service_role_key is None
    assert s.bu_map_path is None
    assert s.fy_start_month == 1
    assert s.first_fiscal_year == 2024
    assert s.timezone == "Australia/Sydney"
    assert str(s.tz) == "Australia/Sydney"
    assert s.thresholds == Thresholds(Fraction(50), Fraction(80), Fraction(100))
    assert s.schedule_cron == "0 6 * * *"
    assert s.grace_days == 30
    assert s.max_prune_fraction == 0.5


def test_blank_values_mean_default(tmp_path):
    s = load(
        tmp_path,
        COMPLIANCE_SYNC_FY_START_MONTH="  ",
        COMPLIANCE_SYNC_TIMEZONE="",
        COMPLIANCE_SYNC_THRESHOLDS=" ",
        COMPLIANCE_SYNC_GRACE_DAYS="",
        SUPABASE_DB_URL="   ",
    )
    assert s.fy_start_month == 1
    assert s.timezone == "Australia/Sydney"
    assert s.thresholds == Thresholds()
    assert s.grace_days == 30
    assert s.db_url is None


def test_explicit_values(tmp_path):
    s = load(
        tmp_path,
        SUPABASE_DB_URL=f" {DB_URL} ",
        COMPLIANCE_SYNC_BU_MAP=" /etc/bu.yaml ",
        COMPLIANCE_SYNC_FY_START_MONTH=" 7 ",
        COMPLIANCE_SYNC_FIRST_FY="2022",
        COMPLIANCE_SYNC_TIMEZONE="Asia/Singapore",
        COMPLIANCE_SYNC_THRESHOLDS="40, 75, 100",
        COMPLIANCE_SYNC_SCHEDULE_CRON="30 5 * * 1-5",
        COMPLIANCE_SYNC_GRACE_DAYS="14",
        COMPLIANCE_SYNC_MAX_PRUNE_FRACTION="0.25",
    )
    assert isinstance(s.db_url, SecretStr)
    assert s.db_url.get_secret_value() == DB_URL
    assert s.bu_map_path == "/etc/bu.yaml"
    assert s.fy_start_month == 7
    assert s.first_fiscal_year == 2022
    assert s.timezone == "Asia/Singapore"
    assert s.thresholds == Thresholds(Fraction(40), Fraction(75), Fraction(100))
    assert s.schedule_cron == "30 5 * * 1-5"
    assert s.grace_days == 14
    assert s.max_prune_fraction == 0.25


def test_dotenv_precedence(tmp_path):
    write(
        tmp_path / ".env",
        """
        COMPLIANCE_SYNC_FY_START_MONTH=3
        COMPLIANCE_SYNC_TIMEZONE=UTC
        COMPLIANCE_SYNC_GRACE_DAYS=10
        COMPLIANCE_SYNC_FIRST_FY=2021
        """,
    )
    write(
        tmp_path / ".env.local",
        """
        COMPLIANCE_SYNC_FY_START_MONTH=7
        COMPLIANCE_SYNC_GRACE_DAYS=20
        """,
    )
    s = load(tmp_path, COMPLIANCE_SYNC_GRACE_DAYS="25")
    assert s.timezone == "UTC"  # only in .env
    assert s.first_fiscal_year == 2021  # only in .env
    assert s.fy_start_month == 7  # .env.local beats .env
    assert s.grace_days == 25  # the process environment beats both


def test_only_dotenv(tmp_path):
    write(tmp_path / ".env", "COMPLIANCE_SYNC_FY_START_MONTH=3\n")
    assert load(tmp_path).fy_start_month == 3


def test_only_dotenv_local(tmp_path):
    write(tmp_path / ".env.local", "COMPLIANCE_SYNC_FY_START_MONTH=11\n")
    assert load(tmp_path).fy_start_month == 11


def test_read_environment_merges(tmp_path):
    write(tmp_path / ".env", "A=env\nB=env\nC=env\n")
    write(tmp_path / ".env.local", "B=local\nC=local\n")
    merged = read_environment(tmp_path, {"C": "process"})
    assert merged["A"] == "env"
    assert merged["B"] == "local"
    assert merged["C"] == "process"


def test_explicit_environ_ignores_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPLIANCE_SYNC_FY_START_MONTH", "9")
    monkeypatch.setenv("SUPABASE_DB_URL", DB_URL)
    s = load_settings(cwd=tmp_path, environ={})
    assert s.fy_start_month == 1
    assert s.db_url is None
    # and without environ the process environment is read
    s = load_settings(cwd=tmp_path)
    assert s.fy_start_month == 9
    assert s.db_url.get_secret_value() == DB_URL


def test_dotenv_read_from_cwd_not_elsewhere(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / ".env", "COMPLIANCE_SYNC_FY_START_MONTH=4\n")
    assert load(tmp_path / "a").fy_start_month == 4
    assert load(tmp_path / "b").fy_start_month == 1


def test_bad_setting_in_dotenv_is_an_error(tmp_path):
    write(tmp_path / ".env.local", "COMPLIANCE_SYNC_TIMEZONE=Mars/Olympus\n")
    with pytest.raises(SettingsError, match="COMPLIANCE_SYNC_TIMEZONE"):
        load(tmp_path)


# --- bad settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "var, value",
    [
        ("COMPLIANCE_SYNC_FY_START_MONTH", "0"),
        ("COMPLIANCE_SYNC_FY_START_MONTH", "13"),
        ("COMPLIANCE_SYNC_FY_START_MONTH", "-1"),
        ("COMPLIANCE_SYNC_FY_START_MONTH", "x"),
        ("COMPLIANCE_SYNC_FY_START_MONTH", "7.0"),
        ("COMPLIANCE_SYNC_FIRST_FY", "abc"),
        ("COMPLIANCE_SYNC_FIRST_FY", "99999"),
        ("COMPLIANCE_SYNC_TIMEZONE", "Mars/Olympus"),
        ("COMPLIANCE_SYNC_TIMEZONE", "../etc/passwd"),
        ("COMPLIANCE_SYNC_TIMEZONE", "Not A Zone"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "80,50,100"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,80"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "a,b,c"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,50,100"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,80,80"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "-10,80,100"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,80,100,120"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,80,"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50;80;100"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,80,inf"),
        ("COMPLIANCE_SYNC_GRACE_DAYS", "x"),
        ("COMPLIANCE_SYNC_GRACE_DAYS", "-1"),
        ("COMPLIANCE_SYNC_GRACE_DAYS", "366"),
        ("COMPLIANCE_SYNC_GRACE_DAYS", "1.5"),
        ("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "1.5"),
        ("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "-0.1"),
        ("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "half"),
        ("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "nan"),
    ],
)
def test_bad_setting_raises_naming_the_variable(tmp_path, var, value):
    with pytest.raises(SettingsError) as info:
        load(tmp_path, **{var: value})
    assert var in str(info.value)
    assert info.value.exit_code == 2


def test_bad_setting_message_shows_no_secret(tmp_path):
    with pytest.raises(SettingsError) as info:
        load(
            tmp_path,
            SUPABASE_DB_URL=DB_URL,
            SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
            COMPLIANCE_SYNC_THRESHOLDS="80,50,100",
        )
    text = str(info.value)
    assert "COMPLIANCE_SYNC_THRESHOLDS" in text
    assert DB_PASSWORD not in text and SERVICE_KEY not in text


@pytest.mark.parametrize(
    "edge, value", [("COMPLIANCE_SYNC_FY_START_MONTH", "1"), ("COMPLIANCE_SYNC_FY_START_MONTH", "12")]
)
def test_start_month_edges_accepted(tmp_path, edge, value):
    assert load(tmp_path, **{edge: value}).fy_start_month == int(value)


def test_grace_days_edges_accepted(tmp_path):
    assert load(tmp_path, COMPLIANCE_SYNC_GRACE_DAYS="0").grace_days == 0
    assert load(tmp_path, COMPLIANCE_SYNC_GRACE_DAYS="365").grace_days == 365


def test_validate_timezone():
    assert validate_timezone("Australia/Sydney") == "Australia/Sydney"
    assert validate_timezone("UTC") == "UTC"
    with pytest.raises(SettingsError, match="COMPLIANCE_SYNC_TIMEZONE.*Mars/Olympus"):
        validate_timezone("Mars/Olympus")


@pytest.mark.parametrize("zone", ["Australia", "America"])
def test_timezone_that_is_a_tzdata_directory_is_a_settings_error(tmp_path, zone):
    with pytest.raises(SettingsError, match="COMPLIANCE_SYNC_TIMEZONE"):
        load(tmp_path, COMPLIANCE_SYNC_TIMEZONE=zone)


# --- thresholds ----------------------------------------------------------------------------------------
def test_thresholds_parse_default_and_text():
    t = Thresholds.parse("50,80,100")
    assert t == Thresholds()
    assert (t.at_risk_from, t.compliant_from, t.exceeded_from) == (50, 80, 100)
    assert t.text() == "50,80,100"
    assert Thresholds.parse(t.text()) == t


def test_thresholds_parse_decimals_exactly():
    t = Thresholds.parse(" 50.5 , 80 , 100 ")
    assert t.at_risk_from == Fraction(101, 2)
    assert t.compliant_from == Fraction(80)
    assert Thresholds.parse(t.text()) == t


@pytest.mark.parametrize(
    "c, r, status",
    [
        # r = 10: exact 0.5, 0.8, 1.0 and just below each
        (10, 10, "exceeded"),
        (11, 10, "exceeded"),
        (20, 10, "exceeded"),
        (9, 10, "compliant"),
        (8, 10, "compliant"),
        (7, 10, "at_risk"),
        (6, 10, "at_risk"),
        (5, 10, "at_risk"),
        (4, 10, "critical"),
        (0, 10, "critical"),
        # finer: just below each threshold
        (999, 1000, "compliant"),
        (799, 1000, "at_risk"),
        (499, 1000, "critical"),
        (4, 5, "compliant"),
        (1, 2, "at_risk"),
        (0, 1, "critical"),
        (1, 1, "exceeded"),
        (2, 3, "at_risk"),  # 66.67 %
        (3, 4, "at_risk"),  # 75 %
        # SPEC: the percentage shows 50.00 but the exact ratio is below 50 %
        (9999, 20000, "critical"),
        (10000, 20000, "at_risk"),
        (15999, 20000, "at_risk"),
        (16000, 20000, "compliant"),
        (19999, 20000, "compliant"),
    ],
)
def test_status_boundaries_default(c, r, status):
    assert Thresholds().status(c, r) == status


@pytest.mark.parametrize(
    "c, r, status",
    [
        (505, 1000, "at_risk"),
        (504, 1000, "critical"),
        (101, 200, "at_risk"),
        (100, 200, "critical"),  # exactly 50 % is below 50.5 %
        (1, 2, "critical"),
        (800, 1000, "compliant"),
        (1000, 1000, "exceeded"),
    ],
)
def test_status_with_decimal_threshold(c, r, status):
    assert Thresholds.parse("50.5,80,100").status(c, r) == status


def test_status_with_custom_thresholds():
    t = Thresholds.parse("25,60,90")
    assert t.status(9, 10) == "exceeded"
    assert t.status(6, 10) == "compliant"
    assert t.status(5, 10) == "at_risk"
    assert t.status(1, 4) == "at_risk"
    assert t.status(24, 100) == "critical"


def test_thresholds_setting_changes_status(tmp_path):
    s = load(tmp_path, COMPLIANCE_SYNC_THRESHOLDS="50.5,80,100")
    assert s.thresholds.status(1, 2) == "critical"
    assert load(tmp_path).thresholds.status(1, 2) == "at_risk"


# --- BU map --------------------------------------------------------------------------------------------
VALID_MAP = """
cse:
  Kim Lee: SEA
territory:
  VIC + NZ: ANZ
  Singapore: SEA
  "123": Greater China
"""


def test_bu_map_load_valid(tmp_path):
    path = tmp_path / "bu.yaml"
    write(path, VALID_MAP)
    m = load_bu_map(path)
    assert dict(m.cse) == {"Kim Lee": "SEA"}
    assert dict(m.territory) == {"VIC + NZ": "ANZ", "Singapore": "SEA", "123": "Greater China"}
    assert "COMPLIANCE_SYNC_BU_MAP" in m.source and str(path) in m.source
    # the CSE entry wins over the territory entry
    assert m.bu_for("Kim Lee", "VIC + NZ") == "SEA"
    assert m.bu_for("Jo Park", "VIC + NZ") == "ANZ"
    assert m.bu_for(None, "Singapore") == "SEA"
    assert m.bu_for("Kim Lee", None) == "SEA"
    assert m.bu_for(None, "123") == "Greater China"
    # no default, exact names only
    assert m.bu_for("Jo Park", "Mars") is None
    assert m.bu_for(None, None) is None
    assert m.bu_for(None, "vic + nz") is None
    assert m.bu_for(None, "VIC + NZ ") is None
    assert m.bu_for("kim lee", "Mars") is None


def test_bu_map_only_one_section(tmp_path):
    path = tmp_path / "bu.yaml"
    write(path, "territory:\n  VIC + NZ: ANZ\n")
    m = load_bu_map(path)
    assert dict(m.cse) == {}
    assert m.bu_for("Kim Lee", "VIC + NZ") == "ANZ"
    write(path, "cse:\n  Kim Lee: ANZ\n")
    assert load_bu_map(path).bu_for("Kim Lee", "anything") == "ANZ"


def test_settings_bu_map_uses_the_variable(tmp_path):
    path = tmp_path / "bu.yaml"
    write(path, VALID_MAP)
    s = load(tmp_path, COMPLIANCE_SYNC_BU_MAP=str(path))
    assert s.bu_map().bu_for(None, "VIC + NZ") == "ANZ"


def test_settings_bu_map_not_set(tmp_path):
    with pytest.raises(SettingsError, match="COMPLIANCE_SYNC_BU_MAP is not set"):
        load(tmp_path).bu_map()


def test_settings_bu_map_unreadable(tmp_path):
    s = load(tmp_path, COMPLIANCE_SYNC_BU_MAP=str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError) as info:
        s.bu_map()
    assert "COMPLIANCE_SYNC_BU_MAP" in str(info.value)
    assert "missing.yaml" in str(info.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("- ANZ\n- SEA\n", "not a mapping"),
        ("just a string\n", "not a mapping"),
        ("territory:\n  123: ANZ\n", "123"),
        ("territory:\n  123: ANZ\n", "not a string"),
        ("cse:\n  2024: ANZ\n", "not a string"),
        ("territory:\n  ~: ANZ\n", "not a string"),
        ("territory:\n  yes: ANZ\n", "not a string"),  # YAML 1.1 boolean key
        ("territory:\n  VIC + NZ: Unassigned\n", RESERVED_BU),
        ("cse:\n  Kim Lee: Unassigned\n", "reserved"),
        ("regions:\n  VIC + NZ: ANZ\n", "regions"),
        ("territory:\n  VIC + NZ: ANZ\nregion:\n  X: Y\n", "unknown top-level"),
        ("territory:\n  VIC + NZ: 5\n", "business-unit name"),
        ("territory:\n  VIC + NZ: ''\n", "business-unit name"),
        ("territory:\n  VIC + NZ:\n", "business-unit name"),
        ("territory:\n  - VIC + NZ\n", "must be a dictionary"),
        ("cse: {}\nterritory: {}\n", "no entries"),
        ("territory: [unclosed\n", "not valid YAML"),
    ],
)
def test_bu_map_errors(tmp_path, text, fragment):
    path = tmp_path / "bu.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_bu_map(path)
    message = str(info.value)
    assert "COMPLIANCE_SYNC_BU_MAP" in message
    assert fragment in message


def test_bu_map_unreadable_paths(tmp_path):
    with pytest.raises(SettingsError, match="COMPLIANCE_SYNC_BU_MAP.*cannot read"):
        load_bu_map(tmp_path / "nope.yaml")
    with pytest.raises(SettingsError, match="COMPLIANCE_SYNC_BU_MAP.*cannot read"):
        load_bu_map(tmp_path)  # a directory


def test_bu_map_custom_variable_name(tmp_path):
    with pytest.raises(SettingsError, match="MY_MAP"):
        load_bu_map(tmp_path / "nope.yaml", name="MY_MAP")


def test_bu_map_not_utf8_is_a_settings_error(tmp_path):
    path = tmp_path / "bu.yaml"
    path.write_bytes(b"territory:\n  \xff\xfe: ANZ\n")
    with pytest.raises(SettingsError, match="COMPLIANCE_SYNC_BU_MAP"):
        load_bu_map(path)


def test_bu_map_from_mapping_directly():
    m = bu_map_from_mapping({"cse": {"A": "X"}, "territory": None})
    assert m.bu_for("A", None) == "X"
    with pytest.raises(SettingsError):
        bu_map_from_mapping({})
    with pytest.raises(SettingsError):
        bu_map_from_mapping(None)
    with pytest.raises(SettingsError, match=RESERVED_BU):
        bu_map_from_mapping({"territory": {"T": RESERVED_BU}})


# --- backend choice --------------------------------------------------------------------------------------
def test_backend_kind_nothing_configured(tmp_path):
    s = load(tmp_path)
    with pytest.raises(SettingsError) as info:
        s.backend_kind()
    message = str(info.value)
    assert "SUPABASE_DB_URL" in message
    assert "NEXT_PUBLIC_SUPABASE_URL" in message
    assert "SUPABASE_SERVICE_ROLE_KEY" in message


def test_backend_kind_url_without_key_is_not_enough(tmp_path):
    s = load(tmp_path, NEXT_PUBLIC_SUPABASE_URL="https://abcd.supabase.co")
    assert s.supabase_url == "https://abcd.supabase.co"
    with pytest.raises(SettingsError, match="SUPABASE_DB_URL"):
        s.backend_kind()
    s = load(tmp_path, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)
    with pytest.raises(SettingsError):
        s.backend_kind()


def test_backend_kind_postgres_and_rest(tmp_path):
    assert load(tmp_path, SUPABASE_DB_URL=DB_URL).backend_kind() == "postgres"
    rest = load(tmp_path, NEXT_PUBLIC_SUPABASE_URL="https://abcd.supabase.co", SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)
    assert rest.backend_kind() == "rest"
    both = load(
        tmp_path,
        SUPABASE_DB_URL=DB_URL,
        NEXT_PUBLIC_SUPABASE_URL="https://abcd.supabase.co",
        SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
    )
    assert both.backend_kind() == "postgres"  # direct connection preferred


def test_backend_from_dotenv(tmp_path):
    write(tmp_path / ".env", f"SUPABASE_DB_URL={DB_URL}\n")
    s = load(tmp_path)
    assert s.backend_kind() == "postgres"
    assert s.db_url.get_secret_value() == DB_URL


# --- secrets -----------------------------------------------------------------------------------------------
def test_secret_repr_hides_value():
    s = SecretStr(SERVICE_KEY)
    assert SERVICE_KEY not in repr(s) and SERVICE_KEY not in str(s) and SERVICE_KEY not in f"{s}"
    assert SERVICE_KEY not in repr([s])
    assert SERVICE_KEY not in repr({"key": s})
    assert s.get_secret_value() == SERVICE_KEY


def test_settings_repr_never_shows_secrets(tmp_path):
    s = load(
        tmp_path,
        SUPABASE_DB_URL=DB_URL,
        NEXT_PUBLIC_SUPABASE_URL="https://abcd.supabase.co",
        SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
    )
    assert isinstance(s.service_role_key, SecretStr)
    assert s.service_role_key.get_secret_value() == SERVICE_KEY
    for text in (repr(s), str(s), f"{s}", f"{s!r}", s.model_dump_json()):
        assert DB_PASSWORD not in text
        assert SERVICE_KEY not in text
        assert "**********" in text
    # the non-secret URL stays visible for diagnostics
    assert "https://abcd.supabase.co" in repr(s)
