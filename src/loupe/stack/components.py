"""The processes loupe runs (Jaeger, Dex, the gateway, the portal, the monitor, the services,
the actors) and the infrastructure check."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loupe.config import REPO_ROOT, SERVICE_URLS, SERVICES, Settings
from loupe.environment import EnvSettings, Variable, file_path, port_number
from loupe.monitor.settings import MONITOR_INTAKE_TOKEN, MONITOR_OTLP_ENDPOINT
from loupe.stack.gateway import GatewayFiles, GatewaySettings
from loupe.stack.process import DEFAULT_LOGS_DIR, Process, StackError, free_port, port_open

Storage = Literal["badger", "memory"]
STORAGES: tuple[Storage, ...] = ("badger", "memory")

JAEGER_BINARY = REPO_ROOT / ".cache" / "bin" / "jaeger"
JAEGER_CONFIG_DIR = REPO_ROOT / "deploy" / "jaeger"
# The overlay adding the pipeline `traces/monitor` (spans with order.id or status ERROR, sent
# over OTLP/HTTP to LOUPE_MONITOR_OTLP_ENDPOINT); the collector merges it over the all-in-one
# file when given as a second --config.
JAEGER_MONITOR_OVERLAY = JAEGER_CONFIG_DIR / "monitor-pipeline.yaml"
# Jaeger UI's production build (index.html + static/), which scripts/build-tools.sh copies from
# the crate pinned in tools/jaeger-ui, and the UI's settings (menu, link patterns). Passed to
# the config files' `jaeger_query.ui` as LOUPE_JAEGER_UI_ASSETS and LOUPE_JAEGER_UI_CONFIG.
JAEGER_UI_ASSETS = REPO_ROOT / ".cache" / "jaeger-ui"
JAEGER_UI_CONFIG = JAEGER_CONFIG_DIR / "ui-config.json"

# Read by Jaeger's config files, not by loupe: `loupe up` sets them for the Jaeger it starts.
JAEGER_BADGER_DIR = Variable(
    "LOUPE_JAEGER_BADGER_DIR",
    Path(".data/jaeger"),
    "Badger's `keys/` and `values/`; `loupe up` sets it to `<LOUPE_DATA_DIR>/jaeger`",
    file_path,
)
JAEGER_UI_ASSETS_DIR = Variable(
    "LOUPE_JAEGER_UI_ASSETS",
    Path(".cache/jaeger-ui"),
    "Jaeger UI's build (`index.html`, `static/`), which `make setup` copies there"
    " ([jaeger-ui.md](jaeger-ui.md)). `loupe up` sets it to that folder's absolute path"
    " whatever the environment says, and does not start Jaeger without it; the variable is for"
    " running Jaeger on these files yourself. Empty: the UI built into the binary (the official"
    " images')",
    file_path,
)
JAEGER_UI_CONFIG_FILE = Variable(
    "LOUPE_JAEGER_UI_CONFIG",
    Path("deploy/jaeger/ui-config.json"),
    "Jaeger UI's settings (menu, order links); `loupe up` sets it to that file's absolute"
    " path. Jaeger reloads the file when it changes",
    file_path,
)
JAEGER_FILES = (JAEGER_BADGER_DIR, JAEGER_UI_ASSETS_DIR, JAEGER_UI_CONFIG_FILE)
DEX_BINARY = REPO_ROOT / ".cache" / "bin" / "dex"
GATEWAY_BINARY = REPO_ROOT / ".cache" / "bin" / "oauth2-proxy"

OTLP_PROTOCOL = "http/protobuf"
# `base_path` of jaeger_query in deploy/jaeger/*.yaml: the gateway serves Jaeger under it too.
JAEGER_BASE_PATH = "/jaeger"


def _jaeger_port(name: str, default: int, doc: str) -> Variable[int]:
    return Variable(f"LOUPE_JAEGER_{name}_PORT", default, doc, port_number)


@dataclass(frozen=True)
class JaegerPorts(EnvSettings):
    """Jaeger's ports, each passed to its config file through a LOUPE_JAEGER_* variable."""

    invalid: ClassVar[type[Exception]] = StackError

    otlp_grpc: int = _jaeger_port("OTLP_GRPC", 4317, "OTLP/gRPC receiver").field()
    otlp_http: int = _jaeger_port(
        "OTLP_HTTP", 4318, "OTLP/HTTP receiver; `loupe up` points the services here"
    ).field()
    query: int = _jaeger_port(
        "QUERY",
        16686,
        "query HTTP API (`/jaeger/api/...`: base path `/jaeger`) and Jaeger UI (`/jaeger/`)",
    ).field()
    query_grpc: int = _jaeger_port("QUERY_GRPC", 16685, "query gRPC API").field()
    health: int = _jaeger_port("HEALTH", 13133, "health check, `/status`").field()
    metrics: int = _jaeger_port("METRICS", 8888, "Jaeger's own Prometheus metrics").field()

    @classmethod
    def pick_free(cls) -> JaegerPorts:
        """Ports free right now, so a test's Jaeger can run beside a developer's."""
        chosen: set[int] = set()
        while len(chosen) < len(fields(cls)):
            chosen.add(free_port())
        return cls(*sorted(chosen))

    def env(self) -> dict[str, str]:
        # Always every variable with a value: the collector expands a set-but-empty variable to
        # "" rather than to the default, which would make it listen on a random port.
        return {v.name: str(port) for v, port in zip(self.variables(), self.all(), strict=True)}

    def all(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http}"

    @property
    def query_url(self) -> str:
        """The query service's base URL, its base path included (`/api/...` goes after it)."""
        return f"http://127.0.0.1:{self.query}{JAEGER_BASE_PATH}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health}/status"


