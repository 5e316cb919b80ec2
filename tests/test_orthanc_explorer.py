"""The classic Orthanc Explorer, served by the Orthanc under test at /app/explorer.html, driven in
a real headless Chromium: its "Anonymize" buttons at series, study and patient level.

The explorer POSTs {"Keep": ["SeriesDescription", "StudyDescription"]} synchronously and, on
success, sends the page to `explorer.html#patient?uuid=` + the answer's PatientID. With the
plugin, every click, whatever the level and however often, must land on the same anonymized
patient, whose one study gathers every series, the first two still sharing a frame of reference.
Native Orthanc sends each series-level click to a new patient: this test fails there.

Only loopback traffic: Chromium runs with its background services off, and every request the
page makes to another host is aborted and makes the test fail.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from anonymized import AnonymizedSet, find_patient
from conftest import new_patient, upload
from dicom_factory import two_frame_study

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in tests/requirements.txt")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
#: What the classic explorer sends and where it goes on success (explorer.js, 1.10 and 1.12 alike).
EXPLORER_BODY = {"Keep": ["SeriesDescription", "StudyDescription"]}
EXPLORER_LANDING = "window.location.assign('explorer.html#patient?uuid=' + s.PatientID)"
TIMEOUT_MS = 120_000  # one anonymize click: a chroot on a slow machine can take a while
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def version_of(server) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", server.json("/system")["Version"])[:3]) or (0,)


@pytest.fixture(scope="module")
def explorer(orthanc):
    """The Orthanc under test, once it is known to serve the classic explorer as this test expects."""
    version = orthanc.json("/system")["Version"]
    html = orthanc.get("/app/explorer.html")
    if html.status_code != 200 or 'id="series-anonymize"' not in html.text:
        why = (f"HTTP {html.status_code}" if html.status_code != 200
               else "the page has no series-anonymize button")
        pytest.skip(f"Orthanc {version} does not serve the classic Orthanc Explorer at /app/explorer.html "
                    f"({why}: OrthancExplorerEnabled false, or another UI in its place)")
    script = orthanc.get("/app/explorer.js")
    assert script.status_code == 200
    # If a later explorer anonymized differently, the expectations below would be wrong: say so.
    assert EXPLORER_LANDING in script.text, f"Orthanc {version}'s explorer.js no longer lands on the answer's patient"
    assert '"Keep" : [ "SeriesDescription", "StudyDescription" ]' in script.text
    return orthanc


@dataclass
class Browser:
    page: object
    foreign_requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@contextmanager
def chromium(http_credentials: dict[str, str] | None = None) -> Iterator[Browser]:
    """Headless Chromium on one page that may reach loopback only (with the user's credentials
    for Orthanc's HTTP authentication, if given)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make deps-test` installs Debian's chromium")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, http_credentials=http_credentials)
        try:
            state = Browser(context.pages[0] if context.pages else context.new_page())

            def loopback_only(route):
                if urlsplit(route.request.url).hostname in LOOPBACK or route.request.url.startswith("data:"):
                    route.continue_()
                else:
                    state.foreign_requests.append(route.request.url)
                    route.abort()
            context.route("**/*", loopback_only)
            state.page.on("pageerror", lambda error: state.page_errors.append(str(error)))
            state.page.set_default_timeout(30_000)
            yield state
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser():
    with chromium() as state:
        yield state


# --- what a user does in the explorer -------------------------------------------------------

def active(page, page_id: str):
    """The jQuery Mobile page shown now, once it is the expected one and its transition is over.

    Waiting for the end of the transition is what a person does without thinking, and the
    explorer needs it: during a transition, jQuery Mobile 1.1 queues a hash change before its
    "pagebeforechange" (where the explorer reads the page's uuid), so a click that changes the
    hash then (e.g. "Before anonymization" on a patient page) leaves the old patient displayed
    under the new URL. That is the explorer's own race, with or without the plugin.
    """
    locator = page.locator(f"#{page_id}.ui-page-active")
    expect(locator).to_be_visible()
    page.wait_for_function("() => !$.mobile.pageContainer.hasClass('ui-mobile-viewport-transitioning')")
    return locator


def open_source_study(page, base_url: str, patient_id: str) -> None:
    """Lookup page, the source PatientID, "Do lookup", then the one study found."""
    if not page.url.startswith(base_url + "/app/explorer.html"):
        page.goto(base_url + "/app/explorer.html")
    else:
        page.locator(".ui-page-active a[href='#lookup']").first.click()
    active(page, "lookup")
    page.fill("#lookup-patient-id", patient_id)
    page.click("#lookup-submit")
    results = page.locator("#lookup-result li a")
    expect(results).to_have_count(1)
    results.click()
    active(page, "study")


def open_source_series(page, base_url: str, patient_id: str, series_uid: str) -> None:
    open_source_study(page, base_url, patient_id)
    page.locator("#list-series li a", has_text=series_uid).click()
    series_page = active(page, "series")
    expect(series_page.locator("#series-info")).to_contain_text(series_uid)


def click_anonymize(page, base_url: str, level: str, source_id: str) -> dict:
    """The page's Anonymize button, then OK in its dialog; checks the request the explorer sent
    and that the page lands where native would send it. Answers the explorer's JSON answer."""
    page.click(f"#{level}-anonymize")
    dialog = page.locator(".ui-simpledialog-container")
    expect(dialog.locator("h1")).to_have_text(f"Anonymize this {level}?")
    plural = {"patient": "patients", "study": "studies", "series": "series"}[level]
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/anonymize"),
                              timeout=TIMEOUT_MS) as info:
        dialog.locator("a", has_text="OK").click()
    response = info.value
    assert response.url == f"{base_url}/{plural}/{source_id}/anonymize"
    assert json.loads(response.request.post_data) == EXPLORER_BODY
    assert response.status == 200, response.text()
    answer = response.json()
    expect(page).to_have_url(f"{base_url}/app/explorer.html#patient?uuid={answer['PatientID']}",
                             timeout=TIMEOUT_MS)
    active(page, "patient")
    return answer


