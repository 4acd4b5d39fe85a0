"""Jaeger UI in a real browser, through the sign-in gateway after a real Dex sign-in.

One synthetic order crosses the three services (shop-api publishes, mes-api consumes and sends
on, crm-api consumes), exported over OTLP like the services do. The browser then finds it by
its order.id, opens it, follows the order.id tag's link (ui-config.json) to the console's
order page and sees the services' edges on the System Architecture page. The search results
and the trace page are saved as docs/images/jaeger-ui-search.png and jaeger-ui-trace.png once
their test has passed.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from playwright.sync_api import Browser, BrowserContext, Page, expect

from loupe.config import REPO_ROOT
from loupe.portal import links
from loupe.stack import JaegerPorts

from .browser_support import needs_chromium, sign_in_with_browser
from .conftest import Gateway, wait_for

pytestmark = [pytest.mark.e2e, needs_chromium]

SCREENSHOTS = REPO_ROOT / "docs" / "images"
VIEWPORT = {"width": 1280, "height": 800}
# The order's path through the services, parent first.
ORDER_SERVICES = ("shop-api", "mes-api", "crm-api")
# What Jaeger serves when it has no UI assets (cmd/query/app/ui/placeholder/index.html).
PLACEHOLDER = "This is not the Jaeger UI you are looking for"


@dataclass(frozen=True)
class OrderTrace:
    order_id: str
    trace_id: str


def export_order_trace(jaeger: JaegerPorts) -> OrderTrace:
    """Three spans in one trace, each service's with its own resource, as the pipeline sends:
    shop-api's `publish` (PRODUCER) -> mes-api's `process` (CONSUMER) -> crm-api's `process`
    (CONSUMER) of what mes-api published while processing. Every span has the order's id."""
    order_id = str(uuid.uuid4())
    providers = {}
    for service in ORDER_SERVICES:
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.namespace": "loupe"})
        )
        exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_url}/v1/traces", timeout=10)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers[service] = provider
    # service, span, kind, routing key, start and end in ms from the trace's start. crm-api's
    # span lies within mes-api's (which ends after its own publish is confirmed): a child that
    # is shorter than its parent but sticks out makes Jaeger warn of clock skew.
    steps = [
        ("shop-api", "publish loupe.orders", SpanKind.PRODUCER, "order.submitted", 0, 14),
        ("mes-api", "process loupe.orders", SpanKind.CONSUMER, "order.submitted", 18, 205),
        ("crm-api", "process loupe.orders", SpanKind.CONSUMER, "order.price_calculated", 152, 188),
    ]
    start = time.time_ns() - 1_000_000_000
    parent: trace.Span | None = None
    trace_id = ""
    try:
        for service, name, kind, routing_key, begin_ms, end_ms in steps:
            tracer = providers[service].get_tracer("loupe.tests")
            span = tracer.start_span(
                name,
                context=trace.set_span_in_context(parent) if parent else None,
                kind=kind,
                start_time=start + begin_ms * 1_000_000,
                attributes={
                    "order.id": order_id,
                    "messaging.system": "rabbitmq",
                    "messaging.destination.name": "loupe.orders",
                    "messaging.rabbitmq.destination.routing_key": routing_key,
                },
            )
            span.end(end_time=start + end_ms * 1_000_000)
            trace_id = trace_id or format(span.get_span_context().trace_id, "032x")
            parent = span
    finally:
        for provider in providers.values():
            provider.shutdown()
    return OrderTrace(order_id, trace_id)


@pytest.fixture(scope="module")
def order(gateway: Gateway) -> OrderTrace:
    exported = export_order_trace(gateway.jaeger)

    def stored() -> bool:
        response = httpx.get(
            f"{gateway.jaeger.query_url}/api/traces/{exported.trace_id}", trust_env=False
        )
        if response.status_code != 200:
            return False
        (found,) = response.json()["data"]
        return len(found["spans"]) == len(ORDER_SERVICES)

    wait_for(stored, 20, "Jaeger to store the order's three spans", every=0.2)
    return exported


@pytest.fixture(scope="module")
def signed_in(browser: Browser, gateway: Gateway) -> Iterator[BrowserContext]:
    """A 1280x800 browser signed in as a developer, on Jaeger UI's search page."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        sign_in_with_browser(page, gateway, "developer@example.com", "/jaeger/search")
        page.close()
        yield context
    finally:
        context.close()


@pytest.fixture
def page(signed_in: BrowserContext) -> Iterator[Page]:
    page = signed_in.new_page()
    try:
        yield page
    finally:
        page.close()


def keep_screenshot(taken: Path) -> None:
    """Called last in a test, so docs/images only ever shows what a passing run saw."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(taken, SCREENSHOTS / taken.name)


def open_service_dropdown(page: Page) -> list[str]:
    """Opens the search form's Service select and returns the services it offers."""
    service = page.locator(".ant-form-item", has=page.get_by_text("Service", exact=False)).first
    service.locator(".ant-select").click()
    options = page.locator(".ant-select-dropdown:visible .ant-select-item-option")
    expect(options.first).to_be_visible()
    return [o.get_attribute("title") or o.inner_text() for o in options.all()]


