"""The Host headers loupe's apps answer to.

A web page on any site can point a name it controls at 127.0.0.1 (DNS rebinding) and then
call CRM's and MES's actions, the monitor or the console from a developer's browser: the
browser takes them for that site's own. Its requests name the page's host in their Host
header, so each app answers only to `Settings.known_hosts` (127.0.0.1, localhost, the
console's host and LOUPE_ALLOWED_HOSTS) and refuses any other with 400.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from loupe.config import Settings


def answer_only_known_hosts(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.known_hosts))
