"""Configuration contracts: secrets in ``WAREHOUSE_URL`` never shown (query parameters, a bare
'@' in the password), yes/no spellings, and every optional setting checked at definitions load
with an error that names the variable."""

from __future__ import annotations

import logging
import os

import pytest

from pipelines.settings import (
    FALSE_SPELLINGS,
    TRUE_SPELLINGS,
    Settings,
    SettingsError,
    load_settings,
    parse_flag,
)
from warehouse.engine import (
    WarehouseUrlError,
    create_warehouse_engine,
    describe,
    mask_url,
    normalize_url,
    url_secrets,
)

SECRET = "Sup3rS3cretPW"
QUERY_URL = f"postgresql://postgres@127.0.0.1:5432/db?password={SECRET}"
SPLIT_URL = "postgresql://postgres:Sup3r@S3cretPW@127.0.0.1:5432/test"
OPTIONAL = (
    "TASKROUTER_BASE_URL", "TASKROUTER_WORKSPACE_SIDS", "REPORTING_TIMEZONE", "SUMMARY_START_DATE",
    "TASKROUTER_PAGE_SIZE", "TASKROUTER_CONCURRENCY", "TASKROUTER_REQUESTS_PER_SECOND",
    "TASKROUTER_CONNECT_TIMEOUT_S", "TASKROUTER_READ_TIMEOUT_S", "TASKROUTER_MAX_ATTEMPTS",
    "TASKROUTER_READER_PROCESS", "SYNC_BATCH_ROWS", "SYNC_CRON", "DAILY_CHECKS_CRON",
    "WAREHOUSE_AUTO_MIGRATE", "SYNC_SCHEDULE_RUNNING", "FRESHNESS_MAX_AGE_MINUTES",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in OPTIONAL:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- secrets in WAREHOUSE_URL ----------------------------------------------------------------------
@pytest.mark.parametrize("key", ["password", "PASSWORD", "passwd", "pwd", "sslpassword",
                                 "SSLPassword", "db_password", "client_secret", "api_token"])
def test_mask_url_masks_secret_query_parameters(key):
    shown = mask_url(f"postgresql://postgres@127.0.0.1:5432/db?sslmode=require&{key}={SECRET}")
    assert SECRET not in shown
    assert f"{key}=***" in shown and "sslmode=require" in shown  # the rest stays readable


def test_mask_url_masks_repeated_parameters_and_the_userinfo_password():
    shown = mask_url(f"mysql+pymysql://u:{SECRET}@h/w?passwd={SECRET}x&passwd={SECRET}y&charset=utf8mb4")
    assert SECRET not in shown
    assert shown == "mysql+pymysql://u:***@h/w?charset=utf8mb4&passwd=***&passwd=***"


@pytest.mark.filterwarnings("ignore:Query string argument")
def test_query_password_is_masked_in_what_the_resource_and_migrations_show(caplog, tmp_path):
    from pipelines.resources import WarehouseResource

    shown = WarehouseResource(url=QUERY_URL).display_url()  # the "warehouse" metadata label
    assert SECRET not in shown and "password=***" in shown
    assert SECRET not in describe(create_warehouse_engine(QUERY_URL))  # migrate's lines

    # a real migration of a SQLite warehouse whose URL carries one (SQLite ignores it)
    from warehouse.migrate import ensure_schema

    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'w.db'}?password={SECRET}")
    with caplog.at_level(logging.INFO, logger="warehouse.migrate"):
        ensure_schema(engine)
    engine.dispose()
    assert "Migrating warehouse" in caplog.text and SECRET not in caplog.text


def test_a_bare_at_in_the_password_is_refused_without_showing_any_of_it():
    for raw in (SPLIT_URL, "postgresql://postgres:Sup3r@S3cretPW/x@127.0.0.1/test",
                "mysql://root:Sup3r@S3cretPW@db.example/w"):
        with pytest.raises(WarehouseUrlError) as caught:
            normalize_url(raw)
        message = str(caught.value)
        assert "%40" in message and "password" in message
        assert "Sup3r" not in message and "S3cretPW" not in message
    # the display of such a URL (it never gets this far) does not show the fragment either
    assert "S3cretPW" not in mask_url(SPLIT_URL) and "Sup3r" not in mask_url(SPLIT_URL)


def test_percent_encoded_at_in_the_password_still_works():
    url = normalize_url("postgresql://postgres:Sup3r%40S3cretPW@127.0.0.1:5432/test")
    assert url.password == "Sup3r@S3cretPW" and url.host == "127.0.0.1"
    assert "S3cretPW" not in mask_url(url)


