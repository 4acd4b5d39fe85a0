"""The faults the drills inject, each as a person would cause it on this machine: RabbitMQ and
PostgreSQL through their own control tools, processes through signals.

RabbitMQ and PostgreSQL are shared with anything else running here (`make run`, other tests):
a drill stops them for everyone, which is why `make drills` runs on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from loupe.config import SERVICES
from loupe.drills.stack import LoupeUp

# RabbitMQ's default, which scripts/setup-infra.sh leaves as it is.
MEMORY_WATERMARK = "0.4"
POSTGRES_CLUSTER = ("15", "main")


@dataclass(frozen=True)
class Fault:
    name: str
    """As the report shows it."""
    inject: Callable[[LoupeUp], None]
    """Causes the fault and returns once it has run its course (or is undone)."""
    broker_only: bool = False
    """Only RabbitMQ is affected: customers must not see a single 5xx."""
    blinds_monitor: bool = False
    """Spans stop reaching the monitor while everything else works: it must say it is blind
    (a telemetry gap) and report no order stuck."""


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout}")


def rabbitmq_stopped(seconds: float) -> Callable[[LoupeUp], None]:
    def inject(_: LoupeUp) -> None:
        _run("rabbitmqctl", "-q", "stop_app")
        try:
            time.sleep(seconds)
        finally:
            _run("rabbitmqctl", "-q", "start_app")
            _run("rabbitmqctl", "-q", "await_startup")

    return inject


def rabbitmq_memory_alarm(seconds: float) -> Callable[[LoupeUp], None]:
    # A watermark of 0 raises the memory alarm at once: RabbitMQ blocks every publishing
    # connection while consumers go on.
    def inject(_: LoupeUp) -> None:
        _run("rabbitmqctl", "-q", "set_vm_memory_high_watermark", "0")
        try:
            time.sleep(seconds)
        finally:
            _run("rabbitmqctl", "-q", "set_vm_memory_high_watermark", MEMORY_WATERMARK)

    return inject


def postgres_restarted(_: LoupeUp) -> None:
    _run("pg_ctlcluster", "--skip-systemctl-redirect", *POSTGRES_CLUSTER, "restart")


def killed(name: str) -> Callable[[LoupeUp], None]:
    """`kill -9` of one process; done once the supervisor has it running again."""

    def inject(loupe: LoupeUp) -> None:
        pid = loupe.pid(name)
        os.kill(pid, signal.SIGKILL)
        loupe.wait_restarted(name, pid)

    return inject


def frozen(name: str, seconds: float) -> Callable[[LoupeUp], None]:
    """SIGSTOP for `seconds`, then SIGCONT: the process neither answers nor dies, as a hung
    or paused process does."""

    def inject(loupe: LoupeUp) -> None:
        # The whole process group: the supervisor starts each process as a group leader.
        group = loupe.pid(name)
        os.killpg(group, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.killpg(group, signal.SIGCONT)

    return inject


def whole_stack_restarted(loupe: LoupeUp) -> None:
    loupe.stop()
    loupe.start()


def all_faults(broker_seconds: float = 20.0, frozen_seconds: float = 60.0) -> list[Fault]:
    """The drills of the reliability issue, in the order they run."""
    return [
        Fault(f"RabbitMQ stopped {broker_seconds:g} s", rabbitmq_stopped(broker_seconds), True),
        Fault(
            f"RabbitMQ memory alarm {broker_seconds:g} s",
            rabbitmq_memory_alarm(broker_seconds),
            True,
        ),
        Fault("PostgreSQL restarted", postgres_restarted),
        *(Fault(f"kill -9 {name}", killed(name)) for name in SERVICES),
        Fault("kill -9 monitor", killed("monitor")),
        Fault(
            f"Jaeger frozen {frozen_seconds:g} s",
            frozen("jaeger", frozen_seconds),
            blinds_monitor=True,
        ),
        Fault(f"monitor frozen {frozen_seconds:g} s", frozen("monitor", frozen_seconds)),
        Fault("whole stack Ctrl-C, started again", whole_stack_restarted),
    ]
