"""transcoding.native_anonymized with a fake port: what native's job does with "Transcode"."""
from __future__ import annotations

import pytest

from consistent_anon.orthanc.http_answers import error_of_status
from consistent_anon.errors import BadFileFormat, PluginError
from consistent_anon.pipeline.transcoding import native_anonymized

JPEG = "1.2.840.10008.1.2.4.50"


class FakePort:
    """Native's instance route: fails (status `failure`) whenever the body asks for Transcode."""

    def __init__(self, version=(1, 13, 0), failure: int | None = None, transcoder_failure: int | None = None):
        self._version, self._failure, self._transcoder_failure = version, failure, transcoder_failure
        self.bodies: list[dict] = []

    def anonymize_instance(self, instance_id, body):
        self.bodies.append(body)
        if "Transcode" in body and self._failure:
            raise error_of_status(self._failure, "cannot")
        return b"transcoded" if "Transcode" in body and self._version >= (1, 12) else b"plain"

    def transcode(self, data, syntax):
        if self._transcoder_failure:
            raise error_of_status(self._transcoder_failure, "cannot")
        return b"transcoded by the SDK"

    def version(self):
        return self._version


def test_the_instance_route_is_natives_own():
    port = FakePort(failure=500)
    with pytest.raises(PluginError):
        native_anonymized(port, "i", {"Transcode": JPEG, "LossyQuality": 5}, whole_resources=False)
    assert port.bodies == [{"Transcode": JPEG, "LossyQuality": 5}]


def test_whole_resources_keep_the_syntax_native_cannot_reach_and_drop_lossy_quality():
    port = FakePort(failure=500)
    assert native_anonymized(port, "i", {"Transcode": JPEG, "LossyQuality": 5}, whole_resources=True) == b"plain"
    assert port.bodies == [{"Transcode": JPEG}, {}]


def test_whole_resources_refuse_a_syntax_native_refuses():
    with pytest.raises(BadFileFormat):
        native_anonymized(FakePort(failure=400), "i", {"Transcode": "1.2.3"}, whole_resources=True)


def test_orthanc_1_10_transcodes_through_the_sdk_and_keeps_the_syntax_where_it_cannot():
    assert native_anonymized(FakePort((1, 10, 1)), "i", {"Transcode": JPEG}, True) == b"transcoded by the SDK"
    assert native_anonymized(FakePort((1, 10, 1), transcoder_failure=500), "i", {"Transcode": JPEG}, True) == b"plain"
    with pytest.raises(BadFileFormat):
        native_anonymized(FakePort((1, 10, 1)), "i", {"Transcode": "1.2.3.4"}, True)
