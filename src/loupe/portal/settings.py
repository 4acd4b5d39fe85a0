"""The portal's settings, read from the environment; each has a documented default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loupe.access import AccessSettings
from loupe.config import DEFAULT_CONSOLE_URL, Settings, env
from loupe.messaging.management import DEFAULT_MANAGEMENT_URL
from loupe.monitor.settings import DEFAULT_MONITOR_URL

DEFAULT_PORTAL_URL = "http://127.0.0.1:8090"
DEFAULT_AMQP_URL = Settings.amqp_url
DEFAULT_JAEGER_QUERY_URL = "http://127.0.0.1:16686/jaeger"


@dataclass(frozen=True)
class PortalSettings:
    """Where the portal listens and what its console reads.

    - LOUPE_PORTAL_URL: where it listens (default http://127.0.0.1:8090).
    - LOUPE_CONSOLE_URL: the console's public URL, as browsers reach it through the gateway
      (default http://127.0.0.1:4180); actions are accepted only from its origin.
    - LOUPE_MONITOR_URL: the order-flow monitor, whose API the console reads with the
      signed-in person's own token (default http://127.0.0.1:8091).
    - LOUPE_JAEGER_QUERY_URL: Jaeger's query service with its base path, for the order page's
      traces (default http://127.0.0.1:16686/jaeger).
    - LOUPE_AMQP_URL and LOUPE_RABBITMQ_MANAGEMENT_URL: where the dead letters are.
    - LOUPE_PORTAL_ANTIFORGERY_KEY: the key of the actions' anti-forgery tokens; unset, one is
      made at each start (see loupe.portal.antiforgery).
    - LOUPE_DATA_DIR: the actions' audit log is logs/actions.jsonl under it (default .data).
    - the access settings: whose ID tokens it accepts, who may read and act
      (loupe.access.AccessSettings).
    """

    url: str = DEFAULT_PORTAL_URL
    console_url: str = DEFAULT_CONSOLE_URL
    monitor_url: str = DEFAULT_MONITOR_URL
    jaeger_query_url: str = DEFAULT_JAEGER_QUERY_URL
    access: AccessSettings = field(default_factory=AccessSettings)
    amqp_url: str = DEFAULT_AMQP_URL
    management_url: str = DEFAULT_MANAGEMENT_URL
    antiforgery_key: str = ""
    data_dir: Path = Settings.data_dir

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PortalSettings:
        def url(name: str, default: str) -> str:
            return env(name, default, environ).rstrip("/")

        return cls(
            url=url("LOUPE_PORTAL_URL", cls.url),
            console_url=url("LOUPE_CONSOLE_URL", cls.console_url),
            monitor_url=url("LOUPE_MONITOR_URL", cls.monitor_url),
            jaeger_query_url=url("LOUPE_JAEGER_QUERY_URL", cls.jaeger_query_url),
            access=AccessSettings.from_env(environ),
            amqp_url=env("LOUPE_AMQP_URL", cls.amqp_url, environ),
            management_url=url("LOUPE_RABBITMQ_MANAGEMENT_URL", cls.management_url),
            antiforgery_key=env("LOUPE_PORTAL_ANTIFORGERY_KEY", "", environ),
            data_dir=Path(env("LOUPE_DATA_DIR", str(cls.data_dir), environ)),
        )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8090

    @property
    def actions_log(self) -> Path:
        return self.data_dir / "logs" / "actions.jsonl"
