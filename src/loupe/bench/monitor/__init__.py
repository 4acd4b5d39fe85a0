"""The monitor benchmark: what `loupe monitor` ingests, how soon after an SLO deadline it
reports a stuck order, and what attaching it costs Jaeger, all measured in one run.

1. Ingest (ingest.py): the real monitor process, in a sandbox of its own, takes OTLP/protobuf
   requests of orders' spans mixed with spans that name no order, in the proportions the
   services emit (see journeys.py), from a few concurrent clients; SLOs of a day leave
   detection idle.
2. Detection latency (detection.py): with SUBMITTED allowed a few seconds, a few hundred
   orders are submitted over some seconds and never priced; each finding's
   `detected_at - deadline` is read from the monitor's database. First on a quiet monitor,
   then while it ingests a steady flow of other orders' spans at shares of the rate measured
   in 1.
3. Jaeger with and without the monitor (jaeger.py): rounds take turns (ABAB) between Jaeger
   all-in-one alone and Jaeger with its monitor pipeline (the filter forwarding order spans to
   the running monitor); each round sends the same spans and times Jaeger until it has stored
   them all and, attached, until the monitor has received its share.

harness.py has what the parts share (the monitor as a process, sending, scraping, the
yardstick), main.py the flags and the run, report.py the terminal's tables and the `monitor`
section of docs/benchmarks.md.
"""

from loupe.bench.monitor.main import SECTION, add_arguments, run

__all__ = ["SECTION", "add_arguments", "run"]
