"""Checking a loaded rule pack: every problem in every file, as one list of sentences. Pure code.

What is checked (each has a test that writes a broken pack and expects the problem to be named):

* pack.yaml: an id and a semantic version;
* thresholds.yaml: every threshold has a numeric value, a unit and a source;
* valuesets.yaml: systems named by medications/orders exist, every lab has LOINC codes, accepts its own
  canonical unit and names the prefetch key that asks for it, a lab's correction (``corrected_for``) names
  an analyte, thresholds that exist and a source; every DXA site has a title;
* each rule: id and file name, semantic version, status, kind, When/Then text, citations (title and an
  https:// URL), conditions (known fact types, known operators, unique aliases, negation over base facts
  only), thresholds that exist, value-set names that resolve (drug class, analyte, order kind, DXA site),
  ``needs`` entries, ``derive``; and for card rules the indicator, placeholders that name a matched alias,
  a summary that stays under 140 characters for every threshold value, suggestions and their actions,
  override reasons and ``supersedes`` targets.
"""

from __future__ import annotations

import re
from typing import Any

from cds.errors import RulePackError
from cds.rules.conditions import OPERATORS, resolve
from cds.rules.model import Rule, RulePack
from cds.rules.templating import PLACEHOLDER, references, strings_in
from cds.rules.transforms import TRANSFORMS

SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
STATUSES = {"active", "draft", "retired"}
INDICATORS = {"info", "warning", "critical"}
#: fact types produced by the facts stage; derived types come from rules' ``derive``
BASE_FACTS = {"patient", "medication", "lab", "dxa", "dxa_change", "problem", "order"}
#: per base fact type, fields whose value must name entries of value sets (an order's kind is an order
#: value set or, for a draft medication order, a medication class)
_VALUESET_FIELDS: dict[str, dict[str, Any]] = {
    "medication": {"drug_class": ("medications",)},
    "lab": {"analyte": ("labs",)},
    "problem": {"analyte": ("labs",)},
    "order": {"kind": ("orders", "medications")},
    "dxa": {"site": ("dxa",)},
    "dxa_change": {"site": ("dxa",)},
}
#: the discovery document's prefetch keys whose Observation query lists lab analytes
#: (``labs.<name>.prefetch``)
LAB_PREFETCH_KEYS = ("estradiol", "vitaminD", "monitoring")
#: the fields of a lab's ``corrected_for`` (the Payne albumin correction of calcium)
CORRECTION_FIELDS = {"analyte", "coefficient", "reference", "source"}
#: widest text a placeholder can produce, for the summary-length check
_PLACEHOLDER_WIDTH = {
    "ingredient": 15,
    "site_title": 22,
    "date": 10,
    "from_date": 10,
    "to_date": 10,
    "change_text": 60,
    "band_title": 22,
    "what": 22,
    "score_name": 7,
    "reported": 14,
    "shown": 16,
}