# --- what the store and the page must show after each click ---------------------------------

@dataclass
class Expected:
    """The anonymized patient the first click made, and which source series it must hold by now."""
    patient: str | None = None
    study: str | None = None
    series: dict[int, str] = field(default_factory=dict)  # SeriesNumber -> anonymized series ID


def check_landing_page(page, server, expected: Expected) -> None:
    """The patient page shows the anonymized patient, with its one study of every series so far."""
    patient_page = active(page, "patient")
    dicom_patient_id = server.json(f"/patients/{expected.patient}")["MainDicomTags"]["PatientID"]
    expect(patient_page.locator("#patient-info")).to_contain_text(f"PatientID: {dicom_patient_id}")
    studies = patient_page.locator("#list-studies li a")
    expect(studies).to_have_count(1)
    expect(studies).to_have_attribute("href", f"#study?uuid={expected.study}")
    expect(studies.locator(".ui-li-count")).to_have_text(str(len(expected.series)))
    expect(studies).to_contain_text("Synthetic study")  # StudyDescription, kept by the explorer's request


def check_store(server, source, study, expected: Expected) -> None:
    """One anonymized patient and study holding each anonymized series once, frames of reference intact."""
    dicom_patient_id = server.json(f"/patients/{expected.patient}")["MainDicomTags"]["PatientID"]
    assert find_patient(server, dicom_patient_id) == [expected.patient]
    assert [s["ID"] for s in server.json(f"/patients/{expected.patient}/studies")] == [expected.study]
    assert sorted(server.json(f"/studies/{expected.study}")["Series"]) == sorted(expected.series.values())
    result = AnonymizedSet.of_patient(server, expected.patient)
    by_number = result.by_series_number()
    assert set(by_number) == set(expected.series)
    for number, datasets in by_number.items():
        source_series = next(s for s in source if int(s[0].SeriesNumber) == number)
        assert len(datasets) == len(source_series), f"series {number} holds duplicates or misses instances"
        assert {str(ds.SeriesDescription) for ds in datasets if "SeriesDescription" in ds} == \
            {str(ds.SeriesDescription) for ds in source_series if "SeriesDescription" in ds}
    assert result.studies == {server.json(f"/studies/{expected.study}")["MainDicomTags"]["StudyInstanceUID"]}
    frames = {n: result.frame_of_reference_of(n) for n in (1, 2, 3) if n in by_number}
    assert all(len(f) == 1 for f in frames.values())
    if 1 in frames and 2 in frames:
        assert frames[1] == frames[2], "series 1 and 2 no longer share one frame of reference"
    if 3 in frames:
        assert all(frames[3] != frames[n] for n in (1, 2) if n in frames), "series 3 joined another frame"
    originals = {str(ds.FrameOfReferenceUID) for ds in study.instances if "FrameOfReferenceUID" in ds}
    assert not set().union(*frames.values()) & originals


