"""REST routes registered in the one way Orthanc's Python plugin can release safely.

orthanc-python 5.0 and 7.1 (Orthanc 1.12 and 1.13) release their REST callbacks once Python is
finalized: a callback that is anything but a plain module-level function (a bound method, a
closure) is then freed on a finalized interpreter, and Orthanc crashes on every stop (SIGSEGV
or abort). Every route is therefore registered with the module-level `dispatch`, which hands the
request to the route's handler, found by its pattern as Orthanc found the route, once the
request's method is one the route serves (Orthanc answers 405 naming them otherwise).
"""
from __future__ import annotations

import re
from typing import Any, Callable

#: A path segment the plugin's routes take (an ID): printable ASCII, "/" excepted, alike for
#: Orthanc's regular expressions (on the URI's bytes) and Python's (on its text). A segment with
#: anything else is no Orthanc ID, and orthanc-python cannot even hand a URI that is not UTF-8
#: to Python (it answers 500 "Internal error" itself): the plugin's routes leave such URIs to
#: Orthanc, which answers them as it does without the plugin (404: no such resource or route).
SEGMENT = r"([\x20-\x2e\x30-\x7e]+)"

#: (pattern, methods, handler) in registration order: Orthanc serves a URI by the first pattern it matches.
_ROUTES: list[tuple[re.Pattern[str], tuple[str, ...], Callable[..., None]]] = []


def dispatch(output: Any, uri: str, **request: Any) -> None:
    """The callback of every route."""
    for pattern, methods, handler in _ROUTES:
        if pattern.fullmatch(uri):
            if request["method"] in methods:
                handler(output, uri, **request)
            else:
                output.SendMethodNotAllowed(",".join(methods))
            return
    raise LookupError(f"No handler for the route of {uri}")  # Orthanc calls it for registered routes only


def register_route(orthanc: Any, pattern: str, methods: tuple[str, ...], handler: Callable[..., None]) -> None:
    """Serve URIs that match `pattern` (a regular expression, whole URI) with `handler`, for `methods`."""
    _ROUTES.append((re.compile(pattern), methods, handler))
    orthanc.RegisterRestCallback(pattern, dispatch)
