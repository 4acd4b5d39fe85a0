"""The LOUPE_* variables: declared once with a default and a meaning, read by one set of rules,
and shown in docs/runbook.md exactly as the code declares them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loupe.cli import app
from loupe.config import REPO_ROOT, Settings
from loupe.environment import (
    RUNBOOK_END,
    RUNBOOK_START,
    Variable,
    documented,
    names,
    positive,
    runbook_tables,
    whole,
)
from loupe.monitor.settings import MonitorSettings
from loupe.portal.settings import PortalSettings
from loupe.stack.gateway import GatewaySettings

RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
NAME = re.compile(r"\bLOUPE_[A-Z0-9_]*[A-Z0-9]\b")


def declared() -> set[str]:
    return {v.name for variables in documented().values() for v in variables}


def test_the_runbook_shows_each_table_as_the_code_declares_it() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    for component, table in runbook_tables().items():
        assert table in runbook, (
            f"docs/runbook.md's {component!r} table differs from the code: "
            f"paste the output of `uv run loupe settings {component}` over it"
        )
    # No table left over from a component that no longer exists.
    marks = re.findall(re.escape(RUNBOOK_START).replace(r"\{\}", "(.+?)"), runbook)
    assert sorted(marks) == sorted(runbook_tables())
    assert runbook.count(RUNBOOK_END.split("`")[0]) == len(runbook_tables())


def test_loupe_settings_prints_the_tables() -> None:
    result = CliRunner().invoke(app, ["settings", "monitor"])
    assert result.exit_code == 0, result.output
    assert result.output == runbook_tables()["monitor"] + "\n"
    assert CliRunner().invoke(app, ["settings", "nothing"]).exit_code != 0


def files_naming_variables() -> list[Path]:
    sources = [*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "deploy").rglob("*")]
    docs = [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
    return [p for p in (*sources, *docs) if p.is_file() and p.suffix != ".png"]


def test_every_variable_named_anywhere_is_declared() -> None:
    known = declared()
    unknown = {
        (str(path.relative_to(REPO_ROOT)), name)
        for path in files_naming_variables()
        for name in NAME.findall(path.read_text(encoding="utf-8", errors="replace"))
        if name not in known
    }
    assert not unknown, f"read or documented but not declared (see loupe.environment): {unknown}"


def test_the_jaeger_configs_default_to_the_declared_defaults() -> None:
    defaults = {v.name: v for variables in documented().values() for v in variables}
    found = 0
    for config in (REPO_ROOT / "deploy").rglob("*.yaml"):
        text = config.read_text(encoding="utf-8")
        for name, default in re.findall(r"\$\{env:(LOUPE_[A-Z0-9_]+):-([^}]*)\}", text):
            assert str(defaults[name].default) == default, (config.name, name)
            found += 1
    assert found > 10


@pytest.mark.parametrize(
    "variable",
    [v for variables in documented().values() for v in variables],
    ids=lambda v: v.name,
)
def test_each_documented_default_reads_back_as_the_default(variable: Variable[object]) -> None:
    default = variable.default
    if variable.shown is not None or default in (None, "", ()):
        return
    written = ",".join(default) if isinstance(default, tuple) else str(default)
    assert variable.read({variable.name: written}) == default


def test_blank_means_the_default_and_whitespace_is_ignored() -> None:
    variable = Variable("LOUPE_EXAMPLE", 7, "an example", whole)
    assert variable.read({}) == 7
    assert variable.read({"LOUPE_EXAMPLE": " \t\n"}) == 7
    assert variable.read({"LOUPE_EXAMPLE": " 9 "}) == 9
    with pytest.raises(
        ValueError, match=re.escape("LOUPE_EXAMPLE must be a whole number, got 'x'")
    ):
        variable.read({"LOUPE_EXAMPLE": "x"})
    listed = Variable("LOUPE_LIST", ("a",), "a list", names)
    assert listed.read({"LOUPE_LIST": " b, ,c "}) == ("b", "c")
    interval = Variable("LOUPE_INTERVAL", 1.0, "an interval", positive)
    with pytest.raises(ValueError, match=re.escape("LOUPE_INTERVAL must be above 0, got '0'")):
        interval.read({"LOUPE_INTERVAL": "0"})


def test_shared_settings_are_read_once_for_the_portal_and_the_monitor() -> None:
    environ = {
        "LOUPE_AMQP_URL": "amqp://u:p@127.0.0.1:5672/elsewhere",
        "LOUPE_RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:15673/",
        "LOUPE_CONSOLE_URL": "https://loupe.example.org/",
        "LOUPE_OPERATOR_GROUPS": "sre",
    }
    portal, monitor = PortalSettings.from_env(environ), MonitorSettings.from_env(environ)
    assert portal.base == monitor.base == Settings.from_env(environ)
    assert portal.access == monitor.access
    assert portal.access.act_groups == ("sre",)
    for management in (portal.management(timeout=5.0), monitor.management):
        assert management.url == "http://127.0.0.1:15673"
        assert (management.vhost, management.credentials) == ("elsewhere", ("u", "p"))
    assert portal.console_url == monitor.base.console_url == "https://loupe.example.org"


def test_with_dex_the_gateway_ignores_another_providers_variables() -> None:
    # `loupe up` gives the portal LOUPE_OIDC_CLIENT_ID; the gateway's Dex client stays its own.
    settings = GatewaySettings.from_env(
        {"LOUPE_OIDC_CLIENT_ID": "someone-else", "LOUPE_OIDC_SCOPE": "openid"}
    )
    assert settings.uses_dex
    assert (settings.oidc_client_id, settings.oidc_scope) == ("", "openid email profile")
