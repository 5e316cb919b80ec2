"""Native's single-instance anonymization, with "Transcode" handled as native's job handles it.

The plugin anonymizes one instance at a time through native's instance route, but a patient,
study, series or bulk call is a job in native, and the two treat "Transcode" differently:
- an instance the job cannot transcode (JPEG baseline asked for 16-bit pixels, say) keeps its
  source's transfer syntax and the job succeeds, where the instance route fails;
- the job ignores "LossyQuality" (1.12.7, 1.13.0), which the instance route reads;
- Orthanc 1.10's instance route ignores "Transcode", which its job honours through Orthanc's
  transcoder: the plugin calls that transcoder itself (the plugin SDK's).
A transfer syntax native does not know is a 400 in both.
"""
from __future__ import annotations

from typing import Any, Protocol

from pydicom.uid import UID

from ..errors import BadFileFormat, PluginError, Refused

#: From this Orthanc version on, the instance route honours "Transcode".
TRANSCODE_SINCE = (1, 12, 0)


class NativePort(Protocol):
    def anonymize_instance(self, instance_id: str, body: dict[str, Any]) -> bytes: ...
    def transcode(self, data: bytes, syntax: str) -> bytes: ...
    def version(self) -> tuple[int, ...]: ...


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {member: value for member, value in body.items() if member != name}


def native_anonymized(port: NativePort, instance_id: str, body: dict[str, Any], whole_resources: bool) -> bytes:
    """The anonymized file native gives for this body: as its instance route does, or, for a call
    on whole resources (`whole_resources`), as its job does."""
    if not whole_resources:
        return port.anonymize_instance(instance_id, body)
    body = _without(body, "LossyQuality")
    if "Transcode" not in body:
        return port.anonymize_instance(instance_id, body)
    if port.version() < TRANSCODE_SINCE:
        return _transcoded(port, port.anonymize_instance(instance_id, _without(body, "Transcode")), body["Transcode"])
    try:
        return port.anonymize_instance(instance_id, body)
    except PluginError as error:
        failure = error
    untranscoded = port.anonymize_instance(instance_id, _without(body, "Transcode"))
    if isinstance(failure, Refused):  # the request itself is wrong: native's job refuses it before it starts
        raise BadFileFormat(f"Transcode: {failure.message}")
    return untranscoded


def _transcoded(port: NativePort, data: bytes, syntax: str) -> bytes:
    """Orthanc 1.10: the file in `syntax` by Orthanc's transcoder, or as it is where the
    transcoder cannot reach that syntax. The transcoder answers "Internal error" for an unknown
    syntax too, so a syntax DICOM does not define is refused first, as native's job refuses it."""
    if UID(syntax).type != "Transfer Syntax":
        raise BadFileFormat(f"Unknown transfer syntax UID: {syntax}")
    try:
        return port.transcode(data, syntax)
    except Refused as error:
        raise BadFileFormat(f"Transcode: {error.message}") from None
    except PluginError:  # the transcoder cannot reach that syntax: native's job keeps the source's
        return data
