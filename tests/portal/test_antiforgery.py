"""Actions prove they come from the console: the person's token, and the console's origin when
the browser names one."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from loupe.access import CrossSiteRefused
from loupe.portal.antiforgery import HEADER, Antiforgery, ForgeryRefused, origin_of

GUARD = Antiforgery(b"k" * 32, ("https://Loupe.example.org/console/",))


def _request(**headers: str) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


def test_a_token_is_the_persons_and_the_keys() -> None:
    token = GUARD.token("user-1")
    assert token == GUARD.token("user-1") and len(token) == 64
    assert token != GUARD.token("user-2")
    assert token != Antiforgery(b"x" * 32, ()).token("user-1"), "another key, another token"


def test_the_persons_token_from_the_console_passes() -> None:
    token = GUARD.token("user-1")
    GUARD.check(_request(**{HEADER: token, "Origin": "https://loupe.example.org"}), "user-1")
    # No Origin at all (a script, or an old browser): the token alone decides.
    GUARD.check(_request(**{HEADER: token}), "user-1")
    for site in ("same-origin", "none"):
        GUARD.check(_request(**{HEADER: token, "Sec-Fetch-Site": site}), "user-1")


@pytest.mark.parametrize(
    ("token", "origin", "why"),
    [
        (None, None, "anti-forgery token is missing"),
        ("0" * 64, None, "anti-forgery token is missing or out of date"),
        (None, "https://loupe.example.org", "anti-forgery token is missing"),
        ("mine", "https://evil.example", "comes from https://evil.example"),
        ("mine", "http://loupe.example.org", "comes from http://loupe.example.org"),
        ("mine", "null", "comes from null"),
        ("mine", "cross-site", "comes from a cross-site page"),
        # Another port of the same host is the same site, not the console.
        ("mine", "same-site", "comes from a same-site page"),
    ],
)
def test_anything_else_is_refused_with_its_reason(
    token: str | None, origin: str | None, why: str
) -> None:
    headers = {}
    if token is not None:
        headers[HEADER] = GUARD.token("user-1") if token == "mine" else token
    if origin is not None and origin.endswith("-site"):
        headers["Sec-Fetch-Site"] = origin
    elif origin is not None:
        headers["Origin"] = origin
    with pytest.raises(CrossSiteRefused, match=why):
        GUARD.check(_request(**headers), "user-1")


def test_someone_elses_token_is_refused() -> None:
    with pytest.raises(ForgeryRefused):
        GUARD.check(_request(**{HEADER: GUARD.token("user-2")}), "user-1")


def test_origin_is_scheme_host_and_port() -> None:
    assert origin_of("https://Loupe.example.org:8443/a/b?c") == "https://loupe.example.org:8443"
    assert GUARD.allowed_origins == ("https://loupe.example.org",)
