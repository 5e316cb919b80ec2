"""The plugin's own pages, under /consistent-anonymization/ui/: its landing page, a study's or a
series' frames of reference, and the verification report of a source or an anonymized set.

Orthanc Explorer 2 loads no plugin JavaScript: it reaches these pages through buttons of its
configuration (docs/explorer-2.md) and through the root URI the plugin registers. The pages are
static files made once at start from the `ui` folder beside this module, the three pages from one
template (the landing page is index.html: Orthanc hands a plugin the folder's URL without its
final slash, so relative URLs could not be resolved from there); they draw with the same
renderer (ui/views.js) as the panels explorer.js adds to the legacy Orthanc Explorer, and read
the same routes. Every URL in them is relative, so that they work behind a reverse proxy's path
prefix. The landing page's data (overview.json) names projects and tells what the latest
anonymizations did, never which resources or who: an entry's sources, results, user and job stay
in the audit log.
"""
from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any, Callable

from ..errors import NotFound
from ..identity.config import PluginConfig
from ..traceability.audit_log import AuditEntry, AuditLog
from .http_answers import json_text
from .rest_routes import register_route

PREFIX = "/consistent-anonymization/ui/"
#: The pages (pages.js draws each by its name), and their titles.
PAGES = {"index": "Consistent anonymization", "frames": "Frames of reference", "verify": "Verify anonymization"}
LANDING_PAGE = PREFIX + "index.html"
FOLDER = Path(__file__).with_name("ui")
DESCRIPTION = ("Consistent anonymization: keyed pseudonyms that keep every UID relationship; "
               "frames of reference and verification of anonymized sets")
LATEST_ENTRIES = 20
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "application/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
#: What a page may load and run: its own files and the same Orthanc's routes. No inline script, so
#: that a value that got through as markup still could not run; styles the renderer sets inline.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def static_files(folder: Path = FOLDER) -> dict[str, tuple[bytes, str]]:
    """Name -> (content, content type) of every file the pages are made of: the folder's
    scripts and style, and each page of PAGES from the one template (ui/page.template)."""
    files = {path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
             for path in sorted(folder.iterdir()) if path.suffix in CONTENT_TYPES}
    template = Template((folder / "page.template").read_text(encoding="utf-8"))
    for page, title in PAGES.items():
        files[f"{page}.html"] = (template.substitute(page=page, title=title).encode("utf-8"), CONTENT_TYPES[".html"])
    return files


def overview(config: PluginConfig, log: AuditLog) -> dict[str, Any]:
    """The landing page's facts: the projects, and what the latest anonymizations did."""
    latest = log.latest(LATEST_ENTRIES)
    return {"Name": "Consistent anonymization",
            "Projects": [{"Name": name, "Default": name == config.default_project}
                         for name in sorted(config.project_keys)],
            "LatestEntries": [_without_identifiers(entry) for entry in reversed(latest)]}


def _without_identifiers(entry: AuditEntry) -> dict[str, Any]:
    return {"Sequence": entry.sequence, "Time": entry.time, "Level": entry.level, "Outcome": entry.outcome,
            "Reason": entry.reason, "Project": entry.project, "Instances": entry.instances,
            "FailedInstances": entry.failed_instances, "Asynchronous": entry.job is not None}


class UiPages:
    """The routes of the pages, and the plugin's row in Orthanc's plugin list."""

    def __init__(self, orthanc: Any, facts: Callable[[], dict[str, Any]]) -> None:
        self._orthanc = orthanc
        self._facts = facts
        self._files = static_files()

    def register(self, guarded: Callable, announce: bool) -> None:
        """The routes; with `announce`, the root URI and description Orthanc lists the plugin with."""
        register_route(self._orthanc, PREFIX.rstrip("/") + "/overview\\.json", ("GET",), guarded(self.overview))
        register_route(self._orthanc, PREFIX.rstrip("/") + "/([^/]+)", ("GET",), guarded(self.page))
        if announce:
            self._orthanc.SetRootUri(LANDING_PAGE)
            if hasattr(self._orthanc, "SetDescription"):
                self._orthanc.SetDescription(DESCRIPTION)

    def page(self, output: Any, uri: str, **request: Any) -> None:
        name = request["groups"][0]
        if name not in self._files:
            raise NotFound("The plugin's pages have no such file")
        content, content_type = self._files[name]
        for header, value in HEADERS.items():
            output.SetHttpHeader(header, value)
        output.AnswerBuffer(content, content_type)

    def overview(self, output: Any, uri: str, **request: Any) -> None:
        output.SetHttpHeader("Cache-Control", "no-store")
        output.AnswerBuffer(json_text(self._facts()), "application/json")
