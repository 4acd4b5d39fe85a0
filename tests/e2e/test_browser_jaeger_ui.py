"""Jaeger UI in a real browser, through the sign-in gateway after a real Dex sign-in.

One synthetic order crosses the three services (shop-api publishes, mes-api consumes and sends
on, crm-api consumes), exported over OTLP like the services do. The browser then finds it by
its order.id, opens it, follows the order.id tag's link (ui-config.json) to the console's
order page and sees the services' edges on the System Architecture page. On the trace page it
also switches to the Trace Graph view, opens crm-api's span with its dead-letter event and its
link to the order's previous step (a second trace) and follows that link, opens the Trace JSON
view from the view menu, and compares the two traces on the Compare page. Every check of a page
also fails when one of the page's calls to /jaeger/api/ fails. The search results and the trace
page are saved as docs/images/jaeger-ui-search.png and jaeger-ui-trace.png once their test has
passed.
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
from opentelemetry.trace import Link, SpanContext, SpanKind
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Request,
    Response,
    expect,
)

from loupe.config import REPO_ROOT
from loupe.portal import links
from loupe.stack.components import JaegerPorts
from loupe.telemetry.attributes import (
    DEAD_LETTER_REASON,
    DEAD_LETTERED_EVENT,
    LINK_REASON,
    PREVIOUS_STEP,
)

from .browser_support import needs_chromium, sign_in_with_browser
from .gateway_support import Gateway
from .pipeline_support import wait_for

pytestmark = [pytest.mark.e2e, needs_chromium]

SCREENSHOTS = REPO_ROOT / "docs" / "images"
VIEWPORT = {"width": 1280, "height": 800}
# The order's path through the services, parent first.
ORDER_SERVICES = ("shop-api", "mes-api", "crm-api")
# The operation of each service's span in it.
ORDER_OPERATIONS = {
    "shop-api": "publish loupe.orders",
    "mes-api": "process loupe.orders",
    "crm-api": "process loupe.orders",
}
# Why crm-api's span says it moved its message to the dead-letter queue.
DEAD_LETTER_WHY = "customer unknown to the CRM"
# What Jaeger serves when it has no UI assets (cmd/query/app/ui/placeholder/index.html).
PLACEHOLDER = "This is not the Jaeger UI you are looking for"


@dataclass(frozen=True)
class OrderTrace:
    order_id: str
    trace_id: str
    # The separate trace of the order's previous step, which crm-api's span links to.
    previous_trace_id: str
    previous_span_id: str


def _providers(jaeger: JaegerPorts, services: tuple[str, ...]) -> dict[str, TracerProvider]:
    """One provider per service, each with its own resource, exporting over OTLP at once."""
    providers = {}
    for service in services:
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.namespace": "loupe"})
        )
        exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_url}/v1/traces", timeout=10)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers[service] = provider
    return providers


def export_previous_step(jaeger: JaegerPorts, order_id: str, start: int) -> SpanContext:
    """A trace of its own with one span: crm-api taking in an earlier step of the order
    (`process loupe.orders`, CONSUMER, 9 ms from `start`). It is not a shop-api span, so the
    search by shop-api and order.id still finds only the order's main trace."""
    provider = _providers(jaeger, ("crm-api",))["crm-api"]
    try:
        span = provider.get_tracer("loupe.tests").start_span(
            "process loupe.orders",
            kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={
                "order.id": order_id,
                "messaging.system": "rabbitmq",
                "messaging.destination.name": "loupe.orders",
                "messaging.rabbitmq.destination.routing_key": "order.status",
            },
        )
        span.end(end_time=start + 9_000_000)
    finally:
        provider.shutdown()
    return span.get_span_context()


