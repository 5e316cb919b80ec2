"""The engine's output step for re-identification data ("ReidentificationCertificates").

Between native's output and the fail-closed check, each anonymized file gets its Encrypted
Attributes Sequence (0400,0500), sealed for the project's recipients (reidentification/envelope.py): the
check then runs on the very bytes that are stored or answered. One `Sealing` per call: its
content key is wrapped for the recipients once. Without certificates the step changes nothing.

Sealing is randomized (a fresh IV per file, a fresh key per call), so a re-run cannot recognize
its result by the file's MD5: `recognizes` compares the rest of the file and the recipients.
"""
from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from ..dicom.filereader import Element, Header
from ..identity.project_settings import ProjectSettings
from ..dicom.vocabulary import ENCRYPTED_ATTRIBUTES_SEQUENCE


def _in_sequence(element: Element) -> bool:
    return bool(element.path[0]) and element.path[0][0][0] == ENCRYPTED_ATTRIBUTES_SEQUENCE


def without_encrypted_attributes(header: Header) -> Header:
    """The header without the Encrypted Attributes Sequence and what it holds, for the searches of
    leaks: its content is ciphertext, in which random bytes could spell a short text or a UID by
    chance, and which opens only with a recipient's private key."""
    kept = [element for element in header.elements if not _in_sequence(element)]
    if len(kept) == len(header.elements):
        return header
    return Header(kept, header.meta, header.searchable, header.after_pixel_data, header.inflated)


def without_added_sequence(output: Header, source: Header | None) -> Header:
    """For the fail-closed check: the output's header without the Encrypted Attributes Sequence
    the plugin added, i.e. one the source did not have (native never adds one; with certificates,
    a source's own is refused before). A sequence that came from the source stays in the
    search, as any other element native kept."""
    if source is None or any(_in_sequence(element) for element in source.elements):
        return output
    return without_encrypted_attributes(output)


def bytes_without_encrypted_attributes(data: bytes) -> bytes:
    """The file's bytes without its Encrypted Attributes Sequence (as they are if it cannot be
    walked: the whole file is then searched, as without the option)."""
    from ..reidentification.envelope import UnreadableFile, split_encrypted_attributes

    try:
        return split_encrypted_attributes(data)[0]
    except UnreadableFile:
        return data


class NoSealing:
    """Without certificates: outputs as native and the plan make them."""

    def __call__(self, source: Header, output: bytes) -> bytes:
        return output

    def recognizes(self, stored: bytes, output: bytes) -> bool:
        return False  # only the same bytes are the same result


class Sealing:
    """Adds the re-identification data of each instance of one call."""

    def __init__(self, recipients: tuple[Any, ...]) -> None:
        from ..reidentification.envelope import Reidentification, recipient_identifier  # needs cryptography

        self._reidentification = Reidentification(recipients)
        self._recipients = frozenset(recipient_identifier(recipient) for recipient in recipients)

    def __call__(self, source: Header, output: bytes) -> bytes:
        """`output` with the source's values of what it replaced or removed, sealed. The source is
        its header's bytes (up to the pixel data): what the data set is made of."""
        from ..reidentification.envelope import UnreadableFile

        try:
            return self._reidentification.add(source.searchable, output)
        except UnreadableFile as error:
            raise BadRequest(f"An instance cannot carry the re-identification data that ReidentificationCertificates "
                             f"asks for ({error}): nothing was stored. Transcode a deflated instance first; to "
                             f"anonymize again an instance that carries such data already (an earlier "
                             f"de-identification's), add \"Remove\": [\"EncryptedAttributesSequence\"]") from None

    def recognizes(self, stored: bytes, output: bytes) -> bool:
        """Whether `stored` is `output` sealed again for the same recipients: another run of this
        very call (the original values inside follow from the same source)."""
        from ..reidentification.envelope import UnreadableFile, envelope_recipients, split_encrypted_attributes

        try:
            stored_rest, stored_contents = split_encrypted_attributes(stored)
            output_rest, _ = split_encrypted_attributes(output)
            return (stored_rest == output_rest and len(stored_contents) == 1
                    and envelope_recipients(stored_contents[0]) == self._recipients)
        except (UnreadableFile, ValueError):
            return False


def sealing_for(settings: ProjectSettings) -> Sealing | NoSealing:
    """The output step of one call under the project's settings."""
    return Sealing(settings.recipients) if settings.recipients else NoSealing()
