"""The plugin's successful answers and job contents in native Orthanc's shape, per Orthanc version.

Native's answers gained members over the versions (`ParentResources` in 1.12.0, `Resources` in
1.12.11, `UserData` in jobs in 1.12.9): building every answer here, from the version, keeps the
engine, the routes and the jobs answering exactly what the native route would on that Orthanc.
"""
from __future__ import annotations

from typing import Any

from ..orthanc_ids import LEVEL_TYPES, PARENT_FIELD

Version = tuple[int, ...]

#: Native answers list the sources' IDs in "ParentResources".
PARENT_RESOURCES_SINCE = (1, 12, 0)
#: Native answers of single-resource calls list the sources as [{"ID", "Type"}] in "Resources".
RESOURCES_SINCE = (1, 12, 11)
#: Native jobs keep the body's "UserData" and show it in GET /jobs/{id}.
USER_DATA_SINCE = (1, 12, 9)
#: Native "KeepLabels" copies the sources' labels to the results.
KEEP_LABELS_SINCE = (1, 12, 3)


def _common(version: Version, targets: list[tuple[str, str]], instances: int, body: dict[str, Any],
            bulk: bool) -> dict[str, Any]:
    """What native's answer and job content hold from the start: counts, sources, Transcode."""
    content: dict[str, Any] = {"Description": "REST API", "FailedInstancesCount": 0,
                               "InstancesCount": instances, "IsAnonymization": True}
    if version >= PARENT_RESOURCES_SINCE:
        content["ParentResources"] = [resource_id for _, resource_id in targets]
    if version >= RESOURCES_SINCE and not bulk:  # a bulk answer's "Resources" are its results
        content["Resources"] = [{"ID": resource_id, "Type": LEVEL_TYPES[level]} for level, resource_id in targets]
    if isinstance(body.get("Transcode"), str):
        content["Transcode"] = body["Transcode"]
    return content


def pending_content(version: Version, targets: list[tuple[str, str]], instances: int,
                    body: dict[str, Any], bulk: bool) -> dict[str, Any]:
    """A job's `Content` before it succeeds (pending, running, failed), as native shows it: a bulk
    job's "Resources" (its results) are empty until then."""
    content = _common(version, targets, instances, body, bulk)
    if bulk:
        content["Resources"] = []
    return content


def resource_answer(version: Version, level: str, resource_id: str, results: list[dict[str, str]],
                    instances: int, body: dict[str, Any]) -> dict[str, Any]:
    """/{patients,studies,series}/{id}/anonymize: the anonymized resource, as native answers."""
    answer = _common(version, [(level, resource_id)], instances, body, bulk=False)
    parent = results[0][PARENT_FIELD[level]]
    answer.update({"ID": parent, "Path": f"/{level}/{parent}", "PatientID": results[0]["ParentPatient"],
                   "Type": LEVEL_TYPES[level]})
    return answer


def bulk_answer(version: Version, targets: list[tuple[str, str]], results: list[dict[str, str]],
                instances: int, body: dict[str, Any]) -> dict[str, Any]:
    """/tools/bulk-anonymize: every new instance, series, study and patient, as native answers."""
    answer = _common(version, targets, instances, body, bulk=True)
    resources: list[dict[str, str]] = []
    seen: set[str] = set()
    for level, field in (("instances", "ID"), ("series", "ParentSeries"), ("studies", "ParentStudy"),
                         ("patients", "ParentPatient")):
        for stored in results:
            if stored[field] not in seen:
                seen.add(stored[field])
                resources.append(resource(level, stored[field]))
    answer["Resources"] = resources
    return answer


def job_submitted(job_id: str) -> dict[str, Any]:
    """An asynchronous call's answer: where its job is."""
    return {"ID": job_id, "Path": f"/jobs/{job_id}"}


def resource(level: str, resource_id: str) -> dict[str, Any]:
    """A resource as native names one in its answers."""
    return {"ID": resource_id, "Path": f"/{level}/{resource_id}", "Type": LEVEL_TYPES[level]}


def empty_bulk_answer() -> dict[str, Any]:
    """/tools/bulk-anonymize with no resource: native answers at once, without a job, on every version."""
    return {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 0, "IsAnonymization": True,
            "Resources": []}


def user_data(version: Version, body: dict[str, Any]) -> dict[str, Any]:
    """The "UserData" member a native job would show for this body (nothing before 1.12.9)."""
    if version >= USER_DATA_SINCE and "UserData" in body:
        return {"UserData": body["UserData"]}
    return {}
