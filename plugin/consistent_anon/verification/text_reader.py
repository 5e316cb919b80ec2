"""The client of the text reader (ocr/text_service.py): one image in, its lines of text out.

Frames hold what the patient's header held: they go straight to the configured address, never
through a proxy the environment names (http_proxy), which urllib would otherwise use even for
loopback."""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from functools import partial
from typing import Any

from .pixel_text import TextLine, TextReaderError, TextReading

#: The largest answer read: a frame's lines of text take a few kB.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read_text(url: str, timeout: float, image: bytes) -> list[TextLine]:
    """The lines the service at `url` reads in `image`; TextReaderError when it cannot (`timeout`:
    how long the service may stay silent)."""
    request = urllib.request.Request(url.rstrip("/") + "/read-text", data=image, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with _DIRECT.open(request, timeout=timeout) as answer:
            body = answer.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as error:
        raise TextReaderError(f"the text reader answered HTTP {error.code}") from None
    except (OSError, http.client.HTTPException) as error:  # refused, unreachable, silent too long, cut short
        reason = getattr(error, "reason", None) or type(error).__name__
        raise TextReaderError(f"the text reader at {url} cannot be reached ({reason})", unavailable=True) from None
    if len(body) > MAX_ANSWER_BYTES:
        raise TextReaderError(f"the text reader's answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        return _lines(json.loads(body))
    except (ValueError, TypeError, ArithmeticError):
        raise TextReaderError("the text reader's answer is not understood") from None


def _lines(document: Any) -> list[TextLine]:
    lines = document.get("Lines") if isinstance(document, dict) else None
    if not isinstance(lines, list):
        raise ValueError("no Lines")
    found = []
    for line in lines:
        if not isinstance(line, dict) or not isinstance(line.get("Text"), str) \
                or not (isinstance(line.get("Box"), list) and len(line["Box"]) == 4):
            raise ValueError("a line without Text or Box")
        found.append(TextLine(line["Text"], tuple(int(value) for value in line["Box"])))
    return found


def text_reading(url: str, timeout: float, frames_per_instance: int) -> TextReading:
    return TextReading(partial(read_text, url, timeout), frames_per_instance)
