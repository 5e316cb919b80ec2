"""The plugin's own pages (/consistent-anonymization/ui/), for Orthanc Explorer 2 and any browser,
in headless Chromium against a real Orthanc with its HTTP authentication on.

The study's DICOM values hold markup and script: the PatientName and a SeriesDescription are an
`<img src=x onerror=...>`, a private text element a `<script>`. Every page must show them as text
and never run them (no element made of them, nothing they would set). A leak is planted: one
anonymized instance stored again with the source's PatientName in a private text, so the
verification is not clean. The pages are also opened through a reverse proxy that serves Orthanc
under a path prefix (their URLs are relative), and through the Orthanc Explorer 2 buttons the
Docker image ships (docker/explorer-2.json), with OE2's substitution and URL resolution applied.
"""
from __future__ import annotations

import http.server
import json
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pydicom
import pytest
import requests

from anonymized import anonymized_series_by_series, stored_again
from conftest import upload
from consistent_anon.traceability.audit_log import AuditEntry, FileAuditLog
from consistent_anon.identity.config import parse_config
from consistent_anon.orthanc_ids import resource_id
from consistent_anon.orthanc.ui_pages import overview
from dicom_factory import Patient, TwoFrameStudy, two_frame_study
from test_orthanc_explorer import ARTIFACTS, EXPLORER_BODY, expect, version_of

pytestmark = pytest.mark.filterwarnings("ignore:The number of PN components")  # the markup's "=" in a PersonName

USER = ("page-reader", "a-long-page-password")
UI = "/consistent-anonymization/ui/"
HOSTILE_SERIES = "<img src=x onerror=window.__pwned='series'>"
HOSTILE_PRIVATE = "<script>window.__pwned='private'</script><img src=x onerror=window.__pwned='private'>"
PRIVATE_CREATOR, PRIVATE_TEXT = 0x00090010, 0x00091001
EXPLORER_2 = Path(__file__).resolve().parents[1] / "docker" / "explorer-2.json"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "explorer-2.md"
#: OE2 (since 1.8.0) resolves a custom button's relative Url against its app's folder.
OE2_APP = "/ui/app/"


def hostile_patient(suffix: str) -> Patient:
    """A PersonName whose given name is markup. The plugin's checks look for every word of the
    patient's names in free text, so it shares no word with the SeriesDescription's markup, which
    would otherwise read as a leak (and be one)."""
    return Patient(patient_id=f"PID-{suffix}", name=f"Mallory{suffix}^<svg onload=self.__hacked=1>")


@dataclass
class Hostile:
    study: TwoFrameStudy
    source_study: str
    anonymized_study: str
    series: dict[int, tuple[str, str]]  # SeriesNumber -> (source series ID, anonymized series ID)
    planted: str


def with_private_text(ds: pydicom.Dataset, text: str) -> pydicom.Dataset:
    ds.add_new(PRIVATE_CREATOR, "LO", "CONSISTENT ANON TEST")
    ds.add_new(PRIVATE_TEXT, "LT", text)
    return ds


@pytest.fixture(scope="module")
def hostile(guarded) -> Hostile:
    study = two_frame_study(per_series=2, patient=hostile_patient(uuid.uuid4().hex[:10].upper()))
    for ds in study.series[0]:
        ds.SeriesDescription = HOSTILE_SERIES
    for ds in study.instances:
        with_private_text(ds, HOSTILE_PRIVATE)
    uploaded = upload(guarded, study)
    series, anonymized_study = anonymized_series_by_series(guarded, [*study.series, [study.structure_set]], uploaded,
                                                           EXPLORER_BODY)
    victim = guarded.json(f"/series/{series[3][1]}/instances")[0]["ID"]
    planted = stored_again(guarded, victim, lambda leaky: with_private_text(leaky, str(study.study.patient.name)))
    return Hostile(study, uploaded[study.instances[0].SOPInstanceUID]["ParentStudy"], anonymized_study,
                   series, planted)


