"""A group of processes started in order and stopped in reverse order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
