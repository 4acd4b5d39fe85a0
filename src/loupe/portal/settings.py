"""The portal's settings, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from loupe.access import (
    DEFAULT_ACT_GROUPS,
    DEFAULT_CLIENT_ID,
    DEFAULT_ISSUER,
    DEFAULT_READ_GROUPS,
    AccessSettings,
    groups_from,
)
from loupe.config import Settings
from loupe.messaging.management import DEFAULT_MANAGEMENT_URL

DEFAULT_PORTAL_URL = "http://127.0.0.1:8090"
DEFAULT_AMQP_URL = Settings.amqp_url


@dataclass(frozen=True)
class PortalSettings:
    """Read from LOUPE_PORTAL_URL (where it listens); LOUPE_OIDC_ISSUER_URL,
    LOUPE_OIDC_CLIENT_ID and LOUPE_OIDC_GROUPS_CLAIM (whose ID tokens it accepts, where the
    groups are); LOUPE_ALLOWED_GROUPS (may read) and LOUPE_OPERATOR_GROUPS (may act);
    LOUPE_AMQP_URL and LOUPE_RABBITMQ_MANAGEMENT_URL (where the dead letters are)."""

    url: str = DEFAULT_PORTAL_URL
    issuer: str = DEFAULT_ISSUER
    client_id: str = DEFAULT_CLIENT_ID
    groups_claim: str = "groups"
    read_groups: tuple[str, ...] = DEFAULT_READ_GROUPS
    act_groups: tuple[str, ...] = DEFAULT_ACT_GROUPS
    amqp_url: str = DEFAULT_AMQP_URL
    management_url: str = DEFAULT_MANAGEMENT_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PortalSettings:
        def get(name: str, default: str) -> str:
            return environ.get(name, "").strip() or default

        return cls(
            url=get("LOUPE_PORTAL_URL", cls.url).rstrip("/"),
            issuer=get("LOUPE_OIDC_ISSUER_URL", cls.issuer).rstrip("/"),
            client_id=get("LOUPE_OIDC_CLIENT_ID", cls.client_id),
            groups_claim=get("LOUPE_OIDC_GROUPS_CLAIM", cls.groups_claim),
            read_groups=groups_from(environ.get("LOUPE_ALLOWED_GROUPS", ""), cls.read_groups),
            act_groups=groups_from(environ.get("LOUPE_OPERATOR_GROUPS", ""), cls.act_groups),
            amqp_url=get("LOUPE_AMQP_URL", cls.amqp_url),
            management_url=get("LOUPE_RABBITMQ_MANAGEMENT_URL", cls.management_url).rstrip("/"),
        )

    @property
    def access(self) -> AccessSettings:
        return AccessSettings(
            self.issuer, self.client_id, self.groups_claim, self.read_groups, self.act_groups
        )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8090
