"""RestPort reads instance files through the plugin SDK (`orthanc.GetDicomForInstance`), not the
REST route `/instances/{id}/file`: one REST layer less per read (docs/performance.md, "Where the
time goes"). An unknown instance is still the engine's NotFound. (test_anonymize.py and
test_keep_source_races.py run the same against real Orthancs.)"""
from __future__ import annotations

import pytest

from consistent_anon.orthanc.rest_port import RestPort
from consistent_anon.errors import NotFound

FILE = b"\0" * 128 + b"DICM"


class OrthancException(Exception):
    pass


class SdkOrthanc:
    """The `orthanc` module's two ways to read an instance file, over one stored instance;
    Orthanc raises UnknownResource (17) for any other ID, by either way (1.10.1 to 1.13.0)."""

    OrthancException = OrthancException

    def __init__(self) -> None:
        self.rest_reads: list[str] = []
        self.sdk_reads: list[str] = []
        self.logs: list[str] = []

    def RestApiGet(self, uri: str) -> bytes:
        self.rest_reads.append(uri)
        if uri == "/instances/known/file":
            return FILE
        raise OrthancException(17, "Unknown resource")

    def GetDicomForInstance(self, instance_id: str) -> bytes:
        self.sdk_reads.append(instance_id)
        if instance_id == "known":
            return FILE
        raise OrthancException(17, "Unknown resource")

    def LogInfo(self, text: str) -> None:
        self.logs.append(text)

    def GenerateRestApiAuthorizationToken(self) -> str:
        return "Bearer token"


def test_a_file_is_read_through_the_sdk_not_the_rest_route():
    orthanc = SdkOrthanc()
    assert RestPort(orthanc, {}).read_file("known") == FILE
    assert orthanc.sdk_reads == ["known"] and orthanc.rest_reads == []


def test_an_unknown_instance_is_not_found():
    orthanc = SdkOrthanc()
    with pytest.raises(NotFound):
        RestPort(orthanc, {}).read_file("gone")
    assert orthanc.rest_reads == []
