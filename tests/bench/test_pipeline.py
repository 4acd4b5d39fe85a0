"""The pipeline benchmark's rendering (loupe.bench.pipeline)."""

from __future__ import annotations

from loupe.bench import pipeline


def test_the_pipeline_section_keeps_its_shape() -> None:
    rounds = [
        pipeline.Round(mode.name, 10, 2.0 + n, 1.0, {"step a": [0.1, 0.2], "step b": [0.3]})
        for n, mode in enumerate(pipeline.MODES * 2)
    ]
    text = pipeline.report(rounds, 10, 4)
    assert text.startswith("## What tracing costs the order pipeline")
    assert "| " + " | ".join(pipeline.HEADERS) + " |" in text
    assert "| step a | 150.0 | 150.0 | 150.0 |" in text
    assert "2 rounds per mode, 10 orders a round, 4 in flight" in text
