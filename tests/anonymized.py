"""Read back what an Orthanc holds, for the assertions of the behaviour tests."""
from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from orthanc_server import OrthancServer


def dataset(server: OrthancServer, instance_id: str) -> Dataset:
    answer = server.get(f"/instances/{instance_id}/file")
    answer.raise_for_status()
    return pydicom.dcmread(io.BytesIO(answer.content))


def parse(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def find_patient(server: OrthancServer, patient_id: str) -> list[str]:
    """Orthanc IDs of the patients with this PatientID."""
    answer = server.post("/tools/find", json={"Level": "Patient", "Query": {"PatientID": patient_id}})
    answer.raise_for_status()
    return answer.json()


@dataclass
class AnonymizedSet:
    """Every instance stored under one patient, parsed."""
    instances: dict[str, Dataset]

    @classmethod
    def of_patient(cls, server: OrthancServer, patient_orthanc_id: str) -> "AnonymizedSet":
        ids = [i["ID"] for i in server.json(f"/patients/{patient_orthanc_id}/instances")]
        return cls({i: dataset(server, i) for i in ids})

    @property
    def studies(self) -> set[str]:
        return {str(ds.StudyInstanceUID) for ds in self.instances.values()}

    @property
    def sop_instance_uids(self) -> set[str]:
        return {str(ds.SOPInstanceUID) for ds in self.instances.values()}

    def by_series_number(self) -> dict[int, list[Dataset]]:
        groups: dict[int, list[Dataset]] = defaultdict(list)
        for ds in self.instances.values():
            groups[int(ds.SeriesNumber)].append(ds)
        return dict(groups)

    def frame_of_reference_of(self, series_number: int) -> set[str]:
        return {str(ds.FrameOfReferenceUID) for ds in self.by_series_number()[series_number]}
