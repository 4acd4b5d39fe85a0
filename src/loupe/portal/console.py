"""What the running console holds, and the dependencies its routes declare once: who is asking
(from the ID token the gateway passes), with which role, and the clients of the monitor,
Jaeger and RabbitMQ."""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request

from loupe.access import Access, Identity, Role
from loupe.portal.antiforgery import Antiforgery
from loupe.portal.jaeger_api import JaegerApi
from loupe.portal.monitor_api import MonitorApi
from loupe.portal.render import iso
from loupe.portal.settings import PortalSettings

log = logging.getLogger(__name__)

BROKER_CHECK_SECONDS = 2.0


@dataclass
class Console:
    settings: PortalSettings
    access: Access
    client: httpx.AsyncClient
    monitor: MonitorApi = field(init=False)
    jaeger: JaegerApi = field(init=False)
    antiforgery: Antiforgery = field(init=False)
    _broker: tuple[float, str | None] = (float("-inf"), None)

    def __post_init__(self) -> None:
        self.monitor = MonitorApi(self.settings.monitor_url, self.client)
        self.jaeger = JaegerApi(self.settings.jaeger_query_url, self.client)
        key = self.settings.antiforgery_key.encode() or secrets.token_bytes(32)
        self.antiforgery = Antiforgery(key, (self.settings.console_url,))

    async def broker_problem(self) -> str | None:
        """Why RabbitMQ cannot be reached, or None; asked at most every few seconds, however
        many pages poll."""
        asked_at, problem = self._broker
        if time.monotonic() - asked_at < BROKER_CHECK_SECONDS:
            return problem
        problem = await self.settings.management(timeout=2.0).problem()
        self._broker = (time.monotonic(), problem)
        return problem

    def audit(self, who: Identity, action: str, target: dict[str, Any], outcome: str) -> None:
        """One JSON line per action in the actions log: who did what to what, and how it
        ended (the gateway's audit log has the request itself)."""
        entry = {
            "time": iso(datetime.now(UTC)),
            "user": who.email or who.subject,
            "role": self.access.role(who),
            "action": action,
            "target": target,
            "outcome": outcome,
        }
        path: Path = self.settings.actions_log
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        log.warning("%s: %s %s -> %s", entry["user"], action, target, outcome)


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


ConsoleDep = Annotated[Console, Depends(_console)]


async def _identity(request: Request, console: ConsoleDep) -> Identity:
    return await console.access.identity(request)


Who = Annotated[Identity, Depends(_identity)]


@dataclass(frozen=True)
class Viewer:
    """The person looking at a page: what the templates need to show them."""

    identity: Identity
    role: Role
    csrf_token: str
    authorization: str

    @property
    def name(self) -> str:
        return self.identity.email or self.identity.subject

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


async def _reader(request: Request, who: Who, console: ConsoleDep) -> Viewer:
    console.access.require(who, "reader")
    return Viewer(
        identity=who,
        role=console.access.role(who),
        csrf_token=console.antiforgery.token(who.subject),
        authorization=request.headers.get("authorization", ""),
    )


Reader = Annotated[Viewer, Depends(_reader)]
"""A person allowed to read (developers and devops); anyone else gets 403."""


async def _operator(request: Request, viewer: Reader, console: ConsoleDep) -> Viewer:
    console.access.require(viewer.identity, "operator")
    console.antiforgery.check(request, viewer.identity.subject)
    return viewer


Operator = Annotated[Viewer, Depends(_operator)]
"""A person allowed to act (devops), whose request proves it comes from the console."""
