"""`python -m loupe.drills`: run the drills and write their table into docs/reliability.md."""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from loupe.bench.report import write_section
from loupe.config import REPO_ROOT
from loupe.drills.faults import all_faults
from loupe.drills.run import TABLE_HEADER, DrillResult, drill, running_loupe

REPORT = REPO_ROOT / "docs" / "reliability.md"
HEADER = "# Reliability\n"


def report(results: list[DrillResult], seconds: float) -> str:
    rows = "\n".join(result.row() for result in results)
    verdict = "all passed" if all(r.passed for r in results) else "**some failed**"
    return (
        f"Measured by `make drills` on {datetime.now(UTC):%Y-%m-%d} ({platform.node()}, "
        f"{sys.platform}), one `loupe up` with its actors at their default rate, drills one "
        f"after another; {len(results)} drills in {seconds / 60:.0f} min, {verdict}.\n\n"
        f"{TABLE_HEADER}\n{rows}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loupe.drills", description=__doc__)
    parser.add_argument(
        "--only", help="comma-separated; run only the drills whose name contains one of these"
    )
    parser.add_argument("--root", type=Path, default=Path(".data/drills"))
    parser.add_argument("--report", type=Path, default=REPORT, help="where the table goes")
    parser.add_argument("--no-report", action="store_true", help="print the table only")
    args = parser.parse_args(argv)

    console = Console()
    wanted = [w.strip().lower() for w in (args.only or "").split(",") if w.strip()]
    faults = [f for f in all_faults() if not wanted or any(w in f.name.lower() for w in wanted)]
    if not faults:
        parser.error(f"no drill matches {args.only!r}")
    began = datetime.now(UTC)
    results = []
    with running_loupe(args.root.resolve()) as loupe:
        for fault in faults:
            result = drill(loupe, fault, console)
            mark = "[green]✓[/]" if result.passed else "[red]✗[/]"
            console.print(f"{mark} {result.row()}", highlight=False)
            for contradiction in result.contradicted:
                console.print(f"    contradicted: {contradiction}", highlight=False)
            results.append(result)
    body = report(results, (datetime.now(UTC) - began).total_seconds())
    console.print(body, highlight=False)
    if not args.no_report:
        write_section(args.report, "results", body, header=HEADER, tag="drills")
        console.print(f"[bold]==>[/] written to {args.report}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
