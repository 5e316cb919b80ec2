"""Errors that become HTTP answers (or failed jobs), each with the status native Orthanc gives."""
from __future__ import annotations


class PluginError(Exception):
    """An error answered with `status` and a JSON body naming `message`.

    `orthanc_code` and `description` are Orthanc's ErrorCode and its text, shown by failed jobs.
    """

    status = 500
    orthanc_code = -1
    description = "Internal error"

    def __init__(self, message: str, status: int | None = None, orthanc_code: int | None = None,
                 description: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if orthanc_code is not None:
            self.orthanc_code = orthanc_code
        if description is not None:
            self.description = description


class BadRequest(PluginError):
    status, orthanc_code, description = 400, 8, "Bad request"


class Forbidden(PluginError):
    status, orthanc_code, description = 403, 45, "Forbidden access"


class BadFileFormat(BadRequest):
    """What native answers for a body it cannot parse or a member of the wrong type."""

    orthanc_code, description = 15, "Bad file format"


class NotFound(PluginError):
    status, orthanc_code, description = 404, 17, "Unknown resource"


class Conflict(PluginError):
    """The call would store results that collide with results made under other options."""

    status, orthanc_code, description = 409, 8, "Bad request"


class SubjectRequired(PluginError):
    """A patient outside the project's subject table, where the project requires one."""

    status, orthanc_code, description = 403, 45, "Forbidden access"


class VerificationFailed(PluginError):
    """The anonymized output did not pass the fail-closed check: nothing was stored."""


class JobCanceled(Exception):
    """Raised inside a running job once it has been canceled."""


# Orthanc's ErrorCode values mapped to the HTTP status its REST API answers with.
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


def status_for_orthanc_error(code: int) -> int:
    """Native's HTTP status for an Orthanc error code; 500 for the rest (NotImplemented and
    UnknownDicomTag included, as native answers them)."""
    return ORTHANC_ERROR_STATUS.get(code, 500)
