"""`loupe up` itself, run for the drills in a sandbox of its own (vhost, databases, ports, data
folder): started, read through its supervisor's status file, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from loupe.config import SERVICES
from loupe.stack.components import JaegerPorts
from loupe.stack.process import free_port
from loupe.stack.sandbox import Sandbox

START_TIMEOUT = 240.0
STOP_TIMEOUT = 120.0


@dataclass
class LoupeUp:
    """One `loupe up --storage memory` with the actors at their default rate."""

    sandbox: Sandbox
    slo_file: Path
    jaeger: JaegerPorts = field(default_factory=JaegerPorts.pick_free)
    _child: subprocess.Popen[bytes] | None = None
    _starts: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.sandbox.env,
            **self.jaeger.env(),
            "LOUPE_GATEWAY_ADDRESS": f"127.0.0.1:{self._gateway_port}",
            "LOUPE_DEX_PORT": str(self._dex_port),
            "LOUPE_PORTAL_URL": f"http://127.0.0.1:{self._portal_port}",
            "LOUPE_MONITOR_SLO_FILE": str(self.slo_file),
        }

    def __post_init__(self) -> None:
        self._gateway_port, self._dex_port, self._portal_port = (free_port() for _ in range(3))

    @property
    def log_path(self) -> Path:
        return self.sandbox.root / "loupe-up.log"

    @property
    def status_file(self) -> Path:
        return self.sandbox.root / "data" / "supervisor.json"

    def start(self) -> None:
        """Start `loupe up` and wait until every process it runs is up and every service
        answers its health check."""
        self.status_file.unlink(missing_ok=True)
        mode = "ab" if self._starts else "wb"
        with self.log_path.open(mode) as log:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "loupe", "up", "--storage", "memory"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.status_file.exists() and self.services_healthy()):
            if self._child.poll() is not None:
                raise RuntimeError(f"loupe up exited with {self._child.returncode}; {self._tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"loupe up was not ready in {START_TIMEOUT:g} s; {self._tail()}")
            time.sleep(0.5)

    def services_healthy(self) -> bool:
        try:
            return all(
                httpx.get(f"{self.sandbox.settings.service_urls[s]}/healthz", timeout=2).is_success
                for s in SERVICES
            )
        except httpx.HTTPError:
            return False

    def stop(self) -> float:
        """Ctrl-C, as a person would; the seconds `loupe up` took to stop everything."""
        if self._child is None or self._child.poll() is not None:
            return 0.0
        began = time.monotonic()
        self._child.send_signal(signal.SIGINT)
        try:
            self._child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self._child.pid, signal.SIGKILL)
            self._child.wait()
            raise RuntimeError(f"loupe up did not stop in {STOP_TIMEOUT:g} s") from None
        return time.monotonic() - began

    def status(self) -> dict[str, dict[str, object]]:
        """The supervisor's view: each process's pid and restart count."""
        processes: dict[str, dict[str, object]] = json.loads(self.status_file.read_text())[
            "processes"
        ]
        return processes

    def pid(self, name: str) -> int:
        pid = self.status()[name]["pid"]
        if not isinstance(pid, int):
            raise RuntimeError(f"{name} is not running")
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 90.0) -> float:
        """Seconds until the supervisor reports `name` running again under a new pid."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            pid = self.status().get(name, {}).get("pid")
            if isinstance(pid, int) and pid != old_pid:
                return time.monotonic() - began
            time.sleep(0.2)
        raise RuntimeError(f"{name} was not restarted within {timeout:g} s; {self._tail()}")

    def _tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"log {self.log_path}:\n" + "\n".join(text)
