"""The plugin's section of orthanc.json, with the defaults a cautious site wants."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .project_settings import (KEYS as PROJECT_SETTINGS, ProjectSettings, SettingsError, boolean, file_problem,
                               parse_project_settings)
from .pseudonyms import UUID_ROOT, check_uid_root

SECTION = "ConsistentAnonymization"
MIN_KEY_LENGTH = 32
#: A project's name may hold any characters, at most this many: audit entries name it as declared.
MAX_PROJECT_NAME = 256
#: The user metadata (by index) of an anonymized series that records the options it was made with.
DEFAULT_OPTIONS_METADATA = 9732
#: The instance metadata that holds a result's pixel status (pixels/decision.py, docs/pixels.md).
DEFAULT_PIXEL_STATUS_METADATA = 9735
USER_METADATA_RANGE = range(1024, 65536)


#: Options that name files or lists of files.
PATH_OPTIONS = frozenset({"KeyFile", "AuditLogFile", "Subjects", "ReidentificationCertificates", "PixelRuleFiles"})
#: The options of the section, and of each project under `Projects` (a typo must never silently
#: leave an option at its default: an unknown name stops Orthanc at start). The project settings
#: (dates, subjects, trial attributes, patient identity) are allowed in both: at the top, they are
#: the defaults of every project.
SECTION_OPTIONS = frozenset({"Key", "KeyFile", "Projects", "DefaultProject", "UidRoot", "FreshPseudonymsPerCall",
                             "OptionsMetadata", "PseudonymLookup", "AcceptNewKey", "AuditLogFile",
                             "AuditLogRetentionDays", "AuditLogMaxEntries", "RegisterRootUri", "PixelRuleFiles",
                             "PixelRules", "PixelStatusMetadata", "PixelTextReader", "OnArrival", *PROJECT_SETTINGS})
#: The audit log's file name in Orthanc's storage folder, its default place.
AUDIT_LOG_NAME = "consistent-anonymization-audit.jsonl"
AUDIT_RETENTION_DAYS = 365
AUDIT_MAX_ENTRIES = 1_000_000
PROJECT_OPTIONS = frozenset({"Key", "KeyFile", *PROJECT_SETTINGS})


#: The section's true-or-false options: the configuration's attribute each sets, and its default.
FLAGS = {"FreshPseudonymsPerCall": ("fresh_pseudonyms_per_call", False), "PseudonymLookup": ("pseudonym_lookup", False),
         "RegisterRootUri": ("register_root_uri", True)}


def _refuse_unknown(where: str, settings: dict[str, Any], known: frozenset[str]) -> None:
    unknown = set(settings) - known
    if unknown:
        raise ConfigurationError(f"{where}: unknown option(s) {sorted(unknown)}")


def _check_project_name(where: str, *names: str) -> None:
    """Refuse a project name longer than MAX_PROJECT_NAME (not repeated: its length says which)."""
    for name in names:
        if len(name) > MAX_PROJECT_NAME:
            raise ConfigurationError(f"{where}: a project name of {len(name)} characters (at most "
                                     f"{MAX_PROJECT_NAME})")


def _read_key(where: str, settings: dict[str, Any]) -> bytes | None:
    if "Key" in settings and "KeyFile" in settings:
        raise ConfigurationError(f"{where}: set Key or KeyFile, not both")
    if "Key" in settings:
        key = settings["Key"]
    elif "KeyFile" in settings:
        key = _key_file_text(f"{where}.KeyFile", settings["KeyFile"])
    else:
        return None
    if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
        raise ConfigurationError(f"{where}: the key must be a string of at least {MIN_KEY_LENGTH} characters")
    return key.encode("utf-8")


def _key_file_text(option: str, path: Any) -> str:
    """The key a KeyFile holds (the plugin never writes one: a generated key has its own file,
    keys.py), checked at start with a message naming the option."""
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"{option} must be the path of a file")
    problem = file_problem(path)
    if problem is None:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            problem = f"{path} cannot be read ({error.strerror})"
        except UnicodeDecodeError:
            problem = f"{path} cannot be read (not UTF-8 text)"
    raise ConfigurationError(f"{option}: {problem}")


#: PixelTextReader's members and their defaults (docs/pixels.md).
PIXEL_TEXT_READER_OPTIONS = {"Url": None, "FramesPerInstance": 3, "TimeoutSeconds": 30}


@dataclass(frozen=True)
class PixelTextReader:
    url: str
    frames_per_instance: int
    timeout_seconds: int


@dataclass
class PluginConfig:
    key: bytes | None = None  # None: generated once and kept in a file (keys.py)
    project_keys: dict[str, bytes | None] = field(default_factory=dict)  # None: derived from `key`
    default_project: str = "default"
    uid_root: str = UUID_ROOT
    fresh_pseudonyms_per_call: bool = False
    options_metadata: int = DEFAULT_OPTIONS_METADATA
    pseudonym_lookup: bool = False  # generate-uid's pseudonym queries: off, or they confirm guesses
    accept_new_key: frozenset[str] = frozenset()  # projects whose recorded key check may be replaced
    project_settings: dict[str, ProjectSettings] = field(default_factory=dict)
    audit_log_file: str | None = None  # None: AUDIT_LOG_NAME in Orthanc's StorageDirectory
    audit_retention_days: int | None = AUDIT_RETENTION_DAYS  # None: kept forever
    audit_max_entries: int | None = AUDIT_MAX_ENTRIES  # None: no limit
    #: Root URI and description in Orthanc's plugin list (the row of the Python plugin, shared with
    #: any other script): Orthanc Explorer 2 links to the plugin's landing page from there.
    register_root_uri: bool = True
    #: Where burned-in text is, by device (pixels/rules.py, read at start by the adapter): rule
    #: files in the `deid` format, and the site's own rules; None: the installed `deid` package's.
    pixel_rule_files: list[str] | None = None
    pixel_rules: list[Any] = field(default_factory=list)
    pixel_status_metadata: int = DEFAULT_PIXEL_STATUS_METADATA
    #: The text reader verify may ask to read burned-in text (ocr/text_service.py); None: none.
    pixel_text_reader: PixelTextReader | None = None

    def __repr__(self) -> str:  # never show a key
        return (f"PluginConfig(projects={sorted(self.project_keys)}, default_project={self.default_project!r}, "
                f"uid_root={self.uid_root!r}, fresh_pseudonyms_per_call={self.fresh_pseudonyms_per_call}, "
                f"options_metadata={self.options_metadata}, pseudonym_lookup={self.pseudonym_lookup}, "
                f"accept_new_key={sorted(self.accept_new_key)}, "
                f"date_shifting={sorted(p for p, s in self.project_settings.items() if s.shift_dates)}, "
                f"subject_tables={sorted(p for p, s in self.project_settings.items() if s.subjects)}, "
                f"reidentification={sorted(p for p, s in self.project_settings.items() if s.recipients)}, "
                f"audit_log_file={self.audit_log_file!r}, audit_retention_days={self.audit_retention_days}, "
                f"audit_max_entries={self.audit_max_entries}, register_root_uri={self.register_root_uri})")


def _limit(section: dict[str, Any], name: str, default: int) -> int | None:
    """A positive count, or null for none."""
    value = section.get(name, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{SECTION}.{name} must be a positive integer, or null for no limit")
    return value


def configuration_folder(configuration_path: str) -> Path:
    """The folder Orthanc reads relative paths from (its StorageDirectory among them): the
    configuration file's, the folder of configuration files it was given, or the working folder."""
    path = Path(configuration_path or ".")
    return path if path.is_dir() else path.parent


