"""`python -m loupe.bench`'s command line (loupe.bench.__main__)."""

from __future__ import annotations

import pytest

from loupe.bench.__main__ import parse


def test_the_command_line_runs_both_or_one() -> None:
    both = parse([])
    assert both.only is None and both.orders == 100 and both.jaeger_rounds == 3
    assert both.rounds == 10 and both.profile_label == "now"
    profile = parse(["--only", "profile", "--profile-label", "before", "--profile-orders", "50"])
    assert (profile.only, profile.profile_label) == ("profile", "before")
    assert profile.profile_orders == 50
    only = parse(["--only", "monitor", "--ingest-clients", "2", "--jaeger-rounds", "1"])
    assert (only.only, only.ingest_clients, only.jaeger_rounds) == ("monitor", "2", 1)
    with pytest.raises(SystemExit):
        parse(["--only", "everything"])
