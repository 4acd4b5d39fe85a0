"""What stands between the OTLP intake (`POST /v1/traces`) and the monitor's store.

Whoever can write spans can make up orders, report them stuck and hide real ones (an order's
status only moves forward), so a sender must hold the intake token. And one request, even from
a sender holding it, must neither fill the monitor's memory nor freeze its event loop, which
runs detection and answers `/healthz`: the body is capped while it streams in, a compressed
body is inflated in bounded steps up to the same cap, and inflating and decoding run in a
worker thread.
"""

from __future__ import annotations

import hmac
import logging
import zlib
from pathlib import Path

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)

SCHEME = "Bearer"
CHALLENGE = {"WWW-Authenticate": f'{SCHEME} realm="loupe-monitor OTLP intake"'}
GZIP = "gzip"
# A sender gzips a request as one member; a few more are allowed (`cat a.gz b.gz` is valid
# gzip), not thousands of empty ones that would each cost a round of work and no output.
MAX_GZIP_MEMBERS = 16
# Inflated this much at a time, so a bomb is stopped one step past the cap.
INFLATE_STEP = 1024 * 1024


def read_token(path: Path) -> str:
    """The intake token kept in `path`; ValueError, saying how to make one, when it is not
    there."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(
            f"cannot read the OTLP intake token from {path} ({exc.strerror or exc}); `loupe up`"
            " makes one, or write a long random one there (mode 0600) and give the same to the"
            " senders"
        ) from None
    if not token:
        raise ValueError(f"the OTLP intake token file {path} is empty")
    if path.stat().st_mode & 0o077:
        log.warning("%s, which holds the OTLP intake token, is readable by others", path)
    return token


def authorize(authorization: str, token: str | None) -> None:
    """401 unless `authorization` is `Bearer <token>`. Without a token configured, no request
    is let in."""
    scheme, _, sent = authorization.strip().partition(" ")
    if token is None or scheme.lower() != SCHEME.lower():
        raise HTTPException(401, "send the monitor's intake token as a Bearer token", CHALLENGE)
    # Compared in constant time: how long a wrong token takes to refuse says nothing of how
    # much of it was right.
    if not hmac.compare_digest(sent.strip().encode(), token.encode()):
        raise HTTPException(401, "the intake token is wrong", CHALLENGE)


def _too_large(limit: int, what: str) -> HTTPException:
    return HTTPException(413, f"the request {what} over {limit} bytes; send smaller batches")


async def read_body(request: Request, limit: int) -> bytes:
    """The body as sent, refused with 413 as soon as it passes `limit` bytes: a declared
    Content-Length over it is refused before a byte is read, and the rest of a longer body is
    never read."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, "is")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit, "is")
    return bytes(body)


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body as it was before `encoding` (Content-Encoding), at most `limit` bytes of it: 413
    past that, 400 when it is not what the encoding says, 415 for encodings other than gzip."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding == GZIP:
        return _gunzip(raw, limit)
    raise HTTPException(415, f"Content-Encoding {encoding!r} is not supported; use gzip")


def _gunzip(raw: bytes, limit: int) -> bytes:
    body = bytearray()
    rest = raw
    members = 0
    while rest:  # a gzip file may have several members, one after the other
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise HTTPException(413, f"the request has over {MAX_GZIP_MEMBERS} gzip members")
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        while not inflater.eof:
            try:
                step = inflater.decompress(pending, min(INFLATE_STEP, limit + 1 - len(body)))
            except zlib.error as exc:
                detail = f"Content-Encoding gzip, but the body is not: {exc}"
                raise HTTPException(400, detail) from None
            body += step
            if len(body) > limit:
                raise _too_large(limit, "inflates to")
            pending = inflater.unconsumed_tail
            if not (pending or step):
                break
        if not inflater.eof:
            raise HTTPException(400, "Content-Encoding gzip, but the body is cut short")
        rest = inflater.unused_data
    return bytes(body)
