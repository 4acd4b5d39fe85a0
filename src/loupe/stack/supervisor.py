"""A group of processes started in order and stopped in reverse order, and the restart policy
that brings back one that dies while the rest keep running."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from loupe.stack.process import Process, StackError


class Stack:
    """Starts processes in the given order and stops them in reverse.

    Later processes depend on earlier ones (services export to Jaeger, actors call services),
    so reverse order lets each process shut down while what it talks to is still there.
    As a context manager it starts everything on entry and stops everything on exit.
    """

    def __init__(self, processes: Iterable[Process] = (), *, stop_timeout: float = 10.0) -> None:
        self._processes: list[Process] = []
        self.stop_timeout = stop_timeout
        for process in processes:
            self.add(process)

    def add(self, process: Process) -> Process:
        if any(p.name == process.name for p in self._processes):
            raise StackError(f"a process named {process.name!r} is already in the stack")
        self._processes.append(process)
        return process

    def __iter__(self) -> Iterator[Process]:
        return iter(list(self._processes))

    def __getitem__(self, name: str) -> Process:
        for process in self._processes:
            if process.name == name:
                return process
        known = ", ".join(p.name for p in self._processes) or "none"
        raise KeyError(f"no process named {name!r} in the stack (known: {known})")

    def start(self) -> None:
        """Start every process that is not running, in order, each waiting for readiness.

        If one fails, those already started are stopped again before the error propagates.
        """
        try:
            for process in self._processes:
                if not process.running:
                    process.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, on_stop: Callable[[Process], None] | None = None) -> list[str]:
        """Stop the running processes in reverse order; returns their names in that order."""
        stopped = []
        for process in reversed(self._processes):
            if process.running:
                if on_stop is not None:
                    on_stop(process)
                if process.drain is not None:
                    process.drain()
                process.stop(self.stop_timeout)
                stopped.append(process.name)
            else:
                # Reap an exited child so its process group is cleaned up as well.
                process.stop(self.stop_timeout)
        return stopped

    def start_process(self, name: str) -> Process:
        process = self[name]
        process.start()
        return process

    def stop_process(self, name: str) -> Process:
        process = self[name]
        process.stop(self.stop_timeout)
        return process

    def signal_process(self, name: str, signum: int) -> Process:
        process = self[name]
        process.signal(signum)
        return process

    def died(self) -> list[Process]:
        """Processes that exited without being asked to stop."""
        return [p for p in self._processes if p.died]

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class RestartPolicy:
    """Like a container orchestrator's `restartPolicy: Always` with back-off: a process that
    dies is started again after `first_delay` seconds, doubling with each death up to
    `max_delay`. One that dies more than `crash_loop_deaths` times within
    `crash_loop_window` seconds is crash-looping, and the supervisor gives up on it."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    crash_loop_deaths: int = 5
    crash_loop_window: float = 300.0

    def describe(self) -> str:
        return (
            f"restarted after {self.first_delay:g} s, doubling up to {self.max_delay:g} s; "
            f"given up after {self.crash_loop_deaths} deaths within "
            f"{self.crash_loop_window:g} s"
        )


class CrashLoop(StackError):
    def __init__(self, process: Process, deaths: int, policy: RestartPolicy) -> None:
        super().__init__(
            f"{process.name} died {deaths} times within {policy.crash_loop_window:g} s; "
            f"it is crash-looping, so everything stops (log: {process.log_path})"
        )
        self.process = process


@dataclass(frozen=True)
class Death:
    """A process exited unasked (or failed to come back); it is started again at `restart_at`."""

    process: Process
    problem: str
    restart_at: float
    delay: float


@dataclass(frozen=True)
class Restarted:
    process: Process
    restarts: int
    """How many times the supervisor has restarted this process so far."""


@dataclass
class Supervisor:
    """Watches a started stack; `tick` restarts what died, as `policy` says."""

    stack: Stack
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    restarts: dict[str, int] = field(default_factory=dict)
    _deaths: dict[str, list[float]] = field(default_factory=dict)
    _waiting: dict[str, Death] = field(default_factory=dict)

    def tick(self) -> list[Death | Restarted]:
        """Note the deaths since the last tick, restart those whose delay is over; the events,
        in order. Raises CrashLoop when a process dies too often."""
        events: list[Death | Restarted] = []
        for process in self.stack.died():
            if process.name not in self._waiting:
                events.append(self._died(process, f"exited with code {process.returncode}"))
        for name, death in list(self._waiting.items()):
            if self.clock() < death.restart_at:
                continue
            del self._waiting[name]
            process = death.process
            # Reaps the dead leader and whatever it left in its process group (a port holder).
            process.stop(self.stack.stop_timeout)
            try:
                process.start()
            except StackError as exc:
                events.append(self._died(process, f"did not come back: {exc}"))
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            events.append(Restarted(process, self.restarts[name]))
        return events

    def write_status(self, path: Path) -> None:
        """Each process's pid and restart count, as JSON, for scripts and the runbook."""
        status = {
            "policy": self.policy.describe(),
            "processes": {
                p.name: {
                    "pid": p.pid if p.running else None,
                    "restarts": self.restarts.get(p.name, 0),
                    "waiting_to_restart": p.name in self._waiting,
                }
                for p in self.stack
            },
        }
        # Replaced whole, never truncated in place: a reader never sees half a file.
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(status, indent=2) + "\n")
        partial.replace(path)

    def _died(self, process: Process, problem: str) -> Death:
        now = self.clock()
        recent = [
            t
            for t in self._deaths.get(process.name, [])
            if now - t <= self.policy.crash_loop_window
        ]
        recent.append(now)
        self._deaths[process.name] = recent
        if len(recent) > self.policy.crash_loop_deaths:
            raise CrashLoop(process, len(recent), self.policy)
        delay = min(self.policy.first_delay * 2 ** (len(recent) - 1), self.policy.max_delay)
        death = Death(process, problem, now + delay, delay)
        self._waiting[process.name] = death
        return death
