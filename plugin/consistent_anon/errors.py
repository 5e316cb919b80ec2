"""Errors that become HTTP answers: each carries the status native Orthanc would give."""
from __future__ import annotations


class PluginError(Exception):
    """An error answered to the client with `status` and a JSON body naming `message`."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(PluginError):
    status = 400


class NotFound(PluginError):
    status = 404


class VerificationFailed(PluginError):
    """The anonymized output did not pass the fail-closed check: nothing was stored."""

    status = 500


# Orthanc's ErrorCode values (OrthancCPluginErrorCode) mapped to the HTTP status its REST API uses.
ORTHANC_ERROR_STATUS = {
    3: 400,   # ParameterOutOfRange
    7: 404,   # InexistentItem
    8: 400,   # BadRequest
    13: 501,  # NotImplemented
    15: 400,  # BadFileFormat
    17: 404,  # UnknownResource
    19: 400,  # BadParameterType
    21: 401,  # Unauthorized
    27: 500,  # UnknownDicomTag (native answers 500)
}


def status_for_orthanc_error(code: int) -> int:
    return ORTHANC_ERROR_STATUS.get(code, 500)
