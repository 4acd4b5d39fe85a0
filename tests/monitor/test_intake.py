"""The OTLP intake's refusals (loupe.monitor.intake, as `POST /v1/traces` applies them): no or
a wrong token, too large a body as sent or inflated, too many gzip members; and that decoding
leaves the event loop free. The monitor's database is never opened here: a request that gets
past every refusal is answered 503 (the database is not open), which is how these tests tell
it got through."""

from __future__ import annotations

import asyncio
import gzip
import hmac
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loupe.monitor import app as monitor_app
from loupe.monitor import intake
from loupe.monitor.app import create_app
from loupe.monitor.settings import MonitorSettings
from tests.support.otlp_requests import export_requests
from tests.support.otlp_spans import Spans, ago, otlp

TOKEN = secrets.token_urlsafe(32)
PROTOBUF = "application/x-protobuf"
SIGNED = {"Content-Type": PROTOBUF, "Authorization": f"Bearer {TOKEN}"}
GZIPPED = {**SIGNED, "Content-Encoding": "gzip"}
# Small, so a body over it is quick to make.
LIMIT_MIB = 1 / 16
LIMIT = 65536
# Got past every refusal: only the database, which these tests never open, is missing.
THROUGH = 503


def client_for(token: str | None = TOKEN) -> httpx.AsyncClient:
    settings = MonitorSettings(intake_max_mib=LIMIT_MIB)
    app = create_app(settings, intake_token=token, run_loops=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def refused(client: httpx.AsyncClient, status: str) -> float | None:
    """loupe_monitor_intake_refused_total{status} of the client's app (its /metrics reads the
    database, which these tests never open)."""
    app = client._transport.app  # type: ignore[attr-defined]
    registry = app.state.monitor.metrics.registry
    return registry.get_sample_value("loupe_monitor_intake_refused_total", {"status": status})


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for() as client:
        yield client


def body() -> bytes:
    return otlp([Spans().happy_move(0, "o-1", ago(1))])


class Reads:
    """A request body sent in chunks, counting how many the app asked for."""

    def __init__(self, chunks: int, size: int = 4096) -> None:
        self.sent = 0
        self._chunks, self._size = chunks, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self._chunks):
            self.sent += 1
            yield bytes(self._size)


def test_settings_default_to_a_bounded_intake() -> None:
    settings = MonitorSettings()
    assert settings.intake_max_bytes == 16 * 1024 * 1024
    assert settings.intake_ahead.total_seconds() == 300
    assert settings.intake_token_file == Path(".secrets/monitor-intake-token")
    assert MonitorSettings(intake_max_mib=LIMIT_MIB).intake_max_bytes == LIMIT


# -- who may send -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        f"Bearer {secrets.token_urlsafe(32)}",
        TOKEN,
    ],
)
async def test_no_or_a_wrong_token_is_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Content-Type": PROTOBUF}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await client.post("/v1/traces", content=body(), headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert refused(client, "401") == 1


