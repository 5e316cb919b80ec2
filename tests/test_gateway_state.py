"""The gateway's settings (checked at start, at every depth) and its state machine, without Orthanc."""
from __future__ import annotations

import json

import pytest

from consistent_anon.errors import ConfigurationError
from consistent_anon.gateway.settings import MODALITIES, PEERS, parse_on_arrival
from consistent_anon.gateway.state import (ANONYMIZE, DELIVER, DONE, FAILED, FIRST_BACKOFF, MAX_BACKOFF, STORED, Mark,
                                           Tracker, backoff)
from consistent_anon.identity.config import parse_config

ORTHANC = {"DicomModalities": {"central": ["CENTRAL", "10.0.0.1", 104]},
           "OrthancPeers": {"peer": {"Url": "http://10.0.0.2:8042/"}},
           "ConsistentAnonymization": {"Projects": {"trial": {}}}}


def parsed(on_arrival, orthanc=ORTHANC):
    configuration = {**orthanc, "ConsistentAnonymization": {**orthanc.get("ConsistentAnonymization", {}),
                                                             "OnArrival": on_arrival}}
    return parse_on_arrival(on_arrival, parse_config(configuration), configuration)


def test_absent_there_is_no_gateway_and_the_section_accepts_the_option():
    assert parse_on_arrival(None, parse_config({}), {}) is None
    assert parse_config({"ConsistentAnonymization": {"OnArrival": {}}}).default_project == "default"


def test_the_defaults_anonymize_whatever_arrives_over_dicom_and_consume_the_source():
    settings = parsed({})
    assert (settings.project, settings.keep_source, settings.destination, settings.calling_aets) == \
        ("default", False, None, None)
    assert settings.accepts("DicomProtocol", "ANY") and not settings.accepts("RestApi", None)
    assert not settings.accepts("Plugins", None) and not settings.accepts("Lua", None)
    body = json.loads(settings.body())
    assert body == {"Project": "default", "KeepSource": True}  # the gateway deletes the source itself


def test_a_destination_is_a_modality_or_a_peer_of_the_configuration():
    assert parsed({"Destination": "central"}).destination_kind == MODALITIES
    assert parsed({"Destination": "peer"}).destination_kind == PEERS
    with pytest.raises(ConfigurationError, match=r"OnArrival\.Destination 'nowhere' is neither"):
        parsed({"Destination": "nowhere"})
    both = {**ORTHANC, "OrthancPeers": {"central": {"Url": "http://x/"}}}
    with pytest.raises(ConfigurationError, match="both a DICOM modality and an Orthanc peer"):
        parsed({"Destination": "central"}, both)
    in_database = {**ORTHANC, "DicomModalitiesInDatabase": True}
    assert parsed({"Destination": "added-later"}, in_database).destination_kind is None  # looked up when sending


@pytest.mark.parametrize("on_arrival, message", [
    ([], r"OnArrival must be an object"),
    ({"Destinaton": "central"}, r"OnArrival: unknown option\(s\) \['Destinaton'\]"),
    ({"Request": {"Keeep": ["StudyDescription"]}}, r"OnArrival\.Request: unknown option\(s\) \['Keeep'\]"),
    ({"Request": {"KeepSource": False}}, r"OnArrival\.Request: \['KeepSource'\] are the gateway's"),
    ({"Request": {"Keep": "StudyDescription"}}, r"OnArrival\.Request: .*Keep"),
    ({"Request": []}, r"OnArrival\.Request must be an object"),
    ({"Project": "unknown"}, r"OnArrival\.Project must name a declared project"),
    ({"KeepSource": "no"}, r"OnArrival\.KeepSource must be true or false"),
    ({"CallingAets": []}, r"OnArrival\.CallingAets must list"),
    ({"CallingAets": ["A" * 17]}, r"OnArrival\.CallingAets must list"),
    ({"Metadata": 9732}, r"OnArrival\.Metadata must differ from ConsistentAnonymization\.OptionsMetadata"),
    ({"Metadata": 12}, r"OnArrival\.Metadata must be a user metadata index"),
])
def test_what_is_wrong_stops_orthanc_at_start_saying_where(on_arrival, message):
    with pytest.raises(ConfigurationError, match=message):
        parsed(on_arrival)


