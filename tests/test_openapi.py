"""Exporting the APIs' OpenAPI documents: one per API, built without any network (so `loupe
openapi` works offline), written as stable text. That the committed documents are current is
tests/test_contracts.py's check."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from loupe.openapi import export_openapi, openapi_documents, render

API_NAMES = {"shop-api", "crm-api", "mes-api", "loupe-monitor"}


def _refuse(*_: object, **__: object) -> None:
    raise AssertionError("building an OpenAPI document opened a connection")


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    # Any connection attempt fails the build: databases, RabbitMQ and DNS alike.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        patch.setattr(socket, "getaddrinfo", _refuse)
        return openapi_documents()


def test_every_api_has_a_document_titled_with_its_service_name(
    documents: dict[str, dict[str, Any]],
) -> None:
    assert set(documents) == API_NAMES
    for name, document in documents.items():
        assert document["info"]["title"] == name
        assert document["paths"], f"{name} documents no route"


def test_each_service_document_describes_its_own_routes_only(
    documents: dict[str, dict[str, Any]],
) -> None:
    # Models are kept by the shop and MES only; the monitor is not an order service.
    with_models = {name for name, doc in documents.items() if "/models/{sha256}" in doc["paths"]}
    assert with_models == {"shop-api", "mes-api"}
    with_health = {name for name, doc in documents.items() if "/healthz" in doc["paths"]}
    assert with_health == {"shop-api", "crm-api", "mes-api"}


def test_rendering_is_stable_text_whatever_the_key_order() -> None:
    one = {"b": {"z": 1, "a": "Ringgröße"}, "a": []}
    other = {"a": [], "b": {"a": "Ringgröße", "z": 1}}
    text = render(one)
    assert text == render(other)
    assert text == '{\n  "a": [],\n  "b": {\n    "a": "Ringgröße",\n    "z": 1\n  }\n}\n'


def test_export_writes_each_document_into_a_new_folder(
    tmp_path: Path, documents: dict[str, dict[str, Any]]
) -> None:
    folder = tmp_path / "docs" / "openapi"
    written = export_openapi(folder)
    assert {path.name for path in written} == {f"{name}.json" for name in API_NAMES}
    assert sorted(folder.iterdir()) == sorted(written)
    for path in written:
        assert json.loads(path.read_text(encoding="utf-8")) == documents[path.stem]
