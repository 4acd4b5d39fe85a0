"""Local secrets and the rendered Dex and oauth2-proxy configurations (no process started)."""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path

import bcrypt
import pytest
import yaml

from loupe.stack.components import dex_process, gateway_process
from loupe.stack.gateway import DEMO_USERS, GatewaySettings, Secrets, render
from loupe.stack.process import StackError


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_secrets_are_generated_once_with_private_modes(tmp_path: Path) -> None:
    first = Secrets.ensure(tmp_path / "s", environ={})
    assert first.demo_password_source == "generated"
    assert mode(first.directory) == 0o700
    for path in (
        first.demo_password_file,
        first.client_secret_file,
        first.cookie_secret_file,
        first.monitor_intake_token_file,
    ):
        assert mode(path) == 0o600, path
        assert not path.read_text().endswith("\n")
    assert first.demo_password_file.read_text() == first.demo_password
    assert first.monitor_intake_token_file.read_text() == first.monitor_intake_token
    assert len(first.monitor_intake_token) >= 43  # 32 random bytes
    assert first.monitor_intake_token not in repr(first)

    again = Secrets.ensure(tmp_path / "s", environ={})
    assert again.demo_password_source == "file"
    assert (again.demo_password, again.client_secret) == (first.demo_password, first.client_secret)
    assert again.monitor_intake_token == first.monitor_intake_token
    # The monitor reads the token from the file `loupe up` points it at.
    assert again.monitor_env() == {
        "LOUPE_MONITOR_INTAKE_TOKEN_FILE": str(first.monitor_intake_token_file)
    }


def test_demo_password_from_environment_is_not_written(tmp_path: Path) -> None:
    keys = Secrets.ensure(tmp_path / "s", environ={"LOUPE_DEMO_PASSWORD": "correct horse"})
    assert (keys.demo_password, keys.demo_password_source) == ("correct horse", "environment")
    assert not keys.demo_password_file.exists()


def test_cookie_secret_decodes_to_an_aes_key(tmp_path: Path) -> None:
    keys = Secrets.ensure(tmp_path / "s", environ={})
    raw = keys.cookie_secret_file.read_text()
    assert len(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) == 32


def test_widened_secret_file_is_narrowed(tmp_path: Path) -> None:
    keys = Secrets.ensure(tmp_path / "s", environ={})
    keys.client_secret_file.chmod(0o644)
    Secrets.ensure(tmp_path / "s", environ={})
    assert mode(keys.client_secret_file) == 0o600