# The exporter in deploy/jaeger/monitor-pipeline.yaml; how long `loupe up` lets it empty its
# queue before stopping Jaeger.
MONITOR_EXPORTER = "otlphttp/monitor"
FORWARDING_DRAIN_SECONDS = 20.0


def jaeger_process(
    storage: Storage = "badger",
    ports: JaegerPorts | None = None,
    data_dir: Path = Path(".data/jaeger"),
    logs_dir: Path = DEFAULT_LOGS_DIR,
    *,
    binary: Path = JAEGER_BINARY,
    ui_assets: Path = JAEGER_UI_ASSETS,
    ui_config: Path = JAEGER_UI_CONFIG,
    ready_timeout: float = 60.0,
    monitor_endpoint: str | None = None,
    monitor_token: str | None = None,
) -> Process:
    """Jaeger v2 all-in-one with the given storage; `data_dir` is only used by badger.

    Jaeger UI is served from `ui_assets` at `/jaeger/`, with `ui_config` put into its page.

    With `monitor_endpoint` (the monitor's root URL, e.g. `http://127.0.0.1:8091`), Jaeger also
    forwards the spans the monitor needs to `{monitor_endpoint}/v1/traces`, through its own
    queue: a slow or stopped monitor never slows or loses what Jaeger stores. The queue is in
    memory (the binary has no `file_storage`), so stopping Jaeger while the monitor is down
    drops what waits there (docs/reliability.md). It sends `monitor_token`, the monitor's
    intake token (`Secrets.monitor_intake_token`), which it needs then.
    """
    if storage not in STORAGES:
        raise StackError(f"unknown Jaeger storage {storage!r}; choose one of {', '.join(STORAGES)}")
    _require_binary(binary, "Jaeger")
    _require_ui(ui_assets, ui_config)
    ports = ports or JaegerPorts()
    config = JAEGER_CONFIG_DIR / f"all-in-one-{storage}.yaml"
    argv = [str(binary), "--config", str(config)]
    env = {
        **os.environ,
        **ports.env(),
        # Always set and absolute, whatever directory Jaeger starts in (see JaegerPorts.env).
        JAEGER_UI_ASSETS_DIR.name: str(ui_assets.resolve()),
        JAEGER_UI_CONFIG_FILE.name: str(ui_config.resolve()),
    }
    if storage == "badger":
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        env[JAEGER_BADGER_DIR.name] = str(data_dir)
    if monitor_endpoint is not None:
        endpoint = monitor_endpoint.strip().rstrip("/")
        if not endpoint:
            raise StackError("the monitor's OTLP endpoint is empty")
        if not monitor_token:
            raise StackError("Jaeger forwards to the monitor only with its intake token")
        argv += ["--config", str(JAEGER_MONITOR_OVERLAY)]
        # Always set when the overlay is on: a set-but-empty variable would expand to "" rather
        # than to the overlay's default (see JaegerPorts.env).
        env[MONITOR_OTLP_ENDPOINT.name] = endpoint
        # Through the environment, so the token is in no file but the one in .secrets/.
        env[MONITOR_INTAKE_TOKEN.name] = monitor_token
    return Process(
        name="jaeger",
        argv=argv,
        env=env,
        # The health check turns 200 once the pipelines run; the query API is checked too
        # because it is what tests and users talk to.
        ready_urls=(ports.health_url, f"{ports.query_url}/api/services"),
        listens_on=ports.all(),
        ready_timeout=ready_timeout,
        logs_dir=logs_dir,
        drain=partial(drain_forwarding, ports) if monitor_endpoint is not None else None,
    )