def check(pack: RulePack) -> list[str]:
    """Every problem in a pack: schema, versions, citations, thresholds, value sets, card wording."""
    problems: list[str] = []
    if not pack.id:
        problems.append("pack.yaml: needs an id")
    if not SEMVER.match(pack.version):
        problems.append(f"pack.yaml: version {pack.version!r} is not semantic (MAJOR.MINOR.PATCH)")
    for name, spec in pack.thresholds.items():
        value = spec.get("value")
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not spec.get("source")
            or not spec.get("unit")
        ):
            problems.append(f"thresholds.yaml: {name} needs a numeric value, a unit and a source")
        for needed in spec.get("requires") or [] if value else []:
            if not (pack.thresholds.get(needed) or {}).get("value"):
                problems.append(f"thresholds: {name} is set to {value}, so {needed} must be set too (it has "
                                "no default; see its help)")
    problems += _check_valuesets(pack.valuesets, pack.thresholds)
    known_facts = BASE_FACTS | pack.derived_types()
    seen: set[str] = set()
    for rule in pack.rules:
        where = rule.path or rule.id
        try:
            found = _check_rule(rule, pack, known_facts)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a shape no specific check expects
            found = [f"malformed rule ({type(exc).__name__}: {exc}); see docs/rules.md for the schema"]
        problems += [f"{where}: {p}" for p in found]
        if rule.id in seen:
            problems.append(f"{where}: duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    return problems


def _check_valuesets(vs: dict[str, Any], thresholds: dict[str, Any]) -> list[str]:
    problems = []
    systems = vs.get("systems") or {}
    for key in ("rxnorm", "atc", "loinc"):
        if key not in systems:
            problems.append(f"valuesets.yaml: systems.{key} is missing")
    for name, spec in (vs.get("medications") or {}).items():
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("ingredients"), dict)
            or not spec["ingredients"]
        ):
            problems.append(f"valuesets.yaml: medications.{name} needs ingredients")
            continue
        for ingredient, codes in spec["ingredients"].items():
            sexes = (codes or {}).get("only_for_sex") if isinstance(codes, dict) else None
            if sexes is not None and (not isinstance(sexes, list) or not sexes
                                      or not set(sexes) <= {"male", "female", "other", "unknown"}):
                problems.append(f"valuesets.yaml: medications.{name}.{ingredient}.only_for_sex must list "
                                "patient sexes (male, female, other, unknown)")
    for name, spec in (vs.get("labs") or {}).items():
        if (
            not isinstance(spec, dict)
            or not spec.get("loinc")
            or spec.get("canonical_unit") not in (spec.get("units") or {})
        ):
            problems.append(
                f"valuesets.yaml: labs.{name} needs LOINC codes and units including its canonical unit"
            )
            continue
        if spec.get("prefetch") not in LAB_PREFETCH_KEYS:
            problems.append(f"valuesets.yaml: labs.{name}.prefetch must name the prefetch key that asks for "
                            f"it ({', '.join(LAB_PREFETCH_KEYS)}), got {spec.get('prefetch')!r}")
        if "corrected_for" in spec:
            problems += _check_correction(name, spec["corrected_for"], vs, thresholds)
    for name, spec in (vs.get("dxa") or {}).items():
        if not isinstance(spec, dict) or not spec.get("title"):
            problems.append(f"valuesets.yaml: dxa.{name} needs a title")
    for name, spec in (vs.get("orders") or {}).items():
        for system_key in spec or {}:
            if system_key not in systems:
                problems.append(f"valuesets.yaml: orders.{name} uses system {system_key!r}, not in systems")
    problems += [f"valuesets.yaml: {where} {code!r} is not a LOINC code (its check digit does not match)"
                 for where, code in _loinc_codes(vs) if not loinc_check_digit_ok(code)]
    return problems


def _check_correction(name: str, correction: Any, vs: dict[str, Any],
                      thresholds: dict[str, Any]) -> list[str]:
    """``labs.<analyte>.corrected_for``: the analyte of the same day it is corrected with, the thresholds that
    are the formula's constants (coefficient, reference) and the source of the formula."""
    where = f"valuesets.yaml: labs.{name}.corrected_for"
    if not isinstance(correction, dict):
        return [f"{where} must be a mapping (analyte, coefficient, reference, source)"]
    problems = []
    unknown = sorted(set(correction) - CORRECTION_FIELDS)
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    if correction.get("analyte") not in (vs.get("labs") or {}):
        problems.append(f"{where}.analyte must name a lab analyte, got {correction.get('analyte')!r}")
    for key in ("coefficient", "reference"):
        if correction.get(key) not in thresholds:
            problems.append(f"{where}.{key} must name a threshold in thresholds.yaml, "
                            f"got {correction.get(key)!r}")
    if not isinstance(correction.get("source"), str) or not correction["source"].strip():
        problems.append(f"{where} needs a source (the formula's citation)")
    return problems


