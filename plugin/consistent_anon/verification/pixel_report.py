"""Verify's look at pixels: per anonymized instance, whether burned-in text may remain.

The gate (pixels/gate.py) is run again on each anonymized header, so that results made before
the gate existed, or elsewhere, are judged too, and on each source: an instance is at risk or
unknown only if its source (where it is paired) is too, since its pixels are its source's (Orthanc
itself marks an image DERIVED when it transcodes it lossily). The status the anonymization stored
with a result (pixels/decision.py, the instance metadata PixelStatusMetadata) says whether the caller
accepted its pixels or a rule cleaned them. The set is not clean while an instance at risk or
unknown is neither.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..dicom.filereader import Header
from ..pixels.decision import ACCEPTED, CLEANED
from ..pixels.gate import BURNED_IN_ANNOTATION, Risk, classify, risky_kind

#: The statuses verify reports.
NOT_AT_RISK, NOT_CLEANED, DECLARED_CLEAN = "NotAtRisk", "NotCleaned", "DeclaredClean"
#: The report lists at most this many instances (the counts stay exact).
LISTED = 1000


@dataclass
class PixelReport:
    """The pixel status of each anonymized instance, as counts and a list of those not plainly
    not at risk; only instances at risk, unknown or declared clean on a risky kind are remembered."""

    status_of: Callable[[str], str | None]  # the stored status of a result (metadata), None if none
    sources: dict[str, Risk] = field(default_factory=dict)  # sources at risk or unknown
    results: dict[str, tuple[Risk, bool]] = field(default_factory=dict)  # the results to look at again
    counts: dict[str, int] = field(default_factory=dict)
    listed: list[dict[str, str]] = field(default_factory=list)
    looked_at: list[str] = field(default_factory=list)  # every instance not plainly not at risk

    def add_source(self, instance_id: str, header: Header) -> None:
        risk = classify(header)
        if risk.at_risk_or_unknown:
            self.sources[instance_id] = risk

    def add(self, instance_id: str, header: Header) -> None:
        """One anonymized instance, judged once the pairs are known (`conclude`)."""
        risk = classify(header)
        declared_clean = header.text(BURNED_IN_ANNOTATION).strip().upper() == "NO" and risky_kind(header) is not None
        if risk.at_risk_or_unknown or declared_clean:
            self.results[instance_id] = (risk, declared_clean)
        else:
            self._count(NOT_AT_RISK)

    def conclude(self, pairs: dict[str, str]) -> None:
        """The status of each instance remembered; `pairs`: anonymized ID -> source ID."""
        for instance_id, (risk, declared_clean) in self.results.items():
            source = pairs.get(instance_id)
            if risk.at_risk_or_unknown and source is not None and source not in self.sources:
                self._count(NOT_AT_RISK)  # the source was not: its pixels are as they were
                continue
            stored = self.status_of(instance_id) or ""
            if declared_clean:
                status = stored if stored.startswith(CLEANED) else DECLARED_CLEAN
            else:
                status = ACCEPTED if stored == ACCEPTED else NOT_CLEANED
            self._count(status.split(":")[0])
            self.looked_at.append(instance_id)
            if len(self.listed) < LISTED:
                self.listed.append({"Instance": instance_id, "Status": status, "Reason": risk.reason})

    def _count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    @property
    def clean(self) -> bool:
        return not self.counts.get(NOT_CLEANED)

    def answer(self) -> dict[str, Any]:
        return {"PixelStatusCounts": dict(sorted(self.counts.items())), "PixelStatus": self.listed}
