"""One supervised child (loupe.stack.process), with tiny real Python children: what the child
is given, when it counts as ready, and how it is described when it is not. Stopping, process
groups, timeouts and Stack's order are in tests/stack/test_supervisor.py."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loupe.stack.process import Process, StackError, free_port, indent, port_open

Spawn = Callable[..., Process]

# Serves its working folder, and only after a moment writes the file the readiness URL asks
# for: until then the port is open but the answer is 404.
LATE_FILE = """
    import functools, http.server, pathlib, sys, threading, time
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=".")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(0.3)
    pathlib.Path("ready").write_text("ok")
    time.sleep(60)
"""


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Makes `python -c code *args` processes logging under tmp_path; all stopped at the end."""
    made: list[Process] = []

    def make(name: str, code: str, *args: str, **spec: Any) -> Process:
        argv = [sys.executable, "-c", textwrap.dedent(code), *args]
        made.append(Process(name=name, argv=argv, logs_dir=tmp_path, **spec))
        return made[-1]

    yield make
    for process in made:
        process.stop()


def test_the_child_gets_exactly_its_environment_and_a_fresh_log(
    spawn: Spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOUPE_STRAY", "the runner's")
    (tmp_path / "env.log").write_text("from an earlier run\n")
    code = """
        import os, time
        print("seen:", os.environ.get("LOUPE_ONLY"), os.environ.get("LOUPE_STRAY"), flush=True)
        time.sleep(60)
    """
    process = spawn("env", code, env={"LOUPE_ONLY": "given"}, min_uptime=0.3)
    process.start()
    deadline = time.monotonic() + 5
    while not any(line.startswith("seen:") for line in process.log_tail()):
        assert time.monotonic() < deadline, process.log_tail()
        time.sleep(0.05)
    # Not merged with ours: a stray variable of the test runner cannot change the child.
    assert "seen: given None" in process.log_tail()
    assert "from an earlier run" not in (tmp_path / "env.log").read_text()
    assert (tmp_path / "env.previous.log").read_text() == "from an earlier run\n", "kept beside"


def test_an_open_port_answering_404_is_not_ready_yet(spawn: Spawn, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/ready"
    process = spawn("late", LATE_FILE, str(port), cwd=site, ready_urls=(url,), ready_timeout=15)
    process.start()
    assert (site / "ready").exists(), "start() returned before the URL answered 200"
    assert process.running and not process.died


def test_a_child_that_exits_on_its_own_has_died(spawn: Spawn) -> None:
    process = spawn("brief", "import time; time.sleep(0.6)", min_uptime=0.1)
    process.start()
    deadline = time.monotonic() + 5
    while process.running:
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    assert (process.died, process.returncode) == (True, 0)


def test_a_process_never_started_can_be_stopped_but_not_signalled(spawn: Spawn) -> None:
    process = spawn("idle", "pass")
    process.stop()  # nothing to do: no error
    assert (process.pid, process.returncode, process.running, process.died) == (
        None,
        None,
        False,
        False,
    )
    assert process.log_tail() == []
    with pytest.raises(StackError, match="idle is not running"):
        process.signal(0)


@pytest.mark.parametrize(
    ("spec", "described"),
    [
        ({}, "up for 1 s"),
        ({"min_uptime": 0.5}, "up for 0.5 s"),
        ({"ready_port": 5}, "TCP 127.0.0.1:5"),
        ({"ready_urls": ("http://a/h", "http://b/h"), "ready_port": 5},
         "GET http://a/h -> 200, GET http://b/h -> 200, TCP 127.0.0.1:5"),
    ],
)  # fmt: skip
def test_readiness_is_described_as_what_is_checked(spec: dict[str, Any], described: str) -> None:
    assert Process(name="p", argv=["true"], **spec).readiness == described


def test_an_empty_log_tail_says_so() -> None:
    assert indent([]) == "  | (the log is empty)"
    assert indent(["a", "b"]) == "  | a\n  | b"


def test_a_free_port_is_closed_until_someone_listens() -> None:
    port = free_port()
    assert not port_open("127.0.0.1", port, timeout=0.2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert port_open("127.0.0.1", port)
