"""The process supervisor, exercised with tiny real child processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from loupe.stack.process import Process, ProcessError, StackError, free_port, port_open
from loupe.stack.supervisor import CrashLoop, Death, Restarted, RestartPolicy, Stack, Supervisor

# Installs a SIGTERM handler that records the process's name, then listens on a port so the
# supervisor only considers it ready once the handler is in place.
RECORDER = textwrap.dedent(
    """
    import signal, socket, sys, time
    name, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    def on_term(signum, frame):
        with open(record, "a") as f:
            f.write(name + "\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen()
    print(name, "listening", flush=True)
    while True:
        time.sleep(0.05)
    """
)


def http_server(name: str, logs_dir: Path) -> Process:
    port = free_port()
    return Process(
        name=name,
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        ready_urls=(f"http://127.0.0.1:{port}/",),
        ready_timeout=15,
        logs_dir=logs_dir,
    )


def recorder(name: str, record: Path, logs_dir: Path) -> Process:
    port = free_port()
    return Process(
        name=name,
        argv=[sys.executable, "-c", RECORDER, name, str(port), str(record)],
        ready_port=port,
        ready_timeout=15,
        logs_dir=logs_dir,
    )


def python(name: str, code: str, logs_dir: Path, **kwargs: object) -> Process:
    return Process(
        name=name,
        argv=[sys.executable, "-c", textwrap.dedent(code)],
        logs_dir=logs_dir,
        **kwargs,  # type: ignore[arg-type]
    )


def pid_alive(pid: int) -> bool:
    # A zombie still has a pid; only a process that is not dead counts.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_http_readiness_then_stop(tmp_path: Path) -> None:
    server = http_server("web", tmp_path)
    server.start()
    try:
        assert server.running
        assert httpx.get(server.ready_urls[0], trust_env=False).status_code == 200
    finally:
        server.stop()
    assert not server.running
    assert server.returncode is not None
    assert not server.died, "a process we stopped must not count as died"
    assert (tmp_path / "web.log").read_text().startswith("==> ")


def test_tcp_readiness(tmp_path: Path) -> None:
    proc = recorder("listener", tmp_path / "record", tmp_path)
    proc.start()
    try:
        assert proc.ready_port is not None
        assert port_open("127.0.0.1", proc.ready_port)
    finally:
        proc.stop()
    assert not port_open("127.0.0.1", proc.ready_port)


def test_early_exit_names_log_and_shows_tail(tmp_path: Path) -> None:
    code = """
        import sys
        for i in range(30):
            print(f"line {i}")
        print("boom: config is broken", flush=True)
        sys.exit(3)
    """
    proc = python("broken", code, tmp_path, ready_urls=(f"http://127.0.0.1:{free_port()}/",))
    with pytest.raises(ProcessError) as caught:
        proc.start()
    message = str(caught.value)
    assert "broken exited with code 3 before it was ready" in message
    assert str(tmp_path / "broken.log") in message
    assert "boom: config is broken" in message
    # Only the tail: the first lines of the log are left out, the last 20 are in.
    assert "line 10\n" not in message + "\n"
    assert "line 11" in message
    assert len(caught.value.tail) == 20


def test_readiness_timeout_stops_the_child(tmp_path: Path) -> None:
    proc = python(
        "sleeper",
        "import time; print('never listening', flush=True); time.sleep(60)",
        tmp_path,
        ready_port=free_port(),
        ready_timeout=1.0,
    )
    with pytest.raises(ProcessError, match=r"sleeper was not ready after 1 s") as caught:
        proc.start()
    assert "never listening" in str(caught.value)
    assert proc.pid is not None
    assert not pid_alive(proc.pid)


def test_no_probe_means_ready_after_min_uptime(tmp_path: Path) -> None:
    proc = python("idle", "import time; time.sleep(60)", tmp_path, min_uptime=0.5)
    began = time.monotonic()
    proc.start()
    try:
        assert time.monotonic() - began >= 0.5
        assert proc.running
    finally:
        proc.stop()


def test_exit_within_min_uptime_is_an_error(tmp_path: Path) -> None:
    proc = python("quitter", "print('bye')", tmp_path, min_uptime=2.0)
    with pytest.raises(ProcessError, match="quitter exited with code 0 before it was ready"):
        proc.start()


def test_stack_stops_in_reverse_order(tmp_path: Path) -> None:
    record = tmp_path / "record"
    names = ["first", "second", "third"]
    stack = Stack(recorder(n, record, tmp_path) for n in names)
    with stack:
        assert all(p.running for p in stack)
        assert not record.exists()
    assert record.read_text().split() == ["third", "second", "first"]
    assert not any(p.running for p in stack)


def test_stack_stop_returns_names_in_stop_order(tmp_path: Path) -> None:
    record = tmp_path / "record"
    stack = Stack(recorder(n, record, tmp_path) for n in ("a", "b"))
    stack.start()
    seen: list[str] = []
    assert stack.stop(lambda p: seen.append(p.name)) == ["b", "a"]
    assert seen == ["b", "a"]
    assert stack.stop() == []


def test_failed_start_stops_what_already_started(tmp_path: Path) -> None:
    record = tmp_path / "record"
    good = recorder("good", record, tmp_path)
    bad = python("bad", "raise SystemExit(2)", tmp_path, ready_port=free_port())
    never = recorder("never", record, tmp_path)
    stack = Stack([good, bad, never])
    with pytest.raises(ProcessError, match="bad exited with code 2"), stack:
        pytest.fail("the stack must not be entered")
    assert record.read_text().split() == ["good"]
    assert not good.running
    assert never.pid is None, "processes after the failing one must not start"


def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path) -> None:
    port = free_port()
    code = f"""
        import signal, socket, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen()
        while True:
            time.sleep(1)
    """
    proc = python("stubborn", code, tmp_path, ready_port=port)
    proc.start()
    began = time.monotonic()
    proc.stop(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - began < 5


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """
    proc = python("parent", code, tmp_path, min_uptime=0.5)
    proc.start()
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert pid_alive(grandchild)
    proc.stop()
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)