def test_search_page_is_the_ui_with_the_services(
    gateway: Gateway, order: OrderTrace, page: Page
) -> None:
    page.goto(f"{gateway.url}/jaeger/search")
    # The bundle, not the placeholder, and running: it drew the search form.
    assert page.locator("script[type=module][src*='static/index-']").count() == 1
    assert PLACEHOLDER not in page.content()
    expect(page.locator("button[data-test=submit-btn]")).to_have_text("Find Traces")
    expect(page).to_have_title(re.compile("Jaeger UI"))
    # The menu item back to loupe's console, from ui-config.json.
    expect(page.get_by_role("link", name="loupe console")).to_have_attribute("href", "/")

    offered = open_service_dropdown(page)
    assert set(ORDER_SERVICES) <= set(offered), offered


def test_search_by_order_id_finds_the_trace(
    gateway: Gateway, order: OrderTrace, page: Page, tmp_path: Path
) -> None:
    page.goto(f"{gateway.url}/jaeger/search")
    open_service_dropdown(page)
    page.locator(".ant-select-dropdown:visible .ant-select-item-option[title='shop-api']").click()
    page.fill("input[name=tags]", f"order.id={order.order_id}")
    page.click("button[data-test=submit-btn]")

    results = page.locator(".ResultItem")
    expect(results).to_have_count(1)
    result = results.first
    expect(result.locator(".ResultItemTitle--idExcerpt")).to_have_text(order.trace_id[:7])
    expect(result).to_contain_text("3 Spans")
    for service in ORDER_SERVICES:
        expect(result.locator(".ResultItem--serviceTag", has_text=service)).to_have_count(1)
    # The search is in the address, so it can be shared.
    query = dict(parse_qsl(urlsplit(page.url).query))
    assert json.loads(query["tags"]) == {"order.id": order.order_id}

    shot = tmp_path / "jaeger-ui-search.png"
    page.screenshot(path=str(shot))
    keep_screenshot(shot)


def test_trace_page_shows_the_spans_and_links_the_order(
    gateway: Gateway, order: OrderTrace, page: Page, tmp_path: Path
) -> None:
    page.goto(f"{gateway.url}/jaeger/trace/{order.trace_id}")
    expect(page.locator(".TraceName")).to_contain_text("shop-api: publish loupe.orders")
    rows = page.locator(".span-name-wrapper")
    expect(rows).to_have_count(len(ORDER_SERVICES))
    assert [r.locator(".span-svc-name").inner_text().strip() for r in rows.all()] == list(
        ORDER_SERVICES
    )

    # Open crm-api's span and its tags: order.id links to the console's order page.
    rows.nth(2).click()
    tags = page.locator(".AccordianKeyValues--header", has=page.get_by_text("Tags:", exact=True))
    expect(tags).to_have_count(1)
    # The spans' times fit together: no clock-skew warning.
    expect(page.locator(".AccordianWarnings")).to_have_count(0)
    tags.click()
    link = page.locator(f"a[href='{links.order_path(order.order_id)}']")
    expect(link).to_have_count(1)
    expect(link).to_have_attribute("title", f"Open order {order.order_id} in loupe's console")
    expect(link).to_contain_text(order.order_id)

    shot = tmp_path / "jaeger-ui-trace.png"
    page.screenshot(path=str(shot))

    # Jaeger UI opens tag links in a new tab: the console's order page, through the gateway
    # (which here answers the console's paths with an empty 200).
    with page.context.expect_page() as opened:
        link.click()
    console = opened.value
    console.wait_for_load_state()
    assert console.url == f"{gateway.url}{links.order_path(order.order_id)}"
    console.close()
    keep_screenshot(shot)


def test_system_architecture_shows_the_services_edges(
    gateway: Gateway, order: OrderTrace, page: Page
) -> None:
    # Through the gateway with the browser's session, as the page asks for it.
    end = int(time.time() * 1000)
    response = page.request.get(
        f"{gateway.url}/jaeger/api/dependencies",
        params={"endTs": end, "lookback": 3_600_000},
    )
    assert response.ok, response.status
    edges = {(d["parent"], d["child"]) for d in response.json()["data"]}
    assert {("shop-api", "mes-api"), ("mes-api", "crm-api")} <= edges, edges

    page.goto(f"{gateway.url}/jaeger/dependencies")
    # The DAG: one node per service, an arrow for each of the two calls.
    labels = page.locator(".DAG--nodeLabel")
    expect(labels).to_have_count(len(ORDER_SERVICES))
    for service in ORDER_SERVICES:
        exactly = re.compile(rf"^{re.escape(service)}$")
        expect(labels.filter(has_text=exactly)).to_be_visible()
    expect(page.locator(".plexus-Digraph--SvgEdge")).to_have_count(2)
