"""The portal's JSON API (loupe.portal.actions) between the console and the broker: what a
dead-letter request names is exactly what is listed or requeued, and every action leaves its
line in the actions log. RabbitMQ is replaced by recording fakes here; the real requeue is in
tests/portal/test_deadletters.py, sign-in and roles in tests/test_access.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loupe.access import AccessSettings
from loupe.config import Settings
from loupe.portal import actions
from loupe.portal.antiforgery import HEADER
from loupe.portal.app import create_app
from loupe.portal.settings import PortalSettings
from tests.support.console_fakes import MONITOR, FakeBackends
from tests.support.oidc import CLIENT, ISSUER, FakeProvider, token

DEVOPS = {"Authorization": f"Bearer {token()}"}


class FakeBroker:
    """Stands in for loupe.portal.deadletters: records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    async def list(self, _: PortalSettings, limit: int) -> list[dict[str, Any]]:
        self.asked.append(("list", limit))
        return [{"message_id": "m-1"}]

    async def requeue(self, _: PortalSettings, *named: str | None) -> dict[str, Any]:
        self.asked.append(("requeue", *named))
        return {"requeued": [{"message_id": "m-1"}], "skipped": []}


Api = tuple[httpx.AsyncClient, FakeBroker]


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    broker = FakeBroker()
    monkeypatch.setattr(actions, "list_dead_letters", broker.list)
    monkeypatch.setattr(actions, "requeue_dead_letters", broker.requeue)
    settings = PortalSettings(
        monitor_url=MONITOR,
        access=AccessSettings(issuer=ISSUER, client_id=CLIENT),
        base=Settings(data_dir=tmp_path),
    )
    transport = httpx.MockTransport(FakeBackends().handler)
    app = create_app(settings, FakeProvider().verifier(), transport=transport)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://p") as client:
        # An action carries the person's anti-forgery token, as the console's pages send it.
        csrf = (await client.get("/api/whoami", headers=DEVOPS)).json()["csrf_token"]
        client.headers.update({**DEVOPS, HEADER: csrf})
        yield client, broker


def audited(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "logs" / "actions.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize(("asked", "read"), [("", 100), ("?limit=0", 1), ("?limit=5000", 1000)])
async def test_dead_letters_are_read_within_bounds(api: Api, asked: str, read: int) -> None:
    client, broker = api
    answer = await client.get(f"/api/dead-letters{asked}")
    assert answer.json() == {"count": 1, "dead_letters": [{"message_id": "m-1"}]}
    assert broker.asked == [("list", read)]


async def test_requeue_acts_on_what_it_names_and_logs_it(api: Api, tmp_path: Path) -> None:
    client, broker = api
    named = {"message_id": "m-1", "queue": "crm.order-status"}
    answer = await client.post("/api/dead-letters/requeue", json=named)
    assert answer.status_code == 200, answer.text
    assert answer.json()["requested_by"] == "devops@example.com"
    assert broker.asked == [("requeue", "devops@example.com", None, "m-1", "crm.order-status")]
    (entry,) = audited(tmp_path)
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "requeue dead letters",
        named,
        "1 requeued, 0 skipped",
    )


@pytest.mark.parametrize(
    "body",
    [{}, {"order_id": "o", "message_id": "m"}, {"order_id": "o", "queue": "q"}, {"queue": "q"}],
)
async def test_a_requeue_that_does_not_name_one_thing_does_nothing(
    api: Api, tmp_path: Path, body: dict[str, str]
) -> None:
    client, broker = api
    answer = await client.post("/api/dead-letters/requeue", json=body)
    assert answer.status_code == 422
    assert (broker.asked, audited(tmp_path)) == ([], [])


async def test_acknowledging_no_such_incident_is_logged_as_such(api: Api, tmp_path: Path) -> None:
    client, _ = api
    assert (await client.post("/api/incidents/404/acknowledge")).status_code == 404
    (entry,) = audited(tmp_path)
    assert (entry["target"], entry["outcome"]) == ({"incident_id": 404}, "no such incident")