def export_order_trace(jaeger: JaegerPorts) -> OrderTrace:
    """Three spans in one trace, each service's with its own resource, as the pipeline sends:
    shop-api's `publish` (PRODUCER) -> mes-api's `process` (CONSUMER) -> crm-api's `process`
    (CONSUMER) of what mes-api published while processing. Every span has the order's id.

    crm-api's span also dead-letters the message (the `dead-lettered` event with its reason, as
    the consumer records it) and links, as a step resumed later does, to the order's previous
    step: a second, separate trace exported first (`export_previous_step`). Jaeger's API turns
    the link into a FOLLOWS_FROM reference (without the link's attributes)."""
    order_id = str(uuid.uuid4())
    start = time.time_ns() - 1_000_000_000
    previous = export_previous_step(jaeger, order_id, start - 2_000_000_000)
    providers = _providers(jaeger, ORDER_SERVICES)
    # service, kind, routing key, start and end in ms from the trace's start. crm-api's
    # span lies within mes-api's (which ends after its own publish is confirmed): a child that
    # is shorter than its parent but sticks out makes Jaeger warn of clock skew.
    steps = [
        ("shop-api", SpanKind.PRODUCER, "order.submitted", 0, 14),
        ("mes-api", SpanKind.CONSUMER, "order.submitted", 18, 205),
        ("crm-api", SpanKind.CONSUMER, "order.price_calculated", 152, 188),
    ]
    parent: trace.Span | None = None
    trace_id = ""
    try:
        for service, kind, routing_key, begin_ms, end_ms in steps:
            tracer = providers[service].get_tracer("loupe.tests")
            last = service == ORDER_SERVICES[-1]
            span = tracer.start_span(
                ORDER_OPERATIONS[service],
                context=trace.set_span_in_context(parent) if parent else None,
                kind=kind,
                start_time=start + begin_ms * 1_000_000,
                attributes={
                    "order.id": order_id,
                    "messaging.system": "rabbitmq",
                    "messaging.destination.name": "loupe.orders",
                    "messaging.rabbitmq.destination.routing_key": routing_key,
                },
                links=[Link(previous, {LINK_REASON: PREVIOUS_STEP})] if last else None,
            )
            if last:
                span.add_event(
                    DEAD_LETTERED_EVENT,
                    {DEAD_LETTER_REASON: DEAD_LETTER_WHY},
                    timestamp=start + (end_ms - 2) * 1_000_000,
                )
            span.end(end_time=start + end_ms * 1_000_000)
            trace_id = trace_id or format(span.get_span_context().trace_id, "032x")
            parent = span
    finally:
        for provider in providers.values():
            provider.shutdown()
    return OrderTrace(
        order_id,
        trace_id,
        format(previous.trace_id, "032x"),
        format(previous.span_id, "016x"),
    )


def stored_spans(jaeger: JaegerPorts, trace_id: str) -> int:
    """How many spans of the trace Jaeger has stored (0 while it has none)."""
    response = httpx.get(f"{jaeger.query_url}/api/traces/{trace_id}", trust_env=False)
    if response.status_code != 200:
        return 0
    (found,) = response.json()["data"]
    return len(found["spans"])


@pytest.fixture(scope="module")
def order(gateway: Gateway) -> OrderTrace:
    exported = export_order_trace(gateway.jaeger)

    def stored() -> bool:
        spans = stored_spans(gateway.jaeger, exported.trace_id)
        previous = stored_spans(gateway.jaeger, exported.previous_trace_id)
        return (spans, previous) == (len(ORDER_SERVICES), 1)

    wait_for(stored, 20, "Jaeger to store the order's three spans and its previous step", every=0.2)
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
    """Opens the search form's Service select and returns the services it offers, once it
    shows the order's: the select draws its list again while it opens and as Jaeger's
    answer arrives, so a list read at its first option can be empty (seen on a busy clean
    clone)."""
    service = page.locator(".ant-form-item", has=page.get_by_text("Service", exact=False)).first
    service.locator(".ant-select").click()
    options = page.locator(".ant-select-dropdown:visible .ant-select-item-option")
    for name in ORDER_SERVICES:
        expect(options.and_(page.locator(f"[title='{name}']"))).to_be_visible()
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


def trace_url(gateway: Gateway, trace_id: str) -> str:
    return f"{gateway.url}/jaeger/trace/{trace_id}"


def watch_jaeger_api(page: Page) -> list[str]:
    """Every call to /jaeger/api/ that the page makes from now on and that fails (an HTTP error
    such as the gateway's 401, or no answer at all), as "status url"; empty while all is well."""
    failures: list[str] = []

    def answered(response: Response) -> None:
        if "/jaeger/api/" in response.url and not response.ok:
            failures.append(f"{response.status} {response.url}")

    def failed(request: Request) -> None:
        if "/jaeger/api/" in request.url:
            failures.append(f"failed ({request.failure}) {request.url}")

    page.on("response", answered)
    page.on("requestfailed", failed)
    return failures


def open_view_menu(page: Page) -> Locator:
    """Hovers the trace page's view switcher (top right) and returns its open menu."""
    page.locator(".AltViewOptions").hover()
    menu = page.locator(".ant-dropdown:visible .ant-dropdown-menu")
    expect(menu).to_be_visible()
    return menu


