"""The Now page's grouping: open findings by the place they point at (state, service, queue or
step), busiest and oldest first, each with the oldest order as its example."""

from __future__ import annotations

from dataclasses import dataclass, field

from loupe.monitor.models import Finding, FindingKind


@dataclass
class Place:
    state: FindingKind
    service: str
    where: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def example(self) -> Finding:
        """The order waiting longest here: the first to look at."""
        return min(self.findings, key=lambda f: f.since)

    @property
    def orders(self) -> int:
        return len(self.findings)

    @property
    def incidents(self) -> list[int]:
        return sorted({f.incident_id for f in self.findings})

    @property
    def key(self) -> str:
        """A stable anchor for the place (used in the page's ids)."""
        return f"{self.state}|{self.service}|{self.where}"


def group(findings: list[Finding]) -> list[Place]:
    places: dict[tuple[str, str, str], Place] = {}
    for finding in findings:
        key = (finding.state, finding.service, finding.where)
        place = places.get(key)
        if place is None:
            place = places[key] = Place(finding.state, finding.service, finding.where)
        place.findings.append(finding)
    return sorted(places.values(), key=lambda p: (p.example.since, p.key))
