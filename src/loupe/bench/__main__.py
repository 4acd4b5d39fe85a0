"""`python -m loupe.bench [--only pipeline|monitor|console|spans]`: run loupe's benchmarks
(see __init__)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from loupe.bench import console, monitor, pipeline, spans
from loupe.bench.report import REPORT

BENCHMARKS = {"pipeline": pipeline, "monitor": monitor, "console": console, "spans": spans}


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loupe.bench",
        description="loupe's benchmarks: what tracing costs the pipeline and each span, what "
        "the monitor ingests and costs. Each writes its own section of the report.",
    )
    parser.add_argument(
        "--only",
        choices=tuple(BENCHMARKS),
        help="run one benchmark (default: all, one after the other)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPORT,
        help="the report whose sections are rewritten (default docs/benchmarks.md)",
    )
    for module in BENCHMARKS.values():
        module.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    terminal = Console()
    for name, module in BENCHMARKS.items():
        if args.only in (None, name):
            terminal.rule(f"benchmark: {name}")
            module.run(args, terminal, args.output)


if __name__ == "__main__":
    main()
