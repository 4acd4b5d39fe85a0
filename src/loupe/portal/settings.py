"""The portal's settings, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from loupe.access import AccessSettings
from loupe.config import Settings, env
from loupe.messaging.management import DEFAULT_MANAGEMENT_URL

DEFAULT_PORTAL_URL = "http://127.0.0.1:8090"
DEFAULT_AMQP_URL = Settings.amqp_url


@dataclass(frozen=True)
class PortalSettings:
    """Read from LOUPE_PORTAL_URL (where it listens), LOUPE_AMQP_URL and
    LOUPE_RABBITMQ_MANAGEMENT_URL (where the dead letters are), and the access settings (whose
    ID tokens it accepts, who may read and act; see loupe.access.AccessSettings)."""

    url: str = DEFAULT_PORTAL_URL
    access: AccessSettings = field(default_factory=AccessSettings)
    amqp_url: str = DEFAULT_AMQP_URL
    management_url: str = DEFAULT_MANAGEMENT_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PortalSettings:
        management_url = env("LOUPE_RABBITMQ_MANAGEMENT_URL", cls.management_url, environ)
        return cls(
            url=env("LOUPE_PORTAL_URL", cls.url, environ).rstrip("/"),
            access=AccessSettings.from_env(environ),
            amqp_url=env("LOUPE_AMQP_URL", cls.amqp_url, environ),
            management_url=management_url.rstrip("/"),
        )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8090