def test_settings_from_env() -> None:
    settings = GatewaySettings.from_env(
        {
            "LOUPE_GATEWAY_ADDRESS": "0.0.0.0:8443",
            "LOUPE_GATEWAY_TLS_CERT": "/etc/loupe/cert.pem",
            "LOUPE_GATEWAY_TLS_KEY": "/etc/loupe/key.pem",
            "LOUPE_ALLOWED_GROUPS": " sre, ,devops ",
            "LOUPE_DEX_PORT": "15556",
        }
    )
    assert settings.allowed_groups == ("sre", "devops")
    assert settings.url == "https://127.0.0.1:8443"
    assert settings.callback_url == "https://127.0.0.1:8443/oauth2/callback"
    assert settings.dex_issuer == "http://127.0.0.1:15556/dex"
    defaults = GatewaySettings.from_env({})
    assert (defaults.url, defaults.allowed_groups) == (
        "http://127.0.0.1:4180",
        ("devops", "developers"),
    )


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"LOUPE_GATEWAY_ADDRESS": "4180"}, "host:port"),
        ({"LOUPE_GATEWAY_TLS_CERT": "/c.pem"}, "both"),
        ({"LOUPE_ALLOWED_GROUPS": " , "}, "no group"),
        ({"LOUPE_DEX_PORT": "dex"}, "port number"),
    ],
)
def test_settings_refuse_bad_values(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(StackError, match=problem):
        GatewaySettings.from_env(environ)


def test_render_writes_consistent_configs(tmp_path: Path) -> None:
    settings = GatewaySettings(
        address="127.0.0.1:14180",
        dex_port=15556,
        allowed_groups=("devops", 'we"ird'),
        secrets_dir=tmp_path / "s",
    )
    keys = Secrets.ensure(settings.secrets_dir, environ={"LOUPE_DEMO_PASSWORD": "pw"})
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l", keys)

    dex = yaml.safe_load(files.dex_config.read_text())
    assert dex["issuer"] == "http://127.0.0.1:15556/dex"
    assert dex["web"]["http"] == "127.0.0.1:15556"
    assert dex["storage"]["type"] == "memory"
    (client,) = dex["staticClients"]
    assert client["secret"] == keys.client_secret
    assert client["redirectURIs"] == ["http://127.0.0.1:14180/oauth2/callback"]
    users = {u["email"]: u for u in dex["staticPasswords"]}
    assert {e: tuple(u["groups"]) for e, u in users.items()} == DEMO_USERS
    for user in users.values():
        assert bcrypt.checkpw(b"pw", user["hash"].encode())
    assert mode(files.dex_config) == 0o600

    proxy = tomllib.loads(files.gateway_config.read_text())
    assert proxy["http_address"] == "127.0.0.1:14180"
    assert proxy["tls_cert_file"] == proxy["tls_key_file"] == ""
    assert proxy["cookie_secure"] is False
    assert proxy["upstreams"] == ["http://127.0.0.1:16686/jaeger/", "static://200"]
    assert proxy["oidc_issuer_url"] == dex["issuer"]
    assert proxy["redirect_url"] == client["redirectURIs"][0]
    assert proxy["allowed_groups"] == ["devops", 'we"ird']
    assert proxy["client_secret_file"] == str(keys.client_secret_file)
    assert proxy["cookie_secret_file"] == str(keys.cookie_secret_file)
    assert proxy["logging_filename"] == str(files.audit_log)
    assert keys.client_secret not in files.gateway_config.read_text()

    page = (files.pages / "error.html").read_text()
    assert "devops, we&quot;ird" in page
    assert "${" not in page


def test_render_with_tls_marks_the_cookie_secure(tmp_path: Path) -> None:
    settings = GatewaySettings(
        tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem", secrets_dir=tmp_path / "s"
    )
    with pytest.raises(StackError, match="TLS certificate"):
        render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    (tmp_path / "cert.pem").write_text("not checked here")
    (tmp_path / "key.pem").write_text("not checked here")
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    proxy = tomllib.loads(files.gateway_config.read_text())
    assert proxy["cookie_secure"] is True
    assert proxy["tls_cert_file"] == str((tmp_path / "cert.pem").resolve())
    assert proxy["https_address"] == "127.0.0.1:4180"
    assert proxy["redirect_url"].startswith("https://")
    gateway = gateway_process(settings, files, tmp_path / "l", binary=tmp_path / "cert.pem")
    # Over TLS the probe only checks that the port answers.
    assert gateway.ready_urls == ()
    assert gateway.ready_port == 4180


def test_render_needs_jaegers_base_path(tmp_path: Path) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "s")
    with pytest.raises(StackError, match="base path"):
        render(settings, "http://127.0.0.1:16686", tmp_path / "d", tmp_path / "l")


def test_processes_say_how_to_build_missing_binaries(tmp_path: Path) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "s")
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    with pytest.raises(StackError, match=r"Dex binary is missing.*build-tools\.sh"):
        dex_process(settings, files, binary=tmp_path / "nope")
    with pytest.raises(StackError, match=r"oauth2-proxy binary is missing.*build-tools\.sh"):
        gateway_process(settings, files, binary=tmp_path / "nope")

    binary = tmp_path / "bin"
    binary.write_text("")
    dex = dex_process(settings, files, tmp_path / "l", binary=binary)
    assert dex.argv == [str(binary), "serve", str(files.dex_config)]
    assert dex.ready_urls == ("http://127.0.0.1:5556/dex/.well-known/openid-configuration",)
    assert dex.listens_on == (5556,)
    gateway = gateway_process(settings, files, tmp_path / "l", binary=binary)
    assert gateway.argv == [str(binary), "--config", str(files.gateway_config)]
    assert gateway.ready_urls == ("http://127.0.0.1:4180/ping",)
    assert gateway.listens_on == (4180,)


