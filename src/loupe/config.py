"""Settings shared by every loupe process, read from the environment.

Each variable has a documented default that works on a developer machine set up by
`make run`; production overrides them through the environment (docs/runbook.md's tables are
printed from these declarations by `loupe settings`; see loupe.environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from loupe.accounts import (
    READER_SUFFIX,
    Account,
    broker_password_file,
    broker_user,
    database_password_file,
    read_password,
    signed_in,
    vhost_of,
)
from loupe.database import dsn_for
from loupe.environment import (
    EnvSettings,
    Variable,
    each,
    file_path,
    names,
    number,
    positive,
    url,
    whole,
)
from loupe.messaging.management import Management

SERVICES = ("shop", "crm", "mes")
"""The three order services, in the order `loupe up` starts them."""

SERVICE_NAMES = {"shop": "shop-api", "crm": "crm-api", "mes": "mes-api"}
"""OpenTelemetry `service.name` of each service."""

DATABASE_OWNERS = (*SERVICES, Account.MONITOR.value)
"""Who has a database of its own, each owned by a role of the same name."""

DEFAULT_PORTS = {"shop": 8081, "crm": 8082, "mes": 8083}

DEFAULT_CONSOLE_URL = "http://127.0.0.1:4180"
"""The console's public base URL by default: the sign-in gateway on this machine."""

# src/loupe/config.py -> the repository root, where deploy/, docs/ and tools/ live.
REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_SECRETS_DIR = Path(".secrets")