def test_listed_senders_only_and_a_project_of_the_configuration():
    settings = parsed({"CallingAets": ["CT1", " MR2 "], "Project": "trial", "Request": {"Keep": ["StudyDescription"]}})
    assert settings.accepts("DicomProtocol", "MR2") and not settings.accepts("DicomProtocol", "US3")
    assert json.loads(settings.body()) == {"Keep": ["StudyDescription"], "Project": "trial", "KeepSource": True}


def test_a_mark_reads_back_and_anything_else_is_no_mark():
    mark = Mark(FAILED, "r", "s", DELIVER, 3, "the destination refused")
    assert Mark.read(mark.text()) == mark
    assert Mark.read(Mark(DONE).text()) == Mark(DONE)
    for text in (None, "", "x", "[]", '{"state": "Other"}', '{"state": "Done", "colour": 1}', '{"state": []}',
                 '{"state": {"a": 1}}'):
        assert Mark.read(text) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_ceiling():
    assert [backoff(n) for n in (1, 2, 3)] == [FIRST_BACKOFF, 2 * FIRST_BACKOFF, 4 * FIRST_BACKOFF]
    assert backoff(50) == MAX_BACKOFF


def test_a_stored_result_is_sent_once_its_study_is_stable_and_then_finished():
    clock = Clock()
    tracker = Tracker(clock)
    assert tracker.stored("a", 10, "ra", "study", send_now=False) == Mark(STORED, "ra", "study")
    tracker.stored("b", 11, "rb", "other", send_now=False)
    assert tracker.deliveries() == {}
    tracker.stable("study")
    assert tracker.deliveries() == {"study": {"a": "ra"}}
    assert tracker.deliveries() == {}  # being sent: not twice
    assert tracker.low_water(50) == 10
    tracker.finished("a")
    assert tracker.low_water(50) == 11
    listed = tracker.listing(10, str)
    assert (listed["PendingCount"], listed["FailedCount"], listed["Pending"][0]["ID"]) == (1, 0, "b")


def test_a_failure_is_retried_after_its_backoff_until_released():
    clock = Clock()
    tracker = Tracker(clock)
    mark = tracker.failed("a", 7, ANONYMIZE, "refused by the check")
    assert (mark.state, mark.step, mark.attempts) == (FAILED, ANONYMIZE, 1)
    assert tracker.retries() == []
    clock.now += FIRST_BACKOFF
    assert [source for source, _ in tracker.retries()] == ["a"]
    assert tracker.failed("a", None, ANONYMIZE, "again").attempts == 2
    assert tracker.next_event() == clock.now + 2 * FIRST_BACKOFF
    assert tracker.retry(["b"]) == 0 and tracker.retry(None) == 1
    assert [source for source, _ in tracker.retries()] == ["a"]
    assert tracker.low_water(99) == 7  # a failed source is found again after a restart
    assert tracker.release(None) == [] and tracker.retry(None) == 0  # being tried again: not a call's
    assert tracker.listing(10, str)["Pending"][0]["State"] == "Retrying"
    tracker.failed("a", None, ANONYMIZE, "once more")
    assert tracker.release(None) == ["a"]
    assert tracker.low_water(99) == 99 and tracker.listing(10, str)["FailedCount"] == 0


def test_after_a_restart_marked_sources_are_taken_up_where_they_were():
    clock = Clock()
    tracker = Tracker(clock)
    tracker.found("stored", 3, Mark(STORED, "r", "study"))
    tracker.found("failed", 4, Mark(FAILED, "r2", "study2", DELIVER, 5, "down"))
    tracker.found("done", 5, Mark(DONE))
    assert [source for source, _ in tracker.retries()] == ["failed"]  # at once, not after its backoff
    tracker.caught_up(stable_age=60)  # the study's stability was lost with the stop
    assert tracker.deliveries() == {}
    clock.now += 60
    assert tracker.deliveries() == {"study": {"stored": "r"}}
    assert tracker.low_water(10) == 3


def test_fresh_pseudonyms_per_call_is_refused_with_the_gateway():
    """Each call of the gateway is one read of Orthanc's changes: with fresh pseudonyms per call,
    one study arriving over several reads would become several studies."""
    orthanc = {**ORTHANC, "ConsistentAnonymization": {**ORTHANC["ConsistentAnonymization"],
                                                      "FreshPseudonymsPerCall": True}}
    with pytest.raises(ConfigurationError, match=r"OnArrival cannot be used with .*FreshPseudonymsPerCall"):
        parsed({}, orthanc)