def test_external_provider_settings_from_env(tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    settings = GatewaySettings.from_env(
        {
            "LOUPE_OIDC_ISSUER_URL": "https://sso.example.com/realms/workshop/",
            "LOUPE_OIDC_CLIENT_ID": "loupe-gateway",
            "LOUPE_OIDC_CLIENT_SECRET_FILE": str(secret),
            "LOUPE_OIDC_GROUPS_CLAIM": "roles",
            "LOUPE_GATEWAY_PUBLIC_URL": "https://loupe.example.com/",
        }
    )
    assert not settings.uses_dex
    assert settings.issuer == "https://sso.example.com/realms/workshop"
    assert settings.oidc_groups_claim == "roles"
    assert settings.oidc_scope == "openid email profile"
    assert settings.callback_url == "https://loupe.example.com/oauth2/callback"
    assert GatewaySettings.from_env({}).uses_dex


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"LOUPE_OIDC_ISSUER_URL": "https://sso.example.com"}, "LOUPE_OIDC_CLIENT_ID"),
        (
            {"LOUPE_OIDC_ISSUER_URL": "https://sso.example.com", "LOUPE_OIDC_CLIENT_ID": "c"},
            "LOUPE_OIDC_CLIENT_SECRET_FILE",
        ),
        (
            {
                "LOUPE_OIDC_ISSUER_URL": "http://sso.example.com",
                "LOUPE_OIDC_CLIENT_ID": "c",
                "LOUPE_OIDC_CLIENT_SECRET_FILE": "/s",
            },
            "https://",
        ),
        ({"LOUPE_GATEWAY_PUBLIC_URL": "loupe.example.com"}, "http"),
    ],
)
def test_external_provider_refuses_incomplete_settings(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(StackError, match=problem):
        GatewaySettings.from_env(environ)


def test_render_for_dex_asks_for_groups_and_refresh_tokens(tmp_path: Path) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "s")
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    proxy = tomllib.loads(files.gateway_config.read_text())
    assert settings.uses_dex
    assert files.dex_config.is_file()
    assert proxy["provider"] == "oidc"
    assert proxy["oidc_issuer_url"] == "http://127.0.0.1:5556/dex"
    assert proxy["client_id"] == "loupe-gateway"
    assert proxy["scope"] == "openid email profile groups offline_access"
    assert proxy["oidc_groups_claim"] == "groups"
    assert proxy["provider_display_name"] == "loupe sign-in (Dex)"


def test_render_for_another_provider_leaves_dex_out(tmp_path: Path) -> None:
    secret = tmp_path / "keycloak-client-secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    # A Dex configuration left from an earlier run with Dex is removed.
    Path(tmp_path / "d" / "gateway").mkdir(parents=True)
    (tmp_path / "d" / "gateway" / "dex.yaml").write_text("old")
    settings = GatewaySettings(
        address="0.0.0.0:8443",
        public_url="https://loupe.example.com",
        secrets_dir=tmp_path / "s",
        oidc_issuer_url="https://sso.example.com/realms/workshop",
        oidc_client_id="loupe-gateway",
        oidc_client_secret_file=secret,
        oidc_groups_claim="roles",
        oidc_scope="openid email profile roles",
        oidc_provider_name="Workshop SSO",
    )
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    assert not files.dex_config.exists()
    proxy = tomllib.loads(files.gateway_config.read_text())
    assert proxy["oidc_issuer_url"] == "https://sso.example.com/realms/workshop"
    assert proxy["client_id"] == "loupe-gateway"
    assert proxy["client_secret_file"] == str(secret.resolve())
    assert proxy["redirect_url"] == "https://loupe.example.com/oauth2/callback"
    assert proxy["oidc_groups_claim"] == "roles"
    assert proxy["scope"] == "openid email profile roles"
    assert proxy["provider_display_name"] == "Workshop SSO"
    assert proxy["allowed_groups"] == ["devops", "developers"]
    assert "s3cret" not in files.gateway_config.read_text()

    secret.write_text("\n")
    with pytest.raises(StackError, match="is empty"):
        render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    secret.unlink()
    with pytest.raises(StackError, match="cannot read the OIDC client secret file"):
        render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")


def test_https_public_url_marks_the_cookie_secure(tmp_path: Path) -> None:
    settings = GatewaySettings(public_url="https://loupe.example.com", secrets_dir=tmp_path / "s")
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    proxy = tomllib.loads(files.gateway_config.read_text())
    assert proxy["cookie_secure"] is True
    assert proxy["http_address"] == "127.0.0.1:4180"


