"""The SLO files the benchmarks give the monitor: the demo file's steps (who acts next, where
the order waits) as they are, with deadlines of the benchmark's own."""

from __future__ import annotations

import json
from collections.abc import Mapping

from loupe.monitor.settings import DEMO_SLO_FILE
from loupe.monitor.slo import Slo


def slo_toml(within: str, error_grace: str, overrides: Mapping[str, str] | None = None) -> str:
    """The demo SLO file with every step due `within` (a status named in `overrides` when its
    own) and an error broken after `error_grace`, as TOML for `LOUPE_MONITOR_SLO_FILE`."""
    lines = [f"error_grace = {json.dumps(error_grace)}"]
    for status, step in Slo.load(DEMO_SLO_FILE).steps.items():
        due = (overrides or {}).get(status.value, within)
        lines += ["", f"[steps.{status.value}]", f"within = {json.dumps(due)}"]
        lines += [
            f"{key} = {json.dumps(value)}"
            for key, value in (
                ("service", step.service),
                ("queue", step.queue),
                ("then", step.then),
            )
            if value
        ]
    return "\n".join(lines) + "\n"
