"""The plugin's answers in native Orthanc's shape, per Orthanc version.

Native's answers gained members over the versions (`ParentResources` in 1.12.0, `Resources` in
1.12.11, `UserData` in jobs in 1.12.9): building every answer here, from the version, keeps the
engine, the routes and the jobs answering exactly what the native route would on that Orthanc.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import (BadFileFormat, BadRequest, Conflict, Forbidden, NotFound, PartlyKept, PluginError, Refused,
                     StoredButUnfinished, SubjectRequired, bounded)
from .orthanc_ids import LEVEL_TYPES, PARENT_FIELD

Version = tuple[int, ...]

#: Native answers list the sources' IDs in "ParentResources".
PARENT_RESOURCES_SINCE = (1, 12, 0)
#: Native answers of single-resource calls list the sources as [{"ID", "Type"}] in "Resources".
RESOURCES_SINCE = (1, 12, 11)
#: Native jobs keep the body's "UserData" and show it in GET /jobs/{id}.
USER_DATA_SINCE = (1, 12, 9)
#: Native "KeepLabels" copies the sources' labels to the results.
KEEP_LABELS_SINCE = (1, 12, 3)

#: HTTP reason phrases, as native's "HttpError" writes them.
HTTP_ERRORS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 409: "Conflict", 415: "Unsupported Media Type",
               500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}



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


def json_text(value: Any) -> str:
    """Every JSON answer of the plugin, as native writes its own (indented by three spaces)."""
    return json.dumps(value, indent=3)


def empty_bulk_answer() -> dict[str, Any]:
    """/tools/bulk-anonymize with no resource: native answers at once, without a job, on every version."""
    return {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 0, "IsAnonymization": True,
            "Resources": []}


def user_data(version: Version, body: dict[str, Any]) -> dict[str, Any]:
    """The "UserData" member a native job would show for this body (nothing before 1.12.9)."""
    if version >= USER_DATA_SINCE and "UserData" in body:
        return {"UserData": body["UserData"]}
    return {}


# --- Errors: the one place where a domain error (errors.py) gets its HTTP status and native's
# ErrorCode, and where Orthanc's own errors become domain errors. ---------------------------------

#: Each error class: the HTTP status, Orthanc ErrorCode and description native answers with for
#: such a failure (the most specific class first: a subclass is looked up before its parent).
_ANSWERS: dict[type[PluginError], tuple[int, int, str]] = {
    BadFileFormat: (400, 15, "Bad file format"),
    BadRequest: (400, 8, "Bad request"),
    Forbidden: (403, 45, "Forbidden access"),
    SubjectRequired: (403, 45, "Forbidden access"),
    NotFound: (404, 17, "Unknown resource"),
    Conflict: (409, 8, "Bad request"),
    Refused: (400, 8, "Bad request"),
    PluginError: (500, -1, "Internal error"),
}

#: Orthanc's ErrorCode values mapped to the HTTP status its REST API answers with.
ORTHANC_ERROR_STATUS = {
    3: 400,   # ParameterOutOfRange
    5: 400,   # BadParameterType
    6: 400,   # BadSequenceOfCalls
    7: 404,   # InexistentItem
    8: 400,   # BadRequest
    12: 400,  # UriSyntax
    13: 404,  # InexistentFile
    15: 400,  # BadFileFormat
    17: 404,  # UnknownResource
    21: 404,  # InexistentTag
}
#: The domain error of an HTTP status Orthanc answers with (500 and the rest: PluginError).
_ERROR_OF_STATUS: dict[int, type[PluginError]] = {400: BadRequest, 403: Forbidden, 404: NotFound, 409: Conflict}


def _answer_of(error: PluginError) -> tuple[int, int, str]:
    for cls in type(error).__mro__:
        if cls in _ANSWERS:
            return _ANSWERS[cls]
    return _ANSWERS[PluginError]


def http_status(error: PluginError) -> int:
    """The HTTP status native gives for this failure. A step that failed after the result was
    stored keeps its own status, but a 404 there is the plugin's failure (500), not the caller's.
    A call that kept results as their sources went keeps its cause's status (404, 409)."""
    if isinstance(error, PartlyKept):
        return http_status(error.cause)
    if isinstance(error, StoredButUnfinished):
        return 500 if isinstance(error.cause, NotFound) else http_status(error.cause)
    return _answer_of(error)[0]


def orthanc_error(error: PluginError) -> tuple[int, str]:
    """Orthanc's ErrorCode and its description for this failure: Orthanc's own where it raised it."""
    if isinstance(error, (StoredButUnfinished, PartlyKept)):
        return orthanc_error(error.cause)
    _, code, description = _answer_of(error)
    return (code if error.orthanc_code is None else error.orthanc_code,
            description if error.description is None else error.description)


def status_for_orthanc_error(code: int) -> int:
    """Native's HTTP status for an Orthanc error code; 500 for the rest (NotImplemented and
    UnknownDicomTag included, as native answers them)."""
    return ORTHANC_ERROR_STATUS.get(code, 500)


def native_error(code: int, message: str) -> PluginError:
    """The domain error for an error Orthanc raised (a built-in call), carrying its code."""
    return error_of_status(status_for_orthanc_error(code), message, code, message)


def error_of_status(status: int, message: str, orthanc_code: int | None = None,
                    description: str | None = None) -> PluginError:
    """The domain error for an HTTP status Orthanc answered with (a 4xx the caller's; the rest a failure)."""
    cls = _ERROR_OF_STATUS.get(status, Refused if 400 <= status < 500 else PluginError)
    return cls(message, orthanc_code=orthanc_code, description=description)


def error_body(error: PluginError, method: str, uri: str) -> str:
    """A JSON error with native's members; `Message` is the plugin's explanation (native's is the
    description, which `OrthancError` carries as native's does)."""
    status = http_status(error)
    code, description = orthanc_error(error)
    return json.dumps({"HttpError": HTTP_ERRORS.get(status, "Error"), "HttpStatus": status, "Message": error.message,
                       "Method": method, "OrthancError": description, "OrthancStatus": code,
                       "Uri": bounded(uri)}, indent=3)
