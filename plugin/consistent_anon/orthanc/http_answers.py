"""The plugin's HTTP answers: the one place where a domain error (errors.py) gets its HTTP status
and native's ErrorCode, where Orthanc's own errors become domain errors, and where JSON is written
as native writes it (the successful answers' shapes are pipeline/native_answers.py)."""
from __future__ import annotations

import json
from typing import Any

from ..errors import (BadFileFormat, BadRequest, Conflict, Forbidden, NotFound, PartlyKept, PluginError, Refused,
                      StoredButUnfinished, SubjectRequired, bounded)

#: HTTP reason phrases, as native's "HttpError" writes them.
HTTP_ERRORS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 409: "Conflict", 415: "Unsupported Media Type",
               500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


def json_text(value: Any) -> str:
    """Every JSON answer of the plugin, as native writes its own (indented by three spaces)."""
    return json.dumps(value, indent=3)


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


def send_error(output: Any, error: PluginError, method: str, uri: str) -> None:
    """A JSON error like native's. orthanc-python 4.0 takes (status, str, size); later, bytes."""
    status = http_status(error)
    body = error_body(error, method, uri)
    try:
        output.SendHttpStatus(status, body.encode("utf-8"))
    except TypeError:  # orthanc-python 4.0's signature: the same answer, as it takes it
        output.SendHttpStatus(status, body, len(body))