AMQP_URL = Variable(
    "LOUPE_AMQP_URL",
    "amqp://127.0.0.1:5672/loupe",
    "RabbitMQ; the path is the vhost. Without a user in it, each process signs in as its own"
    " user `<vhost>-<process>` (shop, crm, mes, portal, monitor) with the password in"
    " `LOUPE_SECRETS_DIR/rabbitmq/<user>`, both made by `make setup` (`loupe provision`)",
)
POSTGRES_DSN = Variable(
    "LOUPE_POSTGRES_DSN",
    "postgresql://127.0.0.1:5432/postgres",
    "PostgreSQL server; the database part is replaced per service. Without a user in it, each"
    " process signs in as its database's own role (named like the database; the CLI as"
    " `<prefix>_monitor_reader`, read-only) with the password in"
    " `LOUPE_SECRETS_DIR/postgres/<role>`, both made by `make setup` (`loupe provision`)",
)
SECRETS_DIR = Variable(
    "LOUPE_SECRETS_DIR",
    DEFAULT_SECRETS_DIR,
    "local secrets (the gateway's, the broker users' and database roles' passwords), each"
    " file mode 0600, the folder 0700, git-ignored",
    file_path,
)
DATABASE_PREFIX = Variable(
    "LOUPE_DATABASE_PREFIX",
    "loupe",
    "databases are `<prefix>_shop`, `<prefix>_crm`, `<prefix>_mes` (and `<prefix>_monitor`),"
    " each owned by a role of the same name; made by `make setup` (`loupe provision`)",
)
DATA_DIR = Variable(
    "LOUPE_DATA_DIR",
    Path(".data"),
    "models (`objects/`); under `loupe up` also Jaeger's Badger files (`jaeger/`) and logs"
    " (`logs/`); the portal's actions log (`logs/actions.jsonl`)",
    file_path,
)
HOST = Variable("LOUPE_HOST", "127.0.0.1", "address the services listen on")
SERVICE_URLS = {
    "shop": Variable(
        "LOUPE_SHOP_URL",
        f"http://127.0.0.1:{DEFAULT_PORTS['shop']}",
        "shop-api's URL: its listen port, the base of `model_url` in shop orders, where the"
        " actors call it",
    ),
    "crm": Variable(
        "LOUPE_CRM_URL",
        f"http://127.0.0.1:{DEFAULT_PORTS['crm']}",
        "crm-api's URL (listen port; actors)",
    ),
    "mes": Variable(
        "LOUPE_MES_URL",
        f"http://127.0.0.1:{DEFAULT_PORTS['mes']}",
        "mes-api's URL (listen port; base of `model_url` in B2B orders; actors)",
    ),
}
PRICING_SECONDS = Variable(
    "LOUPE_PRICING_SECONDS",
    2.0,
    "how long pricing pretends to work (production: up to 30 minutes)",
    number,
)
PRICING_MAX_TRIANGLES = Variable(
    "LOUPE_PRICING_MAX_TRIANGLES",
    250_000,
    "a model with more triangles is not priced: the order becomes FAILED with the reason"
    " (pricing 250 000 takes about 2 s and 250 MB)",
    whole,
)
PRICING_TIMEOUT_SECONDS = Variable(
    "LOUPE_PRICING_TIMEOUT_SECONDS",
    30.0,
    "wall-clock limit on computing one model's price, in a process of its own that is killed"
    " past it; the order becomes FAILED with the reason",
    positive,
)
MAX_MODEL_BYTES = Variable(
    "LOUPE_MAX_MODEL_BYTES",
    50 * 1024 * 1024,
    "the largest 3D model: an upload past it gets 413 while it streams (a request body is cut"
    " at this plus 64 KiB for the form's other fields), and MES stops downloading a model past"
    " it and fails the order",
    whole,
)
ORPHAN_MODEL_MINUTES = Variable(
    "LOUPE_ORPHAN_MODEL_MINUTES",
    60.0,
    "a stored model that no order of its service refers to is deleted once it is this old (its"
    " upload's order was never created); swept every tenth of it",
    positive,
)
MAX_DELIVERY_ATTEMPTS = Variable(
    "LOUPE_MAX_DELIVERY_ATTEMPTS",
    5,
    "attempts per message, first delivery included; at least 1",
    whole,
)
RETRY_DELAY_MS = Variable(
    "LOUPE_RETRY_DELAY_MS", 2000, "wait before each retry (fixed, no backoff)", whole
)
PREFETCH = Variable(
    "LOUPE_PREFETCH", 8, "unacked messages per consumer; for MES, orders priced at once", whole
)
CONSOLE_URL = Variable(
    "LOUPE_CONSOLE_URL",
    DEFAULT_CONSOLE_URL,
    "the console's public base URL, as browsers reach it; the portal accepts actions only from"
    " its origin; the links in `loupe stuck`, `loupe incidents`, `loupe journey` and webhook"
    " alerts start with it",
    url,
    note="`loupe up`: the gateway's URL",
)
ALLOWED_HOSTS = Variable(
    "LOUPE_ALLOWED_HOSTS",
    (),
    "comma-separated host names the services, the portal and the monitor answer to besides"
    " `127.0.0.1`, `localhost` and `LOUPE_CONSOLE_URL`'s host (`*.example.com` for"
    " subdomains); a request whose Host header names any other gets 400, so a web page cannot"
    " reach them through a name it points at this machine (DNS rebinding)",
    names,
)
RABBITMQ_MANAGEMENT_URL = Variable(
    "LOUPE_RABBITMQ_MANAGEMENT_URL",
    "http://127.0.0.1:15672",
    "RabbitMQ's management API (the portal's dead letters, the monitor's queue checks);"
    " credentials and vhost from `LOUPE_AMQP_URL`",
    url,
)
ACTOR_RATE = Variable(
    "LOUPE_ACTOR_RATE",
    0.5,
    "new orders per second, `loupe actors` only (`--rate` wins)",
    number,
)


