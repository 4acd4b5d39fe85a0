"""loupe-portal behind the real gateway: Dex, oauth2-proxy and the portal as processes (no
Jaeger), the portal reading a sandbox vhost's dead-letter queue."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import aio_pika
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from loupe.messaging.consumer import ATTEMPT_HEADER, ORDER_HEADER, QUEUE_HEADER, REASON_HEADER
from loupe.messaging.topology import DEAD_LETTER_EXCHANGE
from loupe.stack.components import dex_process, gateway_process, portal_process
from loupe.stack.gateway import CLIENT_ID, GatewaySettings, Secrets, render
from loupe.stack.process import free_port
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack

from .gateway_support import API, Gateway, sign_in

pytestmark = pytest.mark.e2e

WORK_QUEUE = "mes.order-submitted"


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Sandbox, str]]:
    root = tmp_path_factory.mktemp("portal")
    password = secrets.token_urlsafe(12)
    settings = GatewaySettings(
        address=f"127.0.0.1:{free_port()}", dex_port=free_port(), secrets_dir=root / "secrets"
    )
    portal_url = f"http://127.0.0.1:{free_port()}"
    keys = Secrets.ensure(settings.secrets_dir, {"LOUPE_DEMO_PASSWORD": password})
    # Nothing listens on this Jaeger port: these tests never go to /jaeger/.
    jaeger_url = f"http://127.0.0.1:{free_port()}/jaeger"
    files = render(settings, jaeger_url, root / "data", root / "logs", keys, portal_url=portal_url)
    logs = root / "logs"
    with Sandbox(root) as sandbox:
        env = {
            **sandbox.env,
            "LOUPE_PORTAL_URL": portal_url,
            "LOUPE_CONSOLE_URL": settings.url,
            "LOUPE_OIDC_ISSUER_URL": settings.dex_issuer,
            "LOUPE_OIDC_CLIENT_ID": CLIENT_ID,
            "OTEL_SDK_DISABLED": "true",
        }
        stack = Stack(
            [
                dex_process(settings, files, logs),
                gateway_process(settings, files, logs),
                portal_process(env, logs_dir=logs),
            ]
        )
        with stack:
            yield Gateway(settings, files, None, password), sandbox, portal_url  # type: ignore[arg-type]


async def _dead_letter(amqp_url: str, order_id: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
        headers: dict[str, Any] = {
            ATTEMPT_HEADER: 3,
            REASON_HEADER: "pricing failed",
            QUEUE_HEADER: WORK_QUEUE,
            ORDER_HEADER: order_id,
        }
        body = json.dumps({"order_id": order_id}).encode()
        await exchange.publish(aio_pika.Message(body, headers=headers), routing_key=WORK_QUEUE)


async def _take(amqp_url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(amqp_url)
    taken = []
    async with connection:
        queue = await (await connection.channel()).get_queue(queue_name)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


@pytest.mark.parametrize(
    ("email", "role", "can_act"),
    [("devops@example.com", "operator", True), ("developer@example.com", "reader", False)],
)
def test_whoami_through_gateway(
    portal: tuple[Gateway, Sandbox, str], email: str, role: str, can_act: bool
) -> None:
    gateway, _, _ = portal
    with gateway.client() as client:
        page = sign_in(gateway, client, email, "/")
        assert page.status_code == 200, page.text
        assert email in page.text and "/oauth2/sign_out" in page.text
        me = client.get(f"{gateway.url}/api/whoami", headers=API)
        assert me.status_code == 200, me.text
        assert (me.json()["email"], me.json()["role"], me.json()["can_act"]) == (
            email,
            role,
            can_act,
        )


def test_requeue_needs_devops(portal: tuple[Gateway, Sandbox, str]) -> None:
    gateway, sandbox, _ = portal
    amqp = sandbox.admin_amqp_url
    asyncio.run(_dead_letter(amqp, "order-e2e-1"))

    with gateway.client() as client:
        sign_in(gateway, client, "developer@example.com", "/")
        listed = client.get(f"{gateway.url}/api/dead-letters", headers=API)
        assert listed.status_code == 200, listed.text
        letters = listed.json()["dead_letters"]
        assert [(d["order_id"], d["queue"], d["attempts"]) for d in letters] == [
            ("order-e2e-1", WORK_QUEUE, 3)
        ]
        refused = client.post(f"{gateway.url}/api/dead-letters/requeue", headers=API, json={})
        assert refused.status_code == 403, refused.text
        assert refused.json()["needs_group"] == ["devops"]

    with gateway.client() as client:
        sign_in(gateway, client, "devops@example.com", "/")
        requeue = f"{gateway.url}/api/dead-letters/requeue"
        body = {"order_id": "order-e2e-1"}
        # An action needs the person's anti-forgery token, and nothing else in its place.
        refused = client.post(requeue, headers=API, json=body)
        assert refused.status_code == 403 and "anti-forgery" in refused.json()["detail"]
        token = client.get(f"{gateway.url}/api/whoami", headers=API).json()["csrf_token"]
        elsewhere = {**API, "X-Loupe-Csrf": token, "Origin": "http://evil.example"}
        assert client.post(requeue, headers=elsewhere, json=body).status_code == 403
        cross_site = {**API, "X-Loupe-Csrf": token, "Sec-Fetch-Site": "cross-site"}
        assert client.post(requeue, headers=cross_site, json=body).status_code == 403
        # An empty body names nothing, and nothing is requeued.
        empty = client.post(requeue, headers={**API, "X-Loupe-Csrf": token}, json={})
        assert empty.status_code == 422
        done = client.post(requeue, headers={**API, "X-Loupe-Csrf": token}, json=body)
        assert done.status_code == 200, done.text
        assert [d["order_id"] for d in done.json()["requeued"]] == ["order-e2e-1"]
        after = client.get(f"{gateway.url}/api/dead-letters", headers=API).json()
        assert after["count"] == 0

    back = asyncio.run(_take(amqp, WORK_QUEUE))
    assert len(back) == 1
    headers = back[0].headers or {}
    assert ATTEMPT_HEADER not in headers
    assert headers[ORDER_HEADER] == "order-e2e-1"
    assert headers["x-loupe-requeued-by"] == "devops@example.com"


def test_portal_direct_with_forged_headers_is_401(portal: tuple[Gateway, Sandbox, str]) -> None:
    _, _, portal_url = portal
    forged = {
        "X-Forwarded-User": "devops",
        "X-Forwarded-Email": "devops@example.com",
        "X-Forwarded-Groups": "devops",
        **API,
    }
    with httpx.Client(trust_env=False, timeout=10) as client:
        for method, path in (("GET", "/api/whoami"), ("POST", "/api/dead-letters/requeue")):
            response = client.request(method, f"{portal_url}{path}", headers=forged)
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "unauthenticated"


def test_malformed_and_mismatched_tokens_are_401_from_the_real_portal(
    portal: tuple[Gateway, Sandbox, str],
) -> None:
    """Straight to the portal, which checks tokens against the real Dex's keys: whatever the
    token, an answer of 401 with its reason, never a 500."""
    gateway, _, portal_url = portal
    keys = httpx.get(f"{gateway.settings.dex_issuer}/keys", timeout=10).json()["keys"]
    kid = keys[0]["kid"]
    now = int(time.time())
    claims = {"iss": gateway.settings.dex_issuer, "aud": CLIENT_ID, "sub": "x", "iat": now}
    claims["exp"] = now + 600
    forged = {
        # An EC algorithm naming Dex's RSA key: PyJWT raised TypeError here once.
        "ec algorithm, rsa key": jwt.encode(
            claims, ec.generate_private_key(ec.SECP256R1()), "ES256", {"kid": kid}
        ),
        "signed by another key": jwt.encode(
            claims,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "RS256",
            {"kid": kid},
        ),
        "a key Dex does not publish": jwt.encode(
            claims,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "RS256",
            {"kid": "not-dex"},
        ),
        "not a token": "not-a-jwt",
        "three parts of nothing": "a.b.c",
        "huge": "x." * 20_000 + "x",
    }
    with httpx.Client(trust_env=False, timeout=10) as client:
        for name, text in forged.items():
            response = client.get(
                f"{portal_url}/api/whoami", headers={**API, "Authorization": f"Bearer {text}"}
            )
            assert response.status_code == 401, (name, response.text)
            assert response.json()["error"] == "unauthenticated", name


def test_the_real_portal_refuses_a_host_it_does_not_know(
    portal: tuple[Gateway, Sandbox, str],
) -> None:
    # DNS rebinding: a page whose name now points at 127.0.0.1 would be same-origin with it.
    _, _, portal_url = portal
    with httpx.Client(trust_env=False, timeout=10) as client:
        refused = client.get(f"{portal_url}/healthz", headers={"Host": "attacker.example"})
        assert refused.status_code == 400, refused.text
        assert client.get(f"{portal_url}/healthz").status_code == 200
