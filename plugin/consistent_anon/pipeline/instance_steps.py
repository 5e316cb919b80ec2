"""One source instance through the pipeline: read → plan its identities and transforms → ask
native → check → (the checked output) → store → check as stored.

The steps are the same for every instance of a call, and hold nothing that changes: the call's
workers share one `InstanceSteps`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .deletions import Deletions
from ..errors import BurnedInPixels, NotFound, ResultDisappeared, VerificationFailed
from ..dicom.filereader import Header, UnreadableHeader, read_header
from ..dicom.vocabulary import DEIDENTIFICATION_METHOD_CODE_SEQUENCE, Path, orthanc_path
from ..pixels.blanking import CannotBlank, blank
from ..pixels.decision import CLEAN_PIXEL_DATA, PixelSettings, decide
from ..pixels.gate import BURNED_IN_ANNOTATION
from .identities import InstancePlan, NativeMarkers, plan_instance
from .option_plan import method_codes
from .options import AnonymizeRequest
from .port import OrthancPort, Stored
from ..identity.pseudonyms import Pseudonymizer
from .result_index import ResultIndex
from .sealing import sealing_for
from .transcoding import native_anonymized
from .output_check import anonymize_checked, check_output

#: What Orthanc answers a store with, when it kept the file (or had it already).
STORED = ("Success", "AlreadyStored")


@dataclass(frozen=True)
class Anonymized:
    """The checked output of one instance, and the plan it was checked against."""

    data: bytes
    plan: InstancePlan


class InstanceSteps:
    def __init__(self, port: OrthancPort, request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                 markers: NativeMarkers, uid_tags: frozenset[int], index: ResultIndex, deletions: Deletions,
                 pixels: PixelSettings = PixelSettings()) -> None:
        self._port = port
        self._request = request
        self._pseudonyms = pseudonyms
        self._markers = markers
        self._uid_tags = uid_tags
        self._index = index
        self._deletions = deletions
        self._pixels = pixels
        self._clean = CLEAN_PIXEL_DATA in request.deidentification_options
        self._compare = index.compares_results()
        self._seal = sealing_for(request.settings)  # the output step: once per call (one key wrap)

    def anonymized(self, instance_id: str) -> Anonymized:
        """The instance read, planned, de-identified by native under the plan, given its
        re-identification data (sealing.py: the output step) and checked. What this returns is
        final: it is stored (`store`), or answered (/instances/{id}/anonymize), as it is."""
        header = self._port.header(instance_id)
        plan = self.plan(header, instance_id)
        return Anonymized(self.ask_native(instance_id, header, plan), plan)

    def plan(self, header: Header, instance_id: str) -> InstancePlan:
        """The pixels' gate first (pixels/decision.py: BurnedInPixels refuses the instance before
        native is asked anything), then the source's identities and the transforms (transforms.py)."""
        pixels = decide(header, instance_id, self._request.settings.burned_in, self._clean, self._pixels.rules)
        plan = plan_instance(header, self._request, self._pseudonyms, self._markers, self._uid_tags)
        plan.pixels = pixels
        if plan.clean_pixel_data_applied:  # said only where the stored values change (PS3.15 E.3.1)
            replace = plan.native_body["Replace"]
            replace[str(BURNED_IN_ANNOTATION)] = "NO"
            plan.expected_values[Path.top(BURNED_IN_ANNOTATION)] = ("NO",)
            codes = orthanc_path(Path.top(DEIDENTIFICATION_METHOD_CODE_SEQUENCE))
            if replace.get(codes) == method_codes(self._request):  # the plugin's own, not the caller's
                replace[codes] = method_codes(self._request, pixels_cleaned=True)
        return plan

    def ask_native(self, instance_id: str, header: Header, plan: InstancePlan) -> bytes:
        """Native's de-identification under the plan, sealed, checked (VerificationFailed otherwise):
        what is checked is what is stored."""
        def output(body: dict[str, Any]) -> bytes:
            return self._seal(header, self._cleaned(plan, self._native(instance_id, body)))
        return anonymize_checked(plan, output, self._uid_tags, instance_id)

    @staticmethod
    def _cleaned(plan: InstancePlan, data: bytes) -> bytes:
        """Native's output with the decision's rectangles blanked in every frame, where the plan says so."""
        decision = plan.pixels if plan.clean_pixel_data_applied else None
        if decision is None:
            return data
        try:
            return blank(data, read_header(data), decision.rectangles)
        except UnreadableHeader as error:
            raise VerificationFailed(f"Native anonymization gave a file the plugin cannot read ({error})") from None
        except CannotBlank as error:  # e.g. a Transcode to a compressed syntax
            name = decision.rule.name if decision.rule is not None else ""
            raise BurnedInPixels(f'The pixels of an anonymized instance cannot be cleaned by the rule "{name}": '
                                 f"{error}; nothing of this call was stored") from None

    def _native(self, instance_id: str, body: dict[str, Any]) -> bytes:
        return native_anonymized(self._port, instance_id, body, self._request.whole_resources)

    def store(self, source_id: str) -> Stored:
        """Anonymize, check and store one source instance; where Orthanc already had its result,
        check it is this very output; where Orthanc transcodes what it stores, check what it kept."""
        made = self.anonymized(source_id)
        stored: Stored = {**self._port.store(made.data), "Source": source_id}  # type: ignore[typeddict-item]
        if stored.get("Status") not in STORED:  # e.g. FilteredOut
            raise VerificationFailed(f"Orthanc did not store an anonymized instance "
                                     f"(status {stored.get('Status')}); nothing was kept")
        try:
            self._after_store(stored, made)
        except BaseException as error:
            # Not counted as the call's yet, so no rollback would remove it: a result this call
            # stored never stays unfinished (unmarked, unchecked).
            if stored["Status"] == "Success":
                self._deletions.discard(stored["ID"])
            if isinstance(error, NotFound):  # removed since Orthanc answered (another call's rollback)
                raise ResultDisappeared() from None
            raise
        return stored

    def _after_store(self, stored: Stored, made: Anonymized) -> None:
        """A stored result's own steps: its pixel status, the comparison of a result that was there
        already, and where Orthanc transcodes on ingest, the check of what it kept."""
        if made.plan.pixels is not None:  # only instances at risk or unknown: one write each
            self._port.set_metadata("instances", stored["ID"], str(self._pixels.status_metadata),
                                    made.plan.pixels.record)
            stored["PixelStatus"] = made.plan.pixels.status
        if stored["Status"] == "AlreadyStored" and self._compare:
            self._index.same_result(stored, made.data, self._seal)
        if self._port.transcodes_on_ingest():
            self._check_as_stored(stored, made.plan)

    def _check_as_stored(self, stored: Stored, plan: InstancePlan) -> None:
        """Where Orthanc transcodes what it stores ("IngestTranscoding"), the plugin's check again,
        on what Orthanc kept: a lossy syntax gives the instance a new SOPInstanceUID, which the
        pseudonyms, references and re-runs could not follow. Unchecked or failed, it never stays
        (`store` discards it)."""
        problems = check_output(self._port.read_file(stored["ID"]), plan, self._uid_tags)
        if problems:
            raise VerificationFailed("Orthanc changed an anonymized instance as it stored it "
                                     "(IngestTranscoding), and it failed the plugin's check; nothing "
                                     "was kept: " + "; ".join(problems[:10]))