async def test_the_token_lets_a_request_through(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/traces", content=body(), headers=SIGNED)).status_code == THROUGH
    # The scheme is case-insensitive (RFC 9110), the token is not.
    lower = {**SIGNED, "Authorization": f"bearer {TOKEN}"}
    assert (await client.post("/v1/traces", content=body(), headers=lower)).status_code == THROUGH
    upper = {**SIGNED, "Authorization": f"Bearer {TOKEN.upper()}"}
    assert (await client.post("/v1/traces", content=body(), headers=upper)).status_code == 401


async def test_without_a_configured_token_nobody_gets_in() -> None:
    async with client_for(None) as client:
        for headers in (SIGNED, {**SIGNED, "Authorization": "Bearer "}):
            response = await client.post("/v1/traces", content=body(), headers=headers)
            assert response.status_code == 401


async def test_the_token_is_compared_in_constant_time(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(sent: bytes, expected: bytes) -> bool:
        compared.append((sent, expected))
        return real(sent, expected)

    monkeypatch.setattr(intake.hmac, "compare_digest", spy)
    wrong = {**SIGNED, "Authorization": "Bearer nope"}
    assert (await client.post("/v1/traces", content=body(), headers=wrong)).status_code == 401
    assert compared == [(b"nope", TOKEN.encode())]


async def test_an_unauthenticated_body_is_never_read(client: httpx.AsyncClient) -> None:
    sent = Reads(chunks=100)
    response = await client.post(
        "/v1/traces", content=sent, headers={"Content-Type": PROTOBUF, "Content-Length": "1000"}
    )
    assert response.status_code == 401
    assert sent.sent <= 1  # httpx may hand over the first chunk before the app answers


def test_the_token_is_read_from_its_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    with pytest.raises(ValueError, match="`loupe up` makes one"):
        intake.read_token(path)
    path.write_text(" \n")
    with pytest.raises(ValueError, match="is empty"):
        intake.read_token(path)
    path.write_text(f"{TOKEN}\n")
    path.chmod(0o600)
    assert intake.read_token(path) == TOKEN
    assert "readable by others" not in caplog.text
    path.chmod(0o644)
    assert intake.read_token(path) == TOKEN
    assert "readable by others" in caplog.text


# -- how much ---------------------------------------------------------------------------------


async def test_a_declared_length_over_the_cap_is_413_before_a_byte_is_read(
    client: httpx.AsyncClient,
) -> None:
    sent = Reads(chunks=100)
    headers = {**SIGNED, "Content-Length": str(LIMIT + 1)}
    response = await client.post("/v1/traces", content=sent, headers=headers)
    assert response.status_code == 413
    assert sent.sent <= 1
    assert refused(client, "413") == 1


async def test_a_streamed_body_over_the_cap_is_413_before_the_rest_is_read(
    client: httpx.AsyncClient,
) -> None:
    # No Content-Length: chunked, as a sender that does not know its length sends.
    sent = Reads(chunks=1000)  # 4 MB, of which the cap is 64 KiB
    response = await client.post("/v1/traces", content=sent, headers=SIGNED)
    assert response.status_code == 413, response.text
    assert "over 65536 bytes" in response.json()["detail"]
    assert sent.sent <= LIMIT // 4096 + 2


async def test_a_body_at_the_cap_is_read(client: httpx.AsyncClient) -> None:
    padded = body() + b"\x1a\x00" * ((LIMIT - len(body())) // 2)  # empty unknown fields
    assert len(padded) <= LIMIT
    assert (await client.post("/v1/traces", content=padded, headers=SIGNED)).status_code == THROUGH


async def test_a_gzip_bomb_is_413_after_at_most_one_step_past_the_cap(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    inflated: list[int] = []
    real = intake.zlib.decompressobj

    class Counting:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._inflater = real(*args, **kwargs)  # type: ignore[arg-type]

        def __getattr__(self, name: str) -> object:
            return getattr(self._inflater, name)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._inflater.decompress(data, max_length)
            inflated.append(len(out))
            return out

    monkeypatch.setattr(intake.zlib, "decompressobj", Counting)
    bomb = gzip.compress(bytes(32 * 1024 * 1024), compresslevel=9)  # 32 MiB of zeros
    assert len(bomb) < LIMIT
    response = await client.post("/v1/traces", content=bomb, headers=GZIPPED)
    assert response.status_code == 413
    assert "inflates to over 65536 bytes" in response.json()["detail"]
    assert sum(inflated) == LIMIT + 1


async def test_gzip_within_the_cap_gets_through_and_broken_gzip_is_400(
    client: httpx.AsyncClient,
) -> None:
    packed = gzip.compress(body())
    ok = await client.post("/v1/traces", content=packed, headers=GZIPPED)
    assert ok.status_code == THROUGH
    # A gzip body may hold several members (`cat a.gz b.gz`)...
    joined = await client.post("/v1/traces", content=packed * 3, headers=GZIPPED)
    assert joined.status_code == THROUGH
    # ...but not thousands of empty ones, each a round of work for no output.
    empty = gzip.compress(b"")
    members = empty * (intake.MAX_GZIP_MEMBERS + 1)
    many = await client.post("/v1/traces", content=members, headers=GZIPPED)
    assert many.status_code == 413
    assert "gzip members" in many.json()["detail"]
    cut = await client.post("/v1/traces", content=packed[:-12], headers=GZIPPED)
    assert cut.status_code == 400
    garbage = await client.post("/v1/traces", content=b"\x1f\x8bnot gzip", headers=GZIPPED)
    assert garbage.status_code == 400
    zstd = await client.post(
        "/v1/traces", content=body(), headers={**SIGNED, "Content-Encoding": "zstd"}
    )
    assert zstd.status_code == 415


def test_inflating_gives_back_exactly_what_was_packed() -> None:
    data = secrets.token_bytes(3 * intake.INFLATE_STEP + 17)  # several steps, incompressible
    packed = gzip.compress(data[:100]) + gzip.compress(data[100:])
    assert intake.inflate(packed, "gzip", len(data)) == data
    assert intake.inflate(data, " Identity ", 0) == data  # as sent: its cap is read_body's


# -- the event loop stays free -----------------------------------------------------------------


async def test_decoding_runs_off_the_event_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real: Callable[..., object] = monitor_app.decode

    decoding = threading.Event()

    def slow(*args: object) -> object:
        decoding.set()
        time.sleep(3.0)  # as a huge batch would hold a core
        return real(*args)

    monkeypatch.setattr(monitor_app, "decode", slow)
    await client.get("/healthz")  # warm: the first request builds what later ones reuse
    posting = asyncio.create_task(client.post("/v1/traces", content=body(), headers=SIGNED))
    assert await asyncio.to_thread(decoding.wait, 10)
    began = time.monotonic()
    health = await client.get("/healthz")
    answered = time.monotonic() - began
    assert health.status_code == 503  # no database here; what matters is that it answered
    assert not posting.done()
    assert answered < 1.0
    assert (await posting).status_code == THROUGH


# -- any input, never a 500 -------------------------------------------------------------------

ANSWERS = {400, 413, 415, THROUGH}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=2048), gzipped=st.booleans())
async def test_any_bytes_get_an_answer_never_a_500(
    client: httpx.AsyncClient, raw: bytes, gzipped: bool
) -> None:
    headers = GZIPPED if gzipped else SIGNED
    response = await client.post("/v1/traces", content=raw, headers=headers)
    assert response.status_code in ANSWERS, response.text


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=export_requests(), gzipped=st.booleans())
async def test_any_well_formed_request_gets_through(
    client: httpx.AsyncClient, request: object, gzipped: bool
) -> None:
    raw = request.SerializeToString()  # type: ignore[attr-defined]
    response = await client.post(
        "/v1/traces",
        content=gzip.compress(raw) if gzipped else raw,
        headers=GZIPPED if gzipped else SIGNED,
    )
    expected = 413 if len(raw) > LIMIT else THROUGH
    assert response.status_code == expected, response.text
