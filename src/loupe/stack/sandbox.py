"""A throw-away corner of the shared RabbitMQ and PostgreSQL: its own vhost, its own database
names, its own ports and data folder. Tests and benchmarks run in one, beside `make run`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from loupe.config import SERVICES, Settings
from loupe.provision import ProvisionSettings, provision, unprovision
from loupe.stack.process import free_port


@dataclass
class Sandbox:
    root: Path
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in SERVICES})
    # Apart from `ports`, which are the services' (Settings.service_urls, probed for uptime).
    monitor_port: int = field(default_factory=free_port)

    @property
    def vhost(self) -> str:
        return f"loupe-sandbox-{self.name}"

    @property
    def secrets_dir(self) -> Path:
        """Its accounts' passwords, apart from `make run`'s."""
        return self.root / f"{self.vhost}-secrets"

    @property
    def env(self) -> dict[str, str]:
        """The LOUPE_* variables that point a service, actor or the monitor into this sandbox
        (each signs in as its own account of the sandbox)."""
        return {
            "LOUPE_AMQP_URL": f"amqp://127.0.0.1:5672/{quote(self.vhost, safe='')}",
            "LOUPE_DATABASE_PREFIX": f"loupe_sandbox_{self.name}",
            "LOUPE_DATA_DIR": str(self.root / "data"),
            "LOUPE_SECRETS_DIR": str(self.secrets_dir),
            **{f"LOUPE_{s.upper()}_URL": f"http://127.0.0.1:{p}" for s, p in self.ports.items()},
            "LOUPE_MONITOR_URL": self.monitor_url,
        }

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def settings(self) -> Settings:
        env = self.env
        return Settings.from_env({**os.environ, **env})

    @property
    def provisioning(self) -> ProvisionSettings:
        """The administrators of `make run`'s set-up, setting up this sandbox."""
        return dataclasses.replace(ProvisionSettings.from_env(), base=self.settings)

    @property
    def admin_amqp_url(self) -> str:
        """The sandbox's vhost as the broker's administrator (tests that purge, peek or
        publish what no process of loupe may)."""
        return self.provisioning.admin_amqp_url

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def create(self) -> None:
        asyncio.run(provision(self.provisioning))

    def destroy(self) -> None:
        asyncio.run(unprovision(self.provisioning))
        shutil.rmtree(self.secrets_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        self.create()
        return self

    def __exit__(self, *_: object) -> None:
        self.destroy()