def nothing_ran(page) -> None:
    """The hostile values made no element and set nothing: they stayed text."""
    assert page.evaluate("() => window.__pwned === undefined && window.__hacked === undefined")
    assert page.locator("img, main script, svg, iframe").count() == 0


def screenshot(page, server, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"plugin-pages-{server.json('/system')['Version']}-{name}.png"),
                    full_page=True)


def verification(server, source: str, anonymized: str) -> dict:
    answer = server.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": anonymized})
    assert answer.status_code == 200, answer.text
    return answer.json()


def source_identifiers(study: TwoFrameStudy) -> set[str]:
    """Every UID of the source (well-known DICOM ones aside), its PatientID and PatientName."""
    name = str(study.study.patient.name)
    found = {str(study.study.patient.patient_id), name, name.split("^")[0]}
    for ds in study.instances:
        for element in ds.iterall():
            if element.VR == "UI" and element.value:
                values = element.value if isinstance(element.value, list) else [element.value]
                found |= {str(v) for v in values if not str(v).startswith("1.2.840.10008.")}
    return found


# --- the routes ---------------------------------------------------------------------------------

def test_the_pages_are_get_only_static_files_behind_orthanc_s_authentication(guarded):
    for name, content_type in (("index.html", "text/html"), ("frames.html", "text/html"),
                               ("verify.html", "text/html"), ("views.js", "application/javascript"),
                               ("pages.js", "application/javascript"), ("pages.css", "text/css")):
        answer = guarded.get(UI + name)
        assert answer.status_code == 200, name
        assert answer.headers["Content-Type"].startswith(content_type)
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    overview = guarded.get(UI + "overview.json")
    assert overview.status_code == 200 and set(overview.json()) == {"Name", "Projects", "LatestEntries"}
    assert guarded.get(UI + "no-such-page.html").status_code == 404
    assert guarded.get(UI + "../adapter.py").status_code == 404
    # A wrong method, answered as every route of the plugin answers one.
    native = guarded.request("PUT", "/tools/verify-anonymization")
    for name in ("index.html", "views.js", "overview.json"):
        for method in ("POST", "PUT", "DELETE"):
            answer = guarded.request(method, UI + name)
            assert answer.status_code == 405, (method, name)
    assert native.status_code == 405
    assert requests.get(guarded.url + UI + "index.html", timeout=60).status_code == 401


def test_the_root_uri_and_description_are_registered(guarded, server_factory):
    """Orthanc lists the Python plugin (every script shares its row) with the landing page, which
    Orthanc Explorer 2's plugin list links to; a setting leaves the row alone."""
    python = guarded.json("/plugins/python")
    # Orthanc 1.10.1 answers it relative to its explorer's folder, "../consistent-anonymization/...".
    landing = urljoin(guarded.url + "/app/", python["RootUri"])
    assert urlsplit(landing).path == UI + "index.html", python["RootUri"]
    assert guarded.get(urlsplit(landing).path).status_code == 200
    # OE2's plugin list (Plugin.cpp) puts one "../" per folder of its Root (/ui/) before it, and
    # its "Open" link is resolved from its app, /ui/app/.
    assert urlsplit(urljoin(guarded.url + OE2_APP, "../" + python["RootUri"])).path == UI + "index.html"
    assert "Consistent anonymization" in python["Description"]
    assert "python" in guarded.json("/plugins")
    off = server_factory(config={"ConsistentAnonymization": {"RegisterRootUri": False}})
    row = off.json("/plugins/python")
    assert not row.get("RootUri") and "Consistent anonymization" not in row.get("Description", "")
    assert off.get(UI + "index.html").status_code == 200  # the pages themselves stay


# --- the pages ----------------------------------------------------------------------------------