def test_signal_stop_and_restart_by_name(tmp_path: Path) -> None:
    record = tmp_path / "record"
    with Stack([recorder("jaeger", record, tmp_path), http_server("shop", tmp_path)]) as stack:
        shop = stack["shop"]
        assert shop.pid is not None
        stack.signal_process("shop", signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while proc_state(shop.pid) != "T":
            assert time.monotonic() < deadline, "SIGSTOP did not stop the process"
            time.sleep(0.05)
        stack.signal_process("shop", signal.SIGCONT)
        while proc_state(shop.pid) == "T":
            assert time.monotonic() < deadline, "SIGCONT did not resume the process"
            time.sleep(0.05)

        first_pid = stack["jaeger"].pid
        stack.stop_process("jaeger")
        assert record.read_text().split() == ["jaeger"]
        assert not stack["jaeger"].running
        assert stack.died() == [], "a process stopped by name did not die"
        stack.start_process("jaeger")
        assert stack["jaeger"].running
        assert stack["jaeger"].pid != first_pid
    # The restart appended to the log instead of replacing it.
    assert (tmp_path / "jaeger.log").read_text().count("==> ") == 2


def test_stack_reports_a_child_that_died(tmp_path: Path) -> None:
    with Stack([http_server("web", tmp_path), http_server("api", tmp_path)]) as stack:
        assert stack.died() == []
        pid = stack["api"].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not stack.died():
            assert time.monotonic() < deadline, "the killed child was not noticed"
            time.sleep(0.05)
        assert [p.name for p in stack.died()] == ["api"]
        assert stack["api"].returncode == -signal.SIGKILL


def test_stack_rejects_duplicate_and_unknown_names(tmp_path: Path) -> None:
    stack = Stack([python("a", "pass", tmp_path)])
    with pytest.raises(StackError, match="already in the stack"):
        stack.add(python("a", "pass", tmp_path))
    with pytest.raises(KeyError, match="no process named 'b'"):
        stack["b"]


def test_start_twice_is_refused(tmp_path: Path) -> None:
    server = http_server("web", tmp_path)
    server.start()
    try:
        with pytest.raises(StackError, match="web is already running"):
            server.start()
    finally:
        server.stop()


def test_port_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        proc = python("jaeger", "pass", tmp_path, ready_port=port, listens_on=(port,))
        with pytest.raises(StackError, match=f"cannot start jaeger: 127.0.0.1 port {port} is"):
            proc.start()
    assert proc.pid is None, "nothing may be started while the port is taken"


def test_missing_executable_is_a_clear_error(tmp_path: Path) -> None:
    proc = Process(name="ghost", argv=[str(tmp_path / "no-such-binary")], logs_dir=tmp_path)
    with pytest.raises(StackError, match="cannot start ghost"):
        proc.start()


# -- restarts -----------------------------------------------------------------------------------
class Clock:
    """The supervisor's clock, moved by the test: back-off is checked without waiting it out."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _kill_and_notice(stack: Stack, name: str) -> None:
    pid = stack[name].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not stack[name].died:
        assert time.monotonic() < deadline, "the killed child was not noticed"
        time.sleep(0.02)


def test_a_dead_process_is_restarted_after_its_back_off_and_the_rest_keep_running(
    tmp_path: Path,
) -> None:
    clock = Clock()
    policy = RestartPolicy(first_delay=2, max_delay=5, crash_loop_deaths=10)
    with Stack([http_server("web", tmp_path), http_server("api", tmp_path)]) as stack:
        supervisor = Supervisor(stack, policy, clock)
        web_pid, api_pid = stack["web"].pid, stack["api"].pid
        delays = []
        for restart in (1, 2, 3):
            _kill_and_notice(stack, "api")
            (death,) = supervisor.tick()
            assert isinstance(death, Death) and death.problem == "exited with code -9"
            delays.append(death.delay)
            assert supervisor.tick() == [], "not before its delay"
            clock.now += death.delay
            (back,) = supervisor.tick()
            assert isinstance(back, Restarted) and back.restarts == restart
            assert stack["api"].running and stack["api"].pid != api_pid
        assert delays == [2, 4, 5], "doubling, capped at max_delay"
        assert stack["web"].pid == web_pid and stack["web"].running

        status = tmp_path / "supervisor.json"
        supervisor.write_status(status)
        written = json.loads(status.read_text())["processes"]
        assert written["api"]["restarts"] == 3 and written["web"]["restarts"] == 0
        assert written["api"]["pid"] == stack["api"].pid


@pytest.mark.parametrize(("pause", "crash_loop"), [(0.0, True), (61.0, False)])
def test_only_deaths_within_the_window_make_a_crash_loop(
    tmp_path: Path, pause: float, crash_loop: bool
) -> None:
    clock = Clock()
    policy = RestartPolicy(first_delay=1, crash_loop_deaths=2, crash_loop_window=60)
    with Stack([http_server("api", tmp_path)]) as stack:
        supervisor = Supervisor(stack, policy, clock)
        for _ in range(2):
            _kill_and_notice(stack, "api")
            (death,) = supervisor.tick()
            clock.now += death.delay + pause
            supervisor.tick()
        _kill_and_notice(stack, "api")
        if crash_loop:
            with pytest.raises(CrashLoop, match="api died 3 times within 60 s"):
                supervisor.tick()
            return
        (death,) = supervisor.tick()
        assert isinstance(death, Death) and supervisor.restarts["api"] == 2
        assert death.delay == 1, "back-off starts again once the old deaths have aged out"


def test_a_process_is_drained_before_the_stack_stops_it(tmp_path: Path) -> None:
    seen: list[tuple[str, bool]] = []
    web = http_server("web", tmp_path)
    web.drain = lambda: seen.append(("drained", web.running))
    with Stack([web]):
        assert seen == []
    assert seen == [("drained", True)], "drained once, while it still ran"
