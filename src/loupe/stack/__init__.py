"""Process supervision for `loupe up` and the end-to-end tests.

A `Process` is one child (spec and handle), a `Stack` starts processes in order and stops them
in reverse; the factories build the processes loupe runs.
"""

from loupe.stack.components import (
    JAEGER_BINARY,
    STORAGES,
    JaegerPorts,
    Storage,
    actors_process,
    dex_process,
    gateway_process,
    jaeger_process,
    preflight,
    service_process,
    service_url,
)
from loupe.stack.process import DEFAULT_LOGS_DIR, Process, ProcessError, StackError, free_port
from loupe.stack.supervisor import Stack

__all__ = [
    "DEFAULT_LOGS_DIR",
    "JAEGER_BINARY",
    "STORAGES",
    "JaegerPorts",
    "Process",
    "ProcessError",
    "Stack",
    "StackError",
    "Storage",
    "actors_process",
    "dex_process",
    "free_port",
    "gateway_process",
    "jaeger_process",
    "preflight",
    "service_process",
    "service_url",
]