def test_frames_of_reference_pages_show_hostile_values_as_text(guarded, hostile, browser):
    page = browser.page
    page.goto(f"{guarded.url}{UI}frames.html?study={hostile.source_study}")
    expect(page.locator(".ca-frame")).to_have_count(2, timeout=60_000)
    frames = guarded.json(f"/studies/{hostile.source_study}/frames-of-reference")
    shown = sorted(page.locator(".ca-frame-uid").all_text_contents())
    assert shown == sorted(f["FrameOfReferenceUID"] for f in frames)
    expect(page.locator("dd[data-tag=PatientName]")).to_have_text(str(hostile.study.study.patient.name))
    labels = page.locator(".ca-on .ca-series-label").all_text_contents()
    assert f"Series 1 \u00b7 MR \u00b7 {HOSTILE_SERIES}" in labels
    expect(page.locator(".ca-referring")).to_have_count(1)  # the structure set
    nothing_ran(page)
    screenshot(page, guarded, "frames-study")

    # A series, reached by its link on the study's page.
    page.locator(f".ca-on[data-series='{hostile.series[1][0]}'] a").click()
    expect(page).to_have_url(f"{guarded.url}{UI}frames.html?series={hostile.series[1][0]}")
    expect(page.locator(".ca-frame")).to_have_count(1, timeout=60_000)
    expect(page.locator("dd[data-tag=SeriesDescription]")).to_have_text(f"1 \u00b7 MR \u00b7 {HOSTILE_SERIES}")
    expect(page.locator(".ca-on .ca-series-label")).to_have_text([f"Series 1 \u00b7 MR \u00b7 {HOSTILE_SERIES}"])
    nothing_ran(page)
    screenshot(page, guarded, "frames-series")


def check_report(page, report: dict) -> None:
    """The verdict, the frames side by side and the leaks: as the route says."""
    verdict = page.locator(".ca-verdict")
    expect(verdict).to_have_attribute("data-clean", str(report["Clean"]).lower(), timeout=120_000)
    rows = page.locator(".ca-frame-row").evaluate_all("""rows => rows.map(row => ({
        source: [...row.querySelectorAll('.ca-source .ca-series')].map(s => s.dataset.series).sort(),
        anonymized: [...row.querySelectorAll('.ca-anonymized .ca-series')].map(s => s.dataset.series).sort(),
        uids: [...row.querySelectorAll('.ca-anonymized-uid')].map(u => u.textContent)}))""")
    assert sorted(rows, key=str) == sorted(({"source": sorted(f["SourceSeries"]), "anonymized": sorted(f["AnonymizedSeries"]),
                                             "uids": f["Anonymized"]} for f in report["FramesOfReference"]), key=str)
    leaks = page.locator(".ca-leak").evaluate_all("""rows => rows.map(row => [
        row.querySelector('.ca-instance').textContent, row.querySelector('.ca-path').textContent,
        row.querySelector('.ca-found').textContent])""")
    assert leaks == [[leak["Instance"], leak["Path"], leak["Found"]] for leak in report["Leaks"]]


def no_source_identifier(page, hostile: Hostile) -> None:
    html = page.content()
    assert sorted(i for i in source_identifiers(hostile.study) if i in html) == []


def test_verification_page_of_the_anonymized_study_is_not_clean(guarded, hostile, browser):
    page = browser.page
    page.goto(f"{guarded.url}{UI}verify.html?study={hostile.anonymized_study}")
    if version_of(guarded) < (1, 12):  # Orthanc 1.10 lets no plugin write AnonymizedFrom: the user gives it
        expect(page.locator(".ca-picker")).to_contain_text("records no source")
        page.locator("#study-ca-source").fill(hostile.source_study)
        page.locator("#study-ca-verify-source").click()
    report = verification(guarded, hostile.source_study, hostile.anonymized_study)
    assert report["Clean"] is False
    assert [(leak["Instance"], leak["Found"]) for leak in report["Leaks"]] == [(hostile.planted, "PatientName")]
    check_report(page, report)
    expect(page.locator(".ca-verdict")).to_contain_text("Not clean")
    expect(page.locator(".ca-verdict li")).to_have_text(["1 leak of source identifiers"])
    anonymized_label = page.locator(".ca-anonymized .ca-series").filter(has_text=HOSTILE_SERIES)
    expect(anonymized_label).to_have_count(1)  # the description the anonymization kept, as text
    no_source_identifier(page, hostile)
    nothing_ran(page)
    screenshot(page, guarded, "verify-anonymized-study")


