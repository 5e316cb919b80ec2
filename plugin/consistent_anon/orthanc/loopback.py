"""Orthanc's own HTTP server, for the one request its internal API cannot make: a metadata
overwrite that names the revision it replaces (`If-Match`), which `"CheckRevisions": true`
requires and `orthanc.RestApiPut` cannot send (no orthanc-python version passes headers).

The request is authorized by a token Orthanc generates for its plugins, so no user or password
is needed; it goes to the loopback address on Orthanc's `HttpPort`.
"""
from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from typing import Any, Callable

from .http_answers import error_of_status
from ..errors import Conflict, PluginError

REVISION_ERROR = 43  # Orthanc's ErrorCode_Revision: the If-Match revision is not the current one
TIMEOUT_SECONDS = 30


class RevisionConflict(Conflict):
    """Another writer changed the metadata between this writer's read and write: read again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, orthanc_code=REVISION_ERROR, description="Bad revision")


class LoopbackRest:
    """Metadata overwrites with their revision, through Orthanc's HTTP server on loopback."""

    def __init__(self, configuration: dict[str, Any], token: Callable[[], str]) -> None:
        self._enabled = bool(configuration.get("HttpServerEnabled", True))
        scheme = "https" if configuration.get("SslEnabled", False) else "http"
        self._base = f"{scheme}://127.0.0.1:{int(configuration.get('HttpPort', 8042))}"
        self._token = token
        self._authorization: str | None = None
        # Loopback to this very server: its certificate names the site, not 127.0.0.1.
        self._context = ssl._create_unverified_context() if scheme == "https" else None

    def overwrite(self, path: str, value: str) -> None:
        """Replace the metadata at `path` with `value`, naming the revision read just before;
        RevisionConflict if someone else wrote in between."""
        if not self._enabled:
            raise PluginError("\"CheckRevisions\" is true and a metadata of the plugin must be replaced, "
                              "which needs Orthanc's HTTP server (\"HttpServerEnabled\" is false)")
        current, etag = self._request("GET", path)
        if current == value.encode("utf-8"):
            return
        self._request("PUT", path, value.encode("utf-8"), {"If-Match": etag, "Content-Type": "text/plain"})

    def _request(self, method: str, path: str, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[bytes, str]:
        if self._authorization is None:
            self._authorization = self._token()
        request = urllib.request.Request(self._base + path, data=data, method=method,
                                         headers={"Authorization": self._authorization, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=self._context) as answer:
                return answer.read(), answer.headers.get("ETag", "")
        except urllib.error.HTTPError as error:
            if error.code == 409:
                raise RevisionConflict("Another writer changed the metadata meanwhile") from None
            raise error_of_status(error.code, f"Orthanc answered {error.code} to the plugin's {method} of a "
                                  "metadata") from None
        except OSError as error:
            raise PluginError(f"The plugin could not reach Orthanc's HTTP server on loopback to replace "
                              f"a metadata under \"CheckRevisions\" ({type(error).__name__})") from None
