"""Orthanc Explorer's "Frames of reference" and "Verify anonymization" panels (explorer.js), in
headless Chromium, with Orthanc's HTTP authentication on (the browser's credentials).

A study is anonymized series by series (as the explorer's series button does), then a leak is
planted: one anonymized instance is stored again with the source's PatientName in ImageComments.
The panels must show the same facts as the JSON routes, the planted leak as a leak, and nothing
of the source's identifiers on the anonymized study's page. Each panel is photographed under
tests/artifacts/ for a reviewer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import requests

from anonymized import anonymized_series_by_series, stored_again
from conftest import new_patient, upload
from dicom_factory import TwoFrameStudy, two_frame_study
from orthanc_server import RUNTIME
from test_orthanc_explorer import ARTIFACTS, EXPLORER_BODY, active, expect, version_of

USER = ("data-manager", "a-long-explorer-password")
SITE_SCRIPT = '''
import sys
import orthanc

sys.path.insert(0, "{plugin_dir}")
import consistent_anon
consistent_anon.register(orthanc)
orthanc.ExtendOrthancExplorer(consistent_anon.EXPLORER_SCRIPT.read_text() + "/* the hospital's own */")
'''
SERIES_LABEL = "Series {SeriesNumber} \u00b7 {Modality} \u00b7 {SeriesDescription}"


@dataclass
class Anonymized:
    study: TwoFrameStudy
    source_study: str
    anonymized_study: str
    series: dict[int, tuple[str, str]]  # SeriesNumber -> (source series ID, anonymized series ID)
    planted: str  # the anonymized instance stored again with the source's PatientName


@pytest.fixture(scope="module")
def anonymized(guarded) -> Anonymized:
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(guarded, study)
    series, anonymized_study = anonymized_series_by_series(guarded, [*study.series, [study.structure_set]], uploaded,
                                                           EXPLORER_BODY)
    victim = guarded.json(f"/series/{series[3][1]}/instances")[0]["ID"]
    planted = stored_again(guarded, victim, lambda leaky: setattr(leaky, "ImageComments", str(study.study.patient.name)))
    return Anonymized(study, uploaded[study.instances[0].SOPInstanceUID]["ParentStudy"], anonymized_study,
                      series, planted)


def source_identifiers(study: TwoFrameStudy) -> set[str]:
    """Every UID of the source (well-known DICOM ones aside) and its patient's texts."""
    found = set()
    for ds in study.instances:
        for element in ds.iterall():
            if element.VR == "UI" and element.value:
                values = element.value if isinstance(element.value, list) else [element.value]
                found |= {str(v) for v in values if not str(v).startswith("1.2.840.10008.")}
    patient = study.study.patient
    family, given = str(patient.name).split("^")[:2]
    return found | {patient.patient_id, str(patient.name), f"{given} {family}", f"{family}^{given}"}


def verification(server, source: str, anonymized: str) -> dict:
    answer = server.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": anonymized})
    assert answer.status_code == 200, answer.text
    return answer.json()


def label(series: dict) -> str:
    return SERIES_LABEL.format(**series) if series.get("SeriesDescription") else \
        SERIES_LABEL.rsplit(" \u00b7 ", 1)[0].format(**series)


def open_page(page, server, level: str, resource_id: str):
    page.goto(f"{server.url}/app/explorer.html#{level}?uuid={resource_id}")
    return active(page, level)


def screenshot(page, server, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"explorer-panels-{server.json('/system')['Version']}-{name}.png"),
                    full_page=True)


# --- the routes the panels read ---------------------------------------------------------------

def test_frames_of_reference_name_their_series_and_referrers(guarded, anonymized):
    frames = guarded.json(f"/studies/{anonymized.source_study}/frames-of-reference")
    study = anonymized.study
    assert len(frames) == 2
    by_uid = {f["FrameOfReferenceUID"]: f for f in frames}
    shared = by_uid[str(study.series[0][0].FrameOfReferenceUID)]
    assert [(s["SeriesNumber"], s["Modality"], s["SeriesDescription"], s["InstancesCount"]) for s in shared["Series"]] \
        == [("1", "MR", "Synthetic MR series 1", 2), ("2", "MR", "Synthetic MR series 2", 2)]
    rtstruct = study.structure_set
    assert shared["ReferencedBy"] == [{
        "ID": anonymized.series[99][0], "SeriesInstanceUID": str(rtstruct.SeriesInstanceUID), "SeriesNumber": "99",
        "Modality": "RTSTRUCT", "SeriesDescription": str(rtstruct.get("SeriesDescription", "")),
        "InstancesCount": 1}]
    assert by_uid[str(study.series[2][0].FrameOfReferenceUID)]["ReferencedBy"] == []


