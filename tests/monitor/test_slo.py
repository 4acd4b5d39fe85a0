"""The monitor's SLO file: durations, every way an entry can be wrong (each message names the
file and the entry), the committed demo and production files, and where a step waits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from loupe.monitor.settings import DEMO_SLO_FILE, PRODUCTION_SLO_FILE
from loupe.monitor.slo import Slo, SloError, Step, parse_duration
from loupe.orders import OrderStatus

WAITING = {status for status in OrderStatus if not status.terminal}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("4h", timedelta(hours=4)),
        ("3d", timedelta(days=3)),
        ("1.5h", timedelta(minutes=90)),
        (" 10 s ", timedelta(seconds=10)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "45", "s", "10 sec", "3w", "-5s", "1h30m", "1.2.3s", "5 S", "forever"]
)
def test_parse_duration_refuses_what_is_not_a_number_and_one_unit(text: str) -> None:
    with pytest.raises(SloError) as raised:
        parse_duration(text)
    message = str(raised.value)
    assert repr(text) in message
    assert "is not a duration like 45s, 30m, 4h or 3d" in message


def test_parse_duration_refuses_a_non_string() -> None:
    with pytest.raises(SloError, match="is not a duration"):
        parse_duration(45)  # type: ignore[arg-type]


SUBMITTED = {"within": "30s", "service": "mes-api", "queue": "mes.order-submitted"}


def _parse(steps: Any, **extra: Any) -> Slo:
    return Slo.parse({"steps": steps, **extra}, "slo-test.toml")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            {"SHIPPING": {"within": "1h", "service": "crm-api", "then": "x"}},
            "slo-test.toml: [steps.SHIPPING]: unknown status; one of SUBMITTED, PRICE_CALCULATED",
        ),
        (
            {"CLOSED": {"within": "1h", "service": "crm-api", "then": "x"}},
            "slo-test.toml: [steps.CLOSED]: a final status waits for nothing",
        ),
        (
            {"FAILED": {"within": "1h", "service": "crm-api", "then": "x"}},
            "slo-test.toml: [steps.FAILED]: a final status waits for nothing",
        ),
        (
            {"SUBMITTED": {**SUBMITTED, "whitin": "3s", "owner": "x"}},
            "slo-test.toml: [steps.SUBMITTED]: unknown keys owner, whitin",
        ),
        (
            {"SUBMITTED": {"service": "mes-api", "queue": "q"}},
            "slo-test.toml: [steps.SUBMITTED] needs `within` and `service`",
        ),
        (
            {"SUBMITTED": {"within": "30s", "queue": "q"}},
            "slo-test.toml: [steps.SUBMITTED] needs `within` and `service`",
        ),
        (
            {"SHIPPED": {"within": "30s", "service": "crm-api"}},
            "slo-test.toml: [steps.SHIPPED] needs a `queue`, a `then`, or both",
        ),
        (
            {"SHIPPED": {"within": "30s", "service": "crm-api", "queue": "", "then": ""}},
            "slo-test.toml: [steps.SHIPPED] needs a `queue`, a `then`, or both",
        ),
        (
            {"SUBMITTED": {**SUBMITTED, "within": "0s"}},
            "slo-test.toml: [steps.SUBMITTED].within must be above zero",
        ),
        (
            {"SUBMITTED": {**SUBMITTED, "within": "0.0ms"}},
            "slo-test.toml: [steps.SUBMITTED].within must be above zero",
        ),
        (
            {"SUBMITTED": {**SUBMITTED, "within": "half an hour"}},
            "slo-test.toml: [steps.SUBMITTED].within: 'half an hour' is not a duration",
        ),
        (
            {"SUBMITTED": {**SUBMITTED, "within": 30}},
            "slo-test.toml: [steps.SUBMITTED].within: '30' is not a duration",
        ),
        ({"SUBMITTED": "30s"}, "slo-test.toml: [steps.SUBMITTED] must be a table"),
        ({}, "slo-test.toml: no [steps.<STATUS>] tables"),
        ("SUBMITTED", "slo-test.toml: no [steps.<STATUS>] tables"),
    ],
)
def test_wrong_entries_are_refused_naming_the_entry(steps: Any, message: str) -> None:
    with pytest.raises(SloError) as raised:
        _parse(steps)
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_later_wrong_entry_is_named_even_after_good_ones() -> None:
    with pytest.raises(SloError, match=r"\[steps\.SHIPPED\]"):
        _parse({"SUBMITTED": SUBMITTED, "SHIPPED": {"within": "1d", "service": "crm-api"}})


def test_missing_steps_and_bad_error_grace() -> None:
    with pytest.raises(SloError, match=r"^the SLO file: no \[steps"):
        Slo.parse({"error_grace": "10s"})
    with pytest.raises(SloError, match=r"^slo-test.toml: error_grace: 'soon' is not a duration"):
        _parse({"SUBMITTED": SUBMITTED}, error_grace="soon")


def test_unknown_top_level_keys_are_refused() -> None:
    # A misspelt error_grace would otherwise leave the grace at 0 s.
    with pytest.raises(SloError, match=r"^slo-test.toml: unknown keys error-grace, step$"):
        _parse({"SUBMITTED": SUBMITTED}, **{"error-grace": "10m", "step": {}})


def test_a_good_entry_becomes_a_step() -> None:
    slo = _parse(
        {
            "SUBMITTED": SUBMITTED,
            "SHIPPED": {"within": "14d", "service": "crm-api", "then": "closing"},
        },
        error_grace="15s",
    )
    assert slo.error_grace == timedelta(seconds=15)
    assert slo.steps[OrderStatus.SUBMITTED] == Step(
        status=OrderStatus.SUBMITTED,
        within=timedelta(seconds=30),
        service="mes-api",
        queue="mes.order-submitted",
        then=None,
    )
    shipped = slo.step("SHIPPED")
    assert shipped is not None
    assert (shipped.within, shipped.queue, shipped.then) == (timedelta(days=14), None, "closing")
    # Unlisted, final, unknown or no status: nothing to wait for.
    assert slo.step("PRICE_CALCULATED") is None
    assert slo.step("CLOSED") is None
    assert slo.step("NOPE") is None
    assert slo.step(None) is None
    assert slo.step("") is None


def test_error_grace_defaults_to_zero() -> None:
    assert _parse({"SUBMITTED": SUBMITTED}).error_grace == timedelta(0)


def test_a_file_that_is_not_toml_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[steps.SUBMITTED]\nwithin = "30s\n', encoding="utf-8")
    with pytest.raises(SloError) as raised:
        Slo.load(path)
    assert str(raised.value).startswith(f"the SLO file {path} is not valid TOML: ")


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(SloError) as raised:
        Slo.load(path)
    assert str(raised.value) == f"cannot read the SLO file {path}: No such file or directory"


def test_a_wrong_entry_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "slo.toml"
    path.write_text('[steps.CLOSED]\nwithin = "1h"\nservice = "crm-api"\nthen = "x"\n')
    with pytest.raises(SloError, match=rf"^{path}: \[steps\.CLOSED\]: a final status"):
        Slo.load(path)


@pytest.mark.parametrize("path", [DEMO_SLO_FILE, PRODUCTION_SLO_FILE], ids=["demo", "production"])
def test_committed_files_load_and_cover_every_status_that_waits(path: Path) -> None:
    assert path.parent.name == "monitor" and path.is_file()
    slo = Slo.load(path)
    assert set(slo.steps) == WAITING
    for status, step in slo.steps.items():
        assert step.status is status
        assert step.within > timedelta(0)
        assert step.service in ("shop-api", "crm-api", "mes-api")
        assert step.queue or step.then
    assert slo.error_grace > timedelta(0)


def test_production_values() -> None:
    slo = Slo.load(PRODUCTION_SLO_FILE)
    assert slo.steps[OrderStatus.SUBMITTED].within == timedelta(minutes=30)
    assert slo.steps[OrderStatus.SUBMITTED].queue == "mes.order-submitted"
    assert slo.steps[OrderStatus.MANUFACTURING_STARTED].within == timedelta(days=3)
    # Production is slower than the demo for every step.
    demo = Slo.load(DEMO_SLO_FILE)
    for status in WAITING:
        assert slo.steps[status].within > demo.steps[status].within, status
        assert slo.steps[status].service == demo.steps[status].service, status


def _step(queue: str | None, then: str | None) -> Step:
    return Step(OrderStatus.PRICE_CALCULATED, timedelta(seconds=30), "crm-api", queue, then)


def test_a_step_waits_in_its_queue_until_the_service_has_it_then_for_then() -> None:
    both = _step("crm.order-status", "seller approval")
    assert both.where(service_has_it=False) == "queue crm.order-status"
    assert both.where(service_has_it=True) == "seller approval"


def test_a_step_with_only_a_queue_waits_there_either_way() -> None:
    queue = _step("mes.order-submitted", None)
    assert queue.where(service_has_it=False) == "queue mes.order-submitted"
    assert queue.where(service_has_it=True) == "queue mes.order-submitted"


def test_a_step_with_only_then_waits_for_it_either_way() -> None:
    person = _step(None, "the operator to complete it")
    assert person.where(service_has_it=False) == "the operator to complete it"
    assert person.where(service_has_it=True) == "the operator to complete it"
