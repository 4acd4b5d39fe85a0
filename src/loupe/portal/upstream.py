"""What the console's two upstreams (Jaeger's query API, the monitor's API) share: a request
whose failure to get any answer is raised as that upstream's own "unavailable" error."""

from __future__ import annotations

from typing import Any

import httpx


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    unavailable: type[Exception],
    upstream: str,
    **kwargs: Any,
) -> httpx.Response:
    """The answer, whatever its status; `unavailable("<upstream> cannot be reached (...)")`
    when there is none."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise unavailable(f"{upstream} cannot be reached ({type(exc).__name__})") from exc