def test_render_routes_the_monitor_between_jaeger_and_the_portal(tmp_path: Path) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "s")
    jaeger = "http://127.0.0.1:16686/jaeger"

    def upstreams(portal_url: str | None = None, monitor_url: str | None = None) -> list[str]:
        files = render(
            settings,
            jaeger,
            tmp_path / "d",
            tmp_path / "l",
            None,
            portal_url,
            monitor_url=monitor_url,
        )
        return list(tomllib.loads(files.gateway_config.read_text())["upstreams"])

    assert upstreams(portal_url="http://127.0.0.1:8090") == [
        "http://127.0.0.1:16686/jaeger/",
        "http://127.0.0.1:8090/",
    ]
    # The monitor serves its API under /monitor/api/..., so the path passes on unchanged.
    assert upstreams(portal_url="http://127.0.0.1:8090", monitor_url="http://127.0.0.1:8091") == [
        "http://127.0.0.1:16686/jaeger/",
        "http://127.0.0.1:8091/monitor/",
        "http://127.0.0.1:8090/",
    ]
    assert upstreams(monitor_url="http://127.0.0.1:8091/") == [
        "http://127.0.0.1:16686/jaeger/",
        "http://127.0.0.1:8091/monitor/",
        "static://200",
    ]


@pytest.mark.parametrize(
    ("monitor_url", "problem"),
    [
        ("127.0.0.1:8091", "http"),
        ("ftp://127.0.0.1:8091", "http"),
        ("http://127.0.0.1:8091/monitor", "host:port only"),
        ("http://127.0.0.1:8091/?x=1", "host:port only"),
    ],
)
def test_render_refuses_a_monitor_url_with_a_path(
    tmp_path: Path, monitor_url: str, problem: str
) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "s")
    with pytest.raises(StackError, match=problem):
        render(
            settings,
            "http://127.0.0.1:16686/jaeger",
            tmp_path / "d",
            tmp_path / "l",
            monitor_url=monitor_url,
        )
    # Refused before anything is written.
    assert not (tmp_path / "d" / "gateway").exists()


def test_render_accepts_id_tokens_as_bearer_and_answers_api_paths_with_401(
    tmp_path: Path,
) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "s")
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    proxy = tomllib.loads(files.gateway_config.read_text())
    assert proxy["skip_jwt_bearer_tokens"] is True
    # A bad token counts as no session (the default), and API paths then get 401, not the form.
    assert "bearer_token_login_fallback" not in proxy
    assert proxy["api_routes"] == ["^/jaeger/api/", "^/monitor/api/", "^/api/"]
    # Only the sign-in provider's tokens for this client: no other issuer is trusted.
    assert "extra_jwt_issuers" not in proxy
    assert "oidc_extra_audiences" not in proxy
    # The group check still applies to those sessions.
    assert proxy["allowed_groups"] == ["devops", "developers"]
    assert proxy["pass_authorization_header"] is True


NUMERIC_LOG_FIELDS = {".Timestamp", ".StatusCode", ".ResponseSize", ".RequestDuration"}
PRE_QUOTED_LOG_FIELDS = {".RequestURI", ".UserAgent"}


@pytest.mark.parametrize(
    "key", ["request_logging_format", "auth_logging_format", "standard_logging_format"]
)
def test_audit_formats_escape_every_string_field_for_json(tmp_path: Path, key: str) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "s")
    files = render(settings, "http://127.0.0.1:16686/jaeger", tmp_path / "d", tmp_path / "l")
    fmt = tomllib.loads(files.gateway_config.read_text())[key]
    define = '{{define "json"}}{{printf "%q" (slice . 1 (len (slice . 1)))}}{{end}}'
    assert fmt.startswith(define + "{")
    body = fmt.removeprefix(define)
    assert body.endswith("}")
    # Whatever is not an action is fixed JSON text, with no line break.
    assert "\n" not in fmt
    for field in re.findall(r"\.[A-Z][A-Za-z]*", body):
        if field in NUMERIC_LOG_FIELDS:
            continue
        # Only the Upstream == "-" and Status == "AuthSuccess" tests use a field bare.
        uses = body.count(field)
        escaped = body.count(
            f'template "json" {field}}}}}'
            if field in PRE_QUOTED_LOG_FIELDS
            else f'template "json" printf "%q" {field}}}}}'
        )
        compared = body.count(f"eq {field} ")
        assert uses == escaped + compared and escaped >= 1, (field, body)
