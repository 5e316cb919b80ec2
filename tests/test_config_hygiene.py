"""A typo never silently disables an option: unknown names are refused at start, at every depth."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TEST_KEY

from consistent_anon.config import ConfigurationError, configuration_folder, parse_config


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
