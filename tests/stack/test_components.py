"""Each component's Process as loupe.stack.components builds it (Jaeger, its deploy configs and
the monitor's pipeline, the services, the actors), and the preflight check; nothing started."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from loupe.config import REPO_ROOT, Settings
from loupe.monitor.settings import MONITOR_INTAKE_TOKEN
from loupe.stack import components
from loupe.stack.components import (
    JAEGER_BASE_PATH,
    JAEGER_UI_ASSETS,
    JAEGER_UI_CONFIG,
    JaegerPorts,
    actors_process,
    jaeger_process,
    monitor_process,
    preflight,
    service_process,
)
from loupe.stack.process import StackError, free_port
from loupe.telemetry.attributes import HEARTBEAT


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
    assert proc.ready_urls == ("http://127.0.0.1:9999/readyz",)
    assert proc.listens_on == (9999,)
    assert proc.env is not None
    assert proc.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert proc.env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert proc.env["PATH"] == os.environ["PATH"]

    monkeypatch.delenv("LOUPE_MES_URL", raising=False)
    mes = service_process("mes", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert mes.ready_urls == ("http://127.0.0.1:8083/readyz",)
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


@contextlib.contextmanager
def _both_listening(tmp_path: Path) -> Iterator[int]:
    """A port standing in for RabbitMQ, and a Unix socket in `tmp_path` for PostgreSQL."""
    with socket.socket() as amqp, socket.socket(socket.AF_UNIX) as pg:
        amqp.bind(("127.0.0.1", 0))
        amqp.listen()
        pg.bind(str(tmp_path / ".s.PGSQL.5432"))
        pg.listen()
        yield amqp.getsockname()[1]


def test_preflight_passes_when_both_answer(tmp_path: Path) -> None:
    with _both_listening(tmp_path) as port:
        preflight(
            Settings(
                amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/loupe",
                postgres_dsn=f"postgresql://me@/postgres?host={tmp_path}",
            )
        )


def test_preflight_asks_for_the_set_up_when_accounts_have_no_password(tmp_path: Path) -> None:
    with _both_listening(tmp_path) as port:
        settings = Settings(
            amqp_url=f"amqp://127.0.0.1:{port}/loupe",
            postgres_dsn=f"postgresql:///postgres?host={tmp_path}",
            secrets_dir=tmp_path / "secrets",
        )
        with pytest.raises(StackError, match=r"10 account password\(s\) missing.*make setup"):
            preflight(settings)
        for path in settings.password_files():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("made by the set-up")
        preflight(settings)


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
        monitor_token="the-token",
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
    # In Jaeger's environment, which the overlay's `headers` read: in no file.
    assert proc.env[MONITOR_INTAKE_TOKEN.name] == "the-token"
    assert proc.env["LOUPE_JAEGER_BADGER_DIR"] == str((tmp_path / "data").resolve())
    with pytest.raises(StackError, match="OTLP endpoint is empty"):
        jaeger_process(
            "memory",
            binary=binary,
            logs_dir=tmp_path,
            monitor_endpoint=" ",
            monitor_token="t",
            **ui,
        )
    with pytest.raises(StackError, match="only with its intake token"):
        jaeger_process(
            "memory", binary=binary, logs_dir=tmp_path, monitor_endpoint="http://m", **ui
        )


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
        f' and name != "{HEARTBEAT}"'
    ]
    # The heartbeats go to the monitor only: the storage pipeline drops them.
    storage = merged["service"]["pipelines"]["traces"]
    assert storage["processors"][0] == "filter/heartbeat"
    assert merged["processors"]["filter/heartbeat"]["traces"]["span"] == [f'name == "{HEARTBEAT}"']
    exporter = overlay["exporters"]["otlphttp/monitor"]
    assert exporter["endpoint"] == "${env:LOUPE_MONITOR_OTLP_ENDPOINT:-http://127.0.0.1:8091}"
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["sending_queue"]["block_on_overflow"] is False
    assert exporter["sending_queue"]["wait_for_result"] is False
    # In order: the monitor reads a service's latest span as how far it has heard from it.
    assert exporter["sending_queue"]["num_consumers"] == 1
    assert exporter["retry_on_failure"]["enabled"] is True
    assert exporter["compression"] == "none"
    assert exporter["headers"] == {"Authorization": INTAKE_AUTHORIZATION}


# The header both collector configurations send the monitor: the token from the environment.
INTAKE_AUTHORIZATION = f"Bearer ${{env:{MONITOR_INTAKE_TOKEN.name}}}"


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
    assert "filter/heartbeat" in pipelines["traces"]["processors"]
    assert (
        collector["processors"]["filter/heartbeat"]
        == _yaml(JAEGER_DEPLOY / "all-in-one-memory.yaml")["processors"]["filter/heartbeat"]
    )
    assert pipelines["traces/monitor"]["exporters"] == ["otlphttp/monitor"]
    headers = collector["exporters"]["otlphttp/monitor"]["headers"]
    assert headers == jaeger["exporters"]["otlphttp/monitor"]["headers"]
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


def test_the_forwarding_queue_is_read_from_jaegers_metrics() -> None:
    metrics = (
        "# TYPE otelcol_exporter_queue_size gauge\n"
        'otelcol_exporter_queue_size{data_type="traces",exporter="jaeger_storage"} 9\n'
        'otelcol_exporter_queue_size{data_type="traces",exporter="otlphttp/monitor"} 3\n'
    )
    assert components._forwarding_queue_size(metrics) == 3
    assert components._forwarding_queue_size("") == 0, "before any span, nothing waits"
