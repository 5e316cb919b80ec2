"""What a project does beyond consistent UIDs: date shifting, subject IDs, trial attributes,
whose patient identity wins, who may re-identify. The same keys are allowed at the top of the
plugin's section (the defaults of every project) and inside each `Projects.<name>` (that
project's own values)."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..dicom.option_attributes import MODIFIED_DATES, known_options_text, option_names, unknown_options
from ..dicom.vocabulary import MAX_LO
from .subjects import LoadedTable, SubjectTable, SubjectTableError

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
DEFAULT_BURNED_IN = "Refuse"
DEFAULT_DATE_SHIFT_DAYS = (-730, -30)
MAX_DATE_SHIFT = 36500  # a century either way

#: The keys this module reads, wherever they stand.
KEYS = ("ShiftDates", "DateShiftDays", "Subjects", "RequireSubject", "ClinicalTrial", "PatientIdentity",
        "ReidentificationCertificates", "DeidentificationOptions", "BurnedInAnnotation")


class SettingsError(ValueError):
    """A project setting that cannot be used; the plugin refuses to start."""


@dataclass(frozen=True)
class ProjectSettings:
    name: str = ""  # the project's name, for messages
    shift_dates: bool = False
    date_shift_days: tuple[int, int] = DEFAULT_DATE_SHIFT_DAYS
    #: The project's table; a request's settings hold it as read for that call (LoadedTable).
    subjects: SubjectTable | LoadedTable | None = None
    require_subject: bool = False
    clinical_trial: dict[int, str] = field(default_factory=dict)  # tag -> value
    patient_identity: str = "caller"
    #: The recipients of the re-identification data (reidentification.Recipient), () for none.
    recipients: tuple[Any, ...] = ()
    #: The PS3.15 options the project's results get (option_attributes.OPTION_CODES names), but
    #: RetainLongitudinalModifiedDates, which is `shift_dates`.
    deidentification_options: frozenset[str] = frozenset()
    #: "BurnedInAnnotation": one of BURNED_IN_POLICIES (docs/pixels.md).
    burned_in: str = DEFAULT_BURNED_IN

    def output_options(self) -> dict[str, Any]:
        """What of these settings decides what an instance becomes, for the options' mark: two
        calls that differ in it would give different results under the same identifiers."""
        options: dict[str, Any] = {}
        if self.shift_dates:
            options["ShiftDates"] = list(self.date_shift_days)
        if self.clinical_trial:
            options["ClinicalTrial"] = {f"{tag:08x}": value for tag, value in sorted(self.clinical_trial.items())}
        if self.deidentification_options:
            options["DeidentificationOptions"] = sorted(self.deidentification_options)
        if self.burned_in != DEFAULT_BURNED_IN:  # results accepted or flagged are not what Refuse stores
            options["BurnedInAnnotation"] = self.burned_in
        if self.recipients:  # results sealed for other recipients are other results
            options["ReidentificationCertificates"] = sorted({recipient.fingerprint for recipient in self.recipients})
        return options


def file_problem(path: str, writable: bool = False) -> str | None:
    """Why the file a setting names cannot serve, or None: checked at start, so that a wrong path
    stops Orthanc with a message rather than failing every call later. A file read must be a
    readable regular file; a file written (the audit log) an existing regular file that can be
    read and written, or a path whose nearest existing folder can be written (the file and its
    folders are made at its first write); its folder must also take the files made beside it."""
    reason = _file_reason(Path(path), writable)
    return None if reason is None else f"{path} cannot be {'written' if writable else 'read'} ({reason})"


def _file_reason(path: Path, writable: bool) -> str | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return _folder_reason(path.parent) if writable else "no such file"
    except OSError as error:  # a file where a folder should be, a loop, no permission on the way
        return _folder_reason(path.parent) or error.strerror
    if stat.S_ISDIR(status.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(status.st_mode):  # a device or a pipe: reads never end, writes are lost
        return "not a regular file"
    if not os.access(path, os.R_OK | (os.W_OK if writable else 0)):
        return "permission denied"
    return _folder_reason(path.parent) if writable else None


def _folder_reason(folder: Path) -> str | None:
    """Why files cannot be made in `folder` (made itself, with its parents, if missing), or None."""
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return None


def _check_file(option: str, path: str) -> None:
    """Refuse a file the plugin would read, naming the option: see file_problem."""
    problem = file_problem(path)
    if problem:
        raise SettingsError(f"{option}: {problem}")


def boolean(where: str, name: str, value: Any) -> bool:
    """A setting that must be true or false."""
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
    for path in value:
        _check_file(name, path)
    from ..reidentification.envelope import ReidentificationError, load_recipients  # needs cryptography: only here
    try:
        return load_recipients(value)
    except ReidentificationError as error:
        raise SettingsError(f"{name}: {error}") from None


def _deidentification_options(where: str, section: dict[str, Any], changes: dict[str, Any]) -> None:
    """The project's options; RetainLongitudinalModifiedDates, another name for ShiftDates, sets
    it (and contradicts a ShiftDates false beside it)."""
    names = option_names(section["DeidentificationOptions"])
    if names is None:
        raise SettingsError(f"{where}.DeidentificationOptions must be a list of option names")
    unknown = unknown_options(names)
    if unknown:
        raise SettingsError(f"{where}.DeidentificationOptions: unknown option(s) {unknown}; the options "
                            f"are {known_options_text()}")
    if MODIFIED_DATES in names:
        if changes.get("shift_dates") is False:
            raise SettingsError(f"{where}: {MODIFIED_DATES} is ShiftDates, which is false there")
        changes["shift_dates"] = True
    changes["deidentification_options"] = frozenset(names) - {MODIFIED_DATES}


def parse_project_settings(where: str, section: dict[str, Any],
                           defaults: ProjectSettings = ProjectSettings()) -> ProjectSettings:
    """The settings a project gets: its own keys over the defaults. `where` names the section in
    messages. Unknown keys are the caller's to refuse (they share the section with others)."""
    changes: dict[str, Any] = {}
    if "ShiftDates" in section:
        changes["shift_dates"] = boolean(where, "ShiftDates", section["ShiftDates"])
    if "DateShiftDays" in section:
        changes["date_shift_days"] = _days(where, section["DateShiftDays"])
    if "Subjects" in section:
        if not isinstance(section["Subjects"], str) or not section["Subjects"]:
            raise SettingsError(f"{where}.Subjects must be the path of a CSV file")
        _check_file(f"{where}.Subjects", section["Subjects"])
        try:
            changes["subjects"] = SubjectTable(Path(section["Subjects"]))
        except SubjectTableError as error:
            raise SettingsError(f"{where}.Subjects: {error}") from None
    if "RequireSubject" in section:
        changes["require_subject"] = boolean(where, "RequireSubject", section["RequireSubject"])
    if "ClinicalTrial" in section:
        changes["clinical_trial"] = _clinical_trial(where, section["ClinicalTrial"])
    if "PatientIdentity" in section:
        if section["PatientIdentity"] not in PATIENT_IDENTITIES:
            raise SettingsError(f"{where}.PatientIdentity must be one of {', '.join(PATIENT_IDENTITIES)}")
        changes["patient_identity"] = section["PatientIdentity"]
    if "DeidentificationOptions" in section:
        _deidentification_options(where, section, changes)
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
