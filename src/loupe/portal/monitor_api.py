"""The monitor's API as the console reads it: every call carries the signed-in person's own ID
token, so the monitor checks their role itself and the portal holds no access of its own."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from loupe.monitor.models import (
    Dismissal,
    Finding,
    FindingList,
    Incident,
    IncidentDetail,
    IncidentList,
    Journey,
    Uptime,
)
from loupe.portal import upstream

Model = TypeVar("Model", bound=BaseModel)


class MonitorUnavailable(Exception):
    """The monitor did not answer, or answered something other than its contract; the text
    says which, in words a person on call can act on."""


class MonitorRefused(Exception):
    """The monitor answered 401/403 (the person may not do this) or 409 (not now: what they
    act on has changed, e.g. a finding cleared in the meantime)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code


class MonitorApi:
    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.api_url = f"{base_url.rstrip('/')}/monitor/api"
        self._client = client

    async def _call(
        self,
        method: str,
        path: str,
        authorization: str,
        model: type[Model],
        params: dict[str, str | float] | None = None,
        body: BaseModel | None = None,
    ) -> Model | None:
        response = await upstream.request(
            self._client,
            method,
            f"{self.api_url}{path}",
            MonitorUnavailable,
            f"the monitor at {self.api_url}",
            params=params,
            json=body.model_dump(mode="json") if body is not None else None,
            headers={"Authorization": authorization, "Accept": "application/json"},
        )
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403, 409):
            raise MonitorRefused(response.status_code, _detail(response))
        if response.status_code != 200:
            raise MonitorUnavailable(
                f"the monitor answered {response.status_code}: {_detail(response)}"
            )
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise MonitorUnavailable(
                f"the monitor's answer does not fit its contract: {exc}"
            ) from exc

    async def _always(
        self,
        path: str,
        authorization: str,
        model: type[Model],
        params: dict[str, str | float] | None = None,
    ) -> Model:
        """A call whose path always exists: 404 means the monitor is not what we expect."""
        found = await self._call("GET", path, authorization, model, params)
        if found is None:
            raise MonitorUnavailable(f"the monitor at {self.api_url} has no {path}")
        return found

    async def findings(self, authorization: str) -> FindingList:
        return await self._always("/findings", authorization, FindingList)

    async def journey(self, authorization: str, order_id: str) -> Journey | None:
        path = f"/orders/{quote(order_id, safe='')}/journey"
        return await self._call("GET", path, authorization, Journey)

    async def incidents(
        self, authorization: str, status: str = "all", window_hours: float = 24.0 * 7
    ) -> IncidentList:
        params: dict[str, str | float] = {"status": status, "window_hours": window_hours}
        return await self._always("/incidents", authorization, IncidentList, params)

    async def incident(self, authorization: str, incident_id: int) -> IncidentDetail | None:
        return await self._call("GET", f"/incidents/{incident_id}", authorization, IncidentDetail)

    async def uptime(self, authorization: str, window_hours: float) -> Uptime:
        params: dict[str, str | float] = {"window_hours": window_hours}
        return await self._always("/uptime", authorization, Uptime, params)

    async def acknowledge(self, authorization: str, incident_id: int) -> Incident | None:
        path = f"/incidents/{incident_id}/acknowledge"
        return await self._call("POST", path, authorization, Incident)

    async def dismiss(
        self, authorization: str, finding_id: int, dismissal: Dismissal
    ) -> Finding | None:
        path = f"/findings/{finding_id}/dismiss"
        return await self._call("POST", path, authorization, Finding, body=dismissal)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    # A proxy in front of the monitor may answer with any JSON, not only FastAPI's object.
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail or response.text[:200])