def test_verification_pages_of_a_source_and_of_a_pair(guarded, hostile, browser):
    page = browser.page
    page.goto(f"{guarded.url}{UI}verify.html?study={hostile.source_study}")
    check_report(page, verification(guarded, hostile.source_study, hostile.anonymized_study))
    nothing_ran(page)
    source, result = hostile.series[1]
    page.goto(f"{guarded.url}{UI}verify.html?series={source}")
    report = verification(guarded, source, result)
    assert report["Clean"] is True
    check_report(page, report)
    expect(page.locator(".ca-verdict")).to_contain_text("Clean: 2 instances paired")
    nothing_ran(page)
    screenshot(page, guarded, "verify-source-series")
    page.goto(f"{guarded.url}{UI}verify.html?source={source}&anonymized={result}")
    check_report(page, report)
    page.goto(f"{guarded.url}{UI}verify.html?source={source}&anonymized=00000000-00000000-00000000-00000000-00000000")
    expect(page.locator(".ca-notice")).to_contain_text("The verification failed: Unknown resource")


def test_landing_page_names_projects_and_latest_entries_without_identifiers(guarded, hostile, browser):
    page = browser.page
    page.goto(f"{guarded.url}{UI}index.html")
    expect(page.locator(".ca-projects li")).to_have_text(["default (default)"])
    overview = guarded.json(UI + "overview.json")
    entries = overview["LatestEntries"]
    assert len(entries) >= 3 and all(e["Outcome"] == "Success" and e["Level"] == "Series" for e in entries[:3])
    assert set(entries[0]) == {"Sequence", "Time", "Level", "Outcome", "Reason", "Project", "Instances",
                               "FailedInstances", "Asynchronous"}
    expect(page.locator(".ca-entry")).to_have_count(len(entries))
    expect(page.locator(".ca-entry").first.locator("td").first).to_have_text(str(entries[0]["Sequence"]))
    log = guarded.json("/tools/anonymization-log?limit=1000")["Entries"]
    ids = {i for entry in log for i in entry["sources"] + entry["results"]} | {entry["user"] for entry in log}
    assert USER[0] in ids  # the log names the user; the page must not
    html = page.content()
    assert ids and sorted(i for i in ids if i in html) == []
    nothing_ran(page)
    screenshot(page, guarded, "landing")

    # Its opener leads to a study's pages.
    page.locator("#ca-resource-id").fill(hostile.anonymized_study)
    page.locator("#ca-open-frames").click()
    expect(page).to_have_url(f"{guarded.url}{UI}frames.html?study={hostile.anonymized_study}")
    expect(page.locator(".ca-frame")).to_have_count(2, timeout=60_000)


# --- behind a reverse proxy's path prefix -------------------------------------------------------

class PrefixProxy:
    """A loopback reverse proxy that serves Orthanc under /prefix/, as a site's web server would."""

    PREFIX = "/prefix"
    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}

    def __init__(self, upstream: str) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do(self) -> None:
                proxy.forward(self)
            do_GET = do_POST = do_PUT = do_DELETE = do

            def log_message(self, *args) -> None:
                pass
        self.upstream = upstream
        self.paths: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{self.PREFIX}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        self.paths.append(handler.path)
        if not handler.path.startswith(self.PREFIX + "/"):
            handler.send_error(404)
            return
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(handler.command, self.upstream + handler.path[len(self.PREFIX):], data=body,
                                  headers=headers, timeout=600, allow_redirects=False)
        handler.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in self.HOP_BY_HOP:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer.content)))
        handler.end_headers()
        handler.wfile.write(answer.content)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_pages_work_under_a_path_prefix(guarded, hostile, browser):
    proxy = PrefixProxy(guarded.url)
    try:
        page = browser.page
        page.goto(f"{proxy.url}{UI}verify.html?series={hostile.series[1][0]}")
        expect(page.locator(".ca-verdict")).to_have_attribute("data-clean", "true", timeout=120_000)
        page.goto(f"{proxy.url}{UI}frames.html?study={hostile.source_study}")
        expect(page.locator(".ca-frame")).to_have_count(2, timeout=60_000)
        expect(page.locator("dd[data-tag=PatientName]")).to_have_text(str(hostile.study.study.patient.name))
        page.goto(f"{proxy.url}{UI}index.html")
        expect(page.locator(".ca-projects li")).to_have_text(["default (default)"])
        nothing_ran(page)
        outside = [p for p in proxy.paths if not p.startswith(PrefixProxy.PREFIX + "/")]
        assert outside == [], "a page asked for a URL outside the prefix"
        assert any("/frames-of-reference" in p for p in proxy.paths)
        assert any(p.startswith("/prefix/tools/verify-anonymization") for p in proxy.paths)
    finally:
        proxy.close()