def loinc_check_digit_ok(code: str) -> bool:
    """LOINC's mod-10 check digit: the odd positions from the right of the number doubled, the even ones
    kept, all their digits summed; the check digit brings the sum up to a multiple of 10."""
    number, _, check = str(code).partition("-")
    if not number.isdigit() or not check.isdigit() or len(check) != 1:
        return False
    digits = number[::-1]
    doubled = str(int(digits[0::2][::-1]) * 2)
    total = sum(int(c) for c in digits[1::2] + doubled)
    return (10 - total % 10) % 10 == int(check)


def _loinc_codes(vs: dict[str, Any]) -> list[tuple[str, str]]:
    """Every LOINC code in the value sets, with where it is."""
    out = [(f"labs.{name}", code) for name, spec in (vs.get("labs") or {}).items() if isinstance(spec, dict)
           for code in spec.get("loinc") or []]
    out += [(f"dxa.{name}.{kind}", code) for name, spec in (vs.get("dxa") or {}).items()
            if isinstance(spec, dict) for kind in ("t_score", "z_score", "bmd")
            for code in spec.get(kind) or []]
    out += [(f"orders.{name}", code) for name, spec in (vs.get("orders") or {}).items()
            for code in (spec or {}).get("loinc") or {}]
    out += [("code_sources.loinc", code) for code in ((vs.get("code_sources") or {}).get("loinc") or {})]
    return out


def _check_rule(rule: Rule, pack: RulePack, known_facts: set[str]) -> list[str]:
    problems = []
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", rule.id):
        problems.append(f"id {rule.id!r} must be lower-case words joined by hyphens")
    if rule.path and rule.path != f"{rule.id}.yaml":
        problems.append(f"file name should be {rule.id}.yaml")
    if not SEMVER.match(rule.version):
        problems.append(f"version {rule.version!r} is not semantic (MAJOR.MINOR.PATCH)")
    if rule.status not in STATUSES:
        problems.append(f"status {rule.status!r} not one of {sorted(STATUSES)}")
    if rule.kind not in {"derived", "card"}:
        problems.append(f"kind {rule.kind!r} must be 'derived' or 'card'")
    for name in ("title", "when", "then"):
        if not isinstance(getattr(rule, name), str) or not getattr(rule, name).strip():
            problems.append(f"{name} must be a non-empty text")
    if not isinstance(rule.citations, list) or not rule.citations:
        problems.append("needs at least one citation")
    for citation in rule.citations if isinstance(rule.citations, list) else []:
        if (
            not isinstance(citation, dict)
            or not str(citation.get("url", "")).startswith("https://")
            or not citation.get("title")
        ):
            problems.append(f"citation {citation!r} needs a title and an https:// url")
    if not isinstance(rule.match, dict) or not rule.match.get("all"):
        return problems + ["match.all needs at least one condition"]
    problems += _check_conditions(rule, pack, known_facts)
    for need in rule.needs:
        if (
            not isinstance(need, dict)
            or need.get("fact") not in BASE_FACTS
            or not need.get("field")
            or not need.get("reason")
        ):
            problems.append(f"needs entry {need!r} must name a base fact, a field and a reason")
        elif "in" in need:
            problems += _check_where({need["field"]: {"in": need["in"]}}, "needs", need["fact"], pack)
    if rule.derive is not None:
        if not isinstance(rule.derive, dict) or not rule.derive.get("t"):
            problems.append("derive needs a fact type t")
        else:
            for name, source in (rule.derive.get("copy") or {}).items():
                if str(source).partition(".")[0] not in rule.aliases:
                    problems.append(f"derive.copy.{name} reads {source!r}, but no condition is named that")
            for name, template in (rule.derive.get("format") or {}).items():
                for alias, _field in references(str(template)):
                    if alias not in rule.aliases:
                        problems.append(
                            f"derive.format.{name} refers to {alias!r}, but no condition is named that"
                        )
    if rule.kind == "derived" and not rule.derive:
        problems.append("a derived rule needs derive.t")
    if rule.kind == "card":
        problems += _check_card(rule, pack)
    return problems


