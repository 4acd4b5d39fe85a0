"""What mes-api takes and answers with: an order as manufacturing sees it, and an operator's
action on it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MesOrder(BaseModel):
    id: str
    source: str
    status: str
    partner_id: str | None = None
    partner_reference: str | None = None
    price: float | None = None
    currency: str | None = None
    volume_mm3: float | None = None
    operator: str | None = None
    failure_reason: str | None = None
    updated_at: str


class OperatorAction(BaseModel):
    operator: str = Field(min_length=1, max_length=100, description="The operator's user name")
