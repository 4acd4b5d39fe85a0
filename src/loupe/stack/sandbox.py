"""A throw-away corner of the shared RabbitMQ and PostgreSQL: its own vhost, its own database
names, its own ports and data folder. Tests and benchmarks run in one, beside `make run`."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx

from loupe.config import RABBITMQ_MANAGEMENT_URL, SERVICES, Settings
from loupe.database import drop_database, dsn_for
from loupe.stack.process import free_port

MANAGEMENT_API = f"{RABBITMQ_MANAGEMENT_URL.default}/api"
MANAGEMENT_AUTH = ("guest", "guest")


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
    def env(self) -> dict[str, str]:
        """The LOUPE_* variables that point a service, actor or the monitor into this sandbox."""
        return {
            "LOUPE_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{quote(self.vhost, safe='')}",
            "LOUPE_DATABASE_PREFIX": f"loupe_sandbox_{self.name}",
            "LOUPE_DATA_DIR": str(self.root / "data"),
            **{f"LOUPE_{s.upper()}_URL": f"http://127.0.0.1:{p}" for s, p in self.ports.items()},
            "LOUPE_MONITOR_URL": self.monitor_url,
        }

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def settings(self) -> Settings:
        env = self.env
        return Settings(
            amqp_url=env["LOUPE_AMQP_URL"],
            database_prefix=env["LOUPE_DATABASE_PREFIX"],
            data_dir=Path(env["LOUPE_DATA_DIR"]),
            service_urls={s: f"http://127.0.0.1:{p}" for s, p in self.ports.items()},
        )

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def create(self) -> None:
        httpx.put(
            f"{MANAGEMENT_API}/vhosts/{self.vhost}", auth=MANAGEMENT_AUTH, timeout=10
        ).raise_for_status()
        httpx.put(
            f"{MANAGEMENT_API}/permissions/{self.vhost}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            auth=MANAGEMENT_AUTH,
            timeout=10,
        ).raise_for_status()

    def destroy(self) -> None:
        asyncio.run(self._drop_databases())
        httpx.delete(f"{MANAGEMENT_API}/vhosts/{self.vhost}", auth=MANAGEMENT_AUTH, timeout=10)

    async def _drop_databases(self) -> None:
        settings = self.settings
        connection = await asyncpg.connect(dsn_for(settings.postgres_dsn, "postgres"))
        try:
            for owner in (*SERVICES, "monitor"):
                await drop_database(connection, settings.database_name(owner))
        finally:
            await connection.close()

    def __enter__(self) -> Sandbox:
        self.create()
        return self

    def __exit__(self, *_: object) -> None:
        self.destroy()
