"""What the monitor's API answers, as models: FastAPI publishes them in the OpenAPI document,
and loupe's console reads the API through the same classes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FindingState = Literal["stuck", "broken"]
IncidentStatus = Literal["open", "resolved"]


class LastStep(BaseModel):
    status: str
    at: datetime | None
    service: str | None
    operation: str | None
    trace_id: str | None


class Finding(BaseModel):
    """An order (or an unattributed dead letter) stuck or broken at a place."""

    order_id: str | None
    state: FindingState
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
        None, description="time since the previous move the monitor saw"
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


class Journey(BaseModel):
    order_id: str
    status: str | None
    source: str | None
    transitions: list[Move]
    errors: list[JourneyError]
    finding: Finding | None


class Incident(BaseModel):
    id: int
    state: FindingState
    service: str
    where: str
    status: IncidentStatus
    started_at: datetime
    detected_at: datetime
    resolved_at: datetime | None
    orders: int = Field(description="how many findings the incident holds")
    time_to_detect_seconds: float
    detection_delay_seconds: float
    time_to_resolve_seconds: float | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class IncidentDetail(Incident):
    findings: list[Finding]


class IncidentList(BaseModel):
    window_seconds: float
    open: int
    resolved: int
    mttd_seconds: float | None
    mttr_seconds: float | None
    incidents: list[Incident]


class ServiceUptime(BaseModel):
    availability: float | None = Field(description="share of good probes, 0 to 1")
    samples: int
    probe_failures: int


class Uptime(BaseModel):
    window_seconds: float
    services: dict[str, ServiceUptime]
