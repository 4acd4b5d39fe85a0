"""Secrets kept in local files: each made on first use and kept with mode 0600 in a folder of
mode 0700 (`.secrets/` by default, git-ignored), never in the repository or the environment."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


class SecretFileError(ValueError):
    """A secret file exists but cannot be used; the text says how to have it made again."""


def write_private(path: Path, value: str) -> None:
    """Creates `path` with mode 0600 holding `value`; refuses to replace an existing file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        # No trailing newline: oauth2-proxy reads secret files byte for byte.
        file.write(value)


def read_private(path: Path) -> str:
    # A file someone copied in with a wider mode is narrowed rather than trusted as it is.
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise SecretFileError(
            f"{path} is empty; delete it to have a new secret made on the next run"
        )
    return value


def generated(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret in `path`, made (and kept, mode 0600) on first use; True when made now."""
    try:
        return read_private(path), False
    except FileNotFoundError:
        pass
    value = make()
    try:
        write_private(path, value)
    except FileExistsError:
        # Another run created it in between: theirs wins, so both use the same secret.
        return read_private(path), False
    return value, True


def password() -> str:
    """A password for a machine account: 32 random bytes, URL-safe (no character a URL's
    user-info or a DSN would need escaped)."""
    return secrets.token_urlsafe(32)
