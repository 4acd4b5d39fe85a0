"""The sign-in gateway's local pieces: the stack's secrets kept in `.secrets/` (the gateway's,
and the token Jaeger gives the monitor's OTLP intake), and the Dex and oauth2-proxy
configurations rendered from the templates in `deploy/dex/` and `deploy/oauth2-proxy/`.

Nothing here starts a process (see `components.dex_process` and `components.gateway_process`);
it decides addresses, makes sure the secrets exist and writes the files those processes read.
"""

from __future__ import annotations

import base64
import html
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import ClassVar, Literal, Self
from urllib.parse import urlsplit

import bcrypt

from loupe.config import DEFAULT_SECRETS_DIR, REPO_ROOT, SECRETS_DIR
from loupe.environment import EnvSettings, Variable, file_path, names, port_number, url
from loupe.monitor.settings import INTAKE_TOKEN_FILE
from loupe.secretfiles import SecretFileError, generated
from loupe.stack.process import StackError

DEX_TEMPLATE = REPO_ROOT / "deploy" / "dex" / "config.yaml"
GATEWAY_TEMPLATE = REPO_ROOT / "deploy" / "oauth2-proxy" / "oauth2-proxy.cfg"
GATEWAY_PAGES = REPO_ROOT / "deploy" / "oauth2-proxy" / "templates"

DEFAULT_GATEWAY_ADDRESS = "127.0.0.1:4180"
DEFAULT_DEX_PORT = 5556
DEFAULT_ALLOWED_GROUPS = ("devops", "developers")
CLIENT_ID = "loupe-gateway"
DEFAULT_GROUPS_CLAIM = "groups"
# Dex knows the `groups` scope and hands out refresh tokens for offline_access; other providers
# may refuse scopes they do not know (Google does), so theirs is LOUPE_OIDC_SCOPE.
DEX_SCOPE = "openid email profile groups offline_access"
DEFAULT_OIDC_SCOPE = "openid email profile"

DEMO_USERS = {
    "devops@example.com": ("devops",),
    "developer@example.com": ("developers",),
    "guest@example.com": (),
}
"""The local users Dex knows (deploy/dex/config.yaml) and their groups."""

PasswordSource = Literal["environment", "generated", "file"]


# -- secrets -------------------------------------------------------------------------------


def _token() -> str:
    # 32 random bytes, URL-safe base64 without padding: oauth2-proxy decodes this form of a
    # cookie secret back to 32 bytes (an AES-256 key).
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


@dataclass(frozen=True)
class Secrets:
    """The local stack's secrets; files under `directory` have mode 0600."""

    directory: Path
    demo_password: str
    demo_password_source: PasswordSource
    client_secret: str
    # What Jaeger sends the monitor's OTLP intake, and the monitor expects (intake.authorize).
    monitor_intake_token: str = field(default="", repr=False)

    @property
    def demo_password_file(self) -> Path:
        return self.directory / "demo-password"

    @property
    def client_secret_file(self) -> Path:
        return self.directory / "oauth2-client-secret"

    @property
    def cookie_secret_file(self) -> Path:
        return self.directory / "cookie-secret"

    @property
    def monitor_intake_token_file(self) -> Path:
        return self.directory / "monitor-intake-token"

    @classmethod
    def ensure(
        cls, directory: Path = DEFAULT_SECRETS_DIR, environ: Mapping[str, str] = os.environ
    ) -> Secrets:
        """Reads the secrets, generating the missing ones.

        The demo users' password is LOUPE_DEMO_PASSWORD when set (then nothing is written for
        it); otherwise the one kept in `demo-password`, generated on the first run.
        """
        directory = directory.resolve()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        blank = cls(directory, "", "environment", "")
        from_env = environ.get(DEMO_PASSWORD.name, "")
        source: PasswordSource
        try:
            if from_env.strip():
                password, source = from_env, "environment"
            else:
                password, made = generated(
                    blank.demo_password_file, lambda: secrets.token_urlsafe(12)
                )
                source = "generated" if made else "file"
            client_secret, _ = generated(blank.client_secret_file, _token)
            generated(blank.cookie_secret_file, _token)
            intake_token, _ = generated(blank.monitor_intake_token_file, _token)
        except SecretFileError as exc:
            raise StackError(str(exc)) from None
        return cls(directory, password, source, client_secret, intake_token)

    def monitor_env(self) -> dict[str, str]:
        """The variable that points the monitor at its intake token."""
        return {INTAKE_TOKEN_FILE.name: str(self.monitor_intake_token_file)}


def trace_context_key(directory: Path = DEFAULT_SECRETS_DIR) -> bytes:
    """The key with which loupe's services vouch for the trace context of their calls to each
    other (telemetry/edge.py): `trace-context-key`, made on first use by whichever service
    starts first, so that all services of one installation share it."""
    value, _ = generated(directory.resolve() / "trace-context-key", _token)
    return value.encode()


