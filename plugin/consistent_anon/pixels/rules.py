"""Rules that say where a device burns its text: conditions on header attributes, rectangles.

Two sources, one model. The field's own rule set is read in the format of the `deid` package's
rule file (`deid/data/deid.dicom`, the port of CTP's DicomPixelAnonymizer signatures): `LABEL`
blocks of conditions `contains|notcontains|equals|notequals FIELD value`, `missing|empty|present
FIELD`, joined by `+` (and) or `||` (or), read left to right, and rectangles `coordinates
xmin,ymin,xmax,ymax` or `ctpcoordinates x,y,width,height` (x along the columns, the max excluded).
`contains` is a case-insensitive regular expression searched in the value, `equals` a
case-insensitive comparison. A site's own rules come from the configuration (`site_rule`); they
are tried before the file's. Only the file's graylist labels with rectangles clean anything: its
whitelist and blacklist, and labels without rectangles, only flag in `deid` and are not used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..dicom.filereader import Header
from ..dicom.vocabulary import parse_tag

#: A rectangle of pixels: first column, first row, column after the last, row after the last.
Rectangle = tuple[int, int, int, int]
Test = Callable[[Header], bool]


class RuleError(ValueError):
    """A rule that cannot be used: the plugin refuses to start."""


@dataclass(frozen=True)
class Rule:
    """One device's signature: `conditions` are (operator, test) pairs, the first operator ignored."""

    name: str
    conditions: tuple[tuple[str, Test], ...]
    rectangles: tuple[Rectangle, ...]
    #: Keep only the regions the instance declares (SequenceOfUltrasoundRegions), blank the rest.
    keep_regions: bool = False

    def matches(self, header: Header) -> bool:
        result = False
        for index, (operator, test) in enumerate(self.conditions):
            if index == 0:
                result = test(header)
            elif operator == "and":
                result = result and test(header)
            else:
                result = result or test(header)
        return result


#: Where an attribute the dictionary does not name is looked for: a tag no header holds.
_NO_TAG = -1


def _field(name: str, strict: bool) -> int:
    """The attribute's tag; one the dictionary does not name is an error in a site's rule, and
    an attribute no instance holds in the field's file (it names a few repeating-group ones)."""
    tag = parse_tag(name)
    if tag is None:
        if strict:
            raise RuleError(f"unknown attribute {name!r}")
        return _NO_TAG
    return tag


def _texts(header: Header, tag: int) -> tuple[str, ...]:
    """A value as the rules compare it: each value, and all of them joined as DICOM writes them."""
    values = tuple(v.strip().lower() for v in header.values(tag))
    return values + ("\\".join(values),) if len(values) > 1 else values


def _test(action: str, name: str, value: str, strict: bool) -> Test:
    """One condition as a test of a header."""
    tag = _field(name, strict)
    if action in ("missing", "empty", "present"):
        return {"missing": lambda h: tag not in h,
                "empty": lambda h: tag in h and not h.text(tag).strip(),
                "present": lambda h: tag in h}[action]
    if action in ("contains", "notcontains"):
        try:
            pattern = re.compile(value.strip(), re.IGNORECASE)
        except re.error as error:
            raise RuleError(f"{value!r} is not a regular expression ({error})") from None
        found: Test = lambda h: any(pattern.search(text) for text in _texts(h, tag))
    elif action in ("equals", "notequals"):
        wanted = value.strip().lower()
        found = lambda h: wanted in _texts(h, tag)
    else:
        raise RuleError(f"unknown condition {action!r}")
    return (lambda h: not found(h)) if action.startswith("not") else found


#: The one kept area the plugin does: the regions an ultrasound declares.
KEEP_ULTRASOUND_REGIONS = "from:SequenceOfUltrasoundRegions"
_ACTIONS = ("contains", "notcontains", "equals", "notequals", "missing", "empty", "present")
#: Where a line goes on with another condition: an operator followed by a condition's action.
_JOIN = re.compile(r"\s*(\+|\|\|)\s*(?=(?:%s)\s)" % "|".join(_ACTIONS), re.IGNORECASE)


def _line_conditions(line: str, operator: str) -> list[tuple[str, Test]]:
    """The conditions of one line: `+` or `||` inside a value (`DERIVED+SECONDARY`) stays in it."""
    parts = _JOIN.split(line)
    conditions = []
    for index in range(0, len(parts), 2):
        words = parts[index].split(None, 2)
        if not words or words[0].lower() not in _ACTIONS or len(words) < 2:
            raise RuleError(f"cannot read the condition {parts[index]!r}")
        value = words[2] if len(words) > 2 else ""
        if words[0].lower() not in ("missing", "empty", "present") and not value:
            raise RuleError(f"the condition {parts[index]!r} has no value")
        joined = operator if index == 0 else ("and" if parts[index - 1] == "+" else "or")
        conditions.append((joined, _test(words[0].lower(), words[1], value, False)))
    return conditions


def _rectangle(text: str, ctp: bool) -> Rectangle:
    try:
        a, b, c, d = (int(v) for v in text.split(","))
    except ValueError:
        raise RuleError(f"{text!r} is not four whole numbers") from None
    rectangle = (a, b, a + c, b + d) if ctp else (a, b, c, d)
    if min(rectangle) < 0 or rectangle[2] <= rectangle[0] or rectangle[3] <= rectangle[1]:
        raise RuleError(f"{text!r} is not a rectangle")
    return rectangle


