"""`make bench`: loupe's benchmarks, each measuring side by side in one run.

* `pipeline` — what tracing costs the order pipeline (tracing off, 100% and 10% sampling);
* `monitor` — what the order-flow monitor ingests, how late it detects, and what attaching
  it costs Jaeger;
* `console` — how long the console's heaviest pages take to render, and to be usable in
  Chromium;
* `spans` — what one span costs a service's process, component by component, in one process
  (no stack needed).

`python -m loupe.bench` runs them all (`--only pipeline|monitor|console|spans` one); each
writes its own section of docs/benchmarks.md and leaves the others' as they were.
"""
