"""Webhook alerts: each incident opened or resolved is POSTed as JSON to every configured URL,
retried with exponential backoff until it is accepted (2xx). Deliveries wait in PostgreSQL,
so a restart does not lose one. A webhook's URL is usually its credential: logs name it by
host only (with the delivery's id, which leads to the row)."""

from __future__ import annotations

import logging
from datetime import timedelta

import asyncpg
import httpx

from loupe.telemetry.logs import shown_url

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
FIRST_DELAY = timedelta(seconds=1)
MAX_DELAY = timedelta(minutes=10)


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s, … up to 10 minutes, after the `attempts`-th failure."""
    # Doublings capped well past MAX_DELAY: 2**47 s no longer fits in a timedelta.
    return min(FIRST_DELAY * (2 ** min(max(attempts - 1, 0), 32)), MAX_DELAY)


async def deliver_due(
    pool: asyncpg.Pool, client: httpx.AsyncClient, limit: int = 50
) -> tuple[int, int]:
    """Sends what is due; returns (delivered, failed) for this round."""
    async with pool.acquire() as connection:
        due = await connection.fetch(
            "SELECT id, url, body::text AS body, attempts FROM webhook_deliveries"
            " WHERE delivered_at IS NULL AND attempts < $1 AND next_at <= now()"
            " ORDER BY id LIMIT $2",
            MAX_ATTEMPTS,
            limit,
        )
    delivered = failed = 0
    for row in due:
        try:
            response = await client.post(
                row["url"],
                content=row["body"],
                headers={"Content-Type": "application/json", "User-Agent": "loupe-monitor"},
            )
            ok = 200 <= response.status_code < 300
            problem = None if ok else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            # The URL is the webhook's credential: kept out of what is stored and logged.
            text = str(exc).replace(row["url"], shown_url(row["url"]))
            ok, problem = False, f"{type(exc).__name__}: {text}"
        attempts = row["attempts"] + 1
        async with pool.acquire() as connection:
            if ok:
                delivered += 1
                await connection.execute(
                    "UPDATE webhook_deliveries SET attempts = $2, delivered_at = now(),"
                    " last_error = NULL WHERE id = $1",
                    row["id"],
                    attempts,
                )
            else:
                failed += 1
                await connection.execute(
                    "UPDATE webhook_deliveries SET attempts = $2, last_error = $3,"
                    " next_at = now() + $4::interval WHERE id = $1",
                    row["id"],
                    attempts,
                    problem,
                    backoff(attempts),
                )
                if attempts >= MAX_ATTEMPTS:
                    log.error(
                        "webhook %s (delivery %s): giving up after %d attempts: %s",
                        shown_url(row["url"]),
                        row["id"],
                        attempts,
                        problem,
                    )
                else:
                    log.warning(
                        "webhook %s (delivery %s) failed (%s); will retry",
                        shown_url(row["url"]),
                        row["id"],
                        problem,
                    )
    return delivered, failed