def test_trace_graph_view_draws_the_services(
    gateway: Gateway, order: OrderTrace, page: Page, tmp_path: Path
) -> None:
    failures = watch_jaeger_api(page)
    page.goto(trace_url(gateway, order.trace_id))
    expect(page.locator(".span-name-wrapper")).to_have_count(len(ORDER_SERVICES))
    expect(page.locator(".AltViewOptions")).to_have_text(re.compile(r"^Trace Timeline\s*$"))

    open_view_menu(page).get_by_role("button", name="Trace Graph", exact=True).click()
    expect(page.locator(".AltViewOptions")).to_have_text(re.compile(r"^Trace Graph\s*$"))
    graph = page.locator(".TraceGraph--dag")
    expect(graph).to_be_visible()
    # One node per span (service and operation), drawn, with an arrow for each call.
    nodes = graph.locator(".OpNode")
    expect(nodes).to_have_count(len(ORDER_SERVICES))
    for service in ORDER_SERVICES:
        node = nodes.filter(has=page.locator(".OpNode--service", has_text=service))
        expect(node).to_have_count(1)
        expect(node).to_be_visible()
        expect(node.locator(".OpNode--op")).to_have_text(ORDER_OPERATIONS[service])
    expect(graph.locator(".plexus-Digraph--SvgEdge")).to_have_count(len(ORDER_SERVICES) - 1)
    expect(page.locator(".ErrorMessage")).to_have_count(0)
    page.screenshot(path=str(tmp_path / "jaeger-ui-trace-graph.png"))
    assert failures == []


def test_span_details_show_the_dead_letter_event_and_the_link_to_the_previous_step(
    gateway: Gateway, order: OrderTrace, page: Page
) -> None:
    failures = watch_jaeger_api(page)
    page.goto(trace_url(gateway, order.trace_id))
    rows = page.locator(".span-name-wrapper")
    expect(rows).to_have_count(len(ORDER_SERVICES))
    rows.nth(2).click()
    details = page.locator(".detail-info-wrapper")
    expect(details).to_have_count(1)
    expect(details.locator("h2")).to_have_text(ORDER_OPERATIONS["crm-api"])
    expect(details.locator(".LabeledList--item", has_text="Service:")).to_have_text(
        "Service:crm-api"
    )

    # The span event, which Jaeger UI 2.14 lists under "Logs": its name and the reason.
    logs = details.locator(".AccordianLogs")
    header = logs.locator(".AccordianLogs--header")
    expect(header).to_have_text(re.compile(r"^\s*Logs \(1\)\s*$"))
    if header.get_attribute("aria-checked") != "true":
        header.click()
    event = logs.locator(".AccordianLogs--content .AccordianKeyValues--summaryItem")
    expect(event).to_have_text(
        [f"event={DEAD_LETTERED_EVENT}", f"{DEAD_LETTER_REASON}={DEAD_LETTER_WHY}"]
    )

    # The references: the parent (mes-api's span, in this trace) and the span link to the
    # previous step, a span in another trace.
    references = details.locator(".AccordianReferences")
    expect(references.locator(".AccordianReferences--header")).to_have_text(
        re.compile(r"^\s*References \(2\)\s*$")
    )
    references.locator(".AccordianReferences--header").click()
    items = references.locator(".ReferencesList--Item")
    expect(items).to_have_count(2)
    parent = items.filter(has_text="CHILD_OF")
    expect(parent.locator(".span-svc-name")).to_have_text("mes-api")
    linked = items.filter(has_text="FOLLOWS_FROM")
    expect(linked.locator(".span-svc-name")).to_have_text("< span in another trace >")
    expect(linked.locator(".SpanReference--debugLabel[data-label='SpanID:']")).to_have_text(
        order.previous_span_id
    )
    previous = f"/jaeger/trace/{order.previous_trace_id}?uiFind={order.previous_span_id}"
    expect(linked.locator("a")).to_have_attribute("href", previous)

    # It opens the other trace in a new tab, through the gateway, the linked span found.
    def fetches_previous(response: Response) -> bool:
        return urlsplit(response.url).path == f"/jaeger/api/traces/{order.previous_trace_id}"

    with (
        page.context.expect_event("response", fetches_previous) as fetched,
        page.context.expect_page() as opened,
    ):
        linked.locator("a").click()
    other = opened.value
    try:
        assert fetched.value.status == 200, fetched.value.status
        other.wait_for_load_state()
        assert other.url == f"{gateway.url}{previous}"
        expect(other.locator(".TraceName")).to_have_text("crm-api: process loupe.orders")
        expect(other.locator(".TracePageHeader .TraceIDLength")).to_have_text(
            order.previous_trace_id[:7]
        )
        expect(other.locator(".span-name-wrapper")).to_have_count(1)
        expect(other.locator(".span-row.is-matching-filter")).to_have_count(1)
        expect(other.locator(".ErrorMessage")).to_have_count(0)
    finally:
        other.close()
    expect(page.locator(".ErrorMessage")).to_have_count(0)
    assert failures == []


