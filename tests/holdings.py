"""What an Orthanc holds of one synthetic study, sources and results alike, told apart by
PatientID and matched by (SeriesNumber, InstanceNumber), which anonymization keeps: enough to
say, after calls that raced, whether a source was lost, without asking the plugin anything."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dicom_factory import Patient, Study, mr_series
from pydicom.uid import generate_uid

from orthanc_server import OrthancServer

Slot = tuple[int, int]  # (SeriesNumber, InstanceNumber)


def study_of_series(series: int, per_series: int, patient: Patient, first: int = 1) -> list[list]:
    """`series` MR series of `per_series` slices each, numbered from `first`, in one study (several
    studies on one server get different numbers, so that their results are told apart)."""
    study = Study(patient=patient)
    frame = generate_uid()
    return [mr_series(study, frame, per_series, number) for number in range(first, first + series)]


@dataclass
class Holdings:
    sources: Counter  # slots still held by a source instance
    results: Counter  # slots held by an anonymized instance (any patient but the source's)
    result_series: dict[str, list[str]]  # anonymized series ID -> its instance IDs

    def lost(self, slots: set[Slot]) -> list[Slot]:
        """The slots held neither by their source nor by a result."""
        return sorted(slot for slot in slots if not self.sources[slot] and not self.results[slot])


def holdings(server: OrthancServer, source_patient_id: str) -> Holdings:
    """Every instance of the server, sorted into sources of `source_patient_id` and results."""
    patient_of_study = {s["ID"]: s["PatientMainDicomTags"].get("PatientID", "")
                        for s in server.json("/studies?expand")}
    series = {s["ID"]: (patient_of_study[s["ParentStudy"]], int(s["MainDicomTags"].get("SeriesNumber", 0)))
              for s in server.json("/series?expand")}
    sources: Counter = Counter()
    results: Counter = Counter()
    members: dict[str, list[str]] = {}
    for instance in server.json("/instances?expand"):
        patient_id, number = series[instance["ParentSeries"]]
        slot = (number, int(instance["MainDicomTags"].get("InstanceNumber", 0)))
        if patient_id == source_patient_id:
            sources[slot] += 1
        else:
            results[slot] += 1
            members.setdefault(instance["ParentSeries"], []).append(instance["ID"])
    return Holdings(sources, results, members)