@dataclass(frozen=True)
class Settings(EnvSettings):
    """What every service process reads, and the broker, database and console settings the
    portal and the monitor share with them (they hold a `Settings` as a part)."""

    amqp_url: str = AMQP_URL.field()
    postgres_dsn: str = POSTGRES_DSN.field()
    database_prefix: str = DATABASE_PREFIX.field()
    data_dir: Path = DATA_DIR.field()
    host: str = HOST.field()
    service_urls: dict[str, str] = each(SERVICE_URLS)
    pricing_seconds: float = PRICING_SECONDS.field()
    pricing_max_triangles: int = PRICING_MAX_TRIANGLES.field()
    pricing_timeout_seconds: float = PRICING_TIMEOUT_SECONDS.field()
    max_model_bytes: int = MAX_MODEL_BYTES.field()
    orphan_model_minutes: float = ORPHAN_MODEL_MINUTES.field()
    max_delivery_attempts: int = MAX_DELIVERY_ATTEMPTS.field()
    retry_delay_ms: int = RETRY_DELAY_MS.field()
    prefetch: int = PREFETCH.field()
    console_url: str = CONSOLE_URL.field()
    allowed_hosts: tuple[str, ...] = ALLOWED_HOSTS.field()
    management_url: str = RABBITMQ_MANAGEMENT_URL.field()
    secrets_dir: Path = SECRETS_DIR.field()

    def __post_init__(self) -> None:
        if self.max_delivery_attempts < 1:
            raise ValueError("LOUPE_MAX_DELIVERY_ATTEMPTS must be at least 1")
        for variable, value in (
            (PRICING_MAX_TRIANGLES, self.pricing_max_triangles),
            (MAX_MODEL_BYTES, self.max_model_bytes),
        ):
            if value < 1:
                raise ValueError(f"{variable.name} must be at least 1")

    def amqp_url_of(self, account: Account) -> str:
        """LOUPE_AMQP_URL signed in as `account`'s own broker user, unless it names a user."""
        user = broker_user(vhost_of(self.amqp_url), account)
        password = read_password(broker_password_file(self.secrets_dir, user))
        return signed_in(self.amqp_url, user, password)

    def postgres_dsn_of(self, database: str, role: str | None = None) -> str:
        """LOUPE_POSTGRES_DSN pointed at `database`, signed in as `role` (the database's own
        role by default), unless the DSN names a user."""
        role = role or database
        password = read_password(database_password_file(self.secrets_dir, role))
        return signed_in(dsn_for(self.postgres_dsn, database), role, password)

    @property
    def reader_role(self) -> str:
        """The read-only role of the monitor's database (the CLI's)."""
        return self.database_name(Account.MONITOR) + READER_SUFFIX

    def password_files(self) -> list[Path]:
        """Where the set-up keeps each account's password, for the accounts this machine's
        processes sign in as (none where a URL or DSN names its user itself)."""
        files = []
        if not urlsplit(self.amqp_url).username:
            vhost = vhost_of(self.amqp_url)
            files += [
                broker_password_file(self.secrets_dir, broker_user(vhost, a)) for a in Account
            ]
        if not urlsplit(self.postgres_dsn).username:
            roles = [*(self.database_name(o) for o in DATABASE_OWNERS), self.reader_role]
            files += [database_password_file(self.secrets_dir, role) for role in roles]
        return files

    def management(self, account: Account, timeout: float = 5.0) -> Management:
        """RabbitMQ's management API, as `account`'s broker user, for its vhost."""
        return Management(self.management_url, self.amqp_url_of(account), timeout)

    @property
    def known_hosts(self) -> tuple[str, ...]:
        """The host names loupe's apps answer to (LOUPE_ALLOWED_HOSTS)."""
        console = urlsplit(self.console_url).hostname
        return tuple(dict.fromkeys(("127.0.0.1", "localhost", console, *self.allowed_hosts)))

    def database_name(self, service: str) -> str:
        return f"{self.database_prefix}_{service}"

    def object_store(self, service: str) -> Path:
        """Where a service keeps the models uploaded to it: a prefix of its own, so it can tell
        which models its orders must refer to (see loupe.service.model_files)."""
        return self.data_dir / "objects" / service

    def port(self, service: str) -> int:
        return int(self.service_urls[service].rsplit(":", 1)[1].split("/")[0])