@dataclass
class _Label:
    """A LABEL block as it is read."""

    name: str
    usable: bool  # in the graylist
    conditions: list[tuple[str, Test]]
    rectangles: list[Rectangle]
    keep_regions: bool = False


def _label_line(label: _Label, line: str) -> None:
    """One line inside a LABEL block: a rectangle, or conditions."""
    keyword = line.split(None, 1)[0].lower()
    if keyword in ("coordinates", "ctpcoordinates"):
        label.rectangles.append(_rectangle(line.split(None, 1)[1], keyword == "ctpcoordinates"))
    elif keyword == "keepcoordinates" and line.split(None, 1)[1].strip() == KEEP_ULTRASOUND_REGIONS:
        label.keep_regions = True
    elif keyword in ("keepcoordinates", "ctpkeepcoordinates"):
        label.usable = False  # other kept areas are not done: the label cleans nothing here
    elif line.startswith("+") or line.startswith("||"):
        operator = "and" if line.startswith("+") else "or"
        label.conditions.extend(_line_conditions(line.lstrip("+|").strip(), operator))
    else:
        label.conditions.extend(_line_conditions(line, "and"))


def deid_rules(text: str, origin: str) -> list[Rule]:
    """The rules of a file in the `deid` format that clean something (graylist labels with
    rectangles), in the file's order; RuleError names the origin and line of what cannot be read."""
    labels: list[_Label] = []
    section = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith(("LABEL", "#")) else raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("%"):
                section = line.lower()
            elif section.startswith("%filter") and line.startswith("LABEL"):
                labels.append(_Label(line[len("LABEL"):].strip(), section == "%filter graylist", [], []))
            elif section.startswith("%filter") and labels:
                _label_line(labels[-1], line)
        except RuleError as error:
            raise RuleError(f"{origin}, line {number}: {error}") from None
    return [Rule(label.name, tuple(label.conditions), tuple(label.rectangles), label.keep_regions)
            for label in labels if label.usable and (label.rectangles or label.keep_regions) and label.conditions]


def site_rule(entry: Any, where: str) -> Rule:
    """A rule of the configuration: {"Name": ..., "Match": {"Manufacturer": "regex", "Rows": 768,
    ...}, "Rectangles": [[xmin, ymin, xmax, ymax], ...], "KeepUltrasoundRegions": false}. Every
    Match entry must hold: a text is searched as a case-insensitive regular expression, a number
    compared as a number. KeepUltrasoundRegions true blanks all but the declared regions."""
    if not isinstance(entry, dict) or set(entry) - {"Name", "Match", "Rectangles", "KeepUltrasoundRegions"}:
        raise RuleError(f"{where} must be an object with Name, Match, Rectangles and/or KeepUltrasoundRegions")
    name, match = entry.get("Name"), entry.get("Match")
    keep = entry.get("KeepUltrasoundRegions", False)
    rectangles = entry.get("Rectangles", [] if keep is True else None)
    if not isinstance(name, str) or not name or not isinstance(match, dict) or not match:
        raise RuleError(f"{where} needs a Name and a Match of at least one attribute")
    if not isinstance(keep, bool):
        raise RuleError(f"{where}.KeepUltrasoundRegions must be true or false")
    if not isinstance(rectangles, list) or not (rectangles or keep) or not all(
            isinstance(r, list) and len(r) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
            for r in rectangles):
        raise RuleError(f"{where}.Rectangles must list [xmin, ymin, xmax, ymax] of whole numbers")
    conditions = []
    for field, value in match.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise RuleError(f"{where}.Match.{field} must be a text or a whole number")
        action = "equals" if isinstance(value, int) else "contains"
        try:
            conditions.append(("and", _test(action, field, str(value), True)))
        except RuleError as error:
            raise RuleError(f"{where}.Match.{field}: {error}") from None
    try:
        return Rule(name, tuple(conditions), tuple(_rectangle(",".join(map(str, r)), False) for r in rectangles), keep)
    except RuleError as error:
        raise RuleError(f"{where}.Rectangles: {error}") from None


@dataclass(frozen=True)
class RuleSet:
    """The rules tried, in order: the site's, then the field's."""

    rules: tuple[Rule, ...] = ()

    def match(self, header: Header) -> Rule | None:
        return next((rule for rule in self.rules if rule.matches(header)), None)

    @classmethod
    def of(cls, *groups: Iterable[Rule]) -> "RuleSet":
        return cls(tuple(rule for group in groups for rule in group))


#: The field's rule file inside the `deid` package, where it is installed.
DEID_RULE_FILE = ("data", "deid.dicom")


def installed_deid_rules() -> str | None:
    """The path of the installed `deid` package's rule file, None where it is not installed."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.find_spec("deid")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*DEID_RULE_FILE)
    return str(path) if path.is_file() else None


def load_rules(files: list[str] | None, site: list[Any], where: str) -> RuleSet:
    """The site's rules (`where`.PixelRules), then those of the rule files (None: the installed
    `deid` package's, if any); RuleError names what cannot be used."""
    if files is None:
        files = [path for path in (installed_deid_rules(),) if path]
    own = [site_rule(entry, f"{where}.PixelRules[{index}]") for index, entry in enumerate(site)]
    field: list[Rule] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except OSError as error:
            raise RuleError(f"{where}.PixelRuleFiles: cannot read {path} ({error.strerror})") from None
        field.extend(deid_rules(text, path))
    return RuleSet.of(own, field)