def test_orthanc_explorer_anonymize_buttons_gather_everything_in_one_patient(explorer, browser):
    server, page = explorer, browser.page
    study = two_frame_study(patient=new_patient())
    uploaded = upload(server, study)
    source_patient_id = study.study.patient.patient_id
    first = next(iter(uploaded.values()))
    source_study, source_patient = first["ParentStudy"], first["ParentPatient"]
    source = [*study.series, [study.structure_set]]  # four series: MR 1, 2, 3 and the RTSTRUCT (99)
    source_ids = {int(s[0].SeriesNumber): uploaded[s[0].SOPInstanceUID]["ParentSeries"] for s in source}
    expected = Expected()

    # Series by series, as a user anonymizing one series at a time; then series 1 again.
    for series in [*source, source[0]]:
        number, series_uid = int(series[0].SeriesNumber), str(series[0].SeriesInstanceUID)
        open_source_series(page, server.url, source_patient_id, series_uid)
        answer = click_anonymize(page, server.url, "series", source_ids[number])
        assert answer["Type"] == "Series" and answer["InstancesCount"] == len(series)
        if expected.patient is None:
            expected.patient = answer["PatientID"]
            expected.study = server.json(f"/series/{answer['ID']}")["ParentStudy"]
        assert answer["PatientID"] == expected.patient, \
            f"series {number}: the explorer landed on another patient than the first series' one"
        assert server.json(f"/series/{answer['ID']}")["ParentStudy"] == expected.study, \
            f"series {number} went to another study"
        assert expected.series.setdefault(number, answer["ID"]) == answer["ID"], \
            f"series {number} clicked again made another series"
        check_landing_page(page, server, expected)
        check_store(server, source, study, expected)

    # The whole study, then the whole patient: nothing new, same landing.
    open_source_study(page, server.url, source_patient_id)
    answer = click_anonymize(page, server.url, "study", source_study)
    assert (answer["Type"], answer["ID"], answer["PatientID"]) == ("Study", expected.study, expected.patient)
    assert answer["InstancesCount"] == len(study.instances)
    check_landing_page(page, server, expected)
    check_store(server, source, study, expected)

    open_source_study(page, server.url, source_patient_id)
    page.locator("#study .patient-link").click()
    expect(page).to_have_url(f"{server.url}/app/explorer.html#patient?uuid={source_patient}")
    active(page, "patient")
    answer = click_anonymize(page, server.url, "patient", source_patient)
    assert (answer["Type"], answer["ID"], answer["PatientID"]) == ("Patient", expected.patient, expected.patient)
    assert answer["InstancesCount"] == len(study.instances)
    check_landing_page(page, server, expected)
    check_store(server, source, study, expected)
    assert len(server.json(f"/patients/{expected.patient}/instances")) == len(study.instances)
    assert len(server.json(f"/patients/{source_patient}/instances")) == len(study.instances)  # source kept

    version = server.json("/system")["Version"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"orthanc-explorer-{version}-final.png"), full_page=True)

    # Into the anonymized study: the four series, descriptions kept, as the explorer shows them.
    page.locator("#list-studies li a").click()
    study_page = active(page, "study")
    expect(page).to_have_url(f"{server.url}/app/explorer.html#study?uuid={expected.study}")
    shown = study_page.locator("#list-series li a")
    expect(shown).to_have_count(len(source))
    for number in (1, 2, 3):
        expect(study_page.locator("#list-series")).to_contain_text(f"Synthetic MR series {number}")
    page.screenshot(path=str(ARTIFACTS / f"orthanc-explorer-{version}-anonymized-study.png"), full_page=True)

    if version_of(server) >= (1, 12):
        # AnonymizedFrom, which the plugin writes on 1.12: "Before anonymization" leads back.
        page.locator("#study .patient-link").click()
        patient_page = active(page, "patient")
        expect(page).to_have_url(f"{server.url}/app/explorer.html#patient?uuid={expected.patient}")
        back = patient_page.locator("#patient-anonymized-from")
        expect(back).to_be_visible()
        back.click()
        expect(page).to_have_url(f"{server.url}/app/explorer.html#patient?uuid={source_patient}")
        expect(patient_page.locator("#patient-info")).to_contain_text(f"PatientID: {source_patient_id}")

    assert browser.foreign_requests == [], "the page tried to reach another host than Orthanc"
    assert browser.page_errors == []
