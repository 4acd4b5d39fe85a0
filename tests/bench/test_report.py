"""docs/benchmarks.md's sections (loupe.bench.report): each benchmark replaces only its own."""

from __future__ import annotations

from pathlib import Path

from loupe.bench.report import HEADER, markers, replace_section, write_section


def test_a_new_report_gets_the_header_and_the_section() -> None:
    text = replace_section("", "monitor", "## Monitor\n\nfigures\n")
    begin, end = markers("monitor")
    assert text.startswith(HEADER)
    assert f"{begin}\n## Monitor\n\nfigures\n{end}\n" in text


def test_each_benchmark_replaces_only_its_own_section() -> None:
    text = replace_section("", "pipeline", "## Pipeline\n\nold pipeline")
    text = replace_section(text, "monitor", "## Monitor\n\nold monitor")
    text = text.replace("## Pipeline", "Some words by hand.\n\n## Pipeline")

    text = replace_section(text, "monitor", "## Monitor\n\nnew monitor")
    assert "old monitor" not in text and "new monitor" in text
    assert "old pipeline" in text and "Some words by hand." in text
    assert text.index("## Pipeline") < text.index("## Monitor")

    again = replace_section(text, "monitor", "## Monitor\n\nnew monitor")
    assert again == text
    text = replace_section(text, "pipeline", "## Pipeline\n\nnew pipeline")
    assert "old pipeline" not in text and "new monitor" in text
    assert text.count(markers("pipeline")[0]) == 1 and text.count(markers("monitor")[1]) == 1


def test_a_section_is_added_to_a_report_written_before_sections(tmp_path: Path) -> None:
    report = tmp_path / "docs" / "benchmarks.md"
    write_section(report, "monitor", "## Monitor\n\nfirst")
    report.write_text(report.read_text() + "\nA note at the end.\n")
    write_section(report, "pipeline", "## Pipeline\n\nfigures")
    text = report.read_text()
    assert text.index("## Monitor") < text.index("A note at the end.") < text.index("## Pipeline")


def test_the_committed_report_has_both_sections() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text()
    for name in ("pipeline", "monitor"):
        begin, end = markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1
        assert text.index(begin) < text.index(end)