def test_unparseable_url_error_explains_percent_encoding():
    with pytest.raises(WarehouseUrlError) as caught:
        normalize_url("postgresql://u:Sup3r@S3cret:PW@h/db")  # the "port" is 'PW@h'
    assert "%40" in str(caught.value) and "S3cret" not in str(caught.value)


def test_scrub_removes_the_warehouse_password(monkeypatch):
    from pipelines.cli import _scrub

    monkeypatch.setenv("WAREHOUSE_URL", f"postgresql://u:{SECRET}@h/db?sslpassword=KeyPassphrase9")
    text = _scrub(f"connection failed for password {SECRET} (sslpassword KeyPassphrase9)")
    assert SECRET not in text and "KeyPassphrase9" not in text and text.count("***") == 2

    monkeypatch.setenv("WAREHOUSE_URL", QUERY_URL)
    assert SECRET not in _scrub(f"bad password '{SECRET}'")

    monkeypatch.setenv("WAREHOUSE_URL", SPLIT_URL)  # even the pieces of a mis-split password
    scrubbed = _scrub("failed to resolve host 'S3cretPW@127.0.0.1' (password Sup3r@S3cretPW)")
    assert "S3cretPW" not in scrubbed and "Sup3r" not in scrubbed and "127.0.0.1" in scrubbed

    monkeypatch.delenv("WAREHOUSE_URL")
    assert _scrub("nothing to hide") == "nothing to hide"


def test_url_secrets_lists_encoded_and_decoded_forms():
    found = url_secrets("postgresql://u:p%40ss%2Fword@h/db?password=other1&sslmode=require")
    assert {"p@ss/word", "p%40ss%2Fword", "other1"} <= set(found)
    assert "require" not in found and url_secrets(None) == [] and url_secrets("sqlite:///x.db") == []


# -- yes/no switches ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [*TRUE_SPELLINGS, "TRUE", " Yes ", "ON", "True"])
def test_true_spellings(raw):
    assert parse_flag("X", raw, default=False) is True


@pytest.mark.parametrize("raw", [*FALSE_SPELLINGS, "FALSE", " off ", "No", "OFF"])
def test_false_spellings(raw):
    assert parse_flag("X", raw, default=True) is False


def test_empty_means_the_default():
    for raw in (None, "", "   "):
        assert parse_flag("X", raw, default=True) is True
        assert parse_flag("X", raw, default=False) is False


@pytest.mark.parametrize(("raw", "expected"), [("FALSE", False), ("off", False), ("No", False),
                                               ("0", False), ("ON", True), ("", True)])
def test_auto_migrate_spellings(clean_env, raw, expected):
    clean_env.setenv("WAREHOUSE_AUTO_MIGRATE", raw)
    assert load_settings().auto_migrate is expected


@pytest.mark.parametrize(("raw", "expected"), [("TRUE", True), ("Yes", True), ("on", True),
                                               ("1", True), ("OFF", False), ("", False)])
def test_schedule_running_spellings(clean_env, raw, expected):
    clean_env.setenv("SYNC_SCHEDULE_RUNNING", raw)
    assert load_settings().schedules_running is expected


@pytest.mark.parametrize("name", ["WAREHOUSE_AUTO_MIGRATE", "SYNC_SCHEDULE_RUNNING"])
def test_unknown_switch_spelling_names_the_variable_and_the_spellings(clean_env, name):
    clean_env.setenv(name, "maybe")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{name}='maybe'" in message
    assert all(spelling in message for spelling in ("1", "true", "yes", "on", "0", "false", "off"))


# -- tuning values ----------------------------------------------------------------------------
BAD_VALUES = [
    ("TASKROUTER_PAGE_SIZE", "2000", "1 to 1000"),
    ("TASKROUTER_PAGE_SIZE", "0", "1 to 1000"),
    ("TASKROUTER_PAGE_SIZE", "12.9", "whole number"),
    ("TASKROUTER_PAGE_SIZE", "lots", "whole number"),
    ("TASKROUTER_CONCURRENCY", "0", "at least 1"),
    ("TASKROUTER_CONCURRENCY", "2.5", "whole number"),
    ("TASKROUTER_REQUESTS_PER_SECOND", "-5", "greater than 0"),
    ("TASKROUTER_REQUESTS_PER_SECOND", "nan", "greater than 0"),
    ("TASKROUTER_REQUESTS_PER_SECOND", "inf", "greater than 0"),
    ("TASKROUTER_REQUESTS_PER_SECOND", "0", "unset for no limit"),
    ("TASKROUTER_CONNECT_TIMEOUT_S", "0", "greater than 0"),
    ("TASKROUTER_READ_TIMEOUT_S", "-1", "greater than 0"),
    ("TASKROUTER_READ_TIMEOUT_S", "soon", "greater than 0"),
    ("TASKROUTER_MAX_ATTEMPTS", "0", "at least 1"),
    ("SYNC_BATCH_ROWS", "1e4", "whole number"),
    ("FRESHNESS_MAX_AGE_MINUTES", "0", "greater than 0"),
    ("SUMMARY_START_DATE", "bogus", "YYYY-MM-DD"),
    ("REPORTING_TIMEZONE", "Mars/Olympus", "IANA"),
    ("REPORTING_TIMEZONE", "America", "IANA"),
    ("TASKROUTER_READER_PROCESS", "sometimes", "auto, 1 or 0"),
]


