"""The text reader of verify-anonymization: reads the text in an image, over HTTP on loopback.

Optional, and a process of its own, never Orthanc's: text recognition (RapidOCR on ONNX Runtime,
its models inside its wheel) needs packages Orthanc's Python does not have and should not load,
and it is slow (a few tenths of a second per frame), so it runs only when verify asks, never
when anything is stored. The plugin sends each frame it wants read as an image (Orthanc's PNG
preview of the frame) and matches the lines it gets back against the source's identifiers
itself: this service never sees an identifier, and keeps nothing.

    POST /read-text   body: an image (PNG, JPEG)  ->  {"Lines": [{"Text", "Box": [x0, y0, x1, y1], "Score"}]}
    GET  /ready       -> {"Ready": true} once the models are loaded

Run: `python ocr/text_service.py --port 8043` in the environment of ocr/requirements.txt, and set
ConsistentAnonymization.PixelTextReader.Url to http://127.0.0.1:8043 (docs/pixels.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The largest image accepted (a 4096 x 4096 RGB frame as PNG is well below).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: How long a client may keep a connection silent (a body announced and never sent).
CLIENT_TIMEOUT = 60


class TextReader:
    """RapidOCR, loaded once: each call reads one image's lines of text."""

    def __init__(self) -> None:
        import cv2
        import numpy
        from rapidocr_onnxruntime import RapidOCR
        self._engine, self._cv2, self._numpy = RapidOCR(), cv2, numpy
        self._lock = threading.Lock()  # one image at a time: requests wait, none is blocked by a slow client

    def lines(self, image: bytes) -> list[dict[str, Any]]:
        pixels = self._cv2.imdecode(self._numpy.frombuffer(image, self._numpy.uint8), self._cv2.IMREAD_COLOR)
        if pixels is None:
            raise ValueError("the body is not an image OpenCV can decode (PNG, JPEG)")
        with self._lock:
            found, _ = self._engine(pixels)
        return [{"Text": text, "Box": _box(corners), "Score": round(float(score), 3)}
                for corners, text, score in found or []]


def _box(corners: list[list[float]]) -> list[int]:
    """The rectangle around the four corners RapidOCR gives: x0, y0, x1, y1 in pixels."""
    xs, ys = [point[0] for point in corners], [point[1] for point in corners]
    return [int(min(xs)), int(min(ys)), int(max(xs) + 0.5), int(max(ys) + 0.5)]


def handler_for(reader: TextReader) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/ready":
                self._answer(200, {"Ready": True})
            else:
                self._answer(404, {"Message": "Unknown resource"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/read-text":
                self._answer(404, {"Message": "Unknown resource"})
                return
            length = self.headers.get("Content-Length", "")
            if not length.isdigit() or not 0 < int(length) <= MAX_IMAGE_BYTES:
                self._answer(400, {"Message": f"Send one image of at most {MAX_IMAGE_BYTES} bytes, with its length"})
                return
            try:
                self._answer(200, {"Lines": reader.lines(self.rfile.read(int(length)))})
            except ValueError as error:
                self._answer(400, {"Message": str(error)})
            except Exception as error:  # the engine failed on this image: said, and the service goes on
                print(f"text reader: {type(error).__name__} on an image", file=sys.stderr, flush=True)
                self._answer(500, {"Message": f"The image could not be read ({type(error).__name__})"})

        def _answer(self, status: int, document: dict[str, Any]) -> None:
            body = json.dumps(document).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per frame read would say nothing useful

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8043)
    arguments = parser.parse_args()
    server = ThreadingHTTPServer((arguments.host, arguments.port), handler_for(TextReader()))
    print(f"reading text on http://{arguments.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
