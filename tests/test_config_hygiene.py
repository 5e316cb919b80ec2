"""A typo never silently disables an option: unknown names are refused at start, at every depth."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TEST_KEY
from orthanc_server import RUNTIME

from consistent_anon.identity.config import ConfigurationError, configuration_folder, parse_config


@pytest.mark.parametrize("section, where", [
    ({"ShiftDate": True}, "ConsistentAnonymization"),
    ({"Projects": {"trial": {"ShiftDate": True}}}, "ConsistentAnonymization.Projects.trial"),
    ({"Projects": {"trial": {"Key": TEST_KEY, "keyfile": "/x"}}}, "ConsistentAnonymization.Projects.trial"),
])
def test_unknown_options_are_refused_with_the_same_message_at_every_depth(section, where):
    with pytest.raises(ConfigurationError) as raised:
        parse_config({"ConsistentAnonymization": section})
    unknown = sorted(set(section) - {"Projects"}) or sorted(next(iter(section["Projects"].values())).keys() - {"Key"})
    assert str(raised.value) == f"{where}: unknown option(s) {unknown}"


@pytest.mark.parametrize("section, message", [
    ({"PseudonymLookup": "yes"}, "PseudonymLookup must be true or false"),
    ({"AcceptNewKey": ["nobody"]}, "AcceptNewKey must list declared projects"),
    ({"AcceptNewKey": "default"}, "AcceptNewKey must list declared projects"),
    ({"RegisterRootUri": "no"}, "RegisterRootUri must be true or false"),
    ({"PixelTextReader": {"url": "http://127.0.0.1:8043"}}, r"PixelTextReader: unknown option\(s\) \['url'\]"),
    ({"PixelTextReader": {}}, r"PixelTextReader.Url must be the http:// address"),
    ({"PixelTextReader": {"Url": "ftp://reader"}}, r"PixelTextReader.Url must be the http:// address"),
    ({"PixelTextReader": {"Url": "http://r", "FramesPerInstance": 0}}, "FramesPerInstance must be a positive"),
    ({"PixelTextReader": {"Url": "http://r", "TimeoutSeconds": True}}, "TimeoutSeconds must be a positive"),
    ({"PixelTextReader": "http://127.0.0.1:8043"}, "PixelTextReader must be an object"),
])
def test_the_new_options_are_checked(section, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_config({"ConsistentAnonymization": section})


def test_the_cautious_defaults():
    config = parse_config({})
    assert config.pseudonym_lookup is False and config.accept_new_key == frozenset()
    assert config.register_root_uri is True  # the plugin's pages are found from Orthanc Explorer 2
    assert parse_config({"ConsistentAnonymization": {"RegisterRootUri": False}}).register_root_uri is False
    assert parse_config({"ConsistentAnonymization": {"AcceptNewKey": ["default"]}}).accept_new_key == {"default"}
    reader = parse_config({"ConsistentAnonymization": {"PixelTextReader": {"Url": "http://127.0.0.1:8043"}}})
    assert (reader.pixel_text_reader.frames_per_instance, reader.pixel_text_reader.timeout_seconds) == (3, 30)


def test_an_unknown_project_option_stops_orthanc_at_start(server_factory):
    with pytest.raises(RuntimeError, match=r"ConsistentAnonymization\.Projects\.trial: unknown option\(s\) \['ShiftDate'\]"):
        server_factory(config={"ConsistentAnonymization": {"Projects": {"trial": {"ShiftDate": True}}}})


def test_relative_paths_are_read_from_the_configuration_folder(tmp_path, monkeypatch):
    """As Orthanc reads its own: the same configuration names the same files from any working folder."""
    (tmp_path / "project.key").write_text(TEST_KEY)
    (tmp_path / "subjects.csv").write_text("PatientID,SubjectID\nP1,S1\n")
    monkeypatch.chdir("/")
    config = parse_config({"ConsistentAnonymization": {
        "KeyFile": "project.key", "AuditLogFile": "logs/audit.jsonl",
        "Projects": {"trial": {"Subjects": "subjects.csv", "KeyFile": str(tmp_path / "project.key")}}}},
        configuration_folder(str(tmp_path / "orthanc.json")))
    assert config.key == config.project_keys["trial"] == TEST_KEY.encode()  # relative, and absolute as it is
    assert config.audit_log_file == str(tmp_path / "logs" / "audit.jsonl")
    assert config.project_settings["trial"].subjects is not None
    assert configuration_folder(str(tmp_path)) == tmp_path  # a folder of configuration files
    assert configuration_folder("") == Path(".")  # no configuration: the working folder


def _path_cases(tmp_path: Path) -> list[tuple[dict, str]]:
    """Settings naming files that cannot serve, and the start-time message each must give."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (tmp_path / "plain").write_text("x")
    (tmp_path / "latin1.key").write_bytes(b"\xe9" * 40)
    top, trial = "ConsistentAnonymization", r"ConsistentAnonymization\.Projects\.trial#7"
    return [
        ({"AuditLogFile": str(folder)}, rf"{top}\.AuditLogFile: .*a-folder cannot be written \(a folder, not a file\)"),
        ({"AuditLogFile": str(tmp_path / "plain" / "audit.jsonl")},
         rf"{top}\.AuditLogFile: .*audit\.jsonl cannot be written \(.*plain is not a folder\)"),
        ({"AuditLogFile": "/dev/null"}, rf"{top}\.AuditLogFile: /dev/null cannot be written \(not a regular file\)"),
        ({"KeyFile": 7}, rf"{top}\.KeyFile must be the path of a file"),
        ({"Projects": {"trial#7": {"KeyFile": ""}}}, rf"{trial}\.KeyFile must be the path of a file"),
        ({"Projects": {"trial#7": {"KeyFile": str(folder)}}},
         rf"{trial}\.KeyFile: .*a-folder cannot be read \(a folder, not a file\)"),
        ({"Projects": {"trial#7": {"KeyFile": str(tmp_path / "latin1.key")}}},
         rf"{trial}\.KeyFile: .*latin1\.key cannot be read \(not UTF-8 text\)"),
        ({"Subjects": "/dev/null"}, rf"{top}\.Subjects: /dev/null cannot be read \(not a regular file\)"),
        ({"Projects": {"trial#7": {"Subjects": str(tmp_path / "none.csv")}}},
         rf"{trial}\.Subjects: .*none\.csv cannot be read \(no such file\)"),
        ({"Projects": {"trial#7": {"ReidentificationCertificates": [str(folder)]}}},
         rf"{trial}\.ReidentificationCertificates: .*a-folder cannot be read \(a folder, not a file\)"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_each_path_setting_is_checked_at_start_for_what_it_must_be(tmp_path, case):
    """A file the plugin reads must be a readable regular file, the audit log a writable one or
    a path that can be created; the message names the option (and the project), as Orthanc stops."""
    section, message = _path_cases(tmp_path)[case]
    with pytest.raises(ConfigurationError, match=message):
        parse_config({"ConsistentAnonymization": section})


def test_an_audit_log_in_folders_still_to_be_made_or_already_there_is_accepted(tmp_path):
    made_later = tmp_path / "logs" / "2026" / "audit.jsonl"
    section = {"ConsistentAnonymization": {"AuditLogFile": str(made_later)}}
    assert parse_config(section).audit_log_file == str(made_later)
    assert not made_later.parent.exists()  # checked, not created: the first entry creates it
    made_later.parent.mkdir(parents=True)
    made_later.write_text("")
    assert parse_config(section).audit_log_file == str(made_later)


def test_an_audit_log_naming_a_folder_stops_orthanc_at_start(server_factory):
    """It used to start, and then every anonymization answered 500 after storing its result."""
    server = server_factory(start=False)
    folder = server.workdir / "audit-folder"
    folder.mkdir()
    server.configure({"ConsistentAnonymization": {"Key": TEST_KEY, "AuditLogFile": RUNTIME.inside(folder)}})
    with pytest.raises(RuntimeError, match=r"ConsistentAnonymization\.AuditLogFile: .*audit-folder cannot be "
                                           r"written \(a folder, not a file\)"):
        server.start()


@pytest.mark.parametrize("section", [{"Projects": {"p" * 257: {}}}, {"DefaultProject": "d" * 257}])
def test_a_project_name_longer_than_an_audit_entry_keeps_is_refused_at_start(section):
    """Any characters, as declared, but at most 256 of them: every project's entries name it."""
    with pytest.raises(ConfigurationError, match=r"ConsistentAnonymization\.(Projects|DefaultProject): a project "
                                                 r"name of 257 characters \(at most 256\)"):
        parse_config({"ConsistentAnonymization": section})
    assert "p" * 256 in parse_config({"ConsistentAnonymization": {"Projects": {"p" * 256: {}}}}).project_keys