@pytest.mark.parametrize(("name", "raw", "accepted"), BAD_VALUES)
def test_bad_tuning_value_fails_at_load_naming_the_variable(clean_env, name, raw, accepted):
    clean_env.setenv(name, raw)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{name}={raw!r}" in message and accepted in message


def test_all_bad_values_are_reported_at_once_and_twilio_secrets_never(clean_env):
    clean_env.setenv("TWILIO_AUTH_TOKEN", "tok-" + SECRET)
    clean_env.setenv("TASKROUTER_PAGE_SIZE", "2000")
    clean_env.setenv("REPORTING_TIMEZONE", "Mars/Olympus")
    clean_env.setenv("TASKROUTER_BASE_URL", f"ftp://user:{SECRET}@example.com")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "TASKROUTER_PAGE_SIZE" in message and "REPORTING_TIMEZONE" in message
    assert "TASKROUTER_BASE_URL" in message and SECRET not in message


@pytest.mark.parametrize("name", ["SYNC_CRON", "DAILY_CHECKS_CRON"])
def test_bad_cron_fails_at_definitions_load_naming_the_variable(clean_env, name):
    from pipelines.definitions import build_definitions

    clean_env.setenv(name, "every 5 minutes")
    with pytest.raises(SettingsError, match=f"{name}='every 5 minutes'.*5 fields"):
        build_definitions()


def test_a_bad_cron_is_reported_with_the_other_bad_settings_at_once(clean_env):
    """Not only after the others are fixed: one error names every bad variable."""
    from pipelines.definitions import build_definitions

    clean_env.setenv("SYNC_CRON", "every 5 minutes")
    clean_env.setenv("DAILY_CHECKS_CRON", "at six")
    clean_env.setenv("TASKROUTER_PAGE_SIZE", "2000")
    clean_env.setenv("SYNC_SHARDS", "many")
    clean_env.setenv("SYNC_HEARTBEAT_SECONDS", "-1")
    with pytest.raises(SettingsError) as caught:
        build_definitions()
    message = str(caught.value)
    for expected in ("SYNC_CRON='every 5 minutes'", "DAILY_CHECKS_CRON='at six'",
                     "TASKROUTER_PAGE_SIZE='2000'", "SYNC_SHARDS='many'",
                     "SYNC_HEARTBEAT_SECONDS='-1'"):
        assert expected in message
    assert message.count("\n  - ") == 5


def test_good_values_load(clean_env):
    for name, raw in (("TASKROUTER_PAGE_SIZE", " 50 "), ("TASKROUTER_CONCURRENCY", "16"),
                      ("TASKROUTER_REQUESTS_PER_SECOND", "2.5"), ("FRESHNESS_MAX_AGE_MINUTES", "0.0005"),
                      ("REPORTING_TIMEZONE", "America/New_York"), ("SUMMARY_START_DATE", "2024-02-29")):
        clean_env.setenv(name, raw)
    settings = load_settings()
    assert (settings.page_size, settings.concurrency, settings.requests_per_second) == (50, 16, 2.5)
    assert settings.freshness_minutes == 0.0005
    assert (settings.reporting_timezone, settings.summary_start_date) == ("America/New_York", "2024-02-29")


def test_defaults_are_the_documented_ones(clean_env):
    assert not any(os.environ.get(name) for name in OPTIONAL)
    assert load_settings() == Settings(
        base_url="https://taskrouter.twilio.com", workspace_sids="", reporting_timezone="UTC",
        summary_start_date="2025-01-01", page_size=1000, concurrency=8, requests_per_second=None,
        connect_timeout_s=5.0, read_timeout_s=30.0, max_attempts=6, reader_process="auto",
        batch_rows=10_000, sync_cron="*/5 * * * *", auto_migrate=True, freshness_minutes=30.0,
        daily_checks_cron="0 6 * * *", schedules_running=False,
    )
    for name in OPTIONAL:  # set but empty is the same as unset
        clean_env.setenv(name, "")
    assert load_settings() == load_settings({})
