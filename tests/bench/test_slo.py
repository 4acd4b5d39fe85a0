"""A benchmark's SLO file (loupe.bench.slo): the demo file's steps with its own deadlines."""

from __future__ import annotations

import tomllib

from loupe.bench.slo import slo_toml
from loupe.monitor.settings import DEMO_SLO_FILE
from loupe.monitor.slo import Slo


def test_a_benchmark_slo_file_is_the_demo_files_steps_with_its_own_deadlines() -> None:
    demo = Slo.load(DEMO_SLO_FILE)
    slo = Slo.parse(tomllib.loads(slo_toml("1s", "90s", {"SHIPPED": "2h"})))
    assert slo.error_grace.total_seconds() == 90
    assert list(slo.steps) == list(demo.steps)
    for status, step in slo.steps.items():
        expected = 7200 if status == "SHIPPED" else 1
        assert step.within.total_seconds() == expected
        wanted = demo.steps[status]
        assert (step.service, step.queue, step.then) == (wanted.service, wanted.queue, wanted.then)
