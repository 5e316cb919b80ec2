"""The `orthanc` module's built-in REST calls and file read, carried over HTTP to a real Orthanc:
the plugin's RestPort then runs in the test process against a real server, only the transport
differs."""
from __future__ import annotations


class OrthancOverHttp:
    """RestApiGet/Post/Put/Delete and GetDicomForInstance as orthanc-python offers them; errors
    raise OrthancException with Orthanc's error code and message, as inside Orthanc."""

    class OrthancException(Exception):
        pass

    #: Orthanc answers a route that matches no resource with an empty 404; inside Orthanc the same
    #: call raises its UnknownResource error.
    UNKNOWN_RESOURCE = 17

    def __init__(self, server) -> None:
        self._server = server

    def _answer(self, method: str, uri: str, body: bytes | str | None = None) -> bytes:
        answer = self._server.request(method, uri, data=body)
        if answer.status_code != 200:
            try:
                error = answer.json()
                raise self.OrthancException(int(error.get("OrthancStatus", -1)), error.get("Message", ""))
            except ValueError:
                code = self.UNKNOWN_RESOURCE if answer.status_code == 404 else -1
                raise self.OrthancException(code, answer.text or "Unknown resource") from None
        return answer.content

    def RestApiGet(self, uri: str) -> bytes:
        return self._answer("GET", uri)

    def GetDicomForInstance(self, instance_id: str) -> bytes:
        """Inside Orthanc an SDK call; over HTTP the route that gives the same bytes and errors."""
        return self._answer("GET", f"/instances/{instance_id}/file")

    def RestApiPost(self, uri: str, body: bytes | str) -> bytes:
        return self._answer("POST", uri, body)

    def RestApiPut(self, uri: str, body: bytes | str) -> bytes:
        return self._answer("PUT", uri, body)

    def RestApiDelete(self, uri: str) -> None:
        self._answer("DELETE", uri)

    def GenerateRestApiAuthorizationToken(self) -> str:
        """No token from outside Orthanc: the test servers it talks to need no credentials."""
        return ""

    def LogInfo(self, message: str) -> None:
        pass
