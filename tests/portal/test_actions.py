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
from tests.support.console_fakes import MONITOR, NOW, FakeBackends, finding, iso
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
        return {"requeued": [{"message_id": "m-1"}], "skipped": [], "left": 0}


Api = tuple[httpx.AsyncClient, FakeBroker]


@pytest.fixture
def backends() -> FakeBackends:
    """The monitor, holding one open finding (id 7) and one dismissed already (id 8)."""
    fake = FakeBackends()
    fake.findings = [finding("o-1", NOW, finding_id=7), finding("o-2", NOW, finding_id=8)]
    fake.findings[1] |= {"cleared_at": iso(NOW), "cleared_reason": "dismissed by x: test"}
    return fake


@pytest.fixture
async def api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backends: FakeBackends
) -> AsyncIterator[Api]:
    broker = FakeBroker()
    monkeypatch.setattr(actions, "list_dead_letters", broker.list)
    monkeypatch.setattr(actions, "requeue_dead_letters", broker.requeue)
    settings = PortalSettings(
        monitor_url=MONITOR,
        access=AccessSettings(issuer=ISSUER, client_id=CLIENT),
        base=Settings(data_dir=tmp_path),
    )
    transport = httpx.MockTransport(backends.handler)
    app = create_app(settings, FakeProvider().verifier(), transport=transport)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://127.0.0.1"
    ) as client:
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


async def test_requeueing_every_letter_is_an_action_of_its_own_that_says_so(
    api: Api, tmp_path: Path
) -> None:
    client, broker = api
    for body in ({}, {"all": False}, {"all": "yes"}, {"order_id": "o", "all": True}):
        refused = await client.post("/api/dead-letters/requeue-all", json=body)
        assert refused.status_code == 422, body
    # Neither does the single-letter route read "nothing named" as "everything".
    assert (await client.post("/api/dead-letters/requeue", json={"all": True})).status_code == 422
    assert (broker.asked, audited(tmp_path)) == ([], [])

    answer = await client.post("/api/dead-letters/requeue-all", json={"all": True})
    assert answer.status_code == 200, answer.text
    assert broker.asked == [("requeue", "devops@example.com")]
    (entry,) = audited(tmp_path)
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "requeue every dead letter",
        {"all": True},
        "1 requeued, 0 skipped, 0 left",
    )


async def test_acknowledging_no_such_incident_is_logged_as_such(api: Api, tmp_path: Path) -> None:
    client, _ = api
    assert (await client.post("/api/incidents/404/acknowledge")).status_code == 404
    (entry,) = audited(tmp_path)
    assert (entry["target"], entry["outcome"]) == ({"incident_id": 404}, "no such incident")


async def test_dismissing_a_finding_passes_the_reason_to_the_monitor_and_logs_it(
    api: Api, backends: FakeBackends, tmp_path: Path
) -> None:
    client, _ = api
    answer = await client.post("/api/findings/7/dismiss", json={"reason": " a test order "})
    assert answer.status_code == 200, answer.text
    dismissed = answer.json()
    assert (dismissed["id"], dismissed["cleared_reason"]) == (
        7,
        "dismissed by devops@example.com: a test order",
    )
    # The monitor is asked with the person's own token (it checks the role itself).
    (asked,) = [r for r in backends.requests if r.url.path.endswith("/dismiss")]
    assert (asked.method, str(asked.url)) == ("POST", f"{MONITOR}/monitor/api/findings/7/dismiss")
    assert json.loads(asked.content) == {"reason": "a test order"}
    assert asked.headers["authorization"] == DEVOPS["Authorization"]
    (entry,) = audited(tmp_path)
    assert (entry["user"], entry["action"], entry["target"], entry["outcome"]) == (
        "devops@example.com",
        "dismiss finding",
        {"finding_id": 7, "reason": "a test order"},
        "dismissed",
    )


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": " \t"}, {"why": "test"}])
async def test_a_dismissal_without_a_reason_does_nothing(
    api: Api, backends: FakeBackends, tmp_path: Path, body: dict[str, str]
) -> None:
    client, _ = api
    answer = await client.post("/api/findings/7/dismiss", json=body)
    assert answer.status_code == 422
    assert [r for r in backends.requests if r.url.path.endswith("/dismiss")] == []
    assert audited(tmp_path) == []


@pytest.mark.parametrize(
    ("finding_id", "status", "outcome"),
    [
        (404, 404, "no such finding"),
        (8, 409, "refused: finding 8 was cleared already (dismissed by x: test)"),
    ],
)
async def test_dismissing_what_is_not_open_is_refused_and_logged_as_such(
    api: Api, tmp_path: Path, finding_id: int, status: int, outcome: str
) -> None:
    client, _ = api
    answer = await client.post(f"/api/findings/{finding_id}/dismiss", json={"reason": "test"})
    assert answer.status_code == status
    (entry,) = audited(tmp_path)
    assert (entry["target"], entry["outcome"]) == (
        {"finding_id": finding_id, "reason": "test"},
        outcome,
    )
