"""What the monitor answers, as models: the API returns them (FastAPI publishes them in the
OpenAPI document), loupe's console reads the API through them, the CLI's `--json` and the
webhooks send them with their page in the console (the Linked* models and Alert).

rows.py makes them from the database's rows. JSON field names are the contract and stay as
they are: a finding's and an incident's `state` is a FindingKind; an incident's `status` (open
or resolved) is an IncidentState, a different thing from an order's `status` (an OrderStatus).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loupe.portal.links import absolute, incident_path, order_path


class FindingKind(StrEnum):
    """What is wrong: an order waits past its SLO (or, as RabbitMQ shows, its queue has no
    consumer), its path failed, a message no queue is bound for waits in the unroutable
    queue, or the monitor hears nothing from a service that is up."""

    STUCK = "stuck"
    BROKEN = "broken"
    UNROUTABLE = "unroutable"
    TELEMETRY_GAP = "telemetry-gap"
    """No span from a service that its health probe shows up: the monitor is blind there."""


class IncidentState(StrEnum):
    """Whether an incident still stands."""

    OPEN = "open"
    RESOLVED = "resolved"


class AlertEvent(StrEnum):
    """What a webhook alert reports."""

    OPENED = "incident.opened"
    RESOLVED = "incident.resolved"


class LastStep(BaseModel):
    status: str
    at: datetime | None
    service: str | None
    operation: str | None
    trace_id: str | None


class Finding(BaseModel):
    """An order (or an unattributed dead letter) stuck or broken at a place; a place broken
    with no order to name; a work queue with messages and no consumer (stuck, `order_id` and
    `status` null); messages no queue is bound for (unroutable: `service` the app that
    published them, `order_id` the order they name, if any)."""

    id: int = Field(description="the finding, as POST /findings/{id}/dismiss names it")
    order_id: str | None
    state: FindingKind
    status: str | None = Field(description="the order's status when it was found")
    since: datetime
    deadline: datetime
    service: str
    where: str = Field(description="the queue or step where it waits or failed")
    trace_id: str | None
    evidence: str
    last_step: LastStep | None
    detected_at: datetime
    incident_id: int
    cleared_at: datetime | None = None
    cleared_reason: str | None = Field(
        None,
        description="why it was cleared, when its order did not clear it by moving on:"
        " 'expired: no span for 24 h', 'dismissed by <who>: <why>', 'acknowledged by <who>'",
    )


class Dismissal(BaseModel):
    """Why devops dismiss a finding: kept in its `cleared_reason` and in the log."""

    reason: str = Field(
        min_length=1,
        max_length=500,
        description="why it needs no one's attention, e.g. 'a test order'",
    )

    @field_validator("reason")
    @classmethod
    def said(cls, reason: str) -> str:
        reason = reason.strip()
        if not reason:
            raise ValueError("say why the finding needs no one's attention")
        if "\x00" in reason:
            raise ValueError("a reason cannot hold a NUL byte")
        return reason


class FindingList(BaseModel):
    count: int
    findings: list[Finding]
    as_of: datetime | None = Field(
        None, description="when detection last ran; findings are as current as this"
    )


class LinkedSpan(BaseModel):
    trace_id: str
    span_id: str


class SeenBy(BaseModel):
    service: str
    at: datetime
    trace_id: str


class Move(BaseModel):
    """One transition of the order: the span that made it, and who followed it."""

    model_config = ConfigDict(populate_by_name=True)

    status: str
    from_: str = Field(alias="from")
    at: datetime
    service: str
    operation: str
    trace_id: str
    span_id: str
    linked: list[LinkedSpan]
    seen_by: list[SeenBy]
    waited_seconds: float | None = Field(
        None,
        description="time since the move to the status it left; none when no span reported"
        " that move",
    )
    slo_seconds: float | None = Field(
        None, description="how long the SLO lets an order wait at the status it left"
    )
    slo_met: bool | None = None


class JourneyError(BaseModel):
    at: datetime
    service: str
    where: str
    message: str
    dead_lettered: bool
    trace_id: str
    span_id: str


class NotSeen(BaseModel):
    """A status the order must have had (a later move left it, or one after it) that no span
    reported: its move's span was lost on the way (an exporter that could not reach Jaeger),
    not a stuck order."""

    status: str
    before: str = Field(description="the first move seen after it")


class Journey(BaseModel):
    order_id: str
    status: str | None
    source: str | None
    transitions: list[Move]
    not_seen: list[NotSeen] = Field(
        default_factory=list,
        description="the statuses the order passed whose moves no span reported, in order",
    )
    errors: list[JourneyError]
    finding: Finding | None


class Incident(BaseModel):
    id: int
    state: FindingKind = Field(description="the kind of the findings it holds")
    service: str
    where: str
    status: IncidentState
    started_at: datetime
    detected_at: datetime
    resolved_at: datetime | None
    orders: int = Field(description="how many findings the incident holds")
    time_to_detect_seconds: float
    detection_delay_seconds: float
    time_to_resolve_seconds: float | None = Field(
        description="none while open, or when every finding it held was dismissed"
    )
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    dismissed: bool = Field(
        False,
        description="every finding it held was dismissed (or followed its order to the place"
        " that failed, when a copy's span had arrived first): it resolved, and counts toward"
        " neither MTTD nor MTTR",
    )


class IncidentDetail(Incident):
    findings: list[Finding]


class Durations(BaseModel):
    """Times to detect or to resolve of a window's incidents: how many, their median and their
    mean. The median is the usual case; the mean alone lets one outlier (a forged test order
    found after 10 min) hide it."""

    count: int = Field(description="how many incidents the figures are over")
    median_seconds: float | None = Field(description="none without any incident")
    mean_seconds: float | None = Field(description="none without any incident")

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Durations:
        if not seconds:
            return cls(count=0, median_seconds=None, mean_seconds=None)
        return cls(
            count=len(seconds),
            median_seconds=statistics.median(seconds),
            mean_seconds=statistics.fmean(seconds),
        )


class IncidentList(BaseModel):
    window_seconds: float
    open: int
    resolved: int
    mttd_seconds: float | None = Field(
        description="the mean time to detect (time_to_detect.mean_seconds)"
    )
    mttr_seconds: float | None = Field(
        description="the mean time to resolve (time_to_resolve.mean_seconds)"
    )
    time_to_detect: Durations = Field(
        description="over the incidents not dismissed: open ones and those of the window"
    )
    time_to_resolve: Durations = Field(
        description="over the resolved incidents of the window not dismissed"
    )
    incidents: list[Incident]


class ServiceUptime(BaseModel):
    availability: float | None = Field(description="share of good probes, 0 to 1")
    samples: int
    probe_failures: int


class Uptime(BaseModel):
    window_seconds: float
    services: dict[str, ServiceUptime]


# -- with their page in loupe's console: `loupe stuck|incidents --json` and webhook alerts ------


class LinkedFinding(Finding):
    """A finding with its page in loupe's console: its order's, or (a dead letter that names
    no order) its incident's."""

    console_url: str

    @classmethod
    def of(cls, finding: Finding, console_url: str) -> LinkedFinding:
        if finding.order_id:
            url = absolute(console_url, order_path(finding.order_id))
        else:
            url = absolute(console_url, incident_path(finding.incident_id))
        return cls(**dict(finding), console_url=url)


class LinkedFindingList(BaseModel):
    """`loupe stuck --json`."""

    count: int
    findings: list[LinkedFinding]


class LinkedIncident(Incident):
    """An incident with its page in loupe's console."""

    console_url: str

    @classmethod
    def of(cls, incident: Incident, console_url: str) -> LinkedIncident:
        return cls(**dict(incident), console_url=absolute(console_url, incident_path(incident.id)))


class LinkedIncidentList(IncidentList):
    """`loupe incidents --json`."""

    incidents: list[LinkedIncident]  # type: ignore[assignment]


class Alert(BaseModel):
    """A webhook's body: the event and the incident, with the incident's page in the console."""

    event: AlertEvent
    incident: LinkedIncident
