"""The README stays a page a user finishes, and the documentation holds together: every page of
docs/ is reachable from the README, no link between the pages points at a file or a section
that is not there, and the configuration page names every option with the default it has."""
from __future__ import annotations

import json
import re
from pathlib import Path

from consistent_anon.identity.config import PROJECT_OPTIONS, SECTION_OPTIONS, parse_config
from consistent_anon.jobs.queue import JobSettings

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", ROOT / "bench" / "HISTORY.md", ROOT / "docker" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def headings(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings (code blocks skipped, repeats numbered)."""
    anchors: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            anchor, n = slug, 0
            while anchor in anchors:
                n += 1
                anchor = f"{slug}-{n}"
            anchors.add(anchor)
    return anchors


def test_the_readme_is_short_and_starts_a_user():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert "make run" in text and "make test" in text
    assert "## Walk-through" in text and "## Quick start" in text


def test_every_page_is_linked_from_the_readme():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    unlinked = [str(page.relative_to(ROOT)) for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an address outside the repository
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in headings(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such section)")
    assert not broken


def documented_options() -> dict[str, tuple[str, str]]:
    """docs/configuration.md's table of options: name -> (default, where)."""
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", (ROOT / "docs" / "configuration.md").read_text(),
                      re.MULTILINE)
    return {name: (default.strip(), where.strip()) for name, default, where in rows}


def test_the_configuration_page_lists_every_option_where_it_may_stand():
    options = documented_options()
    assert set(options) == SECTION_OPTIONS
    assert {name for name, (_, where) in options.items() if "project" in where} == PROJECT_OPTIONS


def test_the_configuration_page_gives_the_defaults_the_plugin_applies():
    config = parse_config({})
    settings = config.project_settings[config.default_project]
    applied = {
        "DefaultProject": config.default_project, "UidRoot": config.uid_root,
        "FreshPseudonymsPerCall": config.fresh_pseudonyms_per_call, "OptionsMetadata": config.options_metadata,
        "PseudonymLookup": config.pseudonym_lookup, "AcceptNewKey": sorted(config.accept_new_key),
        "AuditLogRetentionDays": config.audit_retention_days, "AuditLogMaxEntries": config.audit_max_entries,
        "ShiftDates": settings.shift_dates, "DateShiftDays": list(settings.date_shift_days),
        "RequireSubject": settings.require_subject, "ClinicalTrial": settings.clinical_trial,
        "PatientIdentity": settings.patient_identity, "RegisterRootUri": config.register_root_uri,
        "DeidentificationOptions": sorted(settings.deidentification_options), "BurnedInAnnotation": settings.burned_in,
        "PixelRules": config.pixel_rules, "PixelStatusMetadata": config.pixel_status_metadata,
    }
    documented = {name: json.loads(default.strip("`")) for name, (default, _) in documented_options().items()
                  if name in applied}
    assert documented == applied
    absent = {name for name, (default, _) in documented_options().items() if default == "absent"}
    assert absent == {"Key", "KeyFile", "Subjects", "ReidentificationCertificates", "PixelRuleFiles", "OnArrival",
                      "PixelTextReader"}
    assert config.key is None and settings.subjects is None and settings.recipients == ()
    assert config.pixel_rule_files is None and config.pixel_text_reader is None


def test_the_configuration_page_gives_the_jobs_defaults_the_plugin_applies():
    """Orthanc's jobs settings, which the plugin applies to its own jobs with native's defaults."""
    text = " ".join((ROOT / "docs" / "configuration.md").read_text().split())
    defaults = JobSettings.of({})
    assert f"`SaveJobs` (default `{json.dumps(defaults.save)}`" in text
    assert f"`JobsHistorySize` (default {defaults.history_size} " in text
    assert f"`ConcurrentJobs` (default {JobSettings.concurrent} jobs at once; 0: one per core)" in text