def bcrypt_hash(password: str, rounds: int = 10) -> str:
    """The bcrypt hash Dex expects in staticPasswords[].hash."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


# -- addresses and configuration -----------------------------------------------------------


def _split_address(address: str, name: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise StackError(f"{name} must be host:port, got {address!r}")
    return host, int(port)


ADDRESS = Variable(
    "LOUPE_GATEWAY_ADDRESS",
    DEFAULT_GATEWAY_ADDRESS,
    "where the gateway listens (host:port); the OAuth redirect URI follows it",
)
TLS_CERT = Variable(
    "LOUPE_GATEWAY_TLS_CERT",
    None,
    "PEM certificate (chain); with `LOUPE_GATEWAY_TLS_KEY` (both or neither): HTTPS only on"
    " the same address, and the session cookie gets `Secure`",
    file_path,
)
TLS_KEY = Variable(
    "LOUPE_GATEWAY_TLS_KEY", None, "the private key of `LOUPE_GATEWAY_TLS_CERT`, PEM", file_path
)
ALLOWED_GROUPS = Variable(
    "LOUPE_ALLOWED_GROUPS",
    DEFAULT_ALLOWED_GROUPS,
    "comma-separated; the OIDC `groups` claim must name one of them",
    names,
)
DEX_PORT = Variable(
    "LOUPE_DEX_PORT",
    DEFAULT_DEX_PORT,
    "Dex's HTTP port on 127.0.0.1 (issuer `http://127.0.0.1:<port>/dex`)",
    port_number,
)
DEMO_PASSWORD = Variable(
    "LOUPE_DEMO_PASSWORD",
    "",
    "the demo users' password; unset: generated once into `.secrets/demo-password` and"
    " printed by `make run`",
)
PUBLIC_URL = Variable(
    "LOUPE_GATEWAY_PUBLIC_URL",
    "",
    "the gateway's URL as browsers reach it, when not its listening address; the redirect URI"
    " follows it, and `https://` makes the cookie `Secure`",
    url,
)
OIDC_ISSUER_URL = Variable(
    "LOUPE_OIDC_ISSUER_URL",
    "",
    "another OpenID Connect provider instead of Dex (then Dex is not started); needs"
    " `LOUPE_OIDC_CLIENT_ID` and `LOUPE_OIDC_CLIENT_SECRET_FILE`. See"
    " [security.md](security.md#another-identity-provider)",
    url,
)
OIDC_CLIENT_ID = Variable(
    "LOUPE_OIDC_CLIENT_ID", "", "with `LOUPE_OIDC_ISSUER_URL`: the gateway's client id there"
)
OIDC_CLIENT_SECRET_FILE = Variable(
    "LOUPE_OIDC_CLIENT_SECRET_FILE",
    None,
    "with `LOUPE_OIDC_ISSUER_URL`: the file holding the gateway's client secret",
    file_path,
)
OIDC_GROUPS_CLAIM = Variable(
    "LOUPE_OIDC_GROUPS_CLAIM",
    DEFAULT_GROUPS_CLAIM,
    "with `LOUPE_OIDC_ISSUER_URL`: the claim that lists the user's groups",
)
OIDC_SCOPE = Variable(
    "LOUPE_OIDC_SCOPE", DEFAULT_OIDC_SCOPE, "with `LOUPE_OIDC_ISSUER_URL`: the scope asked for"
)
OIDC_PROVIDER_NAME = Variable(
    "LOUPE_OIDC_PROVIDER_NAME",
    "",
    "with `LOUPE_OIDC_ISSUER_URL`: the provider's name on the sign-in button",
)
OIDC_PREFIX = "LOUPE_OIDC_"


@dataclass(frozen=True)
class GatewaySettings(EnvSettings):
    """Where the gateway and Dex listen, who gets in, where TLS material lives, and another
    OpenID Connect provider in place of Dex (its `LOUPE_OIDC_*` variables count only when
    `LOUPE_OIDC_ISSUER_URL` is set)."""

    invalid: ClassVar[type[Exception]] = StackError

    address: str = ADDRESS.field()
    dex_port: int = DEX_PORT.field()
    allowed_groups: tuple[str, ...] = ALLOWED_GROUPS.field()
    tls_cert: Path | None = TLS_CERT.field()
    tls_key: Path | None = TLS_KEY.field()
    secrets_dir: Path = SECRETS_DIR.field()
    public_url: str = PUBLIC_URL.field()
    oidc_issuer_url: str = OIDC_ISSUER_URL.field()
    oidc_client_id: str = OIDC_CLIENT_ID.field()
    oidc_client_secret_file: Path | None = OIDC_CLIENT_SECRET_FILE.field()
    oidc_groups_claim: str = OIDC_GROUPS_CLAIM.field()
    oidc_scope: str = OIDC_SCOPE.field()
    oidc_provider_name: str = OIDC_PROVIDER_NAME.field()

    def __post_init__(self) -> None:
        _split_address(self.address, "LOUPE_GATEWAY_ADDRESS")
        if self.public_url:
            public = urlsplit(self.public_url)
            if public.scheme not in ("http", "https") or not public.hostname:
                raise StackError(
                    f"LOUPE_GATEWAY_PUBLIC_URL must be an http(s) URL, got {self.public_url!r}"
                )
        if self.oidc_issuer_url:
            _check_issuer(self.oidc_issuer_url)
            if not self.oidc_client_id:
                raise StackError("LOUPE_OIDC_ISSUER_URL is set, so LOUPE_OIDC_CLIENT_ID must be")
            if self.oidc_client_secret_file is None:
                raise StackError(
                    "LOUPE_OIDC_ISSUER_URL is set, so LOUPE_OIDC_CLIENT_SECRET_FILE must name"
                    " the file holding the client secret"
                )
            if not self.oidc_groups_claim:
                raise StackError("LOUPE_OIDC_GROUPS_CLAIM must name a claim")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise StackError(
                "set both LOUPE_GATEWAY_TLS_CERT and LOUPE_GATEWAY_TLS_KEY for TLS, or neither"
            )
        if not self.allowed_groups:
            raise StackError("LOUPE_ALLOWED_GROUPS names no group, so nobody could sign in")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Self:
        if not OIDC_ISSUER_URL.raw(environ):
            # With Dex, LOUPE_OIDC_* set for the portal (e.g. its client id) are not ours.
            environ = {k: v for k, v in environ.items() if not k.startswith(OIDC_PREFIX)}
        return super().from_env(environ)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def host(self) -> str:
        return _split_address(self.address, "LOUPE_GATEWAY_ADDRESS")[0]

    @property
    def port(self) -> int:
        return _split_address(self.address, "LOUPE_GATEWAY_ADDRESS")[1]

    @property
    def uses_dex(self) -> bool:
        """True unless LOUPE_OIDC_ISSUER_URL names another provider (then Dex is not run)."""
        return not self.oidc_issuer_url

    @property
    def issuer(self) -> str:
        """The OpenID Connect issuer the gateway signs users in with."""
        return self.oidc_issuer_url or self.dex_issuer

    @property
    def url(self) -> str:
        """The gateway's base URL as a browser reaches it (on this machine, by default)."""
        if self.public_url:
            return self.public_url
        host = self.host
        if host in ("0.0.0.0", "", "[::]", "::"):
            host = "127.0.0.1"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def dex_issuer(self) -> str:
        return f"http://127.0.0.1:{self.dex_port}/dex"

    @property
    def callback_url(self) -> str:
        return f"{self.url}/oauth2/callback"


