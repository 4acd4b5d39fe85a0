"""OpenTelemetry for loupe's services: set-up, order attributes, redaction, log correlation."""

from loupe.telemetry.attributes import OrderAttributes, set_order_attributes
from loupe.telemetry.setup import configure_telemetry, shutdown_telemetry, tracer

__all__ = [
    "OrderAttributes",
    "configure_telemetry",
    "set_order_attributes",
    "shutdown_telemetry",
    "tracer",
]
