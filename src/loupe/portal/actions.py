"""The portal's JSON API: who is signed in, the dead letters, and the actions devops take from
the console (requeue dead letters, acknowledge an incident, dismiss a finding). Every action is
role-checked, proven to come from the console (loupe.portal.antiforgery) and written to the
actions log."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from loupe.access import Role
from loupe.monitor.models import Dismissal, Finding, Incident
from loupe.portal.console import ConsoleDep, Operator, Reader
from loupe.portal.deadletters import list_dead_letters, requeue_dead_letters
from loupe.portal.monitor_api import MonitorRefused

router = APIRouter(prefix="/api", tags=["portal"])


class WhoAmI(BaseModel):
    email: str
    subject: str
    groups: list[str]
    role: Role
    can_read: bool
    can_act: bool
    csrf_token: str = Field(description="send as X-Loupe-Csrf with every action")


class RequeueRequest(BaseModel):
    """Which dead letters go back to work: one letter (its message id and, since one event
    fanned out to several queues leaves a letter per queue, its queue), or every letter of
    one order."""

    order_id: str | None = None
    message_id: str | None = None
    queue: str | None = Field(None, description="with message_id: the letter of this queue")

    @model_validator(mode="after")
    def names_one(self) -> RequeueRequest:
        if (self.order_id is None) == (self.message_id is None):
            raise ValueError("name exactly one of order_id or message_id")
        if self.queue is not None and self.message_id is None:
            raise ValueError("queue goes with message_id")
        return self


class RequeueAllRequest(BaseModel):
    """Every dead letter back to work: an action of its own, which says so in its body, so
    that no empty or half-filled requeue request can stand for it."""

    model_config = ConfigDict(extra="forbid")

    all: Literal[True]


@router.get("/whoami", response_model=WhoAmI)
async def whoami(viewer: Reader) -> dict[str, Any]:
    who = viewer.identity
    return {
        "email": who.email,
        "subject": who.subject,
        "groups": list(who.groups),
        "role": viewer.role,
        "can_read": True,
        "can_act": viewer.can_act,
        "csrf_token": viewer.csrf_token,
    }


@router.get("/dead-letters")
async def dead_letters(console: ConsoleDep, viewer: Reader, limit: int = 100) -> dict[str, Any]:
    letters = await list_dead_letters(console.settings, max(1, min(limit, 1000)))
    return {"count": len(letters), "dead_letters": letters}


@router.post("/dead-letters/requeue")
async def requeue(console: ConsoleDep, viewer: Operator, request: RequeueRequest) -> dict[str, Any]:
    target = request.model_dump(exclude_none=True)
    result = await requeue_dead_letters(
        console.settings, viewer.name, request.order_id, request.message_id, request.queue
    )
    console.audit(
        viewer.identity,
        "requeue dead letters",
        target,
        f"{len(result['requeued'])} requeued, {len(result['skipped'])} skipped",
    )
    return {"requested_by": viewer.name, **result}


@router.post("/dead-letters/requeue-all")
async def requeue_all(
    console: ConsoleDep, viewer: Operator, _: RequeueAllRequest
) -> dict[str, Any]:
    result = await requeue_dead_letters(console.settings, viewer.name)
    console.audit(
        viewer.identity,
        "requeue every dead letter",
        {"all": True},
        f"{len(result['requeued'])} requeued, {len(result['skipped'])} skipped,"
        f" {result['left']} left",
    )
    return {"requested_by": viewer.name, **result}


@router.post("/incidents/{incident_id}/acknowledge", response_model=Incident)
async def acknowledge(incident_id: int, console: ConsoleDep, viewer: Operator) -> Incident:
    found = await console.monitor.acknowledge(viewer.authorization, incident_id)
    console.audit(
        viewer.identity,
        "acknowledge incident",
        {"incident_id": incident_id},
        "acknowledged" if found else "no such incident",
    )
    if found is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return found


@router.post("/findings/{finding_id}/dismiss", response_model=Finding)
async def dismiss(
    finding_id: int, dismissal: Dismissal, console: ConsoleDep, viewer: Operator
) -> Finding:
    target = {"finding_id": finding_id, "reason": dismissal.reason}
    try:
        found = await console.monitor.dismiss(viewer.authorization, finding_id, dismissal)
    except MonitorRefused as exc:
        console.audit(viewer.identity, "dismiss finding", target, f"refused: {exc}")
        raise
    console.audit(
        viewer.identity, "dismiss finding", target, "dismissed" if found else "no such finding"
    )
    if found is None:
        raise HTTPException(404, f"no finding {finding_id}")
    return found
