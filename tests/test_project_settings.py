"""Project settings for longitudinal studies and trials, without a server."""
from __future__ import annotations

import pytest

from consistent_anon.identity.project_settings import ProjectSettings, SettingsError, parse_project_settings

WHERE = "ConsistentAnonymization.Projects.trial"


def test_defaults_are_the_cautious_ones():
    settings = parse_project_settings(WHERE, {})
    assert settings == ProjectSettings()
    assert not settings.shift_dates and settings.patient_identity == "caller"
    assert settings.date_shift_days == (-730, -30) and settings.subjects is None


def test_a_project_overrides_the_sections_defaults(tmp_path):
    table = tmp_path / "subjects.csv"
    table.write_text("PatientID,SubjectID\nMRN1,S-001\n")
    defaults = parse_project_settings("ConsistentAnonymization", {"ShiftDates": True, "DateShiftDays": [-10, 10]})
    settings = parse_project_settings(WHERE, {
        "DateShiftDays": [-100, -1], "Subjects": str(table), "RequireSubject": True,
        "ClinicalTrial": {"SponsorName": "Sponsor", "ProtocolID": "P-1", "SiteID": "07"},
        "PatientIdentity": "project"}, defaults)
    assert settings.shift_dates is True                      # from the defaults
    assert settings.date_shift_days == (-100, -1)
    assert settings.subjects.lookup("MRN1").subject_id == "S-001"
    assert settings.clinical_trial == {0x00120010: "Sponsor", 0x00120020: "P-1", 0x00120030: "07"}
    assert settings.patient_identity == "project" and settings.require_subject


@pytest.mark.parametrize("section, words", [
    ({"ShiftDates": "yes"}, "ShiftDates must be true or false"),
    ({"DateShiftDays": [-1]}, "DateShiftDays must be [smallest, largest]"),
    ({"DateShiftDays": [5, -5]}, "from smallest to largest"),
    ({"DateShiftDays": [0, 0]}, "other than 0"),
    ({"DateShiftDays": [-40000, 1]}, "36500 days"),
    ({"DateShiftDays": [True, 2]}, "two whole numbers"),
    ({"RequireSubject": True}, "RequireSubject needs Subjects"),
    ({"Subjects": "/nonexistent/subjects.csv"}, "cannot be read"),
    ({"ClinicalTrial": {"Sponsor": "x"}}, "unknown option(s) ['Sponsor']"),
    ({"ClinicalTrial": {"SiteID": "a\\b"}}, "without a backslash"),
    ({"ClinicalTrial": {"SiteName": "x" * 65}}, "at most 64"),
    ({"PatientIdentity": "Project"}, "PatientIdentity must be one of caller, project"),
])
def test_a_wrong_setting_is_refused_naming_where(section, words):
    with pytest.raises(SettingsError) as refused:
        parse_project_settings(WHERE, section)
    assert words in str(refused.value) and WHERE in str(refused.value)