def _operands(spec: Any) -> list[tuple[str, Any]]:
    return list(spec.items()) if isinstance(spec, dict) else [("eq", spec)]


def _check_where(where: Any, label: str, fact: str, pack: RulePack) -> list[str]:

    if not isinstance(where, dict):
        return [f"{label}: where must be a mapping of field to test"]
    problems: list[str] = []
    for name, spec in where.items():
        for op, operand in _operands(spec):
            before = len(problems)
            if op not in OPERATORS:
                problems.append(f"{label}: unknown operator {op!r} on {fact}.{name}")
            elif op == "in" and (not isinstance(operand, list) or not operand):
                problems.append(f"{label}: 'in' on {fact}.{name} needs a non-empty list")
            if (
                isinstance(operand, dict)
                and "threshold" in operand
                and operand["threshold"] not in pack.thresholds
            ):
                problems.append(
                    f"refers to threshold {operand['threshold']!r}, which thresholds.yaml does not define"
                )
            elif op in {"lt", "lte", "gt", "gte"} and not (
                isinstance(operand, dict)
                or (isinstance(operand, int | float) and not isinstance(operand, bool))
            ):
                problems.append(f"{label}: {op} on {fact}.{name} needs a number or a threshold")
            sections = _VALUESET_FIELDS.get(fact, {}).get(name)
            if sections and op in {"eq", "in", "ne"}:
                names = {n for s in sections for n in (pack.valuesets.get(s) or {})}
                for value in operand if isinstance(operand, list) else [operand]:
                    if isinstance(value, str) and value not in names:
                        problems.append(
                            f"{label}: {name} {value!r} is not in valuesets.yaml {' or '.join(sections)}"
                        )
            if len(problems) == before:  # what the condition semantics refuses (an operand of no kind)
                try:
                    resolve(op, operand, pack, f"{fact}.{name}")
                except RulePackError as exc:
                    problems.append(f"{label}: {exc.message}")
    return problems


def _check_conditions(rule: Rule, pack: RulePack, known_facts: set[str]) -> list[str]:
    problems = []
    aliases = rule.aliases
    if len(set(aliases)) != len(aliases):
        problems.append(f"match.all names an alias twice: {aliases}")
    for section in ("all", "none"):
        for index, cond in enumerate(rule.match.get(section) or []):
            label = f"match.{section}[{index}]"
            if not isinstance(cond, dict):
                problems.append(f"{label}: not a mapping")
                continue
            fact = cond.get("fact")
            if fact not in known_facts:
                problems.append(f"{label}: unknown fact type {fact!r}")
            if section == "none" and fact not in BASE_FACTS:
                problems.append(f"match.none: {fact!r} is derived; negation only over base facts")
            problems += _check_where(cond.get("where") or {}, label, str(fact), pack)
            any_of = cond.get("any_of")
            if any_of is not None and (not isinstance(any_of, list) or not any_of):
                problems.append(f"{label}: any_of must be a non-empty list of where mappings")
            for alt in any_of if isinstance(any_of, list) else []:
                problems += _check_where(alt, f"{label}.any_of", str(fact), pack)
    for name in rule.thresholds:
        if name not in pack.thresholds:
            problems.append(f"refers to threshold {name!r}, which thresholds.yaml does not define")
    return problems


