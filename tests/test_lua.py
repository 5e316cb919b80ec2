"""The Lua example: anonymize on arrival, instance by instance, over the DICOM network."""
from __future__ import annotations

import re
import time
from pathlib import Path

from pynetdicom import AE, StoragePresentationContexts

from anonymized import AnonymizedSet, find_patient
from conftest import new_patient
from dicom_factory import two_frame_study

LUA_SCRIPT = Path(__file__).parents[1] / "plugin" / "lua" / "anonymize-on-arrival.lua"


def send_over_dicom(port: int, datasets) -> None:
    sender = AE(ae_title="SYNTH-MODALITY")
    sender.requested_contexts = StoragePresentationContexts[:120]
    association = sender.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert association.is_established
    try:
        for ds in datasets:  # one C-STORE each, as a modality sends them
            status = association.send_c_store(ds)
            assert status.Status == 0x0000
    finally:
        association.release()


def test_instances_anonymized_on_arrival_form_one_coherent_study(server_factory):
    server = server_factory(lua=[LUA_SCRIPT])
    study = two_frame_study(per_series=4, patient=new_patient())
    send_over_dicom(server.dicom_port, study.instances)

    patient = server.get("/tools/generate-uid", params={
        "level": "patient", "patient-id": study.study.patient.patient_id}).text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = find_patient(server, patient)
        if found and len(server.json(f"/patients/{found[0]}/instances")) == len(study.instances) \
                and not find_patient(server, study.study.patient.patient_id):
            break
        time.sleep(0.2)
    assert find_patient(server, study.study.patient.patient_id) == []  # nothing left of the source
    assert len(server.json("/instances")) == len(study.instances)
    result = AnonymizedSet.of_patient(server, find_patient(server, patient)[0])
    assert len(result.instances) == len(study.instances)
    assert len(result.studies) == 1
    assert result.frame_of_reference_of(1) == result.frame_of_reference_of(2) != result.frame_of_reference_of(3)
    rt = next(ds for ds in result.instances.values() if ds.Modality == "RTSTRUCT")
    images = {str(ds.SOPInstanceUID) for n, series in result.by_series_number().items() if n == 1 for ds in series}
    contour = rt.ROIContourSequence[0].ContourSequence
    assert {str(c.ContourImageSequence[0].ReferencedSOPInstanceUID) for c in contour} == images
    assert not re.search(r"^E\d{4} ", server.log(), re.MULTILINE)  # no error logged by Orthanc
