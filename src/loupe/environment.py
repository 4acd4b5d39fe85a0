"""loupe's environment variables: how each is declared, read and documented.

Every `LOUPE_*` variable is a `Variable`, a documented constant declared in the module of the
component that reads it (the services' shared ones in `loupe.config`, the portal's in
`loupe.portal.settings`, ...). A component's settings class is a frozen dataclass whose fields
are `Variable.field()`s, plus the settings it shares with others as `part(...)`s;
`EnvSettings.from_env` reads them all. `documented()` lists them per component, and
`loupe settings` prints the tables in docs/runbook.md from it (a test keeps the two equal).

Rules every variable follows: an unset or blank value (whitespace only) means the default;
surrounding whitespace is ignored; a bad value is refused with an error that names the
variable and quotes the value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

Parse = Callable[[str, str], Any]
"""(value, variable name) -> the typed value; None means "no value": the default applies."""

_VARIABLE = "loupe.variable"
_EACH = "loupe.variables"
_PART = "loupe.part"


# -- parsers: each takes the stripped, non-blank value and the variable's name ---------------


def text(raw: str, _name: str) -> str:
    return raw


def url(raw: str, _name: str) -> str:
    """A base URL, without the trailing slash (paths are appended to it)."""
    return raw.rstrip("/")


def file_path(raw: str, _name: str) -> Path:
    return Path(raw)


def _converted(convert: Callable[[str], T], raw: str, name: str, what: str) -> T:
    try:
        return convert(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None


def number(raw: str, name: str) -> float:
    return _converted(float, raw, name, "a number")


def positive(raw: str, name: str) -> float:
    value = number(raw, name)
    if value <= 0:
        raise ValueError(f"{name} must be above 0, got {raw!r}")
    return value


def not_negative(raw: str, name: str) -> float:
    value = number(raw, name)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number, 0 or more, got {raw!r}")
    return value


def whole(raw: str, name: str) -> int:
    return _converted(int, raw, name, "a whole number")


def port_number(raw: str, name: str) -> int:
    if not raw.isdigit():
        raise ValueError(f"{name} must be a port number, got {raw!r}")
    return int(raw)


def names(raw: str, _name: str) -> tuple[str, ...]:
    """Comma-separated; empty items are dropped (so " , " is an empty list)."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def names_or_default(raw: str, name: str) -> tuple[str, ...] | None:
    """Comma-separated like `names`, but a list with no item means the default."""
    return names(raw, name) or None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(raw: str, name: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks (CIDR); an address is a network of one."""
    found = []
    for item in names(raw, name):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{name} must list addresses or networks (CIDR), got {item!r}"
            ) from None
    return tuple(found)


def flag(raw: str, _name: str) -> bool:
    return raw.lower() in ("1", "true")


def upper(raw: str, _name: str) -> str:
    return raw.upper()


# -- variables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One environment variable: its name, default, parser and what it means.

    `doc` is the meaning as docs/runbook.md shows it (Markdown). `shown` replaces the default
    in the documentation when the value alone would mislead (e.g. "made at each start"), and
    `note` follows it in parentheses (e.g. what `loupe up` sets it to).
    """

    name: str
    default: T
    doc: str
    parse: Parse = text
    shown: str | None = None
    note: str = ""

    def raw(self, environ: Mapping[str, str] = os.environ) -> str:
        """The value as set, stripped; "" when unset or blank."""
        return environ.get(self.name, "").strip()

    def read(self, environ: Mapping[str, str] = os.environ) -> T:
        """The typed value, or the default when unset or blank; ValueError when bad."""
        raw = self.raw(environ)
        if not raw:
            return self.default
        value = self.parse(raw, self.name)
        return self.default if value is None else value

    def field(self) -> Any:
        """A settings class's field read from this variable (see `EnvSettings`)."""
        if isinstance(self.default, dict | list | set):
            raise TypeError(f"{self.name}: a mutable default needs `each`")
        return dataclasses.field(default=self.default, metadata={_VARIABLE: self})

    def documented_default(self) -> str:
        if self.shown is not None:
            shown = self.shown
        elif self.default in (None, "", ()):
            shown = "—"
        elif isinstance(self.default, tuple):
            shown = f"`{','.join(self.default)}`"
        else:
            shown = f"`{self.default}`"
        return f"{shown} ({self.note})" if self.note else shown


def each(variables: Mapping[str, Variable[T]]) -> Any:
    """A dict field, one key per variable (e.g. the URL of each service)."""
    defaults = {key: v.default for key, v in variables.items()}
    return dataclasses.field(
        default_factory=lambda: dict(defaults), metadata={_EACH: dict(variables)}
    )


def part(settings: type[EnvSettings]) -> Any:
    """A field holding settings shared with other components, read from the same variables."""
    return dataclasses.field(default_factory=settings, metadata={_PART: settings})


# -- settings classes ---------------------------------------------------------------------


class EnvSettings:
    """Mixed into a frozen dataclass of `Variable.field()`s, `each(...)`s and `part(...)`s.

    The constructor takes plain values (tests build settings that way); `from_env` reads the
    variables. Checks across fields go into `__post_init__`.
    """

    invalid: ClassVar[type[Exception]] = ValueError
    """What a bad value raises, with the parser's message."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Self:
        values: dict[str, Any] = {}
        try:
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                if _VARIABLE in f.metadata:
                    values[f.name] = f.metadata[_VARIABLE].read(environ)
                elif _EACH in f.metadata:
                    values[f.name] = {k: v.read(environ) for k, v in f.metadata[_EACH].items()}
                elif _PART in f.metadata:
                    values[f.name] = f.metadata[_PART].from_env(environ)
        except ValueError as exc:
            if cls.invalid is ValueError or type(exc) is not ValueError:
                raise
            raise cls.invalid(str(exc)) from None
        return cls(**values)

    @classmethod
    def variables(cls) -> Iterator[Variable[Any]]:
        """The variables this class reads itself, in declaration order (not its parts')."""
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if _VARIABLE in f.metadata:
                yield f.metadata[_VARIABLE]
            elif _EACH in f.metadata:
                yield from f.metadata[_EACH].values()


class ListensAtUrl:
    """Mixed into the settings of a process that listens at its `url`: where it binds."""

    url: str
    default_port: ClassVar[int]
    """The port when the URL names none."""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or self.default_port


# -- documentation ------------------------------------------------------------------------


def documented() -> dict[str, tuple[Variable[Any], ...]]:
    """Every LOUPE_* variable, per component, in the order docs/runbook.md lists them."""
    from loupe import access, config, provision
    from loupe.monitor import settings as monitor
    from loupe.portal import settings as portal
    from loupe.stack import components, gateway
    from loupe.telemetry import edge, encoding, logs, statements

    return {
        "loupe": (
            *config.Settings.variables(),
            logs.LOG_LEVEL,
            config.ACTOR_RATE,
            statements.STATEMENTS_MIN_MS,
            encoding.SDK_ENCODER,
            edge.TRUSTED_CLIENTS,
        ),
        "provision": tuple(provision.ProvisionSettings.variables()),
        "jaeger": (*components.JaegerPorts.variables(), *components.JAEGER_FILES),
        "gateway": (*gateway.GatewaySettings.variables(), gateway.DEMO_PASSWORD),
        "portal": tuple(portal.PortalSettings.variables()),
        "access": tuple(access.AccessSettings.variables()),
        "monitor": (
            *monitor.MonitorSettings.variables(),
            monitor.MONITOR_OTLP_ENDPOINT,
            monitor.MONITOR_INTAKE_TOKEN,
        ),
    }


RUNBOOK_START = "<!-- `loupe settings {}` prints this table: edit the code, not the table -->"
RUNBOOK_END = "<!-- end of `loupe settings {}` -->"


def runbook_tables() -> dict[str, str]:
    """Each component's table as docs/runbook.md holds it, between its two comment lines."""
    tables = {}
    for component, variables in documented().items():
        lines = [
            RUNBOOK_START.format(component),
            "| variable | default | meaning |",
            "|---|---|---|",
        ]
        lines += [f"| `{v.name}` | {v.documented_default()} | {v.doc} |" for v in variables]
        tables[component] = "\n".join([*lines, RUNBOOK_END.format(component)])
    return tables