def _check_card(rule: Rule, pack: RulePack) -> list[str]:

    problems = []
    card = rule.card if isinstance(rule.card, dict) else {}
    if not card.get("summary"):
        return ["a card rule needs card.summary"]
    if card.get("indicator") not in INDICATORS:
        problems.append(f"card.indicator must be one of {sorted(INDICATORS)}")
    aliases = set(rule.aliases) | {"threshold", "context"}
    problems += _check_variants_and_notes(rule, card)
    for text in strings_in({k: v for k, v in card.items() if k != "notes"}):
        for alias, name in references(text):
            if alias not in aliases:
                problems.append(
                    f"card text refers to {{{alias}.{name}}}, but no condition is named {alias!r}"
                )
            if alias == "threshold" and name not in pack.thresholds:
                problems.append(f"card text refers to unknown threshold {name!r}")
    summaries = [card["summary"]] + [v["summary"] for v in card.get("variants") or []
                                      if isinstance(v, dict) and isinstance(v.get("summary"), str)]
    listing = card.get("summary_list")
    listed = str(listing.get("item", "")) if isinstance(listing, dict) else ""
    for summary in summaries:
        longest = _longest_summary(summary + listed, pack)  # with one listed item; more are cut at 140
        if longest >= 140:
            problems.append(f"card.summary can reach {longest} characters; it must stay under 140")
    for option in card.get("indicator_when") or []:
        if option.get("indicator") not in INDICATORS:
            problems.append(f"indicator_when: indicator must be one of {sorted(INDICATORS)}")
        for key in option.get("where") or {}:
            if key.partition(".")[0] not in rule.aliases:
                problems.append(f"indicator_when tests {key!r}, but no condition is named that")
        problems += _check_where(option.get("where") or {}, "indicator_when", "match", pack)
    problems += _check_override_reasons(card, pack)
    card_rules = {r.id for r in pack.rules if r.kind == "card"}
    for other in card.get("supersedes") or []:
        if other not in card_rules or other == rule.id:
            problems.append(f"supersedes {other!r}, which is not another card rule of this pack")
    orderable = set(pack.valuesets.get("orders") or {}) | set(pack.valuesets.get("medications") or {})
    for suggestion in card.get("suggestions") or []:
        if not suggestion.get("label") or not suggestion.get("actions"):
            problems.append("every suggestion needs a label and actions")
        if suggestion.get("unless_ordered") and suggestion["unless_ordered"] not in orderable:
            problems.append(
                f"unless_ordered {suggestion['unless_ordered']!r} is not an order kind or "
                "medication class in valuesets.yaml"
            )
        loop = suggestion.get("for_each")
        if loop and loop.get("alias") not in rule.aliases:
            problems.append(f"for_each names alias {loop.get('alias')!r}, but no condition is named that")
        if loop:
            problems += _check_where(loop.get("where") or {}, "for_each", str(loop.get("alias")), pack)
        for action in suggestion.get("actions") or []:
            kind = action.get("type")
            if kind not in {"create", "update", "delete"}:
                problems.append(f"action type {kind!r} must be create, update or delete")
            if not action.get("description"):
                problems.append("every action needs a description")
            if kind == "create" and not isinstance(action.get("resource"), dict):
                problems.append("a create action needs a resource")
            if kind in {"update", "delete"} and action.get("resource_from") not in rule.aliases:
                problems.append(f"an {kind} action needs resource_from naming a matched order")
            if action.get("transform") and action["transform"] not in TRANSFORMS:
                problems.append(f"unknown transform {action['transform']!r} (known: {sorted(TRANSFORMS)})")
    return problems


#: what a card variant may replace
VARIANT_FIELDS = {"where", "summary", "detail", "suggestions", "citation"}


def _check_variants_and_notes(rule: Rule, card: dict[str, Any]) -> list[str]:
    problems = []
    variants = card.get("variants")
    if variants is not None and not isinstance(variants, list):
        return ["card.variants must be a list"]
    options = [("card", card)] + [(f"card.variants[{i}]", v) for i, v in enumerate(variants or [])]
    for where, option in options:
        index = option.get("citation", 0) if isinstance(option, dict) else 0
        count = len(rule.citations or [])
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            problems.append(f"{where}.citation must be the index of one of the rule's citations")
    for index, variant in enumerate(variants or []):
        if not isinstance(variant, dict) or not isinstance(variant.get("where"), dict) \
                or not variant["where"]:
            problems.append(f"card.variants[{index}] needs a where mapping")
            continue
        unknown = sorted(set(variant) - VARIANT_FIELDS)
        if unknown:
            problems.append(f"card.variants[{index}]: unknown field(s) {', '.join(unknown)}")
        for key in variant["where"]:
            if key.partition(".")[0] not in rule.aliases:
                problems.append(f"card.variants[{index}] tests {key!r}, but no condition is named that")
    prefer = card.get("prefer")
    if prefer is not None:
        if not isinstance(prefer, dict) or not prefer:
            problems.append("card.prefer must be a where mapping")
        else:
            problems += [f"card.prefer tests {key!r}, but no condition is named that" for key in prefer
                         if key.partition(".")[0] not in rule.aliases]
    notes = card.get("notes")
    if notes is not None:
        if not isinstance(notes, dict) or notes.get("fact") not in BASE_FACTS or not notes.get("item") \
                or not notes.get("intro") or not isinstance(notes.get("where") or {}, dict):
            problems.append("card.notes needs a base fact, a where mapping, an intro and an item")
        else:
            for alias, _name in references(str(notes["item"])):
                if alias != "note":
                    problems.append(f"card.notes.item refers to {alias!r}; it can name only {{note.<field>}}")
    return problems