def _paths_from(folder: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with each relative path of PATH_OPTIONS read from `folder`, as Orthanc reads
    its own: the same configuration means the same files whatever folder Orthanc starts in."""
    def resolved(value: Any) -> Any:
        return str(folder / value) if isinstance(value, str) and value else value
    return {name: ([resolved(item) for item in value] if isinstance(value, list) else resolved(value))
            if name in PATH_OPTIONS else value for name, value in settings.items()}


def parse_config(orthanc_configuration: dict[str, Any], folder: Path = Path(".")) -> PluginConfig:
    """The section, checked; relative paths in it are read from `folder` (configuration_folder)."""
    section = orthanc_configuration.get(SECTION, {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"{SECTION} must be an object")
    _refuse_unknown(SECTION, section, SECTION_OPTIONS)
    section = _paths_from(folder, section)
    config = PluginConfig(key=_read_key(SECTION, section))
    projects = section.get("Projects", {})
    if not isinstance(projects, dict) or not all(isinstance(v, dict) for v in projects.values()):
        raise ConfigurationError(f"{SECTION}.Projects must map project names to objects")
    _check_project_name(f"{SECTION}.Projects", *projects)
    projects = {name: _paths_from(folder, settings) for name, settings in projects.items()}
    try:
        defaults = parse_project_settings(SECTION, section)
        for name, settings in projects.items():
            _refuse_unknown(f"{SECTION}.Projects.{name}", settings, PROJECT_OPTIONS)
            config.project_keys[name] = _read_key(f"{SECTION}.Projects.{name}", settings)
            config.project_settings[name] = replace(
                parse_project_settings(f"{SECTION}.Projects.{name}", settings, defaults), name=name)
        for name, (attribute, default) in FLAGS.items():
            setattr(config, attribute, boolean(SECTION, name, section.get(name, default)))
    except SettingsError as error:
        raise ConfigurationError(str(error)) from None
    config.default_project = section.get("DefaultProject", "default")
    if not isinstance(config.default_project, str) or not config.default_project:
        raise ConfigurationError(f"{SECTION}.DefaultProject must be a non-empty string")
    _check_project_name(f"{SECTION}.DefaultProject", config.default_project)
    config.project_keys.setdefault(config.default_project, None)
    config.project_settings.setdefault(config.default_project, replace(defaults, name=config.default_project))
    try:
        config.uid_root = check_uid_root(str(section.get("UidRoot", UUID_ROOT)))
    except ValueError as error:
        raise ConfigurationError(f"{SECTION}: {error}") from None
    accepted = section.get("AcceptNewKey", [])
    if not isinstance(accepted, list) or not all(isinstance(p, str) and p in config.project_keys for p in accepted):
        raise ConfigurationError(f"{SECTION}.AcceptNewKey must list declared projects (or the default project)")
    config.accept_new_key = frozenset(accepted)
    config.options_metadata = _metadata_index(section, "OptionsMetadata", DEFAULT_OPTIONS_METADATA)
    audit_file = section.get("AuditLogFile")
    if audit_file is not None and (not isinstance(audit_file, str) or not audit_file):
        raise ConfigurationError(f"{SECTION}.AuditLogFile must be the path of a file")
    problem = audit_file and file_problem(audit_file, writable=True)
    if problem:
        raise ConfigurationError(f"{SECTION}.AuditLogFile: {problem}")
    config.audit_log_file = audit_file
    config.audit_retention_days = _limit(section, "AuditLogRetentionDays", AUDIT_RETENTION_DAYS)
    config.audit_max_entries = _limit(section, "AuditLogMaxEntries", AUDIT_MAX_ENTRIES)
    _pixel_rules(section, config)
    config.pixel_text_reader = _pixel_text_reader(section.get("PixelTextReader"))
    return config


def _pixel_text_reader(settings: Any) -> PixelTextReader | None:
    """PixelTextReader: the service's URL (http, where Orthanc's frames are sent: loopback, or a
    host of the site), how many frames of an instance are read, and how long one may take."""
    where = f"{SECTION}.PixelTextReader"
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise ConfigurationError(f"{where} must be an object")
    _refuse_unknown(where, settings, frozenset(PIXEL_TEXT_READER_OPTIONS))
    url = settings.get("Url")
    if not isinstance(url, str) or not url.startswith("http://") or len(url) <= len("http://"):
        raise ConfigurationError(f"{where}.Url must be the http:// address of the text reader (ocr/text_service.py)")
    counts = {name: settings.get(name, PIXEL_TEXT_READER_OPTIONS[name]) for name in ("FramesPerInstance", "TimeoutSeconds")}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{where}.{name} must be a positive integer")
    return PixelTextReader(url, counts["FramesPerInstance"], counts["TimeoutSeconds"])


def _pixel_rules(section: dict[str, Any], config: PluginConfig) -> None:
    """PixelRuleFiles and PixelRules, as lists (their content is read by pixels/rules.py)."""
    files = section.get("PixelRuleFiles")
    if files is not None and (not isinstance(files, list) or not all(isinstance(f, str) and f for f in files)):
        raise ConfigurationError(f"{SECTION}.PixelRuleFiles must list the paths of rule files")
    rules = section.get("PixelRules", [])
    if not isinstance(rules, list):
        raise ConfigurationError(f"{SECTION}.PixelRules must be a list of rules")
    config.pixel_rule_files, config.pixel_rules = files, rules
    config.pixel_status_metadata = _metadata_index(section, "PixelStatusMetadata", DEFAULT_PIXEL_STATUS_METADATA)
    if config.pixel_status_metadata == config.options_metadata:
        raise ConfigurationError(f"{SECTION}.PixelStatusMetadata and OptionsMetadata must differ")


def _metadata_index(section: dict[str, Any], name: str, default: int) -> int:
    index = section.get(name, default)
    if isinstance(index, bool) or not isinstance(index, int) or index not in USER_METADATA_RANGE:
        raise ConfigurationError(f"{SECTION}.{name} must be a user metadata index "
                                 f"({USER_METADATA_RANGE.start}-{USER_METADATA_RANGE.stop - 1})")
    return index
