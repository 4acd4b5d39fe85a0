"""Structured logs: one JSON object a line, carrying the trace and span they belong to, and
never a URL's password (whatever library wrote the line)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit

from opentelemetry import trace

from loupe.environment import Variable, upper

LOG_LEVEL = Variable("LOUPE_LOG_LEVEL", "INFO", "log level of every loupe process", upper)
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# The password of a URL (amqp://user:password@host, postgresql://…), wherever a library or an
# error message puts one into a log line.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*):[^\s/?#@]*@")
HIDDEN = "***"


def without_secrets(text: str) -> str:
    """The text with every URL's password replaced by ***."""
    return _URL_PASSWORD.sub(rf"\1:{HIDDEN}@", text)


def shown_url(url: str) -> str:
    """A URL as a log line or an error may name it: its scheme, host and port only. A
    webhook's path and query are often its credential (Slack's, Teams' and most chat tools'
    incoming webhooks), and its user part may hold a password."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/{HIDDEN}"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": without_secrets(record.getMessage()),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        entry.update(
            {
                k: without_secrets(v) if isinstance(v, str) else v
                for k, v in vars(record).items()
                if k not in _RESERVED
            }
        )
        if record.exc_info:
            entry["exception"] = without_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVEL.read())
    # Their access and connection chatter would drown the order story.
    for noisy in ("uvicorn.access", "aiormq", "aio_pika", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
