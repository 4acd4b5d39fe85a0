"""Settings from the environment: documented defaults, overrides, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loupe.accounts import Account
from loupe.config import DEFAULT_PORTS, SERVICE_NAMES, SERVICES, Settings
from loupe.monitor.settings import MonitorSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LOUPE_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.amqp_url == "amqp://127.0.0.1:5672/loupe"
    assert settings.postgres_dsn == "postgresql://127.0.0.1:5432/postgres"
    assert settings.secrets_dir == Path(".secrets")
    assert settings.database_prefix == "loupe"
    assert settings.data_dir == Path(".data")
    assert settings.host == "127.0.0.1"
    assert settings.service_urls == {
        "shop": "http://127.0.0.1:8081",
        "crm": "http://127.0.0.1:8082",
        "mes": "http://127.0.0.1:8083",
    }
    assert settings.pricing_seconds == 2.0
    assert settings.max_delivery_attempts == 5
    assert settings.retry_delay_ms == 2000
    assert settings.prefetch == 8


def test_derived_values() -> None:
    settings = Settings()
    assert [settings.database_name(s) for s in SERVICES] == ["loupe_shop", "loupe_crm", "loupe_mes"]
    assert settings.object_store("shop") == Path(".data") / "objects" / "shop"
    assert {s: settings.port(s) for s in SERVICES} == DEFAULT_PORTS
    assert set(SERVICE_NAMES) == set(SERVICES)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "LOUPE_AMQP_URL": "amqp://u:p@127.0.0.1:5673/other",
        "LOUPE_POSTGRES_DSN": "postgresql:///postgres?host=/tmp",
        "LOUPE_DATABASE_PREFIX": "staging",
        "LOUPE_DATA_DIR": str(tmp_path),
        "LOUPE_HOST": "127.0.0.2",
        "LOUPE_SHOP_URL": "http://127.0.0.1:9001",
        "LOUPE_CRM_URL": "http://127.0.0.1:9002/",
        "LOUPE_MES_URL": "http://127.0.0.1:9003/api",
        "LOUPE_PRICING_SECONDS": "0.25",
        "LOUPE_MAX_DELIVERY_ATTEMPTS": "3",
        "LOUPE_RETRY_DELAY_MS": "100",
        "LOUPE_PREFETCH": "1",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.amqp_url == "amqp://u:p@127.0.0.1:5673/other"
    assert settings.postgres_dsn == "postgresql:///postgres?host=/tmp"
    assert settings.database_name("mes") == "staging_mes"
    assert settings.data_dir == tmp_path
    assert settings.object_store("mes") == tmp_path / "objects" / "mes"
    assert settings.host == "127.0.0.2"
    assert settings.service_urls["shop"] == "http://127.0.0.1:9001"
    assert (settings.port("shop"), settings.port("crm"), settings.port("mes")) == (9001, 9002, 9003)
    assert settings.pricing_seconds == 0.25
    assert settings.max_delivery_attempts == 3
    assert settings.retry_delay_ms == 100
    assert settings.prefetch == 1


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_values_mean_the_default(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    monkeypatch.setenv("LOUPE_AMQP_URL", blank)
    monkeypatch.setenv("LOUPE_PREFETCH", blank)
    monkeypatch.setenv("LOUPE_PRICING_SECONDS", blank)
    settings = Settings.from_env()
    assert settings.amqp_url == Settings.amqp_url
    assert settings.prefetch == 8
    assert settings.pricing_seconds == 2.0


def test_surrounding_whitespace_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_RETRY_DELAY_MS", " 250 ")
    monkeypatch.setenv("LOUPE_HOST", " 127.0.0.1\n")
    settings = Settings.from_env()
    assert settings.retry_delay_ms == 250
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOUPE_PRICING_SECONDS", "two"),
        ("LOUPE_PRICING_SECONDS", "1,5"),
        ("LOUPE_MAX_DELIVERY_ATTEMPTS", "five"),
        ("LOUPE_MAX_DELIVERY_ATTEMPTS", "2.5"),
        ("LOUPE_RETRY_DELAY_MS", "1s"),
        ("LOUPE_RETRY_DELAY_MS", "100ms"),
        ("LOUPE_PREFETCH", "many"),
    ],
)
def test_bad_number_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name) as raised:
        Settings.from_env()
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_fewer_than_one_delivery_attempt_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LOUPE_MAX_DELIVERY_ATTEMPTS", value)
    with pytest.raises(ValueError, match="LOUPE_MAX_DELIVERY_ATTEMPTS must be at least 1"):
        Settings.from_env()


def test_monitor_settings_from_the_environment() -> None:
    settings = MonitorSettings.from_env(
        {
            "LOUPE_MONITOR_URL": "http://127.0.0.1:9191/",
            "LOUPE_MONITOR_TICK_SECONDS": " 0.25 ",
            "LOUPE_MONITOR_PROBE_SECONDS": "",
            "LOUPE_MONITOR_WEBHOOK_URLS": "http://a.example/hook, ,http://b.example/hook",
            "LOUPE_RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:15673/",
        }
    )
    assert (settings.url, settings.host, settings.port) == (
        "http://127.0.0.1:9191",
        "127.0.0.1",
        9191,
    )
    assert (settings.tick_seconds, settings.probe_seconds) == (0.25, 5.0)
    assert settings.webhook_urls == ("http://a.example/hook", "http://b.example/hook")
    assert settings.management_url == "http://127.0.0.1:15673"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "LOUPE_MONITOR_TICK_SECONDS must be a number, got 'soon'"),
        ("0", "LOUPE_MONITOR_TICK_SECONDS must be above 0, got '0'"),
        ("-1", "LOUPE_MONITOR_TICK_SECONDS must be above 0, got '-1'"),
    ],
)
def test_monitor_intervals_must_be_positive_numbers(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MonitorSettings.from_env({"LOUPE_MONITOR_TICK_SECONDS": value})


def test_the_apps_answer_to_loopback_the_console_and_the_allowed_hosts() -> None:
    settings = Settings.from_env(
        {
            "LOUPE_CONSOLE_URL": "https://loupe.workshop.example:8443/",
            "LOUPE_ALLOWED_HOSTS": " ops.workshop.example , localhost ",
        }
    )
    assert settings.known_hosts == (
        "127.0.0.1",
        "localhost",
        "loupe.workshop.example",
        "ops.workshop.example",
    )


def test_each_process_signs_in_as_its_own_account_with_the_password_the_set_up_made(
    tmp_path: Path,
) -> None:
    settings = Settings(secrets_dir=tmp_path, database_prefix="p")
    (tmp_path / "rabbitmq").mkdir()
    (tmp_path / "rabbitmq" / "loupe-mes").write_text("s3cret/+=\n")
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "p_monitor_reader").write_text("pw")
    assert (
        settings.amqp_url_of(Account.MES) == "amqp://loupe-mes:s3cret%2F%2B%3D@127.0.0.1:5672/loupe"
    )
    # No password kept for the portal: its user still names itself, and the broker refuses it.
    assert settings.amqp_url_of(Account.PORTAL) == "amqp://loupe-portal@127.0.0.1:5672/loupe"
    assert settings.postgres_dsn_of("p_monitor", "p_monitor_reader") == (
        "postgresql://p_monitor_reader:pw@127.0.0.1:5432/p_monitor"
    )
    assert settings.postgres_dsn_of("p_shop") == "postgresql://p_shop@127.0.0.1:5432/p_shop"
    monitor = settings.management(Account.MONITOR)
    assert monitor.credentials == ("loupe-monitor", "") and monitor.vhost == "loupe"


def test_a_url_that_names_a_user_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "rabbitmq").mkdir()
    (tmp_path / "rabbitmq" / "other-shop").write_text("unused")
    settings = Settings(
        secrets_dir=tmp_path,
        amqp_url="amqp://u:p@rabbit:5672/other",
        postgres_dsn="postgresql://admin@/postgres?host=/run/pg",
    )
    assert settings.amqp_url_of(Account.SHOP) == "amqp://u:p@rabbit:5672/other"
    assert settings.postgres_dsn_of("loupe_shop") == "postgresql://admin@/loupe_shop?host=/run/pg"
