"""The plugin's errors, in the domain's words: what went wrong, never how it is answered.

The core raises these; the HTTP status, Orthanc's ErrorCode and the native-shaped JSON body of
each are decided in one place, `orthanc/http_answers.py` (the adapter sends them, a failed job shows them).
"""
from __future__ import annotations

import re


#: The longest run of a caller's text an error message repeats (IDs, UIDs and tags are shorter),
#: and the longest message: a caller's 7 MB "Source" comes back as its first characters.
ECHOED = 64
MESSAGE_LENGTH = 2048
#: Tried only where a run starts (after a space, a "/" or at the start): linear in the text.
_LONG_RUN = re.compile(r"(?<![^\s/])[^\s/]{%d,}" % (ECHOED + 1))


def bounded(text: str) -> str:
    """`text` with every run of over ECHOED characters without a space or "/" cut to its first
    ECHOED characters and "...", then cut to MESSAGE_LENGTH: the one place where what a message
    or an error's URI echoes of a caller's text is bounded, whatever builds it."""
    text = _LONG_RUN.sub(lambda run: run.group()[:ECHOED] + "...", text)
    return text if len(text) <= MESSAGE_LENGTH else text[:MESSAGE_LENGTH - 3] + "..."


class PluginError(Exception):
    """A call that cannot be done, or failed; `message` says why, without an identifier.

    `orthanc_code` and `description` are Orthanc's ErrorCode and its text where Orthanc itself
    raised the error (a built-in call the port made), None where the plugin did: the class then
    decides them (orthanc/http_answers.py).
    """

    def __init__(self, message: str, *, orthanc_code: int | None = None, description: str | None = None) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message
        self.orthanc_code = orthanc_code
        self.description = None if description is None else bounded(description)


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


#: What a failed call's message says of its results when it removed them all; `PartlyKept` says
#: otherwise where some had to stay.
NOTHING_KEPT = "nothing of this call was kept"
#: At most this many series are named in a message (all of them are in the audit entry).
SERIES_NAMED = 10


class PartlyKept(PluginError):
    """A call failed after storing results whose sources were deleted meanwhile: those results
    stay (each is the only copy of its source), the rest was removed. The answer keeps the
    cause's status; its message, the job's error and the audit entry say how many stay, and where."""

    def __init__(self, cause: PluginError, series: list[str], instances: int, marked: bool) -> None:
        named = ", ".join(series[:SERIES_NAMED]) + (f" and {len(series) - SERIES_NAMED} more" if
                                                    len(series) > SERIES_NAMED else "")
        mark = ("they carry this call's options mark, so a call under the same options on their sources "
                "counts them as done" if marked else "their series could not be marked with this call's options")
        kept = (f"{instances} anonymized instance(s) of this call were kept, in series {named}, their "
                f"sources being gone (each is the only copy left of its source; {mark}); "
                "nothing else of this call was kept")
        text = (cause.message.replace(NOTHING_KEPT, kept) if NOTHING_KEPT in cause.message
                else f"{cause.message}; {kept}")
        super().__init__(text)
        self.cause = cause
        self.series = tuple(series)
        self.instances = instances


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