def drain_forwarding(ports: JaegerPorts, timeout: float = FORWARDING_DRAIN_SECONDS) -> bool:
    """Wait until Jaeger's queue for the monitor is empty (items being retried count as in it),
    at most `timeout` seconds; True once it is. Stopping Jaeger with spans still in that queue,
    e.g. retried after the monitor was slow, loses them: orders would stay stuck."""
    deadline = time.monotonic() + timeout
    empty_since: float | None = None
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{ports.metrics}/metrics", timeout=2).text
        except httpx.HTTPError:
            return False
        if _forwarding_queue_size(text) == 0:
            # Twice, a batch timeout apart: batch/monitor may still hold a few spans.
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= 0.5:
                return True
        else:
            empty_since = None
        time.sleep(0.1)
    return False


def _forwarding_queue_size(metrics: str) -> float:
    """The size of Jaeger's queue for the monitor in its Prometheus text (0 before any span)."""
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if (
                sample.name == "otelcol_exporter_queue_size"
                and sample.labels.get("exporter") == MONITOR_EXPORTER
            ):
                return sample.value
    return 0.0


def _require_binary(binary: Path, what: str) -> None:
    if not binary.is_file():
        raise StackError(
            f"the {what} binary is missing ({binary}); "
            "build it with `make setup` or `scripts/build-tools.sh`"
        )


def _require_ui(assets: Path, config: Path) -> None:
    # Jaeger panics at start without either (it builds its page from both), and says why only
    # in its log.
    if not (assets / "index.html").is_file():
        raise StackError(
            f"Jaeger UI's assets are missing ({assets}/index.html); "
            "fetch them with `make setup` or `scripts/build-tools.sh`"
        )
    if not config.is_file():
        raise StackError(f"Jaeger UI's config file is missing ({config})")


def dex_process(
    settings: GatewaySettings,
    files: GatewayFiles,
    logs_dir: Path = DEFAULT_LOGS_DIR,
    *,
    binary: Path = DEX_BINARY,
    ready_timeout: float = 30.0,
) -> Process:
    """Dex, the local identity provider, serving `files.dex_config` (see gateway.render)."""
    _require_binary(binary, "Dex")
    return Process(
        name="dex",
        argv=[str(binary), "serve", str(files.dex_config)],
        ready_urls=(f"{settings.dex_issuer}/.well-known/openid-configuration",),
        listens_on=(settings.dex_port,),
        ready_timeout=ready_timeout,
        logs_dir=logs_dir,
    )


def gateway_process(
    settings: GatewaySettings,
    files: GatewayFiles,
    logs_dir: Path = DEFAULT_LOGS_DIR,
    *,
    binary: Path = GATEWAY_BINARY,
    ready_timeout: float = 30.0,
) -> Process:
    """oauth2-proxy in front of Jaeger's query API; it needs the OIDC provider up to start.

    Its audit log goes to `files.audit_log`; what it writes to the terminal (errors) to the
    process log.
    """
    _require_binary(binary, "oauth2-proxy")
    local = settings.host in ("127.0.0.1", "localhost", "0.0.0.0", "")
    return Process(
        name="gateway",
        argv=[str(binary), "--config", str(files.gateway_config)],
        # Over TLS the certificate may be one the probe does not trust: the port answering is
        # enough there.
        ready_urls=() if settings.tls else (f"{settings.url}/ping",),
        ready_port=settings.port if settings.tls else None,
        listens_on=(settings.port,) if local else (),
        ready_timeout=ready_timeout,
        logs_dir=logs_dir,
    )


def portal_process(
    env: Mapping[str, str] | None = None,
    *,
    otlp_endpoint: str = "http://127.0.0.1:4318",
    logs_dir: Path = DEFAULT_LOGS_DIR,
    ready_timeout: float = 30.0,
) -> Process:
    """`loupe portal`, which the gateway serves at `/`; `env` decides LOUPE_PORTAL_URL."""
    from loupe.portal.settings import PortalSettings

    child_env = _child_env(env, otlp_endpoint)
    settings = PortalSettings.from_env(child_env)
    bind = settings.host, settings.port
    return _loupe_server(("portal",), child_env, settings.url, bind, logs_dir, ready_timeout)


def monitor_process(
    env: Mapping[str, str] | None = None,
    *,
    otlp_endpoint: str = "http://127.0.0.1:4318",
    logs_dir: Path = DEFAULT_LOGS_DIR,
    ready_timeout: float = 60.0,
) -> Process:
    """`loupe monitor`; `env` decides LOUPE_MONITOR_URL and the rest of its settings.

    `otlp_endpoint` is where the monitor sends *its own* spans (Jaeger, like every process),
    not where it receives: Jaeger's monitor pipeline sends to the monitor's URL. That is no
    loop: its OTLP intake is not traced, and its other spans (API, database) carry no
    `order.id` and are not errors, so the pipeline's filter drops them before they come back.
    """
    from loupe.monitor.settings import MonitorSettings

    child_env = _child_env(env, otlp_endpoint)
    settings = MonitorSettings.from_env(child_env)
    # Generous (60 s), like the services: the first start creates and migrates its database.
    bind = settings.host, settings.port
    return _loupe_server(("monitor",), child_env, settings.url, bind, logs_dir, ready_timeout)


