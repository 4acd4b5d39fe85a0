"""The monitor's settings, read from the environment; each has a documented default."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from loupe.access import AccessSettings
from loupe.accounts import Account
from loupe.config import REPO_ROOT, Settings
from loupe.environment import (
    EnvSettings,
    ListensAtUrl,
    Variable,
    file_path,
    names,
    part,
    positive,
    url,
)
from loupe.messaging.management import Management

DEFAULT_MONITOR_URL = "http://127.0.0.1:8091"
DEMO_SLO_FILE = REPO_ROOT / "deploy" / "monitor" / "slo-demo.toml"
PRODUCTION_SLO_FILE = REPO_ROOT / "deploy" / "monitor" / "slo-production.toml"
# Where the gateway sends /monitor/...: the API lives under it, OTLP intake does not.
API_PREFIX = "/monitor"


MONITOR_URL = Variable(
    "LOUPE_MONITOR_URL",
    DEFAULT_MONITOR_URL,
    "where it listens (OTLP at `/v1/traces`, the API under `/monitor/api`); Jaeger's monitor"
    " pipeline and the gateway's `/monitor/` upstream point here",
    url,
)
SLO_FILE = Variable(
    "LOUPE_MONITOR_SLO_FILE",
    DEMO_SLO_FILE,
    "SLOs per status; `deploy/monitor/slo-production.toml` has the workshop's",
    file_path,
    shown="`deploy/monitor/slo-demo.toml`",
)
TICK_SECONDS = Variable("LOUPE_MONITOR_TICK_SECONDS", 0.5, "how often detection runs", positive)
PROBE_SECONDS = Variable(
    "LOUPE_MONITOR_PROBE_SECONDS",
    5.0,
    "how often each service's `/healthz` is probed (uptime)",
    positive,
)
RETENTION_HOURS = Variable(
    "LOUPE_MONITOR_RETENTION_HOURS",
    24.0 * 7,
    "how long settled orders, probes and resolved incidents are kept",
    positive,
)
STUCK_HORIZON_HOURS = Variable(
    "LOUPE_MONITOR_STUCK_HORIZON_HOURS",
    24.0,
    "an order silent this long is no longer reported stuck: once its stuck finding has stood"
    " this long and no span of the order has come for as long, the finding is cleared with"
    " the reason `expired: no span for <horizon>` (and its incident can resolve)",
    positive,
)
TELEMETRY_GAP_SECONDS = Variable(
    "LOUPE_MONITOR_TELEMETRY_GAP_SECONDS",
    30.0,
    "a service whose health probe passes but from which no span (not even its heartbeat, one"
    " every 5 s) has arrived for this long is reported as a `telemetry-gap`: the monitor is"
    " blind there",
    positive,
)
WEBHOOK_URLS = Variable(
    "LOUPE_MONITOR_WEBHOOK_URLS",
    (),
    "comma-separated; incident opened/resolved alerts are POSTed there",
    names,
)
INTAKE_TOKEN_FILE = Variable(
    "LOUPE_MONITOR_INTAKE_TOKEN_FILE",
    Path(".secrets/monitor-intake-token"),
    "the file holding the token a sender must give at `/v1/traces` (`Authorization: Bearer"
    " <token>`, else 401); the monitor does not start without it. `loupe up` makes it on its"
    " first run (mode 0600) and gives it to the monitor and Jaeger whatever the environment"
    " says. See [security.md](security.md#the-monitors-otlp-intake)",
    file_path,
    note="`loupe up`: `monitor-intake-token` in `LOUPE_SECRETS_DIR`",
)
INTAKE_MAX_MIB = Variable(
    "LOUPE_MONITOR_INTAKE_MAX_MIB",
    16.0,
    "the largest OTLP request in MiB, as sent and as inflated (gzip): 413 as soon as it is"
    " passed, before the rest is read or inflated",
    positive,
)
INTAKE_AHEAD_SECONDS = Variable(
    "LOUPE_MONITOR_INTAKE_AHEAD_SECONDS",
    300.0,
    "spans that start or end more than this ahead of the monitor's clock are refused, like"
    " spans older than `LOUPE_MONITOR_RETENTION_HOURS`; both counted in"
    " `loupe_monitor_spans_refused_total`, the rest of their request stored",
    positive,
)
MONITOR_OTLP_ENDPOINT = Variable(
    "LOUPE_MONITOR_OTLP_ENDPOINT",
    DEFAULT_MONITOR_URL,
    "read by Jaeger's `monitor-pipeline.yaml`: where it sends the monitor's spans; `loupe up`"
    " sets it to the monitor's URL",
    url,
    shown="`LOUPE_MONITOR_URL`",
)
MONITOR_INTAKE_TOKEN = Variable(
    "LOUPE_MONITOR_INTAKE_TOKEN",
    "",
    "read by Jaeger's `monitor-pipeline.yaml` and `deploy/otel-collector/monitor.yaml`: the"
    " token they send the monitor; `loupe up` sets it, for the Jaeger it starts only, from"
    " `LOUPE_MONITOR_INTAKE_TOKEN_FILE`",
)


@dataclass(frozen=True)
class MonitorSettings(ListensAtUrl, EnvSettings):
    """Where the monitor listens, its SLOs, how often it looks, how long it keeps what it saw
    and reports a silent order stuck, where it sends alerts, and who may send it spans and how
    much at once; with the shared settings
    (database, broker and its management API, service URLs, console URL) and the access
    settings (who may read and act)."""

    url: str = MONITOR_URL.field()
    slo_file: Path = SLO_FILE.field()
    tick_seconds: float = TICK_SECONDS.field()
    probe_seconds: float = PROBE_SECONDS.field()
    retention_hours: float = RETENTION_HOURS.field()
    stuck_horizon_hours: float = STUCK_HORIZON_HOURS.field()
    telemetry_gap_seconds: float = TELEMETRY_GAP_SECONDS.field()
    webhook_urls: tuple[str, ...] = WEBHOOK_URLS.field()
    intake_token_file: Path = INTAKE_TOKEN_FILE.field()
    intake_max_mib: float = INTAKE_MAX_MIB.field()
    intake_ahead_seconds: float = INTAKE_AHEAD_SECONDS.field()
    base: Settings = part(Settings)
    access: AccessSettings = part(AccessSettings)
    default_port: ClassVar[int] = 8091

    @property
    def database(self) -> str:
        return self.base.database_name("monitor")

    @property
    def stuck_horizon(self) -> timedelta:
        return timedelta(hours=self.stuck_horizon_hours)

    @property
    def intake_max_bytes(self) -> int:
        return int(self.intake_max_mib * 1024 * 1024)

    @property
    def retention(self) -> timedelta:
        return timedelta(hours=self.retention_hours)

    @property
    def intake_ahead(self) -> timedelta:
        return timedelta(seconds=self.intake_ahead_seconds)

    @property
    def telemetry_gap(self) -> timedelta:
        return timedelta(seconds=self.telemetry_gap_seconds)

    @property
    def management_url(self) -> str:
        return self.base.management_url

    @property
    def management(self) -> Management:
        return self.base.management(Account.MONITOR)
