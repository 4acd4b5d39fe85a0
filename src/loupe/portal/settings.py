"""The portal's settings, read from the environment; each has a documented default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from loupe.access import AccessSettings
from loupe.accounts import Account
from loupe.config import Settings
from loupe.environment import EnvSettings, ListensAtUrl, Variable, part, url
from loupe.messaging.management import Management
from loupe.monitor.settings import DEFAULT_MONITOR_URL

PORTAL_URL = Variable(
    "LOUPE_PORTAL_URL",
    "http://127.0.0.1:8090",
    "where the portal listens; the gateway's upstream for `/`",
    url,
)
MONITOR_URL = Variable(
    "LOUPE_MONITOR_URL",
    DEFAULT_MONITOR_URL,
    "the monitor whose API the console reads, with the signed-in person's own token",
    url,
)
JAEGER_QUERY_URL = Variable(
    "LOUPE_JAEGER_QUERY_URL",
    "http://127.0.0.1:16686/jaeger",
    "Jaeger's query API, with its base path, for the order pages",
    url,
    note="`loupe up`: Jaeger's query URL",
)
ANTIFORGERY_KEY = Variable(
    "LOUPE_PORTAL_ANTIFORGERY_KEY",
    "",
    "the key of the anti-forgery tokens (see loupe.portal.antiforgery); set it when several"
    " portal replicas serve one console, or to keep open pages working across restarts",
    shown="made at each start",
)


@dataclass(frozen=True)
class PortalSettings(ListensAtUrl, EnvSettings):
    """Where the portal listens and what its console reads; with the shared settings (the
    console's URL, the broker and its management API, the data folder for the actions' log)
    and the access settings (whose ID tokens it accepts, who may read and act)."""

    url: str = PORTAL_URL.field()
    monitor_url: str = MONITOR_URL.field()
    jaeger_query_url: str = JAEGER_QUERY_URL.field()
    antiforgery_key: str = ANTIFORGERY_KEY.field()
    base: Settings = part(Settings)
    access: AccessSettings = part(AccessSettings)
    default_port: ClassVar[int] = 8090

    @property
    def console_url(self) -> str:
        return self.base.console_url

    @property
    def amqp_url(self) -> str:
        return self.base.amqp_url_of(Account.PORTAL)

    @property
    def management_url(self) -> str:
        return self.base.management_url

    def management(self, timeout: float) -> Management:
        return self.base.management(Account.PORTAL, timeout)

    @property
    def actions_log(self) -> Path:
        return self.base.data_dir / "logs" / "actions.jsonl"
