"""`loupe up`'s table of URLs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from loupe.stack import up
from loupe.stack.components import JaegerPorts
from loupe.stack.gateway import GatewaySettings


def test_up_table_shows_the_monitor(tmp_path: Path) -> None:
    gateway = GatewaySettings.from_env({})
    files = SimpleNamespace(audit_log=tmp_path / "audit.jsonl")
    table = up._urls(
        JaegerPorts(),
        "memory",
        tmp_path,
        gateway,
        files,  # type: ignore[arg-type]
        "http://127.0.0.1:18091",
    )
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    assert f"{gateway.url}/monitor/api/findings" in text
    assert "http://127.0.0.1:18091/metrics" in text
