"""The real Jaeger serves the real Jaeger UI at /jaeger/, with loupe's UI config put into it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from loupe.portal import links
from loupe.stack.components import (
    JAEGER_BASE_PATH,
    JAEGER_UI_ASSETS,
    JAEGER_UI_CONFIG,
    JaegerPorts,
    jaeger_process,
)
from loupe.stack.supervisor import Stack

pytestmark = pytest.mark.e2e

# What Jaeger serves when it has no UI assets (cmd/query/app/ui/placeholder/index.html).
PLACEHOLDER = "This is not the Jaeger UI you are looking for"


class _Assets(HTMLParser):
    """The module scripts and stylesheets a page loads, as written in it."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("type") == "module" and values.get("src"):
            self.scripts.append(values["src"] or "")
        if tag == "link" and values.get("rel") == "stylesheet" and values.get("href"):
            self.stylesheets.append(values["href"] or "")


def assets_of(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


def injected(html: str, name: str) -> object:
    """The JSON Jaeger put into the page as `const <name> = {...};` (one line)."""
    found = re.search(rf"\b{name} = (\{{.*\}});\s*$", html, re.MULTILINE)
    assert found, f"{name} was not injected"
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    ports = JaegerPorts.pick_free()
    logs = tmp_path_factory.mktemp("jaeger-ui") / "logs"
    with (
        Stack([jaeger_process("memory", ports, logs_dir=logs)]),
        httpx.Client(base_url=f"http://127.0.0.1:{ports.query}", trust_env=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def index(jaeger: httpx.Client) -> str:
    response = jaeger.get(f"{JAEGER_BASE_PATH}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def test_index_is_the_ui_bundle_with_the_base_path(index: str) -> None:
    shipped = (JAEGER_UI_ASSETS / "index.html").read_text(encoding="utf-8")
    assert PLACEHOLDER not in index
    assert "<title>Jaeger UI</title>" in index
    # The bundle's own script and stylesheet, relative to <base>, which Jaeger rewrote from "/"
    # so that they load from /jaeger/static/ on every page, /jaeger/trace/<id> included.
    assert assets_of(index).scripts == assets_of(shipped).scripts
    assert [s for s in assets_of(index).scripts if re.fullmatch(r"\./static/index-.+\.js", s)]
    assert '<base href="/jaeger/"' in index
    assert '<base href="/"' not in index


def test_static_assets_answer(jaeger: httpx.Client, index: str) -> None:
    page = assets_of(index)
    assert page.scripts and page.stylesheets
    for relative, kind in [(s, "javascript") for s in page.scripts] + [
        (s, "css") for s in page.stylesheets
    ]:
        name = relative.removeprefix("./")
        response = jaeger.get(f"{JAEGER_BASE_PATH}/{name}")
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], (name, response.headers)
        assert response.content == (JAEGER_UI_ASSETS / name).read_bytes(), name


def test_ui_config_is_injected(index: str) -> None:
    config = injected(index, "JAEGER_CONFIG")
    assert config == json.loads(JAEGER_UI_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    assert {
        "type": "tags",
        "key": "order.id",
        "url": links.ORDER_PATH.format(order_id="#{order.id}"),
        "text": "Open order #{order.id} in loupe's console",
    } in config["linkPatterns"]
    # Jaeger fills in its own version and what its storage can do, too.
    version = injected(index, "JAEGER_VERSION")
    assert isinstance(version, dict) and "gitVersion" in version
    assert injected(index, "JAEGER_STORAGE_CAPABILITIES") == {"archiveStorage": False}


@pytest.mark.parametrize(
    "path",
    [
        "/search",
        "/search?service=shop-api",
        "/trace/4bf92f3577b34da6a3ce929d0e0e4736",
        "/dependencies",
    ],
)
def test_deep_links_serve_the_ui(jaeger: httpx.Client, index: str, path: str) -> None:
    # The UI routes in the browser: any path under the base path that is not the API or a
    # static file answers with the same page.
    response = jaeger.get(f"{JAEGER_BASE_PATH}{path}")
    assert response.status_code == 200
    assert response.text == index


def test_the_api_is_still_the_api(jaeger: httpx.Client) -> None:
    response = jaeger.get(f"{JAEGER_BASE_PATH}/api/services")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


def test_the_assets_record_their_release() -> None:
    readme = (JAEGER_UI_ASSETS / "README").read_text(encoding="utf-8")
    assert "Jaeger UI 2.14.1" in readme
    assert (
        (JAEGER_UI_ASSETS / "LICENSE")
        .read_text(encoding="utf-8")
        .lstrip()
        .startswith("Apache License")
    )
