"""What a dataset adapter returns: the samples that load, and every one it skipped, with why.

Nothing is dropped silently: an adapter that cannot use a row, a file or a slice adds a
`Skipped` naming it, and the caller prints the count and the reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ibisagent.data.pairs import Sample
from ibisagent.errors import IbisInputError


@dataclass(frozen=True)
class Skipped:
    """One thing that did not become a sample: `what` names it (file, file:line, sample id)."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass
class LoadReport:
    samples: list[Sample] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: LoadReport) -> LoadReport:
        self.samples.extend(other.samples)
        self.skipped.extend(other.skipped)
        return self

    def skip(self, what: object, reason: str) -> None:
        self.skipped.append(Skipped(str(what), reason))

    def summary(self, max_lines: int = 20) -> str:
        """Multi-line text: counts, then up to `max_lines` skipped entries."""
        lines = [f"{len(self.samples)} samples loaded, {len(self.skipped)} skipped"]
        for s in self.skipped[:max_lines]:
            lines.append(f"  skipped {s}")
        if len(self.skipped) > max_lines:
            lines.append(f"  ... and {len(self.skipped) - max_lines} more")
        return "\n".join(lines)


def check_samples(samples: Iterable[Sample], on_progress: Callable[[int], None] | None = None) -> LoadReport:
    """Load every sample once and keep those that load: readable image and mask of the same size,
    a binary mask, and a non-empty mask unless the sample is a deliberate negative."""
    report = LoadReport()
    for i, s in enumerate(samples):
        if on_progress:
            on_progress(i)
        try:
            _, mask = s.load()
        except IbisInputError as exc:
            report.skip(s.id, str(exc))
            continue
        if mask is not None and not mask.any() and not s.negative:
            report.skip(s.id, f"mask {s.mask or ''} is empty (no target pixels)".replace("  ", " "))
            continue
        report.samples.append(s)
    return report


def counts(samples: Iterable[Sample], key: Callable[[Sample], str]) -> Counter:
    return Counter(key(s) for s in samples)
