"""What crm-api takes and answers with: an order as sellers see it, and their decisions."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CrmOrder(BaseModel):
    id: str
    source: str
    status: str
    price: float | None = None
    currency: str | None = None
    seller: str | None = None
    rejection_reason: str | None = None
    failure_reason: str | None = None
    tracking_number: str | None = None
    updated_at: str


class SellerAction(BaseModel):
    seller: str = Field(min_length=1, max_length=100, description="The seller's user name")


class Rejection(SellerAction):
    reason: str = Field(min_length=1, max_length=500)


class Shipment(SellerAction):
    tracking_number: str = Field(min_length=1, max_length=100)
