"""What shop-api answers with: an order as its customer sees it (no personal data goes back)."""

from __future__ import annotations

from pydantic import BaseModel


class OrderView(BaseModel):
    id: str
    status: str
    price: float | None = None
    currency: str | None = None
    failure_reason: str | None = None
    created_at: str
    updated_at: str
