"""The process supervisor, exercised with tiny real child processes."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from rich.console import Console

from loupe.config import REPO_ROOT, Settings
from loupe.monitor.settings import MonitorSettings
from loupe.stack import (
    JaegerPorts,
    Process,
    ProcessError,
    Stack,
    StackError,
    actors_process,
    free_port,
    jaeger_process,
    preflight,
    service_process,
    up,
)
from loupe.stack.components import (
    JAEGER_BASE_PATH,
    JAEGER_UI_ASSETS,
    JAEGER_UI_CONFIG,
    monitor_process,
)
from loupe.stack.gateway import GatewaySettings
from loupe.stack.process import port_open
from loupe.stack.sandbox import Sandbox

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


def test_jaeger_process_without_binary_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"make setup.*scripts/build-tools\.sh"):
        jaeger_process("memory", binary=tmp_path / "jaeger", logs_dir=tmp_path)


def fake_ui(root: Path) -> dict[str, Path]:
    """jaeger_process's `ui_assets` and `ui_config`, made under `root`: what setup would copy."""
    assets = root / "jaeger-ui"
    assets.mkdir()
    (assets / "index.html").write_text("<!doctype html>")
    config = root / "ui-config.json"
    config.write_text("{}")
    return {"ui_assets": assets, "ui_config": config}


def test_jaeger_process_passes_ports_and_badger_dir(tmp_path: Path) -> None:
    binary = tmp_path / "jaeger"
    binary.write_text("")
    ports = JaegerPorts(otlp_grpc=1, otlp_http=2, query=3, query_grpc=4, health=5, metrics=6)
    proc = jaeger_process(
        "badger", ports, tmp_path / "data", tmp_path / "logs", binary=binary, **fake_ui(tmp_path)
    )
    assert proc.argv[0] == str(binary)
    assert proc.argv[1] == "--config"
    assert proc.argv[2].endswith("deploy/jaeger/all-in-one-badger.yaml")
    assert Path(proc.argv[2]).is_file()
    assert proc.env is not None
    assert proc.env["LOUPE_JAEGER_OTLP_HTTP_PORT"] == "2"
    assert proc.env["LOUPE_JAEGER_QUERY_GRPC_PORT"] == "4"
    assert proc.env["LOUPE_JAEGER_BADGER_DIR"] == str((tmp_path / "data").resolve())
    assert proc.ready_urls == (
        "http://127.0.0.1:5/status",
        "http://127.0.0.1:3/jaeger/api/services",
    )
    assert sorted(proc.listens_on) == [1, 2, 3, 4, 5, 6]
    assert proc.log_path == tmp_path / "logs" / "jaeger.log"
    assert proc.env["LOUPE_JAEGER_UI_ASSETS"] == str(tmp_path / "jaeger-ui")
    assert proc.env["LOUPE_JAEGER_UI_CONFIG"] == str(tmp_path / "ui-config.json")
    with pytest.raises(StackError, match="unknown Jaeger storage"):
        jaeger_process("cassandra", binary=binary)  # type: ignore[arg-type]


def test_jaeger_process_without_ui_assets_says_how_to_fetch(tmp_path: Path) -> None:
    binary = tmp_path / "jaeger"
    binary.write_text("")
    ui = fake_ui(tmp_path)
    (ui["ui_assets"] / "index.html").unlink()
    with pytest.raises(StackError, match=r"Jaeger UI's assets are missing.*make setup"):
        jaeger_process("memory", binary=binary, logs_dir=tmp_path, **ui)
    (ui["ui_assets"] / "index.html").write_text("<!doctype html>")
    ui["ui_config"].unlink()
    with pytest.raises(StackError, match="Jaeger UI's config file is missing"):
        jaeger_process("memory", binary=binary, logs_dir=tmp_path, **ui)


