"""The committed contracts (docs/openapi/*.json, docs/asyncapi.yaml) agree with the code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from loupe.messaging.topology import (
    DEAD_LETTER_QUEUE,
    ORDERS_EXCHANGE,
    QUEUES,
    RETRY_EXCHANGE,
    UNROUTABLE_QUEUE,
)
from loupe.monitor.models import FindingKind
from loupe.openapi import export_openapi
from loupe.orders import OrderEvent, OrderEventError, OrderSource, OrderStatus, routing_key

DOCS = Path(__file__).resolve().parents[1] / "docs"
ASYNCAPI = DOCS / "asyncapi.yaml"


OPENAPI_FILES = ["crm-api.json", "loupe-monitor.json", "mes-api.json", "shop-api.json"]


def test_committed_openapi_documents_equal_a_fresh_export(tmp_path: Path) -> None:
    fresh = {path.name: path.read_text() for path in export_openapi(tmp_path)}
    committed = {path.name: path.read_text() for path in (DOCS / "openapi").glob("*.json")}
    assert sorted(committed) == sorted(fresh) == OPENAPI_FILES
    for name, text in fresh.items():
        assert committed[name] == text, f"docs/openapi/{name} is stale; run `uv run loupe openapi`"


def test_the_monitor_document_has_its_api_and_only_that() -> None:
    document = json.loads((DOCS / "openapi" / "loupe-monitor.json").read_text())
    assert document["info"]["title"] == "loupe-monitor"
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == {
        ("GET", "/monitor/api/findings"),
        ("GET", "/monitor/api/orders/{order_id}/journey"),
        ("GET", "/monitor/api/incidents"),
        ("GET", "/monitor/api/incidents/{incident_id}"),
        ("POST", "/monitor/api/incidents/{incident_id}/acknowledge"),
        ("POST", "/monitor/api/findings/{finding_id}/dismiss"),
        ("GET", "/monitor/api/uptime"),
    }, "OTLP intake, /metrics and /healthz are not part of the API"
    findings = document["paths"]["/monitor/api/findings"]["get"]
    (state,) = [p for p in findings["parameters"] if p["name"] == "state"]
    # Every kind of finding, spelled out where the parameter is.
    assert json.dumps({"enum": [*FindingKind]})[1:-1] in json.dumps(state["schema"])
    # Every answer is a model the document describes, so clients need not guess its shape.
    for path, item in document["paths"].items():
        for method, operation in item.items():
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert "$ref" in schema, f"{method.upper()} {path} answers an undescribed shape"


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document = yaml.safe_load(ASYNCAPI.read_text())
    assert document["asyncapi"] == "3.0.0"
    return document


def _resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow one local `$ref` (`#/a/b/c`), if `node` is one."""
    if isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return target
    return node


def _amqp_binding(document: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    return _resolve(document, _resolve(document, channel["bindings"])["amqp"])


def _queue_channels(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for channel in document["channels"].values():
        binding = _amqp_binding(document, channel)
        if binding["is"] == "queue":
            assert binding["queue"]["name"] == channel["address"]
            assert binding["queue"]["vhost"] == "loupe"
            found[channel["address"]] = binding
    return found


def test_asyncapi_names_every_queue_with_its_bindings(asyncapi: dict[str, Any]) -> None:
    queues = _queue_channels(asyncapi)
    expected = {DEAD_LETTER_QUEUE, UNROUTABLE_QUEUE}
    for spec in QUEUES.values():
        expected |= {spec.name, spec.retry_queue}
        bound = {(b["exchange"], b["routingKey"]) for b in queues[spec.name]["x-bound-to"]}
        assert bound == {(ORDERS_EXCHANGE, key) for key in spec.bindings}, spec.name
        retry_bound = queues[spec.retry_queue]["x-bound-to"]
        assert retry_bound == [{"exchange": RETRY_EXCHANGE, "routingKey": spec.name}]
        assert queues[spec.retry_queue]["x-arguments"]["x-dead-letter-routing-key"] == spec.name
    assert set(queues) == expected


def test_asyncapi_has_a_channel_for_every_routing_key(asyncapi: dict[str, Any]) -> None:
    on_orders = {
        channel["address"]
        for channel in asyncapi["channels"].values()
        if _amqp_binding(asyncapi, channel).get("exchange", {}).get("name") == ORDERS_EXCHANGE
    }
    assert on_orders == {routing_key(status) for status in OrderStatus}


def _order_event_schema(document: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"]["OrderEvent"]


def _examples(document: dict[str, Any], message: str) -> list[dict[str, Any]]:
    return list(document["components"]["messages"][message]["examples"])


def _parse(payload: dict[str, Any]) -> OrderEvent:
    return OrderEvent.from_json(json.dumps(payload).encode())


def test_every_order_event_example_is_a_valid_event(asyncapi: dict[str, Any]) -> None:
    seen = set()
    for example in _examples(asyncapi, "OrderEvent") + _examples(asyncapi, "RetryCopy"):
        event = _parse(example["payload"])
        assert event.order_id == example["payload"]["order_id"]
        seen.add(event.status)
    assert seen == set(OrderStatus), "every status needs an example"


def test_dead_letter_examples_fail_only_when_poison(asyncapi: dict[str, Any]) -> None:
    for example in _examples(asyncapi, "DeadLetter"):
        if example["headers"]["x-loupe-reason"].startswith("poison message:"):
            with pytest.raises(OrderEventError):
                _parse(example["payload"])
        else:
            _parse(example["payload"])


def test_order_event_schema_matches_the_parser(asyncapi: dict[str, Any]) -> None:
    schema = _order_event_schema(asyncapi)
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(OrderEvent)}
    statuses = asyncapi["components"]["schemas"]["OrderStatus"]["enum"]
    sources = asyncapi["components"]["schemas"]["OrderSource"]["enum"]
    assert statuses == [s.value for s in OrderStatus]
    assert sources == [s.value for s in OrderSource]

    # One event with every field, from the examples; then drop each field in turn.
    complete: dict[str, Any] = {}
    for example in _examples(asyncapi, "OrderEvent"):
        complete.update(example["payload"])
    assert set(complete) == set(schema["properties"])
    _parse(complete)
    required = set()
    for name in complete:
        try:
            _parse({k: v for k, v in complete.items() if k != name})
        except OrderEventError:
            required.add(name)
    assert set(schema["required"]) == required
