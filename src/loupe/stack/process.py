"""One supervised child process: how to start it, how to tell it is ready, how to stop it."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

DEFAULT_LOGS_DIR = Path(".data/logs")
TAIL_LINES = 20


class StackError(RuntimeError):
    """Something the user has to fix before the stack can run; the message says what."""


class ProcessError(StackError):
    """A child process failed to become ready or died; the message carries its log tail."""

    def __init__(self, process: Process, problem: str) -> None:
        self.process = process
        self.problem = problem
        self.tail = process.log_tail()
        super().__init__(
            f"{process.name} {problem} (log: {process.log_path}). "
            f"Last {TAIL_LINES} lines of the log:\n{indent(self.tail)}"
        )


def indent(lines: Sequence[str]) -> str:
    return "\n".join(f"  | {line}" for line in lines) if lines else "  | (the log is empty)"


@dataclass(eq=False)
class Process:
    """A child process spec that is also its handle once started.

    Readiness is every `ready_urls` answering 200 and `ready_port` accepting TCP connections on
    127.0.0.1; with neither, the process is ready once it has stayed up for `min_uptime`.
    `env` is the child's complete environment (None inherits ours). `listens_on` names the
    127.0.0.1 ports the process will bind: start() refuses when one is taken, because a stale
    process on that port would otherwise answer the readiness probe in its place.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    ready_urls: Sequence[str] = ()
    ready_port: int | None = None
    listens_on: Sequence[int] = ()
    ready_timeout: float = 30.0
    min_uptime: float = 1.0
    logs_dir: Path = DEFAULT_LOGS_DIR
    cwd: Path | None = None
    drain: Callable[[], object] | None = None
    """Called before a stack stops the process, to let it hand on what it still holds."""

    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _starts: int = field(default=0, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.logs_dir / f"{self.name}.log"

    @property
    def previous_log_path(self) -> Path:
        return self.logs_dir / f"{self.name}.previous.log"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def died(self) -> bool:
        """True when the process exited without being asked to stop."""
        return self._popen is not None and not self._stopping and self._popen.poll() is not None

    def start(self) -> None:
        """Start the process and block until it is ready; on failure it is stopped again."""
        if self.running:
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        taken = [port for port in self.listens_on if port_open("127.0.0.1", port, timeout=0.2)]
        if taken:
            ports = ", ".join(map(str, taken))
            raise StackError(
                f"cannot start {self.name}: 127.0.0.1 port {ports} is already in use, probably by "
                f"a {self.name} left running; `ss -ltnp` shows which process holds it"
            )
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        # The first start of a run begins a new log and keeps the last run's beside it (what
        # happened before a restart of the whole stack is what a post-mortem needs); restarts
        # within a run append.
        if not self._starts and self.log_path.exists():
            self.log_path.replace(self.previous_log_path)
        mode = "ab" if self._starts else "wb"
        with self.log_path.open(mode) as log:
            stamp = datetime.now().isoformat(timespec="seconds")
            log.write(f"==> {stamp} starting: {shlex.join(self.argv)}\n".encode())
            log.flush()
            try:
                # A session of its own keeps the terminal's Ctrl-C away from the child, so the
                # stack decides the stop order, and lets stop() signal the child's children too.
                self._popen = subprocess.Popen(
                    list(self.argv),
                    env=dict(self.env) if self.env is not None else None,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        self._starts += 1
        self._stopping = False
        try:
            self._wait_ready()
        except BaseException:
            # Also on Ctrl-C during the wait: a child that never became ready must not linger.
            self.stop()
            raise

    def _wait_ready(self) -> None:
        started = time.monotonic()
        deadline = started + self.ready_timeout
        probes = bool(self.ready_urls) or self.ready_port is not None
        # trust_env=False: an HTTP(S)_PROXY in the environment must not route loopback probes.
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                code = self.returncode
                if code is not None:
                    raise ProcessError(self, f"exited with code {code} before it was ready")
                now = time.monotonic()
                if probes and self._probe(client):
                    return
                if not probes and now - started >= self.min_uptime:
                    return
                if now >= deadline:
                    raise ProcessError(
                        self, f"was not ready after {self.ready_timeout:g} s ({self.readiness})"
                    )
                time.sleep(0.1)

    @property
    def readiness(self) -> str:
        checks = [f"GET {url} -> 200" for url in self.ready_urls]
        if self.ready_port is not None:
            checks.append(f"TCP 127.0.0.1:{self.ready_port}")
        return ", ".join(checks) or f"up for {self.min_uptime:g} s"

    def _probe(self, client: httpx.Client) -> bool:
        if self.ready_port is not None and not port_open("127.0.0.1", self.ready_port):
            return False
        for url in self.ready_urls:
            try:
                if client.get(url).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return True

    def signal(self, signum: int) -> None:
        """Send `signum` to the process group (e.g. SIGSTOP/SIGCONT to simulate a hang)."""
        if not self.running or self._popen is None:
            raise StackError(f"{self.name} is not running")
        os.killpg(self._popen.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after `timeout` seconds; idempotent."""
        popen = self._popen
        if popen is None:
            return
        self._stopping = True
        if popen.poll() is None:
            pgid = popen.pid
            _killpg(pgid, signal.SIGTERM)
            # A stopped (SIGSTOP) process only acts on SIGTERM once it runs again.
            _killpg(pgid, signal.SIGCONT)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(pgid, signal.SIGKILL)
                popen.wait()
        # Whatever the leader left behind in its group (workers, shells) goes with it.
        _killpg(popen.pid, signal.SIGKILL)

    def log_tail(self, lines: int = TAIL_LINES) -> list[str]:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return text.splitlines()[-lines:]


def _killpg(pgid: int, signum: int) -> None:
    # ProcessLookupError: the group is already gone, so there is nothing left to signal.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS may hand it out again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