# --- the Orthanc Explorer 2 buttons -------------------------------------------------------------

def oe2_url(template: str, resource: dict) -> str:
    """A button's Url as OE2 fills it in (resource-helpers.js): the first `{Tag}` of each main DICOM
    tag of the patient, study and series, then the first `{UUID}` (the Orthanc ID), each replaced
    as it is, not URL-encoded."""
    for tags in (resource.get("PatientMainDicomTags", {}), resource["MainDicomTags"]):
        for name, value in tags.items():
            template = template.replace("{" + name + "}", value, 1)
    return template.replace("{UUID}", resource["ID"], 1)


def test_the_shipped_explorer_2_buttons_open_the_pages(guarded, hostile, browser):
    """OE2 is not built here: its button resolution is replayed on the image's snippet, and every
    button's page is opened and drawn in Chromium."""
    buttons = json.loads(EXPLORER_2.read_text())["OrthancExplorer2"]["UiOptions"]["CustomButtons"]
    page = browser.page
    seen = []
    for level, target in (("study", hostile.anonymized_study), ("series", hostile.series[1][1])):
        resource = guarded.json(f"/{'studies' if level == 'study' else 'series'}/{target}")
        for button in buttons[level]:
            url = urljoin(guarded.url + OE2_APP, oe2_url(button["Url"], resource))
            assert urlsplit(url).path.startswith(UI)
            page.goto(url)
            if "frames.html" in url:
                expect(page.locator(".ca-frame").first).to_be_visible(timeout=60_000)
                expect(page.locator(".ca-frame-uid").first).to_have_text(re.compile(r"^2\.25\.\d+$"))
            else:
                expect(page.locator(".ca-verdict, .ca-picker").first).to_be_visible(timeout=120_000)
            nothing_ran(page)
            seen.append((level, urlsplit(url).path.rsplit("/", 1)[1]))
    assert seen == [("study", "frames.html"), ("study", "verify.html"), ("series", "frames.html"),
                    ("series", "verify.html")]


def test_the_docs_show_the_shipped_snippet():
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)
    assert json.loads(EXPLORER_2.read_text()) in [json.loads(block) for block in blocks]


def test_the_overview_names_no_resource_no_user_no_job(tmp_path):
    log = FileAuditLog(tmp_path / "audit.jsonl")
    for n in range(25):
        log.append(AuditEntry(route="/studies/{id}/anonymize", level="Study", outcome="Success", reason="Completed",
                              sources=(resource_id("PID", str(n)),), results=(resource_id("X", str(n)),),
                              user="alice", project="trial-7", options_mark="0123456789abcdef", instances=n,
                              job="0b0e4d37-2f5a-4ce5-9a35-3b8d1b1a4c2e"))
    config = parse_config({"ConsistentAnonymization": {"Projects": {"trial-7": {}}, "DefaultProject": "trial-7"}})
    facts = overview(config, log)
    assert facts["Projects"] == [{"Name": "trial-7", "Default": True}]
    assert [e["Sequence"] for e in facts["LatestEntries"]] == list(range(25, 5, -1))  # the newest first
    text = json.dumps(facts)
    assert all(secret not in text for secret in ("alice", "0123456789abcdef", "0b0e4d37", resource_id("PID", "24")))
