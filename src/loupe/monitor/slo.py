"""Service levels per order status, read from a TOML file (deploy/monitor/slo-*.toml)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from loupe.monitor.spans import queue_place
from loupe.orders import OrderStatus

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class SloError(ValueError):
    """The SLO file is missing or wrong; the text names the file and the entry."""


def parse_duration(text: str) -> timedelta:
    """ "45s", "30m", "4h", "3d", "500ms" (a number and one unit)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise SloError(f"{text!r} is not a duration like 45s, 30m, 4h or 3d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


@dataclass(frozen=True)
class Step:
    """What an order at `status` waits for: `service` to act within `within`."""

    status: OrderStatus
    within: timedelta
    service: str
    queue: str | None = None
    then: str | None = None

    def where(self, service_has_it: bool) -> str:
        """The queue while the event has not reached `service`; afterwards what it waits for."""
        if self.queue and not (self.then and service_has_it):
            return queue_place(self.queue)
        # Slo.parse gives every step a queue, a `then`, or both: here there is a `then`.
        assert self.then is not None
        return self.then


@dataclass(frozen=True)
class Slo:
    steps: dict[OrderStatus, Step]
    error_grace: timedelta

    def step(self, status: str | None) -> Step | None:
        try:
            return self.steps.get(OrderStatus(status)) if status else None
        except ValueError:
            return None

    @classmethod
    def load(cls, path: Path) -> Slo:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SloError(f"cannot read the SLO file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SloError(f"the SLO file {path} is not valid TOML: {exc}") from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: dict[str, object], where: str = "the SLO file") -> Slo:
        # A misspelt error_grace must not quietly become 0 s (every error broken at once).
        unknown = set(data) - {"error_grace", "steps"}
        if unknown:
            raise SloError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        grace = data.get("error_grace", "0s")
        try:
            error_grace = parse_duration(str(grace))
        except SloError as exc:
            raise SloError(f"{where}: error_grace: {exc}") from None
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, dict) or not raw_steps:
            raise SloError(f"{where}: no [steps.<STATUS>] tables")
        steps: dict[OrderStatus, Step] = {}
        for name, entry in raw_steps.items():
            try:
                status = OrderStatus(name)
            except ValueError:
                known = ", ".join(s.value for s in OrderStatus if not s.terminal)
                raise SloError(f"{where}: [steps.{name}]: unknown status; one of {known}") from None
            if status.terminal:
                raise SloError(f"{where}: [steps.{name}]: a final status waits for nothing")
            if not isinstance(entry, dict):
                raise SloError(f"{where}: [steps.{name}] must be a table")
            unknown = set(entry) - {"within", "service", "queue", "then"}
            if unknown:
                keys = ", ".join(sorted(unknown))
                raise SloError(f"{where}: [steps.{name}]: unknown keys {keys}")
            if "within" not in entry or "service" not in entry:
                raise SloError(f"{where}: [steps.{name}] needs `within` and `service`")
            try:
                within = parse_duration(str(entry["within"]))
            except SloError as exc:
                raise SloError(f"{where}: [steps.{name}].within: {exc}") from None
            if within <= timedelta(0):
                raise SloError(f"{where}: [steps.{name}].within must be above zero")
            if not entry.get("queue") and not entry.get("then"):
                raise SloError(f"{where}: [steps.{name}] needs a `queue`, a `then`, or both")
            steps[status] = Step(
                status=status,
                within=within,
                service=str(entry["service"]),
                queue=str(entry["queue"]) if entry.get("queue") else None,
                then=str(entry["then"]) if entry.get("then") else None,
            )
        return cls(steps=steps, error_grace=error_grace)