def _check_issuer(issuer: str) -> None:
    parts = urlsplit(issuer)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and loopback:
        return
    raise StackError(
        f"LOUPE_OIDC_ISSUER_URL must be an https:// URL (http:// only on this machine), "
        f"got {issuer!r}"
    )


@dataclass(frozen=True)
class GatewayFiles:
    """What `render` wrote: the two configurations, the pages folder and the audit log path.

    With another provider than Dex (`GatewaySettings.uses_dex` false) `dex_config` is not
    written (and an old one is removed).
    """

    directory: Path
    dex_config: Path
    gateway_config: Path
    pages: Path
    audit_log: Path
    secrets: Secrets = field(repr=False)


def _encoded(values: Mapping[str, object]) -> dict[str, str]:
    # JSON strings and arrays of strings read back the same in YAML (double-quoted scalars,
    # flow sequences) and in TOML (basic strings, arrays).
    return {name: json.dumps(value) for name, value in values.items()}


def _render(template: Path, values: Mapping[str, str], target: Path) -> None:
    try:
        text = Template(template.read_text(encoding="utf-8")).substitute(values)
    except (KeyError, ValueError) as exc:
        raise StackError(f"cannot render {template}: {exc!r}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written anew each run, mode 0600: the Dex configuration holds the client secret.
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    tmp.replace(target)


def render(
    settings: GatewaySettings,
    jaeger_query_url: str,
    data_dir: Path,
    logs_dir: Path,
    secrets_: Secrets | None = None,
    portal_url: str | None = None,
    *,
    monitor_url: str | None = None,
) -> GatewayFiles:
    """Writes dex.yaml, oauth2-proxy.cfg and templates/error.html under `data_dir`/gateway.

    `jaeger_query_url` is Jaeger's query URL with its base path (`JaegerPorts.query_url`);
    `portal_url` is loupe-portal's, served at `/` (a static 200 there without it);
    `monitor_url` is the order-flow monitor's root URL (scheme, host and port), which gets the
    paths under `/monitor/` unchanged (no `/monitor/` route without it).
    """
    for name, path in (("certificate", settings.tls_cert), ("key", settings.tls_key)):
        if path is not None and not path.is_file():
            raise StackError(f"the gateway's TLS {name} {path} does not exist")
    secrets_ = secrets_ or Secrets.ensure(settings.secrets_dir)
    directory = (data_dir / "gateway").resolve()
    logs_dir = logs_dir.resolve()
    logs_dir.mkdir(parents=True, exist_ok=True)
    files = GatewayFiles(
        directory=directory,
        dex_config=directory / "dex.yaml",
        gateway_config=directory / "oauth2-proxy.cfg",
        pages=directory / "templates",
        audit_log=logs_dir / "audit.jsonl",
        secrets=secrets_,
    )

    if settings.oidc_client_secret_file is not None:
        # Only checked, never copied or re-moded (the file is the operator's): oauth2-proxy
        # reads it itself.
        try:
            readable = settings.oidc_client_secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StackError(
                f"cannot read the OIDC client secret file {settings.oidc_client_secret_file}:"
                f" {exc.strerror or exc}"
            ) from exc
        if not readable:
            raise StackError(
                f"the OIDC client secret file {settings.oidc_client_secret_file} is empty"
            )

    # oauth2-proxy passes request paths through unchanged, so Jaeger is served under the same
    # path on the gateway as its base_path on the query port.
    jaeger = urlsplit(jaeger_query_url)
    if jaeger.path.strip("/") == "":
        raise StackError(f"Jaeger's query URL needs its base path, got {jaeger_query_url!r}")
    upstreams = [jaeger_query_url.rstrip("/") + "/"]
    if monitor_url:
        upstreams.append(_monitor_upstream(monitor_url))
    upstreams.append(portal_url.rstrip("/") + "/" if portal_url else "static://200")

    if settings.uses_dex:
        _render_dex(settings, secrets_, files)
    else:
        files.dex_config.unlink(missing_ok=True)

    _render(
        GATEWAY_TEMPLATE,
        _encoded(
            {
                "http_address": settings.address,
                "https_address": settings.address,
                "tls_cert_file": str(settings.tls_cert.resolve()) if settings.tls_cert else "",
                "tls_key_file": str(settings.tls_key.resolve()) if settings.tls_key else "",
                "upstreams": upstreams,
                "provider_name": settings.oidc_provider_name
                or ("loupe sign-in (Dex)" if settings.uses_dex else "loupe sign-in"),
                "oidc_issuer_url": settings.issuer,
                "client_id": settings.oidc_client_id or CLIENT_ID,
                "client_secret_file": str(
                    settings.oidc_client_secret_file.resolve()
                    if settings.oidc_client_secret_file is not None
                    else secrets_.client_secret_file
                ),
                "scope": DEX_SCOPE if settings.uses_dex else settings.oidc_scope,
                "groups_claim": settings.oidc_groups_claim,
                "redirect_url": settings.callback_url,
                "allowed_groups": list(settings.allowed_groups),
                "cookie_secret_file": str(secrets_.cookie_secret_file),
                "templates_dir": str(files.pages),
                "audit_log": str(files.audit_log),
            }
        )
        # A bare TOML boolean, not a string.
        # Secure whenever browsers use https, also when TLS ends at a proxy in front.
        | {"cookie_secure": "true" if settings.url.startswith("https://") else "false"},
        files.gateway_config,
    )

    groups = ", ".join(settings.allowed_groups)
    for page in sorted(GATEWAY_PAGES.glob("*.html")):
        _render(page, {"allowed_groups": html.escape(groups)}, files.pages / page.name)
    return files


def _monitor_upstream(monitor_url: str) -> str:
    # oauth2-proxy takes an upstream URL's path as the prefix it routes on and sends requests
    # to the host's root with their own path, so a path in monitor_url would only move the
    # route, never the target: refused rather than silently serving the monitor elsewhere.
    parts = urlsplit(monitor_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StackError(f"the monitor's URL must be an http(s) URL, got {monitor_url!r}")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise StackError(
            f"the monitor's URL must be scheme://host:port only (it serves under /monitor/ "
            f"itself), got {monitor_url!r}"
        )
    return f"{parts.scheme}://{parts.netloc}/monitor/"


def _render_dex(settings: GatewaySettings, secrets_: Secrets, files: GatewayFiles) -> None:
    _render(
        DEX_TEMPLATE,
        _encoded(
            {
                "issuer": settings.dex_issuer,
                "web_address": f"127.0.0.1:{settings.dex_port}",
                "client_id": CLIENT_ID,
                "client_secret": secrets_.client_secret,
                "redirect_uri": settings.callback_url,
                "demo_password_hash": bcrypt_hash(secrets_.demo_password),
            }
        ),
        files.dex_config,
    )
