"""Settings shared by every loupe process, read from the environment.

Each setting has a documented default that works on a developer machine set up by
`make run`; production overrides them through the environment (see docs/runbook.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("shop", "crm", "mes")
"""The three order services, in the order `loupe up` starts them."""

SERVICE_NAMES = {"shop": "shop-api", "crm": "crm-api", "mes": "mes-api"}
"""OpenTelemetry `service.name` of each service."""

DEFAULT_PORTS = {"shop": 8081, "crm": 8082, "mes": 8083}

DEFAULT_CONSOLE_URL = "http://127.0.0.1:4180"
"""The console's public base URL by default: the sign-in gateway on this machine."""

# src/loupe/config.py -> the repository root, where deploy/, docs/ and tools/ live.
REPO_ROOT = Path(__file__).resolve().parents[2]


def env(name: str, default: str, environ: Mapping[str, str] = os.environ) -> str:
    """The variable's value, or `default` when it is unset or blank."""
    value = environ.get(name, "").strip()
    return value or default


def env_float(
    name: str,
    default: float,
    environ: Mapping[str, str] = os.environ,
    *,
    above_zero: bool = False,
) -> float:
    raw = env(name, str(default), environ)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if above_zero and value <= 0:
        raise ValueError(f"{name} must be above 0, got {raw!r}")
    return value


def _env_int(name: str, default: int, environ: Mapping[str, str] = os.environ) -> int:
    raw = env(name, str(default), environ)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/loupe"
    # PostgreSQL over the Unix socket with peer authentication: no password to keep.
    postgres_dsn: str = "postgresql:///postgres?host=/var/run/postgresql"
    database_prefix: str = "loupe"
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    service_urls: dict[str, str] = field(
        default_factory=lambda: {s: f"http://127.0.0.1:{p}" for s, p in DEFAULT_PORTS.items()}
    )
    pricing_seconds: float = 2.0
    max_delivery_attempts: int = 5
    retry_delay_ms: int = 2000
    prefetch: int = 8
    # LOUPE_CONSOLE_URL: where people open loupe's console (the gateway's URL as browsers
    # reach it); links in the CLI's output and in webhook alerts start with it.
    console_url: str = DEFAULT_CONSOLE_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        urls = {
            s: env(f"LOUPE_{s.upper()}_URL", f"http://127.0.0.1:{p}", environ)
            for s, p in DEFAULT_PORTS.items()
        }
        settings = cls(
            amqp_url=env("LOUPE_AMQP_URL", cls.amqp_url, environ),
            postgres_dsn=env("LOUPE_POSTGRES_DSN", cls.postgres_dsn, environ),
            database_prefix=env("LOUPE_DATABASE_PREFIX", cls.database_prefix, environ),
            data_dir=Path(env("LOUPE_DATA_DIR", str(cls.data_dir), environ)),
            host=env("LOUPE_HOST", cls.host, environ),
            service_urls=urls,
            pricing_seconds=env_float("LOUPE_PRICING_SECONDS", cls.pricing_seconds, environ),
            max_delivery_attempts=_env_int(
                "LOUPE_MAX_DELIVERY_ATTEMPTS", cls.max_delivery_attempts, environ
            ),
            retry_delay_ms=_env_int("LOUPE_RETRY_DELAY_MS", cls.retry_delay_ms, environ),
            prefetch=_env_int("LOUPE_PREFETCH", cls.prefetch, environ),
            console_url=env("LOUPE_CONSOLE_URL", cls.console_url, environ).rstrip("/"),
        )
        if settings.max_delivery_attempts < 1:
            raise ValueError("LOUPE_MAX_DELIVERY_ATTEMPTS must be at least 1")
        return settings

    def database_name(self, service: str) -> str:
        return f"{self.database_prefix}_{service}"

    @property
    def object_store(self) -> Path:
        return self.data_dir / "objects"

    def port(self, service: str) -> int:
        return int(self.service_urls[service].rsplit(":", 1)[1].split("/")[0])
