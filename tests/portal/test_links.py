"""Deep links into the console and Jaeger UI (loupe.portal.links): whatever an id holds, the
link leads to that id's page and only there. That Jaeger UI's link patterns follow ORDER_PATH
is checked in tests/stack/test_jaeger_ui_config.py."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from loupe.portal.links import absolute, incident_path, order_path, trace_path


@pytest.mark.parametrize("order_id", ["o-1", "a/b", "x?y=1#z", "ünï cödé", "%2F"])
def test_an_order_id_stays_one_path_segment(order_id: str) -> None:
    path = order_path(order_id)
    parts = urlsplit(path)
    # No query or fragment smuggled in, and one segment that decodes to the id itself.
    assert (parts.query, parts.fragment) == ("", "")
    prefix, segment = parts.path.rsplit("/", 1)
    assert prefix == "/orders" and unquote(segment) == order_id


def test_incident_paths_hold_a_number() -> None:
    assert incident_path(42) == "/incidents/42"


def test_a_trace_link_finds_the_span_when_given_one() -> None:
    assert trace_path("ab" * 16) == "/jaeger/trace/" + "ab" * 16
    found = urlsplit(trace_path("ab" * 16, "c" * 16))
    assert found.path == "/jaeger/trace/" + "ab" * 16
    assert parse_qs(found.query) == {"uiFind": ["c" * 16]}


@pytest.mark.parametrize(
    "base", ["https://loupe.example.org/console", "https://loupe.example.org/console//"]
)
def test_absolute_keeps_the_consoles_base_path_without_doubled_slashes(base: str) -> None:
    assert absolute(base, order_path("o-1")) == "https://loupe.example.org/console/orders/o-1"