def test_anonymized_counterpart_is_where_the_plugin_put_a_source(guarded, anonymized):
    answer = guarded.json(f"/studies/{anonymized.source_study}/anonymized-counterpart")
    assert answer == {"ID": anonymized.anonymized_study, "Type": "Study", "Path": f"/studies/{anonymized.anonymized_study}"}
    for source, result in anonymized.series.values():
        assert guarded.json(f"/series/{source}/anonymized-counterpart")["ID"] == result

    # An anonymized study, a study never anonymized, an unknown ID: 404, and never a guess.
    other = upload(guarded, two_frame_study(per_series=1, patient=new_patient()))
    for path in (f"/studies/{anonymized.anonymized_study}", f"/studies/{next(iter(other.values()))['ParentStudy']}",
                 "/studies/00000000-00000000-00000000-00000000-00000000",
                 f"/series/{anonymized.source_study}"):
        missing = guarded.get(path + "/anonymized-counterpart")
        assert missing.status_code == 404, path
        assert missing.json()["HttpStatus"] == 404
    assert guarded.post(f"/studies/{anonymized.source_study}/anonymized-counterpart").status_code == 405
    assert requests.get(f"{guarded.url}/studies/{anonymized.source_study}/anonymized-counterpart",
                        timeout=60).status_code == 401


# --- the panels -------------------------------------------------------------------------------

def test_frames_of_reference_panel_shows_the_route_s_answer(guarded, anonymized, browser):
    page = browser.page
    study_page = open_page(page, guarded, "study", anonymized.anonymized_study)
    study_page.locator("#study-frames-of-reference").click()
    panel = page.locator("#study-consistent-anon-panel")
    expect(panel.locator(".ca-frame")).to_have_count(2, timeout=60_000)

    frames = guarded.json(f"/studies/{anonymized.anonymized_study}/frames-of-reference")
    shown = panel.locator(".ca-frame").evaluate_all("""lists => lists.map(list => ({
        uid: list.querySelector('.ca-frame-uid').textContent,
        on: [...list.querySelectorAll('.ca-on')].map(li => [li.dataset.series,
              li.querySelector('.ca-series-label').textContent, li.querySelector('.ui-li-count').textContent]),
        referring: [...list.querySelectorAll('.ca-referring')].map(li => [li.dataset.series,
              li.querySelector('.ca-series-label').textContent, li.querySelector('.ui-li-count').textContent])}))""")
    shown = sorted(shown, key=lambda f: f["uid"])  # the page orders them by series number
    assert shown == [{"uid": f["FrameOfReferenceUID"],
                      "on": [[s["ID"], label(s), str(s["InstancesCount"])] for s in f["Series"]],
                      "referring": [[s["ID"], label(s), str(s["InstancesCount"])] for s in f["ReferencedBy"]]}
                     for f in frames]
    # The structure set refers to the frame of series 1 and 2, and lies on none.
    shared = next(f for f in shown if len(f["on"]) == 2)
    assert [r[0] for r in shared["referring"]] == [anonymized.series[99][1]]
    assert [s[1] for s in shared["on"]] == ["Series 1 \u00b7 MR \u00b7 Synthetic MR series 1",
                                            "Series 2 \u00b7 MR \u00b7 Synthetic MR series 2"]
    check_no_source_identifier(page, anonymized)
    screenshot(page, guarded, "frames-of-reference")


