"""Every deletion the engine makes: a failed call's results (rollback), a result that failed its
check as stored, and, with KeepSource false, the call's sources once their results are stored.

Each is decided and done under the ledger's guard, so that within this process a result is never
removed while its source is being deleted, nor the reverse; what other nodes do is caught by
looking again at Orthanc (a result gone is made again, a source gone keeps its result).
"""
from __future__ import annotations

from typing import Callable

from ..errors import NotFound, PluginError, VerificationFailed
from .ledger import Ledger
from .port import OrthancPort, Source, Stored


class Deletions:
    def __init__(self, port: OrthancPort, ledger: Ledger, log_error: Callable[[str], None]) -> None:
        self._port = port
        self._ledger = ledger
        self._log_error = log_error  # Orthanc's error level; never an identifier in the message

    # --- A failed call --------------------------------------------------------------------
    def roll_back(self, added: list[Stored]) -> list[Stored]:
        """Delete the results a failed call added, except those another call counts on or answered
        (left to it: see Ledger.orphan), and those whose source is gone (consumed or deleted
        meanwhile: the result is its only copy). A source another node deletes while its result
        is being removed gets the result back from the copy read just before. Answers the results
        kept as their sources are gone (the call's error names them). Best effort: the original
        error is the one to report."""
        kept = []
        for stored in added:
            try:
                if self._remove_result(stored):
                    kept.append(stored)
            except Exception as error:  # the call's own error is the one to report; this is logged
                self._log_error(f"Rollback could not remove anonymized instance {stored['ID']} "
                                f"({type(error).__name__}): remove it by hand")
        return kept

    def _remove_result(self, stored: Stored) -> bool:
        """Whether the result stays as its source is gone."""
        with self._ledger.guard():
            if not self._ledger.removable(stored["ID"]):
                self._ledger.orphan(stored["ID"], stored)
                return False
            if not self._port.exists("instances", stored["Source"]):
                return True
            copy = self._port.read_file(stored["ID"])
            self._port.delete("instances", stored["ID"])
        if not self._port.exists("instances", stored["Source"]):
            self._port.store(copy)
            return True
        return False

    def discard(self, instance_id: str) -> None:
        """Delete a result that failed its check as stored (or could not be checked): it never stays."""
        try:
            self._port.delete("instances", instance_id)
        except NotFound:
            pass  # gone already: nothing to do
        except PluginError as error:  # the check's own error is the one to report; this is logged
            self._log_error(f"Could not remove anonymized instance {instance_id}, which failed the "
                            f"plugin's check as stored ({type(error).__name__}): remove it by hand")

    # --- KeepSource false -----------------------------------------------------------------
    def consume(self, results: list[Stored], sources: list[Source], targets: list[str],
                remake: Callable[[str], Stored]) -> None:
        """Delete each source instance of the call, and those only (others may have arrived in the
        same study meanwhile), each only while its result is there; Orthanc removes the parents
        left empty. A result removed meanwhile (another node's call rolled back) is made again
        from its source with `remake` before the source goes; one removed while its source is
        being deleted is stored again from the copy read just before."""
        series_of = {source["ID"]: source["ParentSeries"] for source in sources}
        consumed = set(targets) | set(series_of)
        for series in set(series_of.values()):
            consumed |= self._lineage(series)
        # Known before the first deletion: a call on a series emptied while this one still runs
        # hears that it was consumed (a resource marked but left in place is never asked about).
        self._ledger.consumed(consumed)
        for stored in results:
            self._consume_one(stored, remake)

    def _consume_one(self, stored: Stored, remake: Callable[[str], Stored]) -> None:
        copy = self._copy_of(stored, remake)
        with self._ledger.guard():
            if not self._port.exists("instances", stored["ID"]):
                copy = self._copy_of(stored, remake)
            try:
                self._port.delete("instances", stored["Source"])
            except NotFound:
                pass  # deleted meanwhile: nothing left to do
            self._ledger.consumed([stored["Source"]])
        if not self._port.exists("instances", stored["ID"]):
            self._port.store(copy)

    def _copy_of(self, stored: Stored, remake: Callable[[str], Stored]) -> bytes:
        """The file of a result, made again from its source if the result is gone."""
        try:
            return self._port.read_file(stored["ID"])
        except NotFound:
            pass  # removed meanwhile: made again below
        if remake(stored["Source"])["ID"] != stored["ID"]:
            raise VerificationFailed("An anonymized instance made again came out under another identity: "
                                     "the source is kept")
        return self._port.read_file(stored["ID"])

    def _lineage(self, series: str) -> set[str]:
        """The series, its study and patient; what another call consumed already is left out."""
        try:
            study = self._port.parent_of("series", series)
            return {series, study, self._port.parent_of("studies", study)}
        except NotFound:
            return {series}