#: the reasons every card rule offers (docs/rules.md, "Override reasons and suppression periods")
STANDARD_REASONS = ("already-addressed", "patient-declined", "not-relevant", "next-visit")
#: what an override reason does: ``silence`` the card for its ``period`` (a threshold in days), or only
#: ``record`` the clinician's answer
REASON_EFFECTS = ("silence", "record")


def _check_override_reasons(card: dict[str, Any], pack: RulePack) -> list[str]:
    """Each reason a code, a display and what it does; a ``silence`` reason names its period, a threshold in
    days; the standard reasons are all there, each code once."""
    problems: list[str] = []
    reasons = card.get("override_reasons")
    if not isinstance(reasons, list) or not reasons:
        return ["card.override_reasons must list the reasons a clinician may give "
                f"({', '.join(STANDARD_REASONS)} at least)"]
    codes: list[str] = []
    for i, reason in enumerate(reasons):
        where = f"card.override_reasons[{i}]"
        if not isinstance(reason, dict) or not isinstance(reason.get("code"), str) or not reason["code"] \
                or not isinstance(reason.get("display"), str) or not reason["display"]:
            problems.append(f"{where}: every override reason needs a code and a display")
            continue
        codes.append(reason["code"])
        unknown = sorted(set(reason) - {"code", "display", "does", "period"})
        if unknown:
            problems.append(f"{where} ({reason['code']}): unknown field(s) {', '.join(unknown)}")
        does = reason.get("does")
        if does not in REASON_EFFECTS:
            problems.append(f"{where} ({reason['code']}): does must be one of {list(REASON_EFFECTS)}, "
                            f"got {does!r}")
        period = reason.get("period")
        if does == "silence":
            spec = pack.thresholds.get(period) if isinstance(period, str) else None
            if spec is None:
                problems.append(f"{where} ({reason['code']}): a silencing reason needs a period, a threshold "
                                f"in thresholds.yaml (got {period!r})")
            elif spec.get("unit") != "d":
                problems.append(f"{where} ({reason['code']}): its period {period} must be in days (unit d)")
        elif period is not None:
            problems.append(f"{where} ({reason['code']}): only a silencing reason has a period")
    missing = [code for code in STANDARD_REASONS if code not in codes]
    if missing and codes:
        problems.append(f"card.override_reasons lacks the standard reason(s) {', '.join(missing)}")
    repeated = sorted({code for code in codes if codes.count(code) > 1})
    if repeated:
        problems.append(f"card.override_reasons names {', '.join(repeated)} more than once")
    return problems


def _longest_summary(summary: str, pack: RulePack) -> int:
    def width(match: re.Match[str]) -> str:
        alias, name, _spec = match.groups()
        if alias == "threshold" and name in pack.thresholds:
            return "x" * len(f"{pack.thresholds[name]['value']:g}")
        if alias == "context":
            return "x" * 40
        return "x" * _PLACEHOLDER_WIDTH.get(name, 8)

    return len(PLACEHOLDER.sub(width, summary))
