"""The client of the text reader (ocr/text_service.py): one image in, its lines of text out."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from functools import partial
from typing import Any

from .pixel_text import TextLine, TextReaderError, TextReading


def read_text(url: str, timeout: float, image: bytes) -> list[TextLine]:
    """The lines the service at `url` reads in `image`; TextReaderError when it cannot."""
    request = urllib.request.Request(url.rstrip("/") + "/read-text", data=image, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return _lines(json.loads(answer.read()))
    except urllib.error.HTTPError as error:
        raise TextReaderError(f"the text reader answered HTTP {error.code}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise TextReaderError(f"the text reader at {url} cannot be reached ({reason})") from None
    except (ValueError, TypeError):
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