def _loupe_server(
    command: tuple[str, ...],
    child_env: dict[str, str],
    url: str,
    bind: tuple[str | None, int | None],
    logs_dir: Path,
    ready_timeout: float,
    ready_path: str = "/healthz",
) -> Process:
    """`python -m loupe <command>`, named after its last word, serving HTTP at `url`: ready once
    `<url><ready_path>` answers. `bind` is the host and port it listens on; on this machine,
    `start()` refuses a port already taken."""
    host, port = bind
    local = host in ("127.0.0.1", "localhost")
    return Process(
        name=command[-1],
        argv=[sys.executable, "-m", "loupe", *command],
        env=child_env,
        ready_urls=(f"{url}{ready_path}",),
        listens_on=(port,) if local and port else (),
        ready_timeout=ready_timeout,
        logs_dir=logs_dir,
    )


def _child_env(env: Mapping[str, str] | None, otlp_endpoint: str) -> dict[str, str]:
    merged = {**os.environ, **(env or {})}
    # Not overriding what the user set lets them point the services at another collector.
    merged.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
    merged.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL)
    return merged


def service_url(service: str, env: Mapping[str, str]) -> str:
    return SERVICE_URLS[service].read(env).rstrip("/")


def service_process(
    service: str,
    env: Mapping[str, str] | None = None,
    *,
    otlp_endpoint: str = "http://127.0.0.1:4318",
    logs_dir: Path = DEFAULT_LOGS_DIR,
    ready_timeout: float = 60.0,
) -> Process:
    """`loupe serve <service>`; `env` is added to ours and also decides the service's URL."""
    if service not in SERVICES:
        raise StackError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    child_env = _child_env(env, otlp_endpoint)
    url = urlsplit(service_url(service, child_env))
    # Generous (60 s): the first start creates and migrates the service's database.
    bind = url.hostname, url.port
    # /readyz, not /healthz: a service restarted while RabbitMQ is away is ready (it accepts
    # orders into its outbox) though not healthy, and must not count as failing to start.
    return _loupe_server(
        ("serve", service), child_env, url.geturl(), bind, logs_dir, ready_timeout, "/readyz"
    )


def actors_process(
    env: Mapping[str, str] | None = None,
    rate: float = 0.5,
    *,
    otlp_endpoint: str = "http://127.0.0.1:4318",
    logs_dir: Path = DEFAULT_LOGS_DIR,
) -> Process:
    """`loupe actors`; it serves nothing, so it counts as ready once it has stayed up 1 s."""
    return Process(
        name="actors",
        argv=[sys.executable, "-m", "loupe", "actors", "--rate", str(rate)],
        env=_child_env(env, otlp_endpoint),
        min_uptime=1.0,
        logs_dir=logs_dir,
    )


def preflight(settings: Settings | None = None) -> None:
    """Fail early, with the fix, when RabbitMQ or PostgreSQL is not reachable, or the set-up
    has not made the processes' accounts."""
    settings = settings or Settings.from_env()
    problems = []

    amqp = urlsplit(settings.amqp_url)
    amqp_host, amqp_port = amqp.hostname or "127.0.0.1", amqp.port or 5672
    if not port_open(amqp_host, amqp_port, timeout=2.0):
        problems.append(f"RabbitMQ is not reachable on {amqp_host}:{amqp_port}")

    where, reachable = _postgres_reachable(settings.postgres_dsn)
    if not reachable:
        problems.append(f"PostgreSQL is not reachable on {where}")

    if problems:
        raise StackError(
            "; ".join(problems)
            + ". Start them with `make run` or `scripts/setup-infra.sh` (installs and starts"
            " RabbitMQ and PostgreSQL on 127.0.0.1)."
        )
    missing = [path for path in settings.password_files() if not path.exists()]
    if missing:
        raise StackError(
            f"{len(missing)} account password(s) missing, e.g. {missing[0]}: run `make setup`"
            " (or `uv run loupe provision`), which makes each process's RabbitMQ user and"
            " PostgreSQL role"
        )


def _postgres_reachable(dsn: str) -> tuple[str, bool]:
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "/var/run/postgresql"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    if host.startswith("/"):
        # libpq's convention: a host starting with "/" is the directory of the Unix socket.
        path = Path(host) / f".s.PGSQL.{port}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(str(path))
            except OSError:
                return str(path), False
        return str(path), True
    return f"{host}:{port}", port_open(host, port, timeout=2.0)
