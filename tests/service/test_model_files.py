"""3D model files alone: what an upload must be to get in, and a stored model served back by
its SHA-256 exactly as it was uploaded."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, HTTPException, UploadFile

from loupe.objectstore import ObjectStore
from loupe.service.http import Store
from loupe.service.model_files import (
    MAX_MODEL_BYTES,
    ModelUpload,
    model_reader,
    read_model_upload,
)

STL = b"solid ring\nfacet normal 0 0 1\nendfacet\nendsolid ring\n"
DESCRIPTION = "A ring's model, for the tests."


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # The upload route a service would write with these helpers, beside the module's reader.
    app = FastAPI()
    app.state.store = ObjectStore(tmp_path)

    @app.post("/upload")
    async def upload(model: ModelUpload, store: Store) -> str:
        return store.put(await read_model_upload(model))

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
    assert await read_model_upload(UploadFile(io.BytesIO(data))) == data


async def test_a_model_past_the_limit_is_refused() -> None:
    with pytest.raises(HTTPException) as refused:
        await read_model_upload(UploadFile(io.BytesIO(b"s" * (MAX_MODEL_BYTES + 1))))
    assert refused.value.status_code == 422
    assert refused.value.detail == {
        "field": "model",
        "message": f"is larger than {MAX_MODEL_BYTES} bytes",
    }
