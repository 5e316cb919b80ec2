"""What a call does with one source instance's pixels, decided from its header before native is
asked anything: nothing (not at risk), blank them by a rule, store them marked as accepted or as
flagged, or refuse the instance (and so the whole call: nothing of it is stored).

The policy (request member and project setting "BurnedInAnnotation"):
- "Refuse" (default): an instance at risk (BurnedInAnnotation YES) is refused; an unknown one is
  stored and flagged;
- "Flag": both are stored and flagged (verify then reports them, and is not Clean);
- "Accept": the caller accepts their pixels as they are; both are stored, marked as accepted.
Under the option "CleanPixelData", an instance at risk or unknown is cleaned by the first rule that
matches its header; with no rule, it is refused naming its device, unless the policy is "Accept".
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dicom.filereader import Header
from ..errors import BurnedInPixels
from ..identity.config import DEFAULT_PIXEL_STATUS_METADATA
from ..identity.project_settings import BURNED_IN_POLICIES
from .blanking import CannotBlank, layout, outside
from .gate import AT_RISK, Risk, classify, device
from .rules import Rectangle, Rule, RuleSet

REFUSE, FLAG, ACCEPT = BURNED_IN_POLICIES
#: What a result's pixel status says (the instance metadata, verify's report).
CLEANED, ACCEPTED, FLAGGED = "Cleaned", "Accepted", "Flagged"
CLEAN_PIXEL_DATA = "CleanPixelData"
_WAYS_OUT = ('ask for "DeidentificationOptions": ["CleanPixelData"] to blank it by a rule, or give '
             '"BurnedInAnnotation": "Accept" (its pixels are stored as they are, marked as accepted) or "Flag" '
             '(stored, marked as not cleaned)')


@dataclass(frozen=True)
class PixelSettings:
    """The plugin's settings for pixels: the rules, and the instance metadata (a user metadata
    index, "PixelStatusMetadata") that holds each result's pixel status (`PixelDecision.record`)."""

    rules: RuleSet = RuleSet()
    status_metadata: int = DEFAULT_PIXEL_STATUS_METADATA


@dataclass(frozen=True)
class PixelDecision:
    """An instance at risk or unknown, and what is done with its pixels."""

    status: str
    risk: Risk
    rule: Rule | None = None
    #: What is blanked (Cleaned): the rule's rectangles, and all but the kept regions.
    rectangles: tuple[Rectangle, ...] = ()

    @property
    def record(self) -> str:
        """The result's pixel status as it is stored with it: "Cleaned: <rule>", "Accepted", "Flagged"."""
        return f"{CLEANED}: {self.rule.name}" if self.rule is not None else self.status


def decide(header: Header, instance_id: str, policy: str, clean: bool, rules: RuleSet) -> PixelDecision | None:
    """The decision for one source instance (None: not at risk, nothing to do), or BurnedInPixels."""
    risk = classify(header)
    if not risk.at_risk_or_unknown:
        return None
    if clean:
        return _cleaned(header, instance_id, policy, risk, rules)
    if policy == ACCEPT:
        return PixelDecision(ACCEPTED, risk)
    if risk.level == AT_RISK and policy == REFUSE:
        raise BurnedInPixels(f"Instance {instance_id} may show the patient's identity in its pixels "
                             f"({risk.reason}): {_WAYS_OUT}; nothing of this call was stored")
    return PixelDecision(FLAGGED, risk)


def _cleaned(header: Header, instance_id: str, policy: str, risk: Risk, rules: RuleSet) -> PixelDecision:
    """Under CleanPixelData: the first rule that matches, if its pixels can be blanked here."""
    rule = rules.match(header)
    if rule is None:
        if policy == ACCEPT:
            return PixelDecision(ACCEPTED, risk)
        raise BurnedInPixels(f"Instance {instance_id} ({risk.reason}) is to have its pixels cleaned, but no pixel "
                             f"rule matches its device, {device(header)}: add a rule for it (PixelRules, "
                             f'docs/pixels.md), or give "BurnedInAnnotation": "Accept"; nothing of this call '
                             f"was stored")
    try:
        shape = layout(header)
        rectangles = rule.rectangles
        if rule.keep_regions:
            rectangles += outside(_ultrasound_regions(header), shape.columns, shape.rows)
    except CannotBlank as error:
        raise BurnedInPixels(f'Instance {instance_id} cannot have its pixels cleaned by the rule "{rule.name}": '
                             f"{error}; nothing of this call was stored") from None
    return PixelDecision(CLEANED, risk, rule, rectangles)


SEQUENCE_OF_ULTRASOUND_REGIONS = 0x00186011
#: RegionLocationMinX0, MinY0, MaxX1, MaxY1 (the max included).
REGION_LOCATION = (0x00186018, 0x0018601A, 0x0018601C, 0x0018601E)


def _ultrasound_regions(header: Header) -> tuple[Rectangle, ...]:
    """The regions an ultrasound declares, as rectangles (the max excluded); CannotBlank if none."""
    corners: dict[int, dict[int, int]] = {}
    for element in header.elements:
        steps = element.path.steps
        if len(steps) == 1 and steps[0][0] == SEQUENCE_OF_ULTRASOUND_REGIONS and element.tag in REGION_LOCATION:
            try:
                corners.setdefault(steps[0][1], {})[element.tag] = int(element.values[0])
            except (IndexError, ValueError):
                raise CannotBlank("a region of its SequenceOfUltrasoundRegions has no location") from None
    regions = tuple((c[REGION_LOCATION[0]], c[REGION_LOCATION[1]], c[REGION_LOCATION[2]] + 1, c[REGION_LOCATION[3]] + 1)
                    for c in corners.values() if len(c) == 4)
    if not regions or len(regions) != len(corners):
        raise CannotBlank("it declares no complete SequenceOfUltrasoundRegions to keep")
    return regions
