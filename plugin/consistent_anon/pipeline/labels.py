"""Native's "KeepLabels" (Orthanc 1.12.3): the labels of the sources, copied to the results.

Native copies them at the series, study and patient levels, not at the instance level (1.12.7,
1.13.0), so neither does the plugin. Each result knows its source from the call that stored it
(origins.CallOrigins, whether or not it writes "AnonymizedFrom"), or else, for a result a former
call stored, through its "AnonymizedFrom" metadata.
"""
from __future__ import annotations

from typing import Callable, Protocol

from ..errors import NotFound

#: The levels native copies labels at, with the field of a stored result naming its resource there.
LABEL_LEVELS = (("series", "ParentSeries"), ("studies", "ParentStudy"), ("patients", "ParentPatient"))


class LabelPort(Protocol):
    def metadata(self, level: str, resource_id: str, name: str) -> str | None: ...
    def labels(self, level: str, resource_id: str) -> list[str]: ...
    def add_label(self, level: str, resource_id: str, label: str) -> None: ...


def copy_labels(port: LabelPort, results: list[dict[str, str]], patient_level: bool,
                known_source: Callable[[str], str | None]) -> None:
    """Give each result series, study and patient the labels of the resource it was made from
    (`known_source`: the call's own links)."""
    for level, field in LABEL_LEVELS:
        if level == "patients" and not patient_level:
            continue  # "PatientLevelEnabled": false: Orthanc has no patient resources to label
        for target in dict.fromkeys(stored[field] for stored in results):
            source = known_source(target) or port.metadata(level, target, "AnonymizedFrom")
            if source is None:
                continue
            try:
                wanted = port.labels(level, source)
            except NotFound:
                continue  # the source is gone (consumed by another call): nothing left to copy
            present = set(port.labels(level, target))
            for label in wanted:
                if label not in present:
                    port.add_label(level, target, label)