def test_jaeger_process_makes_the_ui_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jaeger may start in any directory: relative paths would resolve against that one.
    binary = tmp_path / "jaeger"
    binary.write_text("")
    fake_ui(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOUPE_JAEGER_UI_ASSETS", "elsewhere")
    proc = jaeger_process(
        "memory",
        binary=binary,
        logs_dir=tmp_path,
        ui_assets=Path("jaeger-ui"),
        ui_config=Path("ui-config.json"),
    )
    assert proc.env is not None
    assert proc.env["LOUPE_JAEGER_UI_ASSETS"] == str(tmp_path.resolve() / "jaeger-ui")
    assert proc.env["LOUPE_JAEGER_UI_CONFIG"] == str(tmp_path.resolve() / "ui-config.json")


def test_jaeger_ports_from_env_and_free() -> None:
    ports = JaegerPorts.from_env(
        {"LOUPE_JAEGER_QUERY_PORT": "26686", "LOUPE_JAEGER_HEALTH_PORT": ""}
    )
    assert ports.query == 26686
    assert ports.health == 13133, "an empty variable means the default"
    with pytest.raises(StackError, match="LOUPE_JAEGER_METRICS_PORT must be a port number"):
        JaegerPorts.from_env({"LOUPE_JAEGER_METRICS_PORT": "lots"})
    free = JaegerPorts.pick_free()
    assert len(set(free.env().values())) == 6


def test_service_process_reads_url_and_defaults_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    proc = service_process("crm", {"LOUPE_CRM_URL": "http://127.0.0.1:9999/"})
    assert proc.argv == [sys.executable, "-m", "loupe", "serve", "crm"]
    assert proc.ready_urls == ("http://127.0.0.1:9999/healthz",)
    assert proc.listens_on == (9999,)
    assert proc.env is not None
    assert proc.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert proc.env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert proc.env["PATH"] == os.environ["PATH"]

    monkeypatch.delenv("LOUPE_MES_URL", raising=False)
    mes = service_process("mes", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert mes.ready_urls == ("http://127.0.0.1:8083/healthz",)
    assert mes.env is not None
    assert mes.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    with pytest.raises(StackError, match="unknown service 'erp'"):
        service_process("erp")


def test_actors_process_has_no_probe() -> None:
    proc = actors_process(rate=2.5)
    assert proc.argv == [sys.executable, "-m", "loupe", "actors", "--rate", "2.5"]
    assert proc.ready_urls == ()
    assert proc.ready_port is None
    assert proc.min_uptime == 1.0


def test_preflight_names_what_is_down_and_the_fix(tmp_path: Path) -> None:
    settings = Settings(
        amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/loupe",
        postgres_dsn=f"postgresql:///postgres?host={tmp_path}",
    )
    with pytest.raises(StackError) as caught:
        preflight(settings)
    message = str(caught.value)
    assert "RabbitMQ is not reachable" in message
    assert f"PostgreSQL is not reachable on {tmp_path}/.s.PGSQL.5432" in message
    assert "scripts/setup-infra.sh" in message


def test_preflight_passes_when_both_answer(tmp_path: Path) -> None:
    with socket.socket() as amqp, socket.socket(socket.AF_UNIX) as pg:
        amqp.bind(("127.0.0.1", 0))
        amqp.listen()
        pg.bind(str(tmp_path / ".s.PGSQL.5432"))
        pg.listen()
        port = amqp.getsockname()[1]
        preflight(
            Settings(
                amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/loupe",
                postgres_dsn=f"postgresql:///postgres?host={tmp_path}",
            )
        )


# ------------------------------------------------------------------ the monitor and its pipeline

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
JAEGER_DEPLOY = DEPLOY / "jaeger"
COLLECTOR_EXAMPLE = DEPLOY / "otel-collector" / "monitor.yaml"


def _yaml(path: Path) -> dict:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _merged(base: dict, overlay: dict) -> dict:
    """What the collector does with two --config files: maps merged, everything else replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _span_conditions(config: dict) -> list[str]:
    return config["processors"]["filter/monitor"]["traces"]["span"]


def test_jaeger_process_without_monitor_has_one_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOUPE_MONITOR_OTLP_ENDPOINT", raising=False)
    binary = tmp_path / "jaeger"
    binary.write_text("")
    proc = jaeger_process("memory", binary=binary, logs_dir=tmp_path, **fake_ui(tmp_path))
    assert proc.argv == [str(binary), "--config", str(JAEGER_DEPLOY / "all-in-one-memory.yaml")]
    assert proc.env is not None
    assert "LOUPE_MONITOR_OTLP_ENDPOINT" not in proc.env


def test_jaeger_process_with_monitor_adds_the_overlay(tmp_path: Path) -> None:
    binary = tmp_path / "jaeger"
    binary.write_text("")
    ui = fake_ui(tmp_path)
    proc = jaeger_process(
        "badger",
        data_dir=tmp_path / "data",
        logs_dir=tmp_path,
        binary=binary,
        monitor_endpoint="http://127.0.0.1:18091/",
        **ui,
    )
    assert proc.argv == [
        str(binary),
        "--config",
        str(JAEGER_DEPLOY / "all-in-one-badger.yaml"),
        # Second, so it is merged over the all-in-one file.
        "--config",
        str(JAEGER_DEPLOY / "monitor-pipeline.yaml"),
    ]
    assert Path(proc.argv[4]).is_file()
    assert proc.env is not None
    assert proc.env["LOUPE_MONITOR_OTLP_ENDPOINT"] == "http://127.0.0.1:18091"
    assert proc.env["LOUPE_JAEGER_BADGER_DIR"] == str((tmp_path / "data").resolve())
    with pytest.raises(StackError, match="OTLP endpoint is empty"):
        jaeger_process("memory", binary=binary, logs_dir=tmp_path, monitor_endpoint=" ", **ui)


@pytest.mark.parametrize("storage", ["badger", "memory"])
def test_jaeger_serves_the_ui_from_the_variables_jaeger_process_sets(storage: str) -> None:
    query = _yaml(JAEGER_DEPLOY / f"all-in-one-{storage}.yaml")["extensions"]["jaeger_query"]
    assert query["base_path"] == JAEGER_BASE_PATH
    assert query["ui"] == {
        "assets_path": "${env:LOUPE_JAEGER_UI_ASSETS:-.cache/jaeger-ui}",
        "config_file": "${env:LOUPE_JAEGER_UI_CONFIG:-deploy/jaeger/ui-config.json}",
    }
    # The defaults are the same places, relative to the repository root.
    assert REPO_ROOT / ".cache/jaeger-ui" == JAEGER_UI_ASSETS
    assert REPO_ROOT / "deploy/jaeger/ui-config.json" == JAEGER_UI_CONFIG
    assert JAEGER_UI_CONFIG.is_file()


@pytest.mark.parametrize("storage", ["badger", "memory"])
def test_monitor_overlay_adds_a_pipeline_and_keeps_storage_as_is(storage: str) -> None:
    base = _yaml(JAEGER_DEPLOY / f"all-in-one-{storage}.yaml")
    overlay = _yaml(JAEGER_DEPLOY / "monitor-pipeline.yaml")
    merged = _merged(base, overlay)

    assert merged["service"]["pipelines"]["traces"] == base["service"]["pipelines"]["traces"]
    assert merged["service"]["extensions"] == base["service"]["extensions"]
    assert merged["receivers"] == base["receivers"], "the overlay must not touch the receiver"
    assert set(overlay) == {"processors", "exporters", "service"}
    assert set(overlay["service"]) == {"pipelines"}
    monitor = merged["service"]["pipelines"]["traces/monitor"]
    assert monitor == {
        "receivers": ["otlp"],
        "processors": ["filter/monitor", "batch/monitor"],
        "exporters": ["otlphttp/monitor"],
    }
    for kind in ("processors", "exporters"):
        assert not set(overlay[kind]) & set(base[kind]), f"an overlay {kind} name clashes"

    assert _span_conditions(overlay) == [
        'attributes["order.id"] == nil and status.code != STATUS_CODE_ERROR'
    ]
    exporter = overlay["exporters"]["otlphttp/monitor"]
    assert exporter["endpoint"] == "${env:LOUPE_MONITOR_OTLP_ENDPOINT:-http://127.0.0.1:8091}"
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["sending_queue"]["block_on_overflow"] is False
    assert exporter["sending_queue"]["wait_for_result"] is False
    assert exporter["retry_on_failure"]["enabled"] is True
    assert exporter["compression"] == "none"


def test_collector_example_has_the_same_filter_as_jaeger() -> None:
    jaeger = _yaml(JAEGER_DEPLOY / "monitor-pipeline.yaml")
    collector = _yaml(COLLECTOR_EXAMPLE)
    assert _span_conditions(collector) == _span_conditions(jaeger)
    assert (
        collector["processors"]["filter/monitor"]["error_mode"]
        == jaeger["processors"]["filter/monitor"]["error_mode"]
    )
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "traces/monitor"}
    assert "filter/monitor" in pipelines["traces/monitor"]["processors"]
    assert "filter/monitor" not in pipelines["traces"]["processors"]
    assert pipelines["traces/monitor"]["exporters"] == ["otlphttp/monitor"]
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(collector[kind]), f"{kind} used but not defined"
    assert set(collector["service"]["extensions"]) <= set(collector["extensions"])


def test_monitor_process_reads_url_and_defaults_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    proc = monitor_process(
        {"LOUPE_MONITOR_URL": "http://127.0.0.1:18091/"},
        otlp_endpoint="http://127.0.0.1:14318",
        logs_dir=Path("/tmp/loupe-logs"),
    )
    assert proc.name == "monitor"
    assert proc.argv == [sys.executable, "-m", "loupe", "monitor"]
    assert proc.ready_urls == ("http://127.0.0.1:18091/healthz",)
    assert proc.listens_on == (18091,)
    assert proc.ready_timeout == 60.0
    assert proc.log_path == Path("/tmp/loupe-logs/monitor.log")
    assert proc.env is not None
    assert proc.env["LOUPE_MONITOR_URL"] == "http://127.0.0.1:18091/"
    assert proc.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:14318"
    assert proc.env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert proc.env["PATH"] == os.environ["PATH"]


def test_monitor_process_defaults_and_remote_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOUPE_MONITOR_URL", raising=False)
    proc = monitor_process()
    assert proc.ready_urls == ("http://127.0.0.1:8091/healthz",)
    assert proc.listens_on == (8091,)
    remote = monitor_process({"LOUPE_MONITOR_URL": "http://monitor.internal:9000"})
    assert remote.ready_urls == ("http://monitor.internal:9000/healthz",)
    assert remote.listens_on == ()


def test_sandbox_gives_the_monitor_its_own_port(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    env = sandbox.env
    assert env["LOUPE_MONITOR_URL"] == f"http://127.0.0.1:{sandbox.monitor_port}"
    assert env["LOUPE_MONITOR_URL"] == sandbox.monitor_url
    assert "monitor" not in sandbox.settings.service_urls, "the monitor is not a service"
    assert MonitorSettings.from_env(env).database == f"loupe_sandbox_{sandbox.name}_monitor"


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