def check_verification_panel(page, panel, report: dict) -> None:
    """The verdict, the frames of reference side by side, references and leaks: as the route says."""
    verdict = panel.locator(".ca-verdict")
    expect(verdict).to_have_attribute("data-clean", str(report["Clean"]).lower(), timeout=120_000)
    expect(verdict).to_contain_text("Clean" if report["Clean"] else "Not clean")
    rows = panel.locator(".ca-frame-row").evaluate_all("""rows => rows.map(row => ({
        source: [...row.querySelectorAll('.ca-source .ca-series')].map(s => s.dataset.series),
        anonymized: [...row.querySelectorAll('.ca-anonymized .ca-series')].map(s => s.dataset.series),
        uids: [...row.querySelectorAll('.ca-anonymized-uid')].map(u => u.textContent),
        oneToOne: row.querySelector('.ca-one-to-one').textContent}))""")
    rows = [dict(row, source=sorted(row["source"]), anonymized=sorted(row["anonymized"])) for row in rows]
    assert sorted(rows, key=str) == sorted(
        ({"source": f["SourceSeries"], "anonymized": f["AnonymizedSeries"], "uids": f["Anonymized"],
          "oneToOne": "\u2714 yes" if f["OneToOne"] else "\u2718 no"} for f in report["FramesOfReference"]), key=str)
    leaks = panel.locator(".ca-leak").evaluate_all("""rows => rows.map(row => [
        row.querySelector('.ca-instance').getAttribute('href'), row.querySelector('.ca-path').textContent,
        row.querySelector('.ca-found').textContent])""")
    assert leaks == [[f"#instance?uuid={leak['Instance']}", leak["Path"], leak["Found"]] for leak in report["Leaks"]]
    references = panel.locator(".ca-reference").evaluate_all("""rows => rows.map(row => [
        row.querySelector('.ca-instance').getAttribute('href'), row.querySelector('.ca-path').textContent])""")
    assert references == [[f"#instance?uuid={r['Instance']}", r["Path"]] for r in report["UnresolvedReferences"]]
    expect(panel.locator(".ca-leaks .ui-bar")).to_have_text(f"Leaks of source identifiers: {report['LeaksCount']}")
    for side, name in (("Source", "source"), ("Anonymized", "anonymized")):
        expect(panel.locator(f".ca-{name}-side td").nth(2)).to_have_text(str(report[side]["InstancesCount"]))
    expect(panel.locator(".ca-paired")).to_contain_text(
        f"{report['PairedInstancesCount']} instance{'s' if report['PairedInstancesCount'] != 1 else ''} paired "
        f"({report['PairedBy']['Pseudonym']} by the plugin's pseudonym")
    # A source series is shown by its number and modality only, an anonymized one with its description.
    expect(panel.locator(".ca-source .ca-series").first).to_have_text(re.compile(r"^Series \d+ · [A-Z]+ \(\d+\)$"))
    expect(panel.locator(".ca-anonymized .ca-series").first).to_contain_text("Synthetic MR series")


def check_no_source_identifier(page, anonymized: Anonymized, element=None) -> None:
    """Neither the page (or the element) nor its attributes hold any identifier of the source."""
    html = element.evaluate("e => e.outerHTML") if element is not None else page.content()
    leaked = sorted(i for i in source_identifiers(anonymized.study) if i in html)
    assert leaked == [], "the page shows identifiers of the source"


def test_verify_anonymization_on_the_anonymized_study(guarded, anonymized, browser):
    page = browser.page
    open_page(page, guarded, "study", anonymized.anonymized_study)
    held = []
    page.route("**/tools/verify-anonymization", lambda route: held.append(route))  # held: a long verification
    page.locator("#study-verify-anonymization").click()
    panel = page.locator("#study-consistent-anon-panel")
    if version_of(guarded) < (1, 12):
        # Orthanc 1.10 lets no plugin write AnonymizedFrom: the user gives the source.
        expect(panel.locator(".ca-picker")).to_contain_text("records no source")
        panel.locator("#study-ca-source").fill(anonymized.source_study)
        panel.locator("#study-ca-verify-source").click()
    progress = panel.locator(".ca-progress-text")
    expect(progress).to_contain_text("Verifying")
    expect(panel.locator(".ca-spinner")).to_be_visible()
    expect(progress).to_contain_text("2 s", timeout=10_000)  # the clock runs: the page is not frozen
    assert len(held) == 1
    assert held[0].request.post_data_json == {"Source": anonymized.source_study,
                                              "Anonymized": anonymized.anonymized_study}
    held[0].continue_()

    report = verification(guarded, anonymized.source_study, anonymized.anonymized_study)
    assert report["Clean"] is False and report["Leaks"] == [
        {"Instance": anonymized.planted, "Path": "ImageComments", "Found": "PatientName"}]
    check_verification_panel(page, panel, report)
    expect(panel.locator(".ca-verdict li")).to_have_text(["1 leak of source identifiers"])
    expect(panel.locator(".ca-frame-row")).to_have_count(2)
    expect(panel.locator(".ca-unresolved")).to_contain_text("Every one of the")
    check_no_source_identifier(page, anonymized)
    screenshot(page, guarded, "verify-anonymized-study")

    # The leak's link leads to the instance concerned.
    panel.locator(".ca-leak .ca-instance").click()
    active(page, "instance")
    expect(page).to_have_url(f"{guarded.url}/app/explorer.html#instance?uuid={anonymized.planted}")


