"""Cross-site request forgery kept out of the console's actions.

An action must carry the person's anti-forgery token in the X-Loupe-Csrf header, and not come
from another site by what the browser says of it (Origin, Sec-Fetch-Site: see
loupe.access.refuse_cross_site, which the monitor's actions pass too). The token is an HMAC
of the person's subject under a key only this portal holds: a page elsewhere can neither read
it (the same-origin policy) nor send a custom header without a CORS preflight, which the
portal never grants. The key is LOUPE_PORTAL_ANTIFORGERY_KEY, or made when the portal starts
(a page opened before a restart then asks to be reloaded).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from loupe.access import CrossSiteRefused, origin_of, refuse_cross_site

HEADER = "X-Loupe-Csrf"


class ForgeryRefused(CrossSiteRefused):
    """The action carries no valid anti-forgery token."""


class Antiforgery:
    def __init__(self, key: bytes, allowed_origins: tuple[str, ...]) -> None:
        self._key = key
        self.allowed_origins = tuple(origin_of(o) for o in allowed_origins)

    def token(self, subject: str) -> str:
        return hmac.new(self._key, subject.encode(), hashlib.sha256).hexdigest()

    def check(self, request: Request, subject: str) -> None:
        refuse_cross_site(request, self.allowed_origins)
        sent = request.headers.get(HEADER, "")
        if not hmac.compare_digest(sent, self.token(subject)):
            raise ForgeryRefused(
                "refused: the anti-forgery token is missing or out of date; reload the page"
            )
