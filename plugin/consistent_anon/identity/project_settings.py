"""What a project does beyond consistent UIDs: date shifting, subject IDs, trial attributes,
whose patient identity wins, who may re-identify. The same keys are allowed at the top of the
plugin's section (the defaults of every project) and inside each `Projects.<name>` (that
project's own values)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .subjects import SubjectTable, SubjectTableError

#: ClinicalTrial member -> the attribute of the Clinical Trial Subject module it fills.
CLINICAL_TRIAL_ATTRIBUTES = {
    "SponsorName": 0x00120010,   # ClinicalTrialSponsorName
    "ProtocolID": 0x00120020,    # ClinicalTrialProtocolID
    "ProtocolName": 0x00120021,  # ClinicalTrialProtocolName
    "SiteID": 0x00120030,        # ClinicalTrialSiteID
    "SiteName": 0x00120031,      # ClinicalTrialSiteName
}
PATIENT_IDENTITIES = ("caller", "project")
#: What a call does with an instance whose pixels may show burned-in text (pixels/decision.py).
BURNED_IN_POLICIES = ("Refuse", "Flag", "Accept")
DEFAULT_DATE_SHIFT_DAYS = (-730, -30)
MAX_DATE_SHIFT = 36500  # a century either way
MAX_LO = 64

#: The keys this module reads, wherever they stand.
KEYS = ("ShiftDates", "DateShiftDays", "Subjects", "RequireSubject", "ClinicalTrial", "PatientIdentity",
        "ReidentificationCertificates", "BurnedInAnnotation")


class SettingsError(ValueError):
    """A project setting that cannot be used; the plugin refuses to start."""


@dataclass(frozen=True)
class ProjectSettings:
    name: str = ""  # the project's name, for messages
    shift_dates: bool = False
    date_shift_days: tuple[int, int] = DEFAULT_DATE_SHIFT_DAYS
    subjects: SubjectTable | None = None
    require_subject: bool = False
    clinical_trial: dict[int, str] = field(default_factory=dict)  # tag -> value
    patient_identity: str = "caller"
    #: The recipients of the re-identification data (reidentification.Recipient), () for none.
    recipients: tuple[Any, ...] = ()
    #: "BurnedInAnnotation": one of BURNED_IN_POLICIES (docs/pixels.md).
    burned_in: str = "Refuse"

    def output_options(self) -> dict[str, Any]:
        """What of these settings decides what an instance becomes, for the options' mark: two
        calls that differ in it would give different results under the same identifiers."""
        options: dict[str, Any] = {}
        if self.shift_dates:
            options["ShiftDates"] = list(self.date_shift_days)
        if self.clinical_trial:
            options["ClinicalTrial"] = {f"{tag:08x}": value for tag, value in sorted(self.clinical_trial.items())}
        if self.recipients:  # results sealed for other recipients are other results
            options["ReidentificationCertificates"] = sorted({recipient.fingerprint for recipient in self.recipients})
        return options


def _boolean(where: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{where}.{name} must be true or false")
    return value


def _days(where: str, value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise SettingsError(f"{where}.DateShiftDays must be [smallest, largest], two whole numbers of days")
    low, high = value
    if low > high or max(abs(low), abs(high)) > MAX_DATE_SHIFT or (low == high == 0):
        raise SettingsError(f"{where}.DateShiftDays must go from smallest to largest, within "
                            f"{MAX_DATE_SHIFT} days either way, and allow a shift other than 0")
    return low, high


def _clinical_trial(where: str, value: Any) -> dict[int, str]:
    if not isinstance(value, dict):
        raise SettingsError(f"{where}.ClinicalTrial must be an object")
    unknown = sorted(set(value) - set(CLINICAL_TRIAL_ATTRIBUTES))
    if unknown:
        raise SettingsError(f"{where}.ClinicalTrial: unknown option(s) {unknown}")
    for name, text in value.items():
        if not isinstance(text, str) or len(text) > MAX_LO or "\\" in text:
            raise SettingsError(f"{where}.ClinicalTrial.{name} must be a text of at most {MAX_LO} "
                                f"characters without a backslash")
    return {CLINICAL_TRIAL_ATTRIBUTES[name]: text for name, text in value.items()}


def _recipients(where: str, value: Any) -> tuple[Any, ...]:
    """The recipients of these certificates, read and checked now: an unusable one stops Orthanc
    at start, not the first call. `[]` means none (a project's way out of the defaults' list).
    The message names the option and the file, never what the file holds."""
    name = f"{where}.ReidentificationCertificates"
    if not isinstance(value, list) or not all(isinstance(path, str) and path for path in value):
        raise SettingsError(f"{name} must list the paths of X.509 certificates in PEM")
    if not value:
        return ()
    from ..reidentification.envelope import ReidentificationError, load_recipients  # needs cryptography: only here
    try:
        return load_recipients(value)
    except ReidentificationError as error:
        raise SettingsError(f"{name}: {error}") from None


def parse_project_settings(where: str, section: dict[str, Any],
                           defaults: ProjectSettings = ProjectSettings()) -> ProjectSettings:
    """The settings a project gets: its own keys over the defaults. `where` names the section in
    messages. Unknown keys are the caller's to refuse (they share the section with others)."""
    changes: dict[str, Any] = {}
    if "ShiftDates" in section:
        changes["shift_dates"] = _boolean(where, "ShiftDates", section["ShiftDates"])
    if "DateShiftDays" in section:
        changes["date_shift_days"] = _days(where, section["DateShiftDays"])
    if "Subjects" in section:
        if not isinstance(section["Subjects"], str) or not section["Subjects"]:
            raise SettingsError(f"{where}.Subjects must be the path of a CSV file")
        try:
            changes["subjects"] = SubjectTable(Path(section["Subjects"]))
        except SubjectTableError as error:
            raise SettingsError(f"{where}.Subjects: {error}") from None
    if "RequireSubject" in section:
        changes["require_subject"] = _boolean(where, "RequireSubject", section["RequireSubject"])
    if "ClinicalTrial" in section:
        changes["clinical_trial"] = _clinical_trial(where, section["ClinicalTrial"])
    if "PatientIdentity" in section:
        if section["PatientIdentity"] not in PATIENT_IDENTITIES:
            raise SettingsError(f"{where}.PatientIdentity must be one of {', '.join(PATIENT_IDENTITIES)}")
        changes["patient_identity"] = section["PatientIdentity"]
    if "BurnedInAnnotation" in section:
        if section["BurnedInAnnotation"] not in BURNED_IN_POLICIES:
            raise SettingsError(f"{where}.BurnedInAnnotation must be one of {', '.join(BURNED_IN_POLICIES)}")
        changes["burned_in"] = section["BurnedInAnnotation"]
    if "ReidentificationCertificates" in section:
        changes["recipients"] = _recipients(where, section["ReidentificationCertificates"])
    settings = replace(defaults, **changes)
    if settings.require_subject and settings.subjects is None:
        raise SettingsError(f"{where}.RequireSubject needs Subjects, the table of the project's subjects")
    return settings
