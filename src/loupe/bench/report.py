"""docs/benchmarks.md, in which each benchmark owns one section between markers and rewrites
only its own."""

from __future__ import annotations

from pathlib import Path

from loupe.config import REPO_ROOT

REPORT = REPO_ROOT / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Produced by `make bench` (`uv run python -m loupe.bench`, which runs every benchmark;
`--only pipeline`, `--only monitor`, `--only console` or `--only spans` runs one). Each
section comes from one run of its benchmark, and each benchmark rewrites only its own section.
"""


def markers(name: str, tag: str = "bench") -> tuple[str, str]:
    return f"<!-- {tag}:{name} begin -->", f"<!-- {tag}:{name} end -->"


def replace_section(
    document: str, name: str, body: str, *, header: str = HEADER, tag: str = "bench"
) -> str:
    """`document` with the section of benchmark `name` replaced by `body` (added at the end
    when it has none yet; `header` first when the document is empty). Other sections stay.
    The drills write docs/reliability.md the same way, under their own `tag`."""
    begin, end = markers(name, tag)
    block = f"{begin}\n{body.strip()}\n{end}"
    if not document.strip():
        return f"{header}\n{block}\n"
    start = document.find(begin)
    stop = document.find(end, start + len(begin)) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        return document[:start] + block + document[stop + len(end) :]
    return document.rstrip("\n") + f"\n\n{block}\n"


def write_section(
    path: Path, name: str, body: str, *, header: str = HEADER, tag: str = "bench"
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    current = path.read_text() if path.exists() else ""
    path.write_text(replace_section(current, name, body, header=header, tag=tag))
