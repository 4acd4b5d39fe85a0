"""3D model files alone: what an upload must be to get in (refused past the limit while it
streams), and a stored model served back by its SHA-256 exactly as it was uploaded."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, HTTPException, UploadFile

from loupe.objectstore import ObjectStore
from loupe.service.http import Store
from loupe.service.model_files import (
    FORM_ALLOWANCE,
    BodyLimit,
    ModelUpload,
    model_reader,
    read_model_upload,
)

MAX_MODEL_BYTES = 100_000

STL = b"solid ring\nfacet normal 0 0 1\nendfacet\nendsolid ring\n"
DESCRIPTION = "A ring's model, for the tests."


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # The upload route a service would write with these helpers, beside the module's reader.
    app = FastAPI()
    app.state.store = ObjectStore(tmp_path)
    app.add_middleware(BodyLimit, max_model_bytes=MAX_MODEL_BYTES)

    @app.post("/upload")
    async def upload(model: ModelUpload, store: Store) -> str:
        return store.put(await read_model_upload(model, MAX_MODEL_BYTES))

    app.include_router(model_reader(DESCRIPTION, summary="Read a model"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_an_uploaded_model_is_served_back_by_its_digest(client: httpx.AsyncClient) -> None:
    sha256 = (await client.post("/upload", files={"model": ("ring.stl", STL)})).json()
    served = await client.get(f"/models/{sha256}")
    assert served.status_code == 200
    assert served.content == STL
    assert served.headers["content-type"] == "model/stl"


@pytest.mark.parametrize("sha256", ["0" * 64, "not-a-digest"])
async def test_a_model_the_store_does_not_hold_is_404(
    client: httpx.AsyncClient, sha256: str
) -> None:
    assert (await client.get(f"/models/{sha256}")).status_code == 404


async def test_each_service_documents_the_reader_in_its_own_words(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/models/{sha256}"]["get"]
    assert (operation["description"], operation["summary"]) == (DESCRIPTION, "Read a model")
    assert operation["tags"] == ["models"]


async def test_an_empty_upload_is_a_422_naming_the_model_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/upload", files={"model": ("ring.stl", b"")})
    assert response.status_code == 422
    assert response.json() == {"detail": {"field": "model", "message": "is empty"}}


async def test_a_model_up_to_the_limit_is_read_whole() -> None:
    data = b"s" * MAX_MODEL_BYTES
    assert await read_model_upload(UploadFile(io.BytesIO(data)), MAX_MODEL_BYTES) == data


async def test_a_model_past_the_limit_is_refused() -> None:
    with pytest.raises(HTTPException) as refused:
        await read_model_upload(
            UploadFile(io.BytesIO(b"s" * (MAX_MODEL_BYTES + 1))), MAX_MODEL_BYTES
        )
    assert refused.value.status_code == 413
    assert refused.value.detail == TOO_LARGE


def _stored(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


TOO_LARGE = {"field": "model", "message": f"is larger than {MAX_MODEL_BYTES} bytes"}
CHUNK = 16 * 1024


class Streamed:
    """A multipart upload of one model of `size` bytes, sent in chunks, counting what was read."""

    def __init__(self, size: int) -> None:
        self.size, self.sent = size, 0
        self.boundary = "loupe-test-boundary"

    def chunks(self) -> Iterator[bytes]:
        head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="model"; '
            'filename="ring.stl"\r\nContent-Type: model/stl\r\n\r\n'
        ).encode()
        yield head
        self.sent += len(head)
        for offset in range(0, self.size, CHUNK):
            chunk = b"s" * min(CHUNK, self.size - offset)
            self.sent += len(chunk)
            yield chunk
        yield f"\r\n--{self.boundary}--\r\n".encode()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks():
            yield chunk

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"


async def test_an_upload_is_refused_with_413_as_soon_as_it_streams_past_the_limit(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = Streamed(size=50 * MAX_MODEL_BYTES)
    response = await client.post(
        "/upload", content=body, headers={"content-type": body.content_type}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": TOO_LARGE}
    # The body was read only one chunk past the limit; the rest was never taken in.
    assert body.sent <= MAX_MODEL_BYTES + FORM_ALLOWANCE + 2 * CHUNK
    assert _stored(tmp_path) == []


async def test_an_upload_declared_past_the_limit_is_refused_before_it_is_read(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = Streamed(size=50 * MAX_MODEL_BYTES)
    declared = str(50 * MAX_MODEL_BYTES)
    response = await client.post(
        "/upload",
        content=body,
        headers={"content-type": body.content_type, "content-length": declared},
    )
    assert (response.status_code, response.json()) == (413, {"detail": TOO_LARGE})
    assert response.headers["connection"] == "close"
    assert _stored(tmp_path) == []


async def test_a_model_just_past_the_limit_within_the_form_s_allowance_is_still_413(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = Streamed(size=MAX_MODEL_BYTES + 1)
    response = await client.post(
        "/upload", content=body, headers={"content-type": body.content_type}
    )
    assert (response.status_code, response.json()) == (413, {"detail": TOO_LARGE})
    assert _stored(tmp_path) == []


async def test_a_model_at_the_limit_streams_in_whole(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = Streamed(size=MAX_MODEL_BYTES)
    response = await client.post(
        "/upload", content=body, headers={"content-type": body.content_type}
    )
    assert response.status_code == 200
    assert len(_stored(tmp_path)) == 1
