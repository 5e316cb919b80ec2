"""The plugin's errors, in the domain's words: what went wrong, never how it is answered.

The core raises these; the HTTP status, Orthanc's ErrorCode and the native-shaped JSON body of
each are decided in one place, `orthanc/http_answers.py` (the adapter sends them, a failed job shows them).
"""
from __future__ import annotations


class PluginError(Exception):
    """A call that cannot be done, or failed; `message` says why, without an identifier.

    `orthanc_code` and `description` are Orthanc's ErrorCode and its text where Orthanc itself
    raised the error (a built-in call the port made), None where the plugin did: the class then
    decides them (orthanc/http_answers.py).
    """

    def __init__(self, message: str, *, orthanc_code: int | None = None, description: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.orthanc_code = orthanc_code
        self.description = description


class Refused(PluginError):
    """The request cannot be done as asked: it is the caller's to change (a 4xx), not a failure."""


class BadRequest(Refused):
    """Options or a body native refuses, or that would give a wrong result."""


class BadFileFormat(BadRequest):
    """What native answers for a body it cannot parse or a member of the wrong type."""


class Forbidden(Refused):
    """Something the configuration does not allow."""


class NotFound(Refused):
    """No such resource (or it went away while the call ran)."""


class Conflict(Refused):
    """The call would store results that collide with results made under other options, or lost
    a race with another call."""


class ResultDisappeared(Conflict):
    """A result this call counted on went away while it ran: nothing of the call was kept."""

    def __init__(self) -> None:
        super().__init__("An anonymized instance disappeared while the call ran (a concurrent call was "
                         "rolled back, someone deleted it, or Orthanc recycled it to stay within "
                         "MaximumStorageSize/MaximumPatientCount): nothing was deleted; call again")


class SubjectRequired(Refused):
    """A patient outside the project's subject table, where the project requires one."""


class VerificationFailed(PluginError):
    """The anonymized output did not pass the fail-closed check: nothing was stored."""


class StoredButUnfinished(PluginError):
    """The call's result is stored and checked, but a step after it (options mark, labels, the
    sources' deletion) failed: the result stays; `cause` is the step's error."""

    def __init__(self, cause: PluginError) -> None:
        super().__init__(f"The anonymized result is stored and checked, but a step after it failed: {cause.message}")
        self.cause = cause


class ConfigurationError(ValueError):
    """A wrong setting: the plugin refuses to start rather than pseudonymize with a weak key."""


class JobCanceled(Exception):
    """Raised inside a running job once it has been canceled."""


class BurnedInPixels(Refused):
    """An instance whose pixels may show the patient's identity, neither cleaned nor accepted as
    it is by the caller: nothing of the call is stored (a 4xx: the caller's to decide)."""