def test_compare_view_shows_both_traces(gateway: Gateway, order: OrderTrace, page: Page) -> None:
    failures = watch_jaeger_api(page)
    a, b = order.trace_id, order.previous_trace_id
    # Jaeger UI fetches both traces in one call, through the gateway with the session.
    with page.expect_response(lambda r: "/jaeger/api/traces?" in r.url) as fetched:
        page.goto(f"{gateway.url}/jaeger/trace/{a}...{b}?cohort={a}&cohort={b}")
    both = fetched.value
    assert both.status == 200, both.status
    assert sorted(parse_qsl(urlsplit(both.url).query)) == sorted([("traceID", a), ("traceID", b)])
    assert {t["traceID"] for t in both.json()["data"]} == {a, b}

    # The two headers, A and B: each trace's name, id excerpt and span count.
    sections = page.locator(".TraceDiffHeader--traceSection")
    expect(sections).to_have_count(2)
    for section, name, trace_id, spans in (
        (sections.nth(0), "shop-api: publish loupe.orders", a, len(ORDER_SERVICES)),
        (sections.nth(1), "crm-api: process loupe.orders", b, 1),
    ):
        expect(section.locator(".TraceName")).to_have_text(name)
        expect(section.locator(".TraceIDLength")).to_have_text(trace_id[:7])
        expect(section.locator(".TraceDiffHeader--traceAttr", has_text="Spans:")).to_have_text(
            re.compile(rf"^Spans:\s*{spans}$")
        )
    # The diff graph: A's three spans only in A, B's one span (crm-api at the root) only in B.
    graph = page.locator(".TraceDiffGraph--dag")
    expect(graph).to_be_visible()
    expect(graph.locator(".DiffNode")).to_have_count(len(ORDER_SERVICES) + 1)
    only_a = graph.locator(".DiffNode.is-removed .DiffNode--labelCell strong")
    expect(only_a).to_have_text(list(ORDER_SERVICES))
    expect(graph.locator(".DiffNode.is-added .DiffNode--labelCell strong")).to_have_text(
        ["crm-api"]
    )
    expect(graph.locator(".plexus-Digraph--SvgEdge")).to_have_count(len(ORDER_SERVICES) - 1)
    expect(page.locator(".ErrorMessage, .TraceDiffGraph--errorMessage")).to_have_count(0)
    assert failures == []


def test_trace_json_view_returns_the_trace(gateway: Gateway, order: OrderTrace, page: Page) -> None:
    failures = watch_jaeger_api(page)
    page.goto(trace_url(gateway, order.trace_id))
    expect(page.locator(".span-name-wrapper")).to_have_count(len(ORDER_SERVICES))
    menu = open_view_menu(page)
    json_view = menu.get_by_role("link", name="Trace JSON", exact=True)
    path = f"/jaeger/api/traces/{order.trace_id}?prettyPrint=true"
    expect(json_view).to_have_attribute("href", path)
    unadjusted = menu.get_by_role("link", name="Trace JSON (unadjusted)", exact=True)
    raw_path = f"/jaeger/api/traces/{order.trace_id}?raw=true&prettyPrint=true"
    expect(unadjusted).to_have_attribute("href", raw_path)

    # It opens in a new tab, through the gateway with the browser's session.
    def is_json_view(response: Response) -> bool:
        return response.url == f"{gateway.url}{path}"

    with (
        page.context.expect_event("response", is_json_view) as answered,
        page.context.expect_page() as opened,
    ):
        json_view.click()
    tab = opened.value
    try:
        tab.wait_for_load_state()
        assert tab.url == f"{gateway.url}{path}"
        response = answered.value
        assert response.status == 200, response.status
        assert response.headers["content-type"].startswith("application/json")
        answer = response.json()
        # What the tab shows is that answer.
        shown = json.loads(tab.locator("pre").first.inner_text())
    finally:
        tab.close()
    assert shown == answer
    (found,) = shown["data"]
    assert found["traceID"] == order.trace_id
    spans = sorted(found["spans"], key=lambda span: span["startTime"])
    services = [found["processes"][span["processID"]]["serviceName"] for span in spans]
    assert services == list(ORDER_SERVICES)
    assert [span["operationName"] for span in spans] == list(ORDER_OPERATIONS.values())
    assert all(
        {"key": "order.id", "type": "string", "value": order.order_id} in span["tags"]
        for span in spans
    )
    # crm-api's span with its event and its link, as the span details show them.
    crm = spans[2]
    assert [{f["key"]: f["value"] for f in log["fields"]} for log in crm["logs"]] == [
        {"event": DEAD_LETTERED_EVENT, DEAD_LETTER_REASON: DEAD_LETTER_WHY}
    ]
    assert {
        "refType": "FOLLOWS_FROM",
        "traceID": order.previous_trace_id,
        "spanID": order.previous_span_id,
    } in crm["references"]

    # The unadjusted JSON as well, with the same session.
    raw = page.request.get(f"{gateway.url}{raw_path}")
    assert raw.ok, raw.status
    (unadjusted_trace,) = raw.json()["data"]
    assert len(unadjusted_trace["spans"]) == len(ORDER_SERVICES)
    assert failures == []
