"""The 3D model store: a content-addressed folder standing in for the company's S3 bucket.

Objects are named by the SHA-256 of their bytes, so an upload is stored once however often
it is sent, and a reader can verify what it got. An object's modification time is when it was
last stored, which is how the sweep of unused models (service/model_files.py) tells an old
model from one just uploaded again.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ObjectNotFound(Exception):
    pass


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ObjectNotFound(f"{sha256!r} is not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._path(sha256)
        try:
            # Stored again: now is when it was last stored, so the sweep leaves it alone.
            os.utime(path)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a reader never sees half a model.
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
                handle.write(data)
            os.replace(handle.name, path)
        return sha256

    def stale(self, cutoff: float) -> list[str]:
        """The names of the objects last stored before `cutoff` (a `time.time()`). Files a
        crashed write left behind (named by no digest) that old are deleted on the way."""
        names = []
        for path in self.root.glob("??/*"):
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            if _SHA256.fullmatch(path.name) and path.parent.name == path.name[:2]:
                names.append(path.name)
            else:
                path.unlink(missing_ok=True)
        return names

    def delete_if_stale(self, sha256: str, cutoff: float) -> bool:
        """Delete the object if it was still last stored before `cutoff`; True if deleted."""
        path = self._path(sha256)
        try:
            if path.stat().st_mtime >= cutoff:
                return False
        except FileNotFoundError:
            return False
        path.unlink(missing_ok=True)
        return True

    def get(self, sha256: str) -> bytes:
        path = self._path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no model {sha256}") from None
