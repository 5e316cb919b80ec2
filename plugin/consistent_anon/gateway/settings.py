"""`ConsistentAnonymization.OnArrival`: what arrives over DICOM is anonymized by the plugin, its
source deleted (unless KeepSource), its result sent to a destination of Orthanc's configuration.
Every member is checked at start: an unknown one, at any depth, stops Orthanc, as does a
destination Orthanc does not know."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, PluginError
from ..identity.config import SECTION, USER_METADATA_RANGE, PluginConfig
from ..pipeline.options import parse_request

OPTION = f"{SECTION}.OnArrival"
MEMBERS = frozenset({"Project", "KeepSource", "Destination", "CallingAets", "Request", "Metadata"})
#: The user metadata (by index) of a source instance that holds its mark (state.py).
DEFAULT_METADATA = 9733
#: Members of a request body the gateway decides itself: refused in `Request`, with a message saying where they go.
GATEWAY_DECIDES = frozenset({"Project", "KeepSource", "Asynchronous", "Synchronous", "Resources", "Priority"})
#: The members `Request` may hold: how an instance is de-identified (a typo stops Orthanc, as
#: anywhere in the section, where a call's body would silently ignore it as native does).
REQUEST_MEMBERS = frozenset({"Keep", "Remove", "Replace", "Force", "KeepPrivateTags", "PrivateCreator",
                             "DicomVersion", "Transcode", "LossyQuality", "KeepLabels", "ShiftDates",
                             "DeidentificationOptions"})
MODALITIES, PEERS = "modalities", "peers"
#: The configuration options that list each kind of destination, and that keep them in the database instead.
DESTINATION_LISTS = {MODALITIES: ("DicomModalities", "DicomModalitiesInDatabase"),
                     PEERS: ("OrthancPeers", "OrthancPeersInDatabase")}
MAX_AET = 16  # an application entity title, PS3.5 AE


@dataclass(frozen=True)
class GatewaySettings:
    project: str
    keep_source: bool = False
    destination: str | None = None
    #: "modalities" or "peers" (the REST API's name of the list); None where it is looked up when
    #: sending (a destination kept in Orthanc's database rather than its configuration).
    destination_kind: str | None = None
    calling_aets: frozenset[str] | None = None  # None: whatever arrives over DICOM
    request: dict[str, Any] = field(default_factory=dict)  # the body of each anonymization
    metadata: int = DEFAULT_METADATA

    def body(self) -> str:
        """The request body of each anonymization: `Request`, the project, the source kept (the
        gateway deletes it itself, once the result is stored, checked and delivered)."""
        return json.dumps({**self.request, "Project": self.project, "KeepSource": True}, sort_keys=True)

    def accepts(self, origin: str | None, calling_aet: str | None) -> bool:
        """Whether an instance with this origin and calling AET (its metadata) is the gateway's."""
        return origin == "DicomProtocol" and (self.calling_aets is None or calling_aet in self.calling_aets)


def parse_on_arrival(value: Any, config: PluginConfig, orthanc_configuration: dict[str, Any]) -> GatewaySettings | None:
    """The setting, checked against the plugin's own configuration and Orthanc's; None if absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{OPTION} must be an object")
    unknown = set(value) - MEMBERS
    if unknown:
        raise ConfigurationError(f"{OPTION}: unknown option(s) {sorted(unknown)}")
    if config.fresh_pseudonyms_per_call:  # each call of the gateway covers the instances of one read
        raise ConfigurationError(f"{OPTION} cannot be used with ConsistentAnonymization.FreshPseudonymsPerCall: "
                                 "a study arriving over several reads of Orthanc's changes would become several")
    project = value.get("Project", config.default_project)
    if not isinstance(project, str) or project not in config.project_keys:
        raise ConfigurationError(f"{OPTION}.Project must name a declared project (or the default project)")
    keep_source = value.get("KeepSource", False)
    if not isinstance(keep_source, bool):
        raise ConfigurationError(f"{OPTION}.KeepSource must be true or false")
    destination, kind = _destination(value.get("Destination"), orthanc_configuration)
    return GatewaySettings(project, keep_source, destination, kind, _calling_aets(value.get("CallingAets")),
                           _request(value.get("Request", {})), _metadata(value.get("Metadata"), config))


def _destination(name: Any, configuration: dict[str, Any]) -> tuple[str | None, str | None]:
    """The destination and the list it is in; a name in neither list of the configuration is
    refused, unless Orthanc keeps that kind of destination in its database."""
    if name is None:
        return None, None
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{OPTION}.Destination must be the name of a DICOM modality or an Orthanc peer")
    found = [kind for kind, (listed, _) in DESTINATION_LISTS.items()
             if isinstance(configuration.get(listed), dict) and name in configuration[listed]]
    if len(found) > 1:
        raise ConfigurationError(f"{OPTION}.Destination names both a DICOM modality and an Orthanc peer: "
                                 "rename one of them")
    if found:
        return name, found[0]
    if any(configuration.get(in_database) is True for _, in_database in DESTINATION_LISTS.values()):
        return name, None
    raise ConfigurationError(f"{OPTION}.Destination {name!r} is neither in DicomModalities nor in OrthancPeers")


def _calling_aets(aets: Any) -> frozenset[str] | None:
    if aets is None:
        return None
    if (not isinstance(aets, list) or not aets
            or not all(isinstance(aet, str) and 0 < len(aet.strip()) <= MAX_AET for aet in aets)):
        raise ConfigurationError(f"{OPTION}.CallingAets must list application entity titles "
                                 f"(1 to {MAX_AET} characters), or be left out for every sender")
    return frozenset(aet.strip() for aet in aets)


def _request(request: Any) -> dict[str, Any]:
    """The options of each anonymization, as a body of POST /instances/{id}/anonymize; read as
    any body is, so that what a call would refuse stops Orthanc at start instead."""
    if not isinstance(request, dict):
        raise ConfigurationError(f"{OPTION}.Request must be an object: the body of an anonymization")
    decided = GATEWAY_DECIDES & set(request)
    if decided:
        raise ConfigurationError(f"{OPTION}.Request: {sorted(decided)} are the gateway's (set OnArrival.Project "
                                 "and OnArrival.KeepSource)")
    unknown = set(request) - REQUEST_MEMBERS - GATEWAY_DECIDES
    if unknown:
        raise ConfigurationError(f"{OPTION}.Request: unknown option(s) {sorted(unknown)}")
    try:
        parse_request(json.dumps(request))
    except PluginError as error:
        raise ConfigurationError(f"{OPTION}.Request: {error.message}") from None
    return request


def _metadata(index: Any, config: PluginConfig) -> int:
    if index is None:
        index = DEFAULT_METADATA
    if isinstance(index, bool) or not isinstance(index, int) or index not in USER_METADATA_RANGE:
        raise ConfigurationError(f"{OPTION}.Metadata must be a user metadata index "
                                 f"({USER_METADATA_RANGE.start}-{USER_METADATA_RANGE.stop - 1})")
    if index == config.options_metadata:
        raise ConfigurationError(f"{OPTION}.Metadata must differ from {SECTION}.OptionsMetadata")
    return index
