"""RestPort.set_metadata and the loopback overwrite without a server: how the plugin's metadata
writes behave with and without "CheckRevisions", under races, and when the target vanished.
(test_check_revisions.py runs the same against real Orthancs.)"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from consistent_anon.orthanc.rest_port import RestPort
from consistent_anon.errors import Conflict, NotFound, PluginError
from consistent_anon.orthanc.loopback import LoopbackRest, RevisionConflict

SERIES = "/series/s1"


class OrthancException(Exception):
    pass


class FakeOrthanc:
    """The few `orthanc` module functions set_metadata uses, over an in-memory index."""

    OrthancException = OrthancException

    def __init__(self, check_revisions: bool, refuse_origin: bool = False) -> None:
        self.check_revisions = check_revisions
        self.refuse_origin = refuse_origin  # Orthanc 1.10: no plugin may write AnonymizedFrom
        self.resources = {SERIES}
        self.metadata: dict[str, str] = {}
        self.puts: list[tuple[str, str]] = []
        self.before_put = lambda path: None  # another writer, just before this one's write
        self.logs: list[str] = []

    def RestApiGet(self, path: str) -> bytes:
        if path in self.resources:
            return b"{}"
        if path in self.metadata:
            return self.metadata[path].encode()
        raise OrthancException(17 if path.split("/metadata/")[0] not in self.resources else 7, "Unknown")

    def RestApiPut(self, path: str, value: str) -> None:
        self.before_put(path)
        resource = path.split("/metadata/")[0]
        if resource not in self.resources or (self.refuse_origin and path.endswith("AnonymizedFrom")):
            raise OrthancException(17, "Unknown resource")
        if path in self.metadata and self.check_revisions:
            raise OrthancException(43, "A bad revision number was provided")
        self.puts.append((path, value))
        self.metadata[path] = value

    def LogInfo(self, text: str) -> None:
        self.logs.append(text)

    def GenerateRestApiAuthorizationToken(self) -> str:
        return "Bearer token"


class FakeLoopback:
    def __init__(self, orthanc: FakeOrthanc) -> None:
        self.orthanc = orthanc
        self.overwrites: list[str] = []

    def overwrite(self, path: str, value: str) -> None:
        self.overwrites.append(path)
        self.orthanc.metadata[path] = value


def port_of(orthanc: FakeOrthanc) -> tuple[RestPort, FakeLoopback]:
    port = RestPort(orthanc, {"CheckRevisions": orthanc.check_revisions})
    port._loopback = loopback = FakeLoopback(orthanc)
    return port, loopback


@pytest.mark.parametrize("check_revisions", [False, True])
def test_a_user_metadata_already_there_is_not_written_a_new_one_is(check_revisions):
    """The options mark, once per series: on a re-run it is there already, and a read costs
    less than a write."""
    orthanc = FakeOrthanc(check_revisions)
    port, loopback = port_of(orthanc)
    port.set_metadata("series", "s1", "9732", "mark")
    port.set_metadata("series", "s1", "9732", "mark")
    assert orthanc.puts == [(SERIES + "/metadata/9732", "mark")] and not loopback.overwrites


def test_without_check_revisions_anonymized_from_is_one_write_with_no_read_before_it():
    """A study-level run writes AnonymizedFrom once per new instance, where it is never there
    yet: a read before each write would double the calls, for a revision nothing checks."""
    orthanc = FakeOrthanc(False)
    reads: list[str] = []
    get = orthanc.RestApiGet
    orthanc.RestApiGet = lambda path: reads.append(path) or get(path)
    port, loopback = port_of(orthanc)
    port.set_metadata("series", "s1", "AnonymizedFrom", "source")
    assert reads == [] and not loopback.overwrites
    assert orthanc.metadata[SERIES + "/metadata/AnonymizedFrom"] == "source"


def test_without_check_revisions_an_overwrite_is_a_plain_write():
    orthanc = FakeOrthanc(False)
    port, loopback = port_of(orthanc)
    port.set_metadata("series", "s1", "AnonymizedFrom", "a")
    port.set_metadata("series", "s1", "AnonymizedFrom", "b")
    assert orthanc.metadata[SERIES + "/metadata/AnonymizedFrom"] == "b" and not loopback.overwrites


def test_under_check_revisions_a_user_metadata_is_replaced_with_its_revision_anonymized_from_kept():
    orthanc = FakeOrthanc(True)
    port, loopback = port_of(orthanc)
    for name in ("9732", "AnonymizedFrom"):
        port.set_metadata("series", "s1", name, "first")
        port.set_metadata("series", "s1", name, "second")
    assert orthanc.metadata[SERIES + "/metadata/9732"] == "second"
    assert loopback.overwrites == [SERIES + "/metadata/9732"]
    assert orthanc.metadata[SERIES + "/metadata/AnonymizedFrom"] == "first"
    assert any("kept" in line for line in orthanc.logs)


@pytest.mark.parametrize("code", [43, 11])  # a revision conflict; a database collision between nodes
def test_a_lost_race_reads_again_and_stops_when_the_winner_wrote_the_same(code):
    orthanc = FakeOrthanc(True)
    port, _ = port_of(orthanc)
    path = SERIES + "/metadata/AnonymizedFrom"

    def winner_first(put_path: str) -> None:
        if not orthanc.puts and put_path == path and path not in orthanc.metadata:
            orthanc.metadata[path] = "source"  # the other worker's write lands first
            if code == 11:
                raise OrthancException(11, "Database error")
    orthanc.before_put = winner_first
    port.set_metadata("series", "s1", "AnonymizedFrom", "source")
    assert orthanc.metadata[path] == "source" and orthanc.puts == []


def test_a_conflict_that_never_ends_is_an_error_after_a_few_attempts():
    orthanc = FakeOrthanc(False)
    port, _ = port_of(orthanc)

    def always(path: str) -> None:
        raise OrthancException(43, "A bad revision number was provided")
    orthanc.before_put = always
    with pytest.raises(PluginError):
        port.set_metadata("series", "s1", "9732", "mark")


def test_a_target_that_vanished_fails_the_call_one_that_refuses_answers_natives_404():
    orthanc = FakeOrthanc(False)
    port, _ = port_of(orthanc)
    with pytest.raises(Conflict):  # the call fails with 409, as for any result gone meanwhile
        port.set_metadata("studies", "gone", "AnonymizedFrom", "x")
    refusing = FakeOrthanc(False, refuse_origin=True)
    port, _ = port_of(refusing)
    with pytest.raises(NotFound):  # native's 404
        port.set_metadata("series", "s1", "AnonymizedFrom", "x")


class RevisionedHandler(BaseHTTPRequestHandler):
    """Orthanc's metadata route with CheckRevisions: ETag on GET, If-Match required on PUT."""

    value, revision, seen = b"old", 3, []

    def do_GET(self) -> None:
        self.seen.append(("GET", self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("ETag", f'"{self.revision}-md5"')
        self.send_header("Content-Length", str(len(self.value)))
        self.end_headers()
        self.wfile.write(self.value)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("PUT", self.headers.get("If-Match")))
        matches = self.headers.get("If-Match") == f'"{RevisionedHandler.revision}-md5"'
        if matches:
            RevisionedHandler.value, RevisionedHandler.revision = body, RevisionedHandler.revision + 1
        self.send_response(200 if matches else 409)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_the_loopback_overwrite_names_the_revision_it_read():
    server = HTTPServer(("127.0.0.1", 0), RevisionedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        loopback = LoopbackRest({"HttpPort": server.server_address[1]}, lambda: "Bearer t")
        loopback.overwrite("/series/s1/metadata/9732", "new")
        assert RevisionedHandler.value == b"new"
        assert RevisionedHandler.seen == [("GET", "Bearer t"), ("PUT", '"3-md5"')]
        RevisionedHandler.revision = 7  # someone wrote between this GET and PUT
        original = RevisionedHandler.do_GET

        def stale_get(handler) -> None:
            original(handler)
            RevisionedHandler.revision += 1
        RevisionedHandler.do_GET = stale_get
        with pytest.raises(RevisionConflict):
            loopback.overwrite("/series/s1/metadata/9732", "newer")
        RevisionedHandler.do_GET = original
        with pytest.raises(PluginError):
            LoopbackRest({"HttpServerEnabled": False}, lambda: "t").overwrite("/series/s1/metadata/9732", "x")
    finally:
        server.shutdown()
