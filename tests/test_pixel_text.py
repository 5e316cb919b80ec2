"""Text read in pixels, without a server or a text reader (verification/pixel_text.py and its client):
what in a line read is a source identifier, which frames are read, what the report says when a
frame cannot be read, and what the client makes of answers it does not understand. The real
reader and a real Orthanc: test_pixel_text_orthanc.py."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from consistent_anon.dicom.identifiers import identifying_texts
from consistent_anon.errors import BadRequest, PluginError
from consistent_anon.verification.pixel_text import (ALL, AT_RISK, NONE, PixelLeak, PixelTextFinder, PixelTextReport,
                                                     TextLine, TextReaderError, TextReading, frames_to_read,
                                                     read_instances, scope_for)
from consistent_anon.verification.text_reader import read_text
from test_identifier_model import source
from test_set_verification import header


def labels_in(line: str, **attributes: str) -> set[str]:
    return PixelTextFinder(identifying_texts(header(source(**attributes)))).labels(line)


@pytest.mark.parametrize("line, expected", [
    # text recognition drops the spaces between words: found all the same
    ("DOE,JOHNMRN7734125", {"PatientName", "PatientID"}),
    ("JOHN DOE", {"PatientName"}),
    ("DOB:03/14/1961 M", {"PatientBirthDate"}),
    ("DOB 14.03.1961", {"PatientBirthDate"}),
    ("1961-03-14", {"PatientBirthDate"}),
    ("PID7734125", {"PatientID"}),
])
def test_identifiers_are_found_in_lines_read_without_their_spaces(line, expected):
    assert labels_in(line, name="DOE^JOHN", patient_id="7734125", PatientBirthDate="19610314") == expected


@pytest.mark.parametrize("line, attributes, expected", [
    # what text recognition does to what it reads
    ("MULLER A.", {"name": "MÜLLER^ANNA"}, {"PatientName"}),  # accents dropped
    ("MRNO012345", {"patient_id": "MRN0012345"}, {"PatientID"}),  # O for 0
    ("ID A1234S", {"patient_id": "A12345"}, {"PatientID"}),  # S for 5
    ("ID:4711", {"patient_id": "4711"}, {"PatientID"}),  # a short ID standing alone
    # screens' dates
    ("DOB 05-MAR-1962", {"PatientBirthDate": "19620305"}, {"PatientBirthDate"}),
    ("3/5/1962", {"PatientBirthDate": "19620305"}, {"PatientBirthDate"}),
    ("05.03.62 10:14", {"PatientBirthDate": "19620305"}, {"PatientBirthDate"}),
    ("MAR 5 1962", {"PatientBirthDate": "19620305"}, {"PatientBirthDate"}),
])
def test_what_text_recognition_does_to_identifiers_does_not_hide_them(line, attributes, expected):
    attributes = {"name": "SMITH^JANE", "patient_id": "P-99", "PatientBirthDate": "19000101", **attributes}
    assert labels_in(line, **attributes) == expected


def test_an_identifier_split_into_two_boxes_is_found_in_the_box_around_both():
    finder = PixelTextFinder(identifying_texts(header(source(name="ZZZDOWNTIME^MARY", patient_id="40404040404"))))
    lines = [TextLine("ZZZDOWN", (2, 3, 90, 27)), TextLine("TIME", (95, 3, 150, 27)),
             TextLine("SIEMENS", (900, 60, 1000, 80))]
    assert finder.leaks(lines) == [PixelLeak((2, 3, 150, 27), frozenset({"PatientName"}))]


@pytest.mark.parametrize("line", ["JOHNSON MEMORIAL", "DOESKIN", "L12-5 36Hz", "TIS0.0MI 0.6", "773412",
                                  "ID:47110", "MIB 0.4 TIB 0.1", "14:47:11"])
def test_words_that_only_contain_a_short_name_or_part_of_an_id_are_not_leaks(line):
    assert labels_in(line, name="DOE^JOHN", patient_id="7734125") == set()
    assert labels_in(line, name="DOE^JOHN", patient_id="4711") == set()


def test_a_long_family_name_is_found_glued_to_other_text():
    assert labels_in("ZZZDOWNTIME,MARYAC", name="ZZZDOWNTIME^MARY") == {"PatientName"}
    assert labels_in("CCHS CLEVELAND CLINIC", InstitutionName="CCHS CLEVELAND CLINIC") == {"InstitutionName"}


@pytest.mark.parametrize("count, limit, expected", [
    (1, 3, [0]), (3, 3, [0, 1, 2]), (10, 3, [0, 4, 9]), (10, 1, [0]), (100, 4, [0, 33, 66, 99]),
])
def test_frames_are_read_spread_over_the_instance(count, limit, expected):
    assert frames_to_read(count, limit) == expected


def test_reading_text_needs_a_reader_and_is_on_by_default_with_one():
    reading = TextReading(lambda image: [], 3)
    assert scope_for(None, None) == NONE and scope_for(NONE, None) == NONE
    with pytest.raises(BadRequest, match="PixelTextReader"):
        scope_for(ALL, None)
    assert scope_for(None, reading) == AT_RISK and scope_for(ALL, reading) == ALL


def test_a_frame_that_cannot_be_rendered_or_read_leaves_the_set_not_clean():
    finder = PixelTextFinder({"DOE, JOHN": "PatientName"})

    def image_of(instance_id: str, frame: int) -> bytes:
        if instance_id == "unrenderable":
            raise PluginError("Orthanc cannot decode this image")
        return instance_id.encode()

    def read(image: bytes) -> list[TextLine]:
        if image == b"not-understood":
            raise TextReaderError("the text reader's answer is not understood")
        return [TextLine("DOE,JOHN", (0, 0, 90, 20)), TextLine("L12-5", (0, 30, 40, 45))]

    report = PixelTextReport(AT_RISK)
    read_instances({"leaking": (5, finder), "unrenderable": (1, finder), "not-understood": (1, finder)},
                   image_of, TextReading(read, 2), report)
    assert report.answer() == {
        "Scope": AT_RISK, "InstancesWithoutPixels": 0, "InstancesRead": 1, "FramesRead": 2, "FramesNotRead": 3,
        "Leaks": [{"Instance": "leaking", "Frame": 0, "Label": "PatientName", "Box": [0, 0, 90, 20]},
                  {"Instance": "leaking", "Frame": 4, "Label": "PatientName", "Box": [0, 0, 90, 20]}],
        "LeaksCount": 2,
        "Unread": [{"Instance": "not-understood", "Reason": "the text reader's answer is not understood"},
                   {"Instance": "unrenderable", "Reason": "Orthanc cannot decode this image"}],
        "UnreadCount": 2}
    assert not report.clean


def test_once_the_reader_cannot_be_reached_no_frame_waits_on_it_again():
    """A reader down (or silent past its timeout) is asked once, not once per instance."""
    asked: list[bytes] = []

    def read(image: bytes) -> list[TextLine]:
        asked.append(image)
        raise TextReaderError("the text reader at http://x cannot be reached (timed out)", unavailable=True)

    report = PixelTextReport(AT_RISK)
    finder = PixelTextFinder({})
    read_instances({f"i{n}": (3, finder) for n in range(5)}, lambda i, f: i.encode(), TextReading(read, 3), report)
    assert len(asked) == 1
    assert report.unread_count == 5 and {u["Reason"] for u in report.unread} == {
        "the text reader at http://x cannot be reached (timed out)"}


@pytest.fixture
def answering():
    """A local HTTP endpoint answering each POST with the next of `answers` (status, body)."""
    answers: list[tuple[int, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            status, body = answers.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", answers
    server.shutdown()


def test_the_client_reads_lines_and_refuses_what_it_does_not_understand(answering):
    url, answers = answering
    answers.append((200, json.dumps({"Lines": [{"Text": "DOE", "Box": [1, 2, 3, 4], "Score": 0.9}]}).encode()))
    assert read_text(url, 5, b"png") == [TextLine("DOE", (1, 2, 3, 4))]
    for status, body in [(200, b"not json"), (200, b'{"Lines": [{"Text": "x"}]}'), (200, b'[1]'),
                         (200, b'{"Lines": [{"Text": "x", "Box": [1, 2, null, 4]}]}'), (500, b"{}"),
                         (200, b'{"Lines": [{"Text": "x", "Box": [1, 2, Infinity, 4]}]}')]:
        answers.append((status, body))
        with pytest.raises(TextReaderError):
            read_text(url, 5, b"png")


def test_the_client_names_a_reader_it_cannot_reach():
    with pytest.raises(TextReaderError, match="cannot be reached"):
        read_text("http://127.0.0.1:9", 5, b"png")


def test_frames_never_go_through_a_proxy_the_environment_names(answering, monkeypatch):
    """Frames hold what the patient's header held: with http_proxy set (as containers often have
    it), they still go straight to the reader's address, loopback included."""
    url, answers = answering
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("no_proxy", "")
    answers.append((200, b'{"Lines": []}'))
    assert read_text(url, 5, b"png") == []


def test_an_answer_too_large_is_no_reading(answering, monkeypatch):
    url, answers = answering
    monkeypatch.setattr("consistent_anon.verification.text_reader.MAX_ANSWER_BYTES", 64)
    answers.append((200, b'{"Lines": [' + b'{"Text": "x", "Box": [1, 2, 3, 4]},' * 10 + b'{"Text": "y", "Box": [1, 2, 3, 4]}]}'))
    with pytest.raises(TextReaderError, match="larger than 64 bytes"):
        read_text(url, 5, b"png")
