"""Read back what an Orthanc holds, for the assertions of the behaviour tests."""
from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from dicom_factory import to_bytes
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


def anonymized_series_by_series(server: OrthancServer, series_members: list[list], uploaded: dict[str, dict],
                                body: dict) -> tuple[dict[int, tuple[str, str]], str]:
    """Each series anonymized in its own call (as Orthanc Explorer does): SeriesNumber -> (source
    series ID, anonymized series ID), and the one anonymized study they all went into."""
    series = {}
    for members in series_members:
        source_series = uploaded[members[0].SOPInstanceUID]["ParentSeries"]
        answer = server.post(f"/series/{source_series}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        series[int(members[0].SeriesNumber)] = (source_series, answer.json()["ID"])
    studies = {server.json(f"/series/{anonymized}")["ParentStudy"] for _, anonymized in series.values()}
    assert len(studies) == 1, studies
    return series, studies.pop()


def stored_again(server: OrthancServer, instance_id: str, change) -> str:
    """The instance stored again after `change(dataset)` (a leak planted in an anonymized file):
    the same identifiers, so the same Orthanc ID."""
    leaky = dataset(server, instance_id)
    change(leaky)
    assert server.delete(f"/instances/{instance_id}").status_code == 200
    planted = server.upload(to_bytes(leaky))["ID"]
    assert planted == instance_id
    return planted