def test_verify_anonymization_from_the_source_and_on_a_series(guarded, anonymized, browser):
    page = browser.page
    open_page(page, guarded, "study", anonymized.source_study).locator("#study-verify-anonymization").click()
    panel = page.locator("#study-consistent-anon-panel")
    check_verification_panel(page, panel, verification(guarded, anonymized.source_study, anonymized.anonymized_study))
    check_no_source_identifier(page, anonymized, panel.element_handle())
    screenshot(page, guarded, "verify-source-study")

    source, result = anonymized.series[1]
    open_page(page, guarded, "series", source)
    expect(panel).to_be_hidden()  # another page: the study's panel is gone
    page.locator("#series-verify-anonymization").click()
    series_panel = page.locator("#series-consistent-anon-panel")
    report = verification(guarded, source, result)
    assert report["Clean"] is True
    check_verification_panel(page, series_panel, report)
    expect(series_panel.locator(".ca-verdict")).to_contain_text("Clean: 2 instances paired")
    check_no_source_identifier(page, anonymized, series_panel.element_handle())
    screenshot(page, guarded, "verify-series")

    page.locator("#series-frames-of-reference").click()
    frames = guarded.json(f"/series/{source}/frames-of-reference")
    expect(series_panel.locator(".ca-frame-uid")).to_have_text([f["FrameOfReferenceUID"] for f in frames])
    expect(series_panel.locator(".ca-on .ca-series-label")).to_have_text(["Series 1 \u00b7 MR \u00b7 Synthetic MR series 1"])


def test_a_study_the_plugin_did_not_anonymize(guarded, browser):
    other = upload(guarded, two_frame_study(per_series=1, patient=new_patient()))
    study = next(iter(other.values()))["ParentStudy"]
    page = browser.page
    open_page(page, guarded, "study", study).locator("#study-verify-anonymization").click()
    panel = page.locator("#study-consistent-anon-panel")
    expect(panel.locator(".ca-picker")).to_contain_text("stores no anonymized copy of it")
    panel.locator("#study-ca-source").fill("00000000-00000000-00000000-00000000-00000000")
    panel.locator("#study-ca-verify-source").click()
    expect(panel.locator(".ca-picker")).to_contain_text("The verification failed: Unknown resource")
    screenshot(page, guarded, "verify-not-anonymized")
    page.locator("#study-frames-of-reference").click()  # works on any study
    expect(panel.locator(".ca-frame")).to_have_count(2, timeout=60_000)


def test_a_site_script_that_extends_the_explorer_too_keeps_both(server_factory):
    """orthanc-python keeps the last explorer extension a script gives: the recipe of docs/deployment.md (Clients)."""
    server = server_factory(start=False)
    script = server.workdir / "hospital_explorer.py"
    script.write_text(SITE_SCRIPT.format(plugin_dir=RUNTIME.inside(server.workdir / "plugin")))
    server.configure({"PythonScript": RUNTIME.inside(script)})
    server.start()
    extensions = server.get("/plugins/explorer.js").text
    assert "/* the hospital's own */" in extensions
    assert "'Verify anonymization'" in extensions and extensions.count("the hospital's own") == 1


def test_no_counterpart_under_fresh_pseudonyms(server_factory, study):
    server = server_factory(config={"ConsistentAnonymization": {"FreshPseudonymsPerCall": True}})
    source = next(iter(upload(server, study).values()))["ParentStudy"]
    assert server.post(f"/studies/{source}/anonymize", json={}).status_code == 200
    answer = server.get(f"/studies/{source}/anonymized-counterpart")
    assert answer.status_code == 404 and "FreshPseudonymsPerCall" in answer.json()["Message"]
