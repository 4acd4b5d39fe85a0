"""The monitor's API as the console asks it (loupe.portal.monitor_api): the person's own token
on every request, and each way the monitor can fail the console turned into the error the
pages show: refused (401/403), unavailable with words naming who or what, or "not found"."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest

from loupe.portal.monitor_api import MonitorApi, MonitorRefused, MonitorUnavailable
from tests.support.console_fakes import MONITOR, FakeBackends, finding, incident

TOKEN = "Bearer person-1"
Handler = Callable[[httpx.Request], httpx.Response]


@contextlib.asynccontextmanager
async def monitor(handler: Handler) -> AsyncIterator[MonitorApi]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        # A trailing slash in LOUPE_MONITOR_URL must not double the API's.
        yield MonitorApi(MONITOR + "/", client)


async def test_every_call_carries_the_persons_token_to_the_monitors_api() -> None:
    backends = FakeBackends(
        findings=[finding("o-1", datetime(2026, 12, 1, tzinfo=UTC))],
        incidents=[incident(1, datetime(2026, 12, 1, tzinfo=UTC))],
    )
    async with monitor(backends.handler) as api:
        assert (await api.findings(TOKEN)).count == 1
        assert await api.journey(TOKEN, "a/b c") is None
        assert (await api.incidents(TOKEN, "open", 2.0)).window_seconds == 7200
        assert (await api.uptime(TOKEN, 24)).window_seconds == 86400
        acknowledged = await api.acknowledge(TOKEN, 1)
    assert acknowledged is not None and acknowledged.acknowledged_by == "devops@example.com"
    assert [(r.method, r.url.raw_path.decode()) for r in backends.requests] == [
        ("GET", "/monitor/api/findings"),
        ("GET", "/monitor/api/orders/a%2Fb%20c/journey"),  # the id stays one segment
        ("GET", "/monitor/api/incidents?status=open&window_hours=2.0"),
        ("GET", "/monitor/api/uptime?window_hours=24"),
        ("POST", "/monitor/api/incidents/1/acknowledge"),
    ]
    for request in backends.requests:
        assert (request.headers["authorization"], request.headers["accept"]) == (
            TOKEN,
            "application/json",
        )


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (500, {"detail": "pool closed"}, "the monitor answered 500: pool closed"),
        (502, "<html>bad gateway", "the monitor answered 502: <html>bad gateway"),
        # A proxy's JSON need not be an object.
        (502, ["bad gateway"], 'the monitor answered 502: ["bad gateway"]'),
        (200, {"count": "many"}, "the monitor's answer does not fit its contract"),
        # /findings always exists: a 404 means something else answers at that URL.
        (404, {}, f"the monitor at {MONITOR}/monitor/api has no /findings"),
    ],
)
async def test_a_broken_answer_is_unavailable_in_words(
    status: int, body: dict[str, object] | list[str] | str, words: str
) -> None:
    if isinstance(body, str):
        answer = httpx.Response(status, text=body)
    else:
        answer = httpx.Response(status, json=body)
    async with monitor(lambda _: answer) as api:
        with pytest.raises(MonitorUnavailable, match=re.escape(words)):
            await api.findings(TOKEN)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refusal_keeps_its_status_and_the_monitors_reason(status: int) -> None:
    answer = httpx.Response(status, json={"detail": "needs devops"})
    async with monitor(lambda _: answer) as api:
        with pytest.raises(MonitorRefused, match=r"^needs devops$") as raised:
            await api.acknowledge(TOKEN, 1)
    assert raised.value.status_code == status


async def test_a_missing_order_or_incident_is_none_not_an_error() -> None:
    async with monitor(lambda _: httpx.Response(404, json={"detail": "no such"})) as api:
        assert await api.journey(TOKEN, "o-1") is None
        assert await api.incident(TOKEN, 9) is None
        assert await api.acknowledge(TOKEN, 9) is None


async def test_no_answer_names_the_monitor_that_cannot_be_reached() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with monitor(refuse) as api:
        with pytest.raises(MonitorUnavailable) as raised:
            await api.incidents(TOKEN)
    assert str(raised.value) == (
        f"the monitor at {MONITOR}/monitor/api cannot be reached (ConnectError)"
    )
