"""Verify's look at pixels: per anonymized instance, whether burned-in text may remain.

The gate (pixels/gate.py) is run again on each anonymized header, so that results made before
the gate existed, or elsewhere, are judged too; the status the anonymization stored with a result
(pixels/decision.py, instance metadata STATUS_METADATA) says whether the caller accepted its pixels
or a rule cleaned them. The set is not clean while an instance at risk or unknown is neither.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..dicom.filereader import Header
from ..pixels.decision import ACCEPTED, CLEANED
from ..pixels.gate import BURNED_IN_ANNOTATION, NOT_AT_RISK, classify, risky_kind

#: The statuses verify reports.
NOT_AT_RISK_STATUS, NOT_CLEANED, DECLARED_CLEAN = "NotAtRisk", "NotCleaned", "DeclaredClean"
#: The report lists at most this many instances (the counts stay exact).
LISTED = 1000


@dataclass
class PixelReport:
    """The pixel status of each anonymized instance read, as counts and a list of the others."""

    status_of: Callable[[str], str | None]  # the stored status of a result (metadata), None if none
    counts: dict[str, int] = field(default_factory=dict)
    listed: list[dict[str, str]] = field(default_factory=list)

    def add(self, instance_id: str, header: Header) -> None:
        """One anonymized instance: its status; the stored one is read only for those at risk or
        unknown, and for those declared clean that may have been cleaned by a rule."""
        risk = classify(header)
        declared_clean = header.text(BURNED_IN_ANNOTATION).strip().upper() == "NO"
        if risk.level == NOT_AT_RISK and (not declared_clean or risky_kind(header) is None):
            self._count(NOT_AT_RISK_STATUS)
            return
        stored = self.status_of(instance_id) or ""
        if risk.level == NOT_AT_RISK:
            status = stored if stored.startswith(CLEANED) else DECLARED_CLEAN
        else:
            status = ACCEPTED if stored == ACCEPTED else NOT_CLEANED
        self._count(status.split(":")[0])
        if len(self.listed) < LISTED:
            self.listed.append({"Instance": instance_id, "Status": status, "Reason": risk.reason})

    def _count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    @property
    def clean(self) -> bool:
        return not self.counts.get(NOT_CLEANED)

    def answer(self) -> dict[str, Any]:
        return {"PixelStatusCounts": dict(sorted(self.counts.items())), "PixelStatus": self.listed}
