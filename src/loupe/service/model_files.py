"""3D model files (STL): the checks an upload passes on the way in, and the route that serves
a stored one by its SHA-256 on the way out (MES downloads models to price them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, UploadFile
from fastapi.responses import Response

from loupe.objectstore import ObjectNotFound
from loupe.service.http import Store, field_error

MAX_MODEL_BYTES = 50 * 1024 * 1024

# The form field a customer or partner uploads a piece's model in.
ModelUpload = Annotated[UploadFile, File(description="The piece's 3D model (STL)")]


async def read_model_upload(model: UploadFile) -> bytes:
    """The bytes of an uploaded 3D model, refused when empty or too large to be jewellery."""
    data = await model.read(MAX_MODEL_BYTES + 1)
    if not data:
        raise field_error("model", "is empty")
    if len(data) > MAX_MODEL_BYTES:
        raise field_error("model", f"is larger than {MAX_MODEL_BYTES} bytes")
    return data


def model_reader(description: str, **documented: Any) -> APIRouter:
    """`GET /models/{sha256}` for a service that keeps models; each service says in its own
    words whose models they are (`description`, and any other documented route fields)."""
    router = APIRouter(tags=["models"])

    @router.get("/models/{sha256}", response_class=Response, description=description, **documented)
    async def read_model(sha256: str, store: Store) -> Response:
        try:
            return Response(store.get(sha256), media_type="model/stl")
        except ObjectNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    return router
