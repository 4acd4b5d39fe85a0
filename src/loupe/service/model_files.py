"""3D model files (STL): the checks an upload passes on the way in, the route that serves a
stored one by its SHA-256 on the way out (MES downloads models to price them), and the sweep
that deletes models whose order was never created.

An upload is refused past LOUPE_MAX_MODEL_BYTES while it streams: `BodyLimit` counts a request
body as it arrives and answers 413 at the first byte past the limit (or at once when the
declared Content-Length is past it), so no more of it is read, parsed or spooled. The form's
other fields get `FORM_ALLOWANCE` on top; the model part itself is checked against the limit
exactly before anything is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, FastAPI, File, HTTPException, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loupe.objectstore import ObjectNotFound, ObjectStore
from loupe.service.http import Store, field_error
from loupe.service.kernel import ServiceKernel

log = logging.getLogger(__name__)

# Room for an upload form's other fields and the multipart framing: the shop's customer fields
# are at most about 1 KiB; a body past the model's limit by more than this is no model upload.
FORM_ALLOWANCE = 64 * 1024

# What an upload route documents besides its success (`responses=` of its decorator).
UPLOAD_REFUSALS: dict[int | str, dict[str, Any]] = {
    413: {
        "description": "The model is larger than LOUPE_MAX_MODEL_BYTES; refused while the body"
        " streams in, nothing stored"
    }
}

# The form field a customer or partner uploads a piece's model in.
ModelUpload = Annotated[UploadFile, File(description="The piece's 3D model (STL)")]


def too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, {"field": "model", "message": f"is larger than {max_bytes} bytes"})


class BodyLimit:
    """ASGI middleware: a request body past `max_model_bytes` + FORM_ALLOWANCE is refused with
    413 as it streams in, never read to its end."""

    def __init__(self, app: ASGIApp, max_model_bytes: int) -> None:
        self.app = app
        self.max_model_bytes = max_model_bytes
        self.max_body = max_model_bytes + FORM_ALLOWANCE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            # Answered before a byte of the body is read; the client is told not to send it.
            refusal = too_large(self.max_model_bytes)
            response = JSONResponse(
                {"detail": refusal.detail}, 413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # Raised inside whatever reads the body (the form parser), which drops what
                    # it spooled; FastAPI passes an HTTPException on, so the answer is the 413.
                    raise too_large(self.max_model_bytes)
            return message

        await self.app(scope, counted, send)


def keep_models(app: FastAPI, kernel: ServiceKernel, store: ObjectStore) -> None:
    """What a service that takes model uploads adds to its app: the streamed body limit, and
    the sweep of models whose order was never created while it runs."""
    settings = kernel.settings
    app.add_middleware(BodyLimit, max_model_bytes=settings.max_model_bytes)
    sweeping: list[asyncio.Task[None]] = []

    async def start() -> None:
        age = settings.orphan_model_minutes * 60
        sweeping.append(asyncio.create_task(sweep_orphans_forever(store, kernel.pool, age)))

    async def stop() -> None:
        for task in sweeping:
            task.cancel()

    kernel.on_start(start)
    kernel.on_stop(stop)


async def read_model_upload(model: UploadFile, max_bytes: int) -> bytes:
    """The bytes of an uploaded 3D model, refused when empty (422) or past `max_bytes` (413)."""
    data = await model.read(max_bytes + 1)
    if not data:
        raise field_error("model", "is empty")
    if len(data) > max_bytes:
        raise too_large(max_bytes)
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


async def sweep_orphans(store: ObjectStore, pool: asyncpg.Pool, age_seconds: float) -> int:
    """Delete the models older than `age_seconds` that no order in `pool` refers to (an upload
    whose order was never created: the request failed, or the process died, between storing
    the model and committing the order), and what a crashed write left half done; returns how
    many were deleted.

    A service sweeps only its own prefix of the store, whose models are all uploads to it, so
    its own `orders.model_sha256` says which are in use. The age is far longer than a request
    takes, and storing a model that is already there refreshes its age, so a model is never
    swept between being stored and its order being committed."""
    cutoff = time.time() - age_seconds
    candidates = store.stale(cutoff)
    if not candidates:
        return 0
    used = {
        row["model_sha256"]
        for row in await pool.fetch(
            "SELECT DISTINCT model_sha256 FROM orders WHERE model_sha256 = ANY($1::text[])",
            candidates,
        )
    }
    return sum(store.delete_if_stale(name, cutoff) for name in candidates if name not in used)


async def sweep_orphans_forever(store: ObjectStore, pool: asyncpg.Pool, age_seconds: float) -> None:
    """`sweep_orphans` every tenth of `age_seconds`, for as long as the service runs."""
    while True:
        try:
            deleted = await sweep_orphans(store, pool, age_seconds)
        except Exception as exc:
            # The database is away: nothing is deleted until it can say what is in use.
            log.warning("could not sweep unused models: %s: %s", type(exc).__name__, exc)
        else:
            if deleted:
                log.info("deleted %d stored models no order refers to", deleted)
        await asyncio.sleep(age_seconds / 10)
